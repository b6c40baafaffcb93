"""Read and check CIFAR-10's binary archive, then hand it to TFDS's own `Cifar10` builder.

    source = read_source(Path("cifar-10-binary.tar.gz"))   # or its folder, or the extracted folder
    source.header_counts                                   # {"train": 50000, "test": 10000}

The archive TFDS downloads (cifar-10-binary.tar.gz) holds `cifar-10-batches-bin/` with data_batch_1.bin ...
data_batch_5.bin (train), test_batch.bin (test) and batches.meta.txt (the ten label names, one a line). Each
.bin file is a run of 3,073-byte records: one label byte, then 32x32 red, green and blue planes. `--source-dir`
may be the .tar.gz itself, a folder holding it, the extracted folder or the `cifar-10-batches-bin` folder.

Every way the files can be wrong is a `DataError` naming the file and the problem: missing, not a gzip tar,
truncated or corrupt, a .bin length that is not whole records, labels outside 0-9, label names that are not
ten. The checked bytes are then written to the builder's download folder and TFDS's own `_split_generators`
reads them there, as it would read its download, so the prepared data is what a TFDS download gives.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.datasets import files_fingerprint
from pipeline.errors import DataError

SOURCE_KIND = "cifar10-binary"  # ingest.json's "source"
SOURCE_LABEL = "the CIFAR-10 binary archive"  # how `ingest` names it
ARCHIVE = "cifar-10-binary.tar.gz"
URL = f"https://www.cs.toronto.edu/~kriz/{ARCHIVE}"  # as TFDS's Cifar10._cifar_info
PREFIX = "cifar-10-batches-bin"
SPLIT_FILES = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}
LABELS_FILE = "batches.meta.txt"
EXPECTED = f"{ARCHIVE} (or its extracted {PREFIX}/ folder: data_batch_1.bin ... data_batch_5.bin, test_batch.bin, " \
           f"{LABELS_FILE})"

IMAGE_SHAPE = (32, 32, 3)
RECORD_BYTES = 1 + 32 * 32 * 3
NUM_CLASSES = 10
# The largest .bin file accepted: the real ones hold 10,000 records; a bigger one is not CIFAR-10's.
_MAX_FILE_BYTES = 2 * 10000 * RECORD_BYTES

DECLARED_SPLIT_SIZES = {"train": 50000, "test": 10000}


@dataclass(frozen=True)
class CifarSource:
    """The checked files (name -> bytes), the label names and the record count per split."""

    files: dict[str, bytes]
    label_names: tuple[str, ...]
    header_counts: dict[str, int]


def _names() -> list[str]:
    return [name for names in SPLIT_FILES.values() for name in names] + [LABELS_FILE]


def locate(source: Path) -> Path:
    """The archive or the folder holding the `.bin` files that `source` (--source-dir) points at."""
    if not source.exists():
        raise DataError(f"source {str(source)!r} does not exist; pass {EXPECTED}")
    if source.is_file():
        return source
    for candidate in (source / ARCHIVE, source / PREFIX, source):
        if candidate.is_file() or (candidate / SPLIT_FILES["test"][0]).is_file():
            return candidate
    raise DataError(f"source dir {str(source)!r} holds neither {ARCHIVE} nor the extracted {PREFIX}/ folder; "
                    f"pass {EXPECTED}")


def check_source_path(source: Path) -> None:
    """A file given as the source must be the .tar.gz; a folder is looked into when it is read."""
    if source.is_file() and not source.name.endswith((".tar.gz", ".tgz")):
        raise DataError(f"source {str(source)!r} is a file but not a .tar.gz; pass {EXPECTED}")


def _read_archive(path: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    wanted = {f"{PREFIX}/{name}": name for name in _names()}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                if name is None or not member.isfile():
                    continue
                if member.size > _MAX_FILE_BYTES:
                    raise DataError(f"{str(path)!r}: {member.name} is {member.size} bytes, more than a CIFAR-10 "
                                    "batch; this is not CIFAR-10's archive")
                found[name] = tar.extractfile(member).read()
    except (tarfile.ReadError, EOFError, zlib.error, OSError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"archive {str(path)!r} is truncated, corrupt or not a .tar.gz ({exc}); download "
                        f"{ARCHIVE} again") from exc
    return found


def _read_folder(folder: Path) -> dict[str, bytes]:
    found = {}
    for name in _names():
        path = folder / name
        if path.is_file():
            if path.stat().st_size > _MAX_FILE_BYTES:
                raise DataError(f"{str(path)!r} is {path.stat().st_size} bytes, more than a CIFAR-10 batch")
            found[name] = path.read_bytes()
    return found


def read_source(source: str | os.PathLike) -> CifarSource:
    """The checked CIFAR-10 files of `source` (archive, its folder or the extracted folder)."""
    where = locate(Path(source))
    files = _read_archive(where) if where.is_file() else _read_folder(where)
    missing = [name for name in _names() if name not in files]
    if missing:
        raise DataError(f"{str(where)!r} lacks {', '.join(f'{PREFIX}/{m}' for m in missing)}; pass {EXPECTED}")
    counts = {split: sum(_check_batch(where, name, files[name]) for name in names)
              for split, names in SPLIT_FILES.items()}
    return CifarSource(files=files, label_names=_label_names(where, files[LABELS_FILE]), header_counts=counts)


def _check_batch(where: Path, name: str, data: bytes) -> int:
    """The record count of one .bin file; a DataError for a partial record or a label outside 0-9."""
    if not data or len(data) % RECORD_BYTES:
        raise DataError(f"{str(where)!r}: {name} holds {len(data)} bytes, not a whole number of "
                        f"{RECORD_BYTES}-byte records (a label byte and 3,072 pixels); the file is truncated")
    labels = np.frombuffer(data, np.uint8)[::RECORD_BYTES]
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise DataError(f"{str(where)!r}: {name} has {bad.size} label(s) outside 0-9 "
                        f"(first: {int(labels[bad[0]])} at record {int(bad[0])})")
    return len(labels)


def _label_names(where: Path, data: bytes) -> tuple[str, ...]:
    try:
        names = tuple(line.strip() for line in data.decode("utf-8").splitlines() if line.strip())
    except UnicodeDecodeError as exc:
        raise DataError(f"{str(where)!r}: {LABELS_FILE} is not text ({exc})") from exc
    if len(names) != NUM_CLASSES:
        raise DataError(f"{str(where)!r}: {LABELS_FILE} names {len(names)} classes, expected {NUM_CLASSES}")
    return names


def decode_batch(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One .bin file's bytes -> uint8 images [n, 32, 32, 3], uint8 labels [n]."""
    records = np.frombuffer(data, np.uint8).reshape(-1, RECORD_BYTES)
    return records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), records[:, 0]


def fingerprint(source: str | os.PathLike) -> str | None:
    """sha256 over the archive's bytes, or over the folder's files (name and bytes); None if there is none."""
    try:
        where = locate(Path(source))
    except DataError:
        return None
    return files_fingerprint([where] if where.is_file() else [where / name for name in _names()])


def check_split_sizes(dataset: str, counts: dict[str, int], source: str) -> None:
    """A DataError when train holds fewer records than test: the batches are mixed up (the real: 50,000 / 10,000)."""
    if counts.get("train", 0) < counts.get("test", 0):
        raise DataError(f"source {source!r}: train (data_batch_1..5.bin) holds {counts['train']} records and "
                        f"test (test_batch.bin) {counts['test']}; {dataset} declares train "
                        f"{DECLARED_SPLIT_SIZES['train']} / test {DECLARED_SPLIT_SIZES['test']}: check the files")


class _Extracted:
    """What TFDS's `_split_generators` asks of its download manager: the folder the archive extracted to."""

    def __init__(self, folder: Path):
        self._folder = folder

    def download_and_extract(self, url):
        return os.fspath(self._folder)


def split_generators(base: type, builder, source: CifarSource, dl_manager):
    """TFDS's own `Cifar10._split_generators`, reading the checked bytes written out as the archive extracts."""
    folder = Path(dl_manager.download_dir) / "extracted"
    (folder / PREFIX).mkdir(parents=True, exist_ok=True)
    for name, data in source.files.items():
        (folder / PREFIX / name).write_bytes(data)
    return base._split_generators(builder, _Extracted(folder))


def download_url(base: type) -> str:
    """Where TFDS's Cifar10 downloads the archive from (its `_cifar_info` needs an instance, hence the constant)."""
    return URL
