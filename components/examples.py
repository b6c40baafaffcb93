"""Files of examples to score: tf.Example (the interchange format of batch scoring and of the serving client's
samples), and the same rows as Parquet, CSV or image files (`components.score.inputs` documents the layouts).

    pattern = split_file_pattern(data_dir, "mnist", "test")       # the TFDS split's own TFRecord files
    out = write_examples(data_dir, "mnist", "test", "out/test")   # out/test-00000-of-00004.tfrecord ...
    out = write_sample(data_dir, "mnist", "test", "out/test", output_format="csv", limit=1000)

Features, as TFDS's MNIST names them (`serving.signatures`): `image` PNG bytes, `label` int64 (optional),
`key` bytes (optional). A prepared TFDS split is already such a file set (TFDS writes tf.Example records
with `image` and `label`), so the scorer reads a split by its file pattern: one code path for a split and
for users' files, streamed, never loaded into memory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from components.score.options import INPUT_FORMATS
from pipeline.errors import DataError
from serving import signatures as sig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExamplesOutput:
    paths: tuple[Path, ...]
    num_examples: int
    file_pattern: str  # a glob matching exactly `paths`


def make_example(png: bytes, label: int | None = None, key: str | bytes | None = None) -> bytes:
    """A serialized tf.Example: `image` (PNG bytes), optional `label` (int64) and `key` (bytes)."""
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    feature = example.features.feature
    feature[sig.EXAMPLE_IMAGE_FEATURE].bytes_list.value.append(png)
    if label is not None:
        feature[sig.EXAMPLE_LABEL_FEATURE].int64_list.value.append(int(label))
    if key is not None:
        feature[sig.EXAMPLE_KEY_FEATURE].bytes_list.value.append(key.encode() if isinstance(key, str) else key)
    return example.SerializeToString()


def split_files(data_dir: str | os.PathLike, dataset: str, split: str) -> list[str]:
    """The TFRecord files of a prepared TFDS split; a DataError naming what is missing."""
    from components.data import prepared_builder

    if "[" in split:
        raise DataError(f"split {split!r}: slices are not supported here; name a whole split (train, test)")
    builder = prepared_builder(data_dir, dataset, split)
    if builder.info.file_format is not None and builder.info.file_format.value != "tfrecord":
        raise DataError(f"dataset {dataset!r} is stored as {builder.info.file_format.value}, not TFRecord")
    return [os.fspath(p) for p in builder.info.splits[split].filepaths]


def split_file_pattern(data_dir: str | os.PathLike, dataset: str, split: str) -> str:
    """A glob matching the split's TFRecord files (what `beam.io.ReadFromTFRecord` takes)."""
    files = split_files(data_dir, dataset, split)
    if len(files) == 1:
        return files[0]
    first = files[0]
    return first[: first.rindex("-", 0, first.rindex("-of-"))] + "-*"  # <name>-<split>.tfrecord-NNNNN-of-MMMMM


def _inputs_and_prefix(data_dir, dataset: str, split: str, output_prefix, num_shards: int) -> tuple[list[str], Path]:
    """The split's TFRecord files and the output prefix, its folder made; bad shard counts and folders refused."""
    if num_shards < 1:
        raise DataError(f"num_shards must be at least 1, got {num_shards}")
    files = split_files(data_dir, dataset, split)
    prefix = Path(output_prefix)
    try:
        prefix.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the output folder {os.fspath(prefix.parent)!r}: {exc}") from exc
    return files, prefix


def write_examples(
    data_dir: str | os.PathLike, dataset: str, split: str, output_prefix: str | os.PathLike, *, num_shards: int = 4,
    limit: int | None = None,
) -> ExamplesOutput:
    """Write a split as `num_shards` TFRecord files `<prefix>-NNNNN-of-MMMMM.tfrecord` of tf.Example with
    `image`, `label` and `key` (`<split>-<index in the split>`). Each file is written beside its final name
    and renamed into place."""
    import tensorflow as tf
    from tensorflow.core.example import example_pb2

    files, prefix = _inputs_and_prefix(data_dir, dataset, split, output_prefix, num_shards)
    count = 0
    with _shards(prefix, num_shards, "tfrecord") as shards:
        writers = [tf.io.TFRecordWriter(os.fspath(t)) for t in shards.temps]
        try:
            records = tf.data.TFRecordDataset(files)
            for record in (records.take(limit) if limit is not None else records).as_numpy_iterator():
                example = example_pb2.Example.FromString(record)
                example.features.feature[sig.EXAMPLE_KEY_FEATURE].bytes_list.value[:] = [f"{split}-{count:05d}".encode()]
                writers[count % num_shards].write(example.SerializeToString())
                count += 1
        finally:
            for w in writers:
                w.close()
    return ExamplesOutput(shards.finals, count, shards.pattern)


@dataclass(frozen=True)
class _Shards:
    finals: tuple[Path, ...]  # <prefix>-NNNNN-of-MMMMM.<suffix>
    temps: tuple[Path, ...]  # where each is written, beside its final name
    pattern: str  # the glob of the finals


@contextlib.contextmanager
def _shards(prefix: Path, num_shards: int, suffix: str) -> Iterator[_Shards]:
    """The shard files' temp paths, to be written inside the block; renamed into place when it succeeds, and
    removed whatever happens."""
    finals = tuple(prefix.parent / f"{prefix.name}-{i:05d}-of-{num_shards:05d}.{suffix}" for i in range(num_shards))
    shards = _Shards(finals, tuple(f.with_name(f".{f.name}.tmp-{secrets.token_hex(4)}") for f in finals),
                     os.fspath(prefix.parent / f"{prefix.name}-?????-of-{num_shards:05d}.{suffix}"))
    try:
        yield shards
        for t, f in zip(shards.temps, finals):
            os.replace(t, f)
    finally:
        for t in shards.temps:
            if t.exists():
                t.unlink()
    for f in finals:
        log.info("wrote %s", f)


SAMPLE_FORMATS = INPUT_FORMATS  # every format `score --input` reads, no other


def _rows(files: list[str], split: str, limit: int | None):
    """(key, label, PNG bytes, uint8 [28, 28]) per record of the split, in order."""
    import tensorflow as tf

    spec = {sig.EXAMPLE_IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string),
            sig.EXAMPLE_LABEL_FEATURE: tf.io.FixedLenFeature([], tf.int64)}

    def parse(record):
        f = tf.io.parse_single_example(record, spec)
        png = f[sig.EXAMPLE_IMAGE_FEATURE]
        return png, f[sig.EXAMPLE_LABEL_FEATURE], tf.io.decode_png(png, channels=1)[..., 0]

    records = tf.data.TFRecordDataset(files)
    records = records.take(limit) if limit is not None else records
    for i, (png, label, pixels) in enumerate(records.map(parse).as_numpy_iterator()):
        yield f"{split}-{i:05d}", int(label), png, pixels


def write_sample(
    data_dir: str | os.PathLike, dataset: str, split: str, output_prefix: str | os.PathLike, *,
    output_format: str = "tfrecord", num_shards: int = 4, limit: int | None = None,
) -> ExamplesOutput:
    """Write a split (its first `limit` rows) for `mnist-pipeline score --input`, keys `<split>-<index>`:
    tfrecord  <prefix>-NNNNN-of-MMMMM.tfrecord   tf.Example image (PNG), label, key
    parquet   <prefix>-NNNNN-of-MMMMM.parquet    columns key, label, image (PNG bytes)
    csv       <prefix>-NNNNN-of-MMMMM.csv        Kaggle's train layout plus a key column: key,label,pixel0..783
    images    <prefix>/<key>.png                 one grey 28x28 PNG per row (keys: file names; no labels)
    Files are written beside their final names (a folder for images) and renamed into place."""
    if output_format not in SAMPLE_FORMATS:
        raise DataError(f"unknown sample format {output_format!r}; choose one of {', '.join(SAMPLE_FORMATS)}")
    if output_format == "tfrecord":
        return write_examples(data_dir, dataset, split, output_prefix, num_shards=num_shards, limit=limit)
    files, prefix = _inputs_and_prefix(data_dir, dataset, split, output_prefix, num_shards)
    rows = list(_rows(files, split, limit))
    if output_format == "images":
        return _write_images(prefix, rows)
    write = _write_parquet if output_format == "parquet" else _write_csv
    with _shards(prefix, num_shards, output_format) as shards:
        for shard, temp in enumerate(shards.temps):
            write(temp, rows[shard::num_shards])
    return ExamplesOutput(shards.finals, len(rows), shards.pattern)


def _write_parquet(path: Path, rows: list) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        sig.EXAMPLE_KEY_FEATURE: pa.array([r[0] for r in rows], pa.string()),
        sig.EXAMPLE_LABEL_FEATURE: pa.array([r[1] for r in rows], pa.int64()),
        sig.EXAMPLE_IMAGE_FEATURE: pa.array([r[2] for r in rows], pa.binary()),
    })
    pq.write_table(table, path)


def _write_csv(path: Path, rows: list) -> None:
    import numpy as np

    size = sig.IMAGE_SIZE * sig.IMAGE_SIZE
    header = ",".join([sig.EXAMPLE_KEY_FEATURE, sig.EXAMPLE_LABEL_FEATURE, *(f"pixel{i}" for i in range(size))])
    with open(path, "w", newline="") as fh:
        fh.write(header + "\n")
        for key, label, _, pixels in rows:
            fh.write(f"{key},{label}," + ",".join(map(str, np.asarray(pixels).reshape(-1).tolist())) + "\n")


def _write_images(folder: Path, rows: list) -> ExamplesOutput:
    import shutil

    temp = folder.with_name(f".{folder.name}.tmp-{secrets.token_hex(4)}")
    temp.mkdir()
    try:
        for key, _, png, _ in rows:
            (temp / f"{key}.png").write_bytes(png)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(temp, folder)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    log.info("wrote %d PNG files to %s", len(rows), folder)
    return ExamplesOutput(tuple(sorted(folder.glob("*.png"))), len(rows), os.fspath(folder))
