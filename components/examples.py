"""Files of tf.Example: the interchange format of batch scoring (and of the serving client's samples).

    pattern = split_file_pattern(data_dir, "mnist", "test")       # the TFDS split's own TFRecord files
    out = write_examples(data_dir, "mnist", "test", "out/test")   # out/test-00000-of-00004.tfrecord ...

Features, as TFDS's MNIST names them (`serving.signatures`): `image` PNG bytes, `label` int64 (optional),
`key` bytes (optional). A prepared TFDS split is already such a file set (TFDS writes tf.Example records
with `image` and `label`), so the scorer reads a split by its file pattern: one code path for a split and
for users' files, streamed, never loaded into memory.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

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


def write_examples(
    data_dir: str | os.PathLike, dataset: str, split: str, output_prefix: str | os.PathLike, *, num_shards: int = 4
) -> ExamplesOutput:
    """Write a split as `num_shards` TFRecord files `<prefix>-NNNNN-of-MMMMM.tfrecord` of tf.Example with
    `image`, `label` and `key` (`<split>-<index in the split>`). Each file is written beside its final name
    and renamed into place."""
    import tensorflow as tf
    from tensorflow.core.example import example_pb2

    if num_shards < 1:
        raise DataError(f"num_shards must be at least 1, got {num_shards}")
    files = split_files(data_dir, dataset, split)
    prefix = Path(output_prefix)
    try:
        prefix.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the output folder {os.fspath(prefix.parent)!r}: {exc}") from exc
    finals = [prefix.parent / f"{prefix.name}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]
    temps = [f.with_name(f".{f.name}.tmp-{secrets.token_hex(4)}") for f in finals]
    writers = [tf.io.TFRecordWriter(os.fspath(t)) for t in temps]
    count = 0
    try:
        for record in tf.data.TFRecordDataset(files).as_numpy_iterator():
            example = example_pb2.Example.FromString(record)
            example.features.feature[sig.EXAMPLE_KEY_FEATURE].bytes_list.value[:] = [f"{split}-{count:05d}".encode()]
            writers[count % num_shards].write(example.SerializeToString())
            count += 1
        for w in writers:
            w.close()
        for t, f in zip(temps, finals):
            os.replace(t, f)
    finally:
        for w in writers:
            w.close()
        for t in temps:
            if t.exists():
                t.unlink()
    for f in finals:
        log.info("wrote %s", f)
    pattern = os.fspath(prefix.parent / f"{prefix.name}-?????-of-{num_shards:05d}.tfrecord")
    return ExamplesOutput(tuple(finals), count, pattern)
