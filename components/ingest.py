"""Ingest stage: get MNIST (or Fashion-MNIST) into the workdir's TFDS data_dir, as a regular TFDS dataset.

    out = run(config.data, paths.data_dir(workdir))
    tfds.load(out.dataset, data_dir=out.data_dir)  # what every later stage does

With `source_dir` set, the four IDX files there are read and checked by `components.idx`, then written by
a builder that subclasses TFDS's own `MNIST` / `FashionMNIST` (same `_info()`: name, version, features), so
the result is indistinguishable from a TFDS download. TFDS's own generator insists on exactly 60,000/10,000
examples; ours takes what the (checked) files hold. Without `source_dir`, the normal
`builder.download_and_prepare()`, after a quick check that the download host answers at all.

Both paths prepare into a temporary folder inside `data_dir` and rename the finished
`<dataset>/<version>/` into place, so an interrupted or failed ingest leaves nothing half-written. A
record beside the data (`record_path(data_dir, dataset)`, `ingest.json`) keeps the source, a fingerprint of the
files and the IDX header counts: a second ingest of the same files reuses the prepared data, and the
validate stage checks the prepared counts against the headers.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib
import json
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from components import datasets
from components.atomic import atomic_write_json
from components.params import DataConfig
from pipeline.errors import DataError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class IngestOutput:
    dataset: str  # the TFDS name: tfds.load(dataset, data_dir=data_dir)
    data_dir: Path  # the TFDS data_dir
    dataset_dir: Path  # <data_dir>/<dataset>/<version>/
    version: str
    num_examples: dict[str, int]  # per split, as TFDS recorded them
    source: str  # "idx" (from source_dir) or "tfds" (the TFDS download)
    source_dir: Path | None
    reused: bool  # True: already prepared from the same data, nothing written
    record_path: Path  # ingest.json: source, fingerprint, IDX header counts
    header_counts: dict[str, int] | None = field(default=None)  # per split, from the IDX headers
    class_names: tuple[str, ...] = ()  # the label names in TFDS's metadata, index order ("0".."9" for MNIST)


def check_config(config: DataConfig) -> None:
    """What can be refused before anything is written (the command calls it before a run is recorded)."""
    if config.dataset not in datasets.DATASETS:
        raise DataError(f"unknown dataset {config.dataset!r}; supported: {', '.join(datasets.DATASETS)}")
    source_dir = Path(config.source_dir) if config.source_dir is not None else None
    if source_dir is not None and source_dir.exists() and not source_dir.is_dir():
        raise DataError(f"source dir {str(source_dir)!r} is a file, not a folder; "
                        "pass the folder holding the four IDX .gz files")


def run(config: DataConfig, data_dir: str | os.PathLike) -> IngestOutput:
    """Prepare `config.dataset` in `data_dir` from `config.source_dir` (IDX files) or the TFDS download."""
    check_config(config)
    data_dir = Path(data_dir)
    if config.source_dir is not None:
        return _ingest_idx(config.dataset, Path(config.source_dir), data_dir)
    return _ingest_download(config.dataset, data_dir)


def _tfds_base_class(dataset: str) -> type:
    """TFDS's builder class of `dataset` (components.datasets), which the offline builder subclasses."""
    module, _, name = datasets.dataset(dataset).tfds_class.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _source_reader(dataset: str):
    """The module reading `dataset`'s offline files (components.datasets): read_source_dir, check_split_sizes,
    SPLIT_FILES."""
    return importlib.import_module(datasets.dataset(dataset).source_reader)


def _fingerprint(source_dir: Path, reader) -> str:
    """sha256 over the source files (name and bytes); a missing file is left to the reader's error."""
    digest = hashlib.sha256()
    for pair in reader.SPLIT_FILES.values():
        for name in pair:
            path = source_dir / name
            digest.update(name.encode())
            if path.is_file():
                with path.open("rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(chunk)
    return digest.hexdigest()


RECORD_FILE = "ingest.json"


def record_path(data_dir: str | os.PathLike, dataset: str) -> Path:
    """`<data_dir>/<dataset>/ingest.json`: what ingest prepared (source, fingerprint, IDX header counts)."""
    return Path(data_dir) / dataset / RECORD_FILE


def _read_record(data_dir: Path, dataset: str) -> dict[str, Any] | None:
    path = record_path(data_dir, dataset)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _record(dataset: str, version: str, source: str, source_dir: str | None, fingerprint: str | None,
            header_counts: dict[str, int] | None) -> dict[str, Any]:
    """What ingest.json keeps: where the data came from, a fingerprint of the files and the IDX header counts."""
    return {
        "dataset": dataset,
        "version": version,
        "source": source,
        "source_dir": source_dir,
        "fingerprint": fingerprint,
        "header_counts": header_counts,
        "prepared_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def _write_record(data_dir: Path, dataset: str, record: dict[str, Any]) -> Path:
    path = atomic_write_json(record_path(data_dir, dataset), record, sort_keys=True)
    log.info("wrote ingest record %s", path)
    return path


def _prepared(dataset: str, data_dir: Path):
    """TFDS's own (registered) builder over `data_dir`, as later stages will open it."""
    import tensorflow_datasets as tfds

    return tfds.builder(dataset, data_dir=os.fspath(data_dir))


def _output(dataset: str, data_dir: Path, *, reused: bool, record: dict[str, Any]) -> IngestOutput:
    builder = _prepared(dataset, data_dir)
    if not builder.is_prepared():
        raise DataError(f"dataset {dataset!r} was not found prepared in {str(data_dir)!r} after ingest")
    counts = {name: split.num_examples for name, split in builder.info.splits.items()}
    source_dir = record.get("source_dir")
    return IngestOutput(
        dataset=dataset,
        data_dir=data_dir,
        dataset_dir=Path(builder.data_dir),
        version=str(builder.info.version),
        num_examples=counts,
        source=record["source"],
        source_dir=Path(source_dir) if source_dir else None,
        reused=reused,
        record_path=record_path(data_dir, dataset),
        header_counts=record.get("header_counts"),
        class_names=class_names(builder.info),
    )


def class_names(info) -> tuple[str, ...]:
    """The names TFDS gives the label's classes (`info.features["label"].names`): "T-shirt/top".."Ankle boot"
    for Fashion-MNIST, "0".."9" for MNIST."""
    return tuple(str(n) for n in info.features["label"].names)


def _ingest_idx(dataset: str, source_dir: Path, data_dir: Path) -> IngestOutput:
    idx = _source_reader(dataset)
    fingerprint = _fingerprint(source_dir, idx) if source_dir.is_dir() else None
    base = _tfds_base_class(dataset)
    version = str(base.VERSION)
    record = _read_record(data_dir, dataset)
    if (
        record
        and record.get("source") == "idx"
        and record.get("fingerprint") == fingerprint
        and record.get("version") == version
        and _prepared(dataset, data_dir).is_prepared()
    ):
        log.info("reusing %s %s in %s: already prepared from the same IDX files", dataset, version, data_dir)
        return _output(dataset, data_dir, reused=True, record=record)

    splits = idx.read_source_dir(source_dir)  # every bad-input check happens here, before anything is written
    header_counts = {name: s.header_count for name, s in splits.items()}
    idx.check_split_sizes(dataset, header_counts, str(source_dir))
    log.info("read IDX files from %s: %s", source_dir, header_counts)

    builder_cls = _idx_builder_class(base, dataset)

    def prepare(tmp_data_dir: Path) -> Path:
        builder = builder_cls(idx_splits=splits, data_dir=os.fspath(tmp_data_dir))
        builder.download_and_prepare(download_dir=os.fspath(tmp_data_dir / "downloads"))
        return Path(builder.data_dir)

    _prepare_atomically(dataset, version, data_dir, prepare)
    record = _record(dataset, version, "idx", os.fspath(source_dir.resolve()), fingerprint, header_counts)
    _write_record(data_dir, dataset, record)
    return _output(dataset, data_dir, reused=False, record=record)


def _idx_builder_class(base: type, dataset: str) -> type:
    """A subclass of TFDS's builder that reads our checked arrays instead of downloading; never registered."""
    import tensorflow_datasets as tfds

    with tfds.core.registered.skip_registration():

        class IdxBuilder(base):  # type: ignore[misc, valid-type]
            name = dataset  # the same name, so the data lands in <data_dir>/<dataset>/<version>/

            def __init__(self, *, idx_splits, **kwargs):
                self._idx_splits = idx_splits
                super().__init__(**kwargs)

            def _split_generators(self, dl_manager):
                return {name: self._generate_examples(split) for name, split in self._idx_splits.items()}

            def _generate_examples(self, split):
                # Keys are the file positions, as TFDS's own MNIST builder uses. The images go to TFDS already
                # PNG-encoded (its Image feature keeps bytes as they are), by the op TFDS would run on each
                # array, so the records hold the same bytes.
                pngs = _encode_pngs(split.images)
                for index, (png, label) in enumerate(zip(pngs, split.labels)):
                    yield index, {"image": png, "label": int(label)}

            # TFDS prints "Downloading and preparing ... to <temporary path>" and "downloaded and prepared to
            # <temporary path>": neither is true here. We log the source and the final path instead.
            def _log_download_bytes(self):
                log.info("preparing %s %s from IDX files", self.name, self.version)

            def _log_download_done(self):
                pass

    IdxBuilder.__module__ = base.__module__  # dataset_info.json names TFDS's module, as after a download
    return IdxBuilder


def _encode_pngs(images):
    """uint8 [n, 28, 28] -> n PNG byte strings, each what `tf.image.encode_png` gives for that image.

    TFDS's Image feature encodes a NumPy image by one graph run per example, which made ingest take most of a
    minute; one tf.data pass, mapped in parallel, gives the same bytes in a few seconds.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(images[..., None])
    ds = ds.map(tf.image.encode_png, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return [png for batch in ds.batch(4096).as_numpy_iterator() for png in batch]


def _ingest_download(dataset: str, data_dir: Path) -> IngestOutput:
    base = _tfds_base_class(dataset)
    version = str(base.VERSION)
    # Only ask TFDS once the dataset's folder exists (it warns about a missing one).
    if record_path(data_dir, dataset).parent.is_dir() and _prepared(dataset, data_dir).is_prepared():
        record = _read_record(data_dir, dataset) or {"source": "tfds"}
        log.info("reusing %s %s in %s: already prepared", dataset, version, data_dir)
        return _output(dataset, data_dir, reused=True, record=record)
    _check_reachable(dataset, base.URL)

    def prepare(tmp_data_dir: Path) -> Path:
        import tensorflow_datasets as tfds

        builder = tfds.builder(dataset, data_dir=os.fspath(tmp_data_dir))
        builder.download_and_prepare(download_dir=os.fspath(tmp_data_dir / "downloads"))
        return Path(builder.data_dir)

    _prepare_atomically(dataset, version, data_dir, prepare)
    record = _record(dataset, version, "tfds", None, None, None)
    _write_record(data_dir, dataset, record)
    return _output(dataset, data_dir, reused=False, record=record)


def _check_reachable(dataset: str, url: str) -> None:
    """Fail in seconds, naming --source-dir, where TFDS would retry a dead network for minutes."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise DataError(
            f"cannot reach {host}:{port} to download {dataset!r} ({exc}); offline, pass --source-dir DIR "
            "with the four IDX .gz files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)"
        ) from exc


_TEMP_PREFIX = ".ingest-"  # .ingest-<dataset>-<pid>-<random>: the pid tells a live ingest from a killed one


def _remove_stale_temp_dirs(data_dir: Path) -> None:
    """Remove the temporary data_dirs of ingests whose process is gone (killed before its clean-up ran)."""
    for folder in data_dir.glob(f"{_TEMP_PREFIX}*"):
        pid = next((int(part) for part in folder.name[len(_TEMP_PREFIX):].split("-") if part.isascii()
                    and part.isdigit()), None)
        if pid is not None and (pid == os.getpid() or _alive(pid)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        log.info("removed %s, left by an ingest that did not finish", folder)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _prepare_atomically(dataset: str, version: str, data_dir: Path, prepare) -> Path:
    """Run `prepare(tmp_data_dir)` in a temporary data_dir beside the final one, then rename the result in."""
    data_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(data_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{dataset}-{os.getpid()}-", dir=data_dir))
    final = data_dir / dataset / version
    try:
        built = prepare(tmp)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            # Replaced data (different source files): move the old version aside, then in with the new one.
            log.info("replacing %s prepared from other data", final)
            os.rename(final, tmp / "replaced")
        os.rename(built, final)
        log.info("prepared %s %s in %s", dataset, version, final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
