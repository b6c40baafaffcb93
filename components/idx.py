"""Read and check gzipped IDX files, the format MNIST and Fashion-MNIST ship in.

    images, labels = read_split(source_dir / "train-images-idx3-ubyte.gz", source_dir / "train-labels-idx1-ubyte.gz")

An IDX file is a big-endian header (a magic number whose last byte is the number of dimensions, then one
uint32 per dimension) followed by the raw uint8 data. Every way a file can be wrong is a `DataError` naming
the file and the problem: missing, not gzip, truncated or corrupt, a wrong magic number, a header whose
counts do not match the data length, labels outside 0-9, image and label counts that differ.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.datasets import files_fingerprint
from pipeline.errors import DataError
from serving.signatures import IMAGE_SIZE, NUM_CLASSES

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (count, rows, cols)
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (count)

SOURCE_KIND = "idx"  # ingest.json's "source"
SOURCE_LABEL = "IDX files"  # how `ingest` names them
EXPECTED = ("the four IDX .gz files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)")

# The four standard file names, by split.
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# The split sizes each dataset's TFDS builder declares (its DatasetInfo): the files must not disagree in the one
# way a mix-up of names produces, train and test swapped. Smaller files (tests, subsets) are accepted.
DECLARED_SPLIT_SIZES = {
    "mnist": {"train": 60000, "test": 10000},
    "fashion_mnist": {"train": 60000, "test": 10000},
}


def check_split_sizes(dataset: str, counts: dict[str, int], source: str) -> None:
    """A DataError when the files' counts are the dataset's declared split sizes, swapped."""
    declared = DECLARED_SPLIT_SIZES.get(dataset)
    if declared and declared["train"] != declared["test"] and \
            (counts.get("train"), counts.get("test")) == (declared["test"], declared["train"]):
        raise DataError(
            f"source dir {source!r}: the train files hold {counts['train']} examples and the test (t10k) files "
            f"{counts['test']}, but {dataset} declares train {declared['train']} / test {declared['test']}: the "
            "train-* and t10k-* files look swapped; check the file names")


@dataclass(frozen=True)
class IdxSplit:
    """One split read from its two IDX files: uint8 images [n, 28, 28], uint8 labels [n], and the header count."""

    images: np.ndarray
    labels: np.ndarray
    header_count: int


_CHUNK = 1 << 20


def _read_gzip(path: Path, magic: int, ndim: int) -> bytes:
    """The file's inflated bytes, but never more than its IDX header declares plus one: a small gzip bomb must
    not inflate gigabytes before `_header` finds that the lengths disagree. A header with the wrong magic
    number is returned alone, for `_header` to refuse."""
    if not path.exists():
        raise DataError(f"IDX file {str(path)!r} is missing; the source dir must hold the four standard .gz files")
    if not path.is_file():
        raise DataError(f"IDX file {str(path)!r} is not a regular file")
    try:
        with path.open("rb") as fh:
            gzip_magic = fh.read(2)
        if gzip_magic != b"\x1f\x8b":
            raise DataError(f"IDX file {str(path)!r} is not a gzip file; expected the original .gz download")
        with gzip.open(path, "rb") as fh:
            size = 4 + 4 * ndim
            head = fh.read(size)
            if len(head) < size or struct.unpack(">I", head[:4])[0] != magic:
                return head
            declared = math.prod(struct.unpack(f">{ndim}I", head[4:]))
            chunks, left = [head], declared + 1  # one byte more shows that the data runs on
            while left > 0:
                chunk = fh.read(min(left, _CHUNK))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
    except EOFError as exc:
        raise DataError(f"IDX file {str(path)!r} is truncated (the gzip stream ends early); download it again") from exc
    except (zlib.error, OSError) as exc:
        raise DataError(f"IDX file {str(path)!r} is corrupt or unreadable ({exc}); download it again") from exc


def _header(path: Path, data: bytes, magic: int, ndim: int) -> tuple[int, ...]:
    size = 4 + 4 * ndim
    if len(data) < size:
        raise DataError(f"IDX file {str(path)!r} is too short for an IDX header ({len(data)} bytes, need {size})")
    found, *dims = struct.unpack(f">{1 + ndim}I", data[:size])
    if found != magic:
        kind = {IMAGES_MAGIC: "an images file", LABELS_MAGIC: "a labels file"}.get(found, "not an IDX file")
        raise DataError(
            f"IDX file {str(path)!r} has magic number {found}, expected {magic} "
            f"({'images' if magic == IMAGES_MAGIC else 'labels'}); it looks like {kind}: check the file names"
        )
    expected = size + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        shape = " x ".join(str(d) for d in dims)
        raise DataError(
            f"IDX file {str(path)!r}: its header says {shape} ({expected - size} data bytes) "
            f"but the file holds {len(data) - size}{' or more' if len(data) > expected else ''} data bytes; "
            "the file is truncated or its header is wrong"
        )
    return tuple(dims)


def read_images(path: str | os.PathLike) -> np.ndarray:
    """uint8 [n, 28, 28] from an IDX3 images file (magic 2051)."""
    path = Path(path)
    data = _read_gzip(path, IMAGES_MAGIC, 3)
    n, rows, cols = _header(path, data, IMAGES_MAGIC, 3)
    if (rows, cols) != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"IDX file {str(path)!r} holds {rows}x{cols} images; MNIST-style datasets need 28x28")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols)


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """uint8 [n] from an IDX1 labels file (magic 2049); every label in 0-9."""
    path = Path(path)
    data = _read_gzip(path, LABELS_MAGIC, 1)
    (n,) = _header(path, data, LABELS_MAGIC, 1)
    labels = np.frombuffer(data, dtype=np.uint8, offset=8)
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise DataError(
            f"IDX file {str(path)!r} has {bad.size} label(s) outside 0-9 "
            f"(first: {int(labels[bad[0]])} at index {int(bad[0])})"
        )
    return labels


def read_split(images_path: str | os.PathLike, labels_path: str | os.PathLike) -> IdxSplit:
    """Images and labels of one split; their counts must agree."""
    images = read_images(images_path)
    labels = read_labels(labels_path)
    if len(images) != len(labels):
        raise DataError(
            f"IDX files {os.fspath(images_path)!r} and {os.fspath(labels_path)!r} disagree: "
            f"{len(images)} images but {len(labels)} labels"
        )
    return IdxSplit(images=images, labels=labels, header_count=len(images))


def read_source_dir(source_dir: str | os.PathLike) -> dict[str, IdxSplit]:
    """Both splits from a folder of the four standard files: {"train": ..., "test": ...}."""
    source = Path(source_dir)
    if not source.exists():
        raise DataError(f"source dir {str(source)!r} does not exist; pass a folder holding {EXPECTED}")
    check_source_path(source)
    missing = [name for pair in SPLIT_FILES.values() for name in pair if not (source / name).is_file()]
    if missing:
        raise DataError(f"source dir {str(source)!r} lacks {', '.join(missing)}; it must hold the four standard IDX .gz files")
    return {split: read_split(source / images, source / labels) for split, (images, labels) in SPLIT_FILES.items()}


@dataclass(frozen=True)
class IdxSource:
    """Both checked splits and their header counts, as ingest hands them to `split_generators`."""

    splits: dict[str, IdxSplit]
    header_counts: dict[str, int]


def check_source_path(source: Path) -> None:
    if source.exists() and not source.is_dir():
        raise DataError(f"source dir {str(source)!r} is a file, not a folder; pass the folder holding {EXPECTED}")


def read_source(source_dir: str | os.PathLike) -> IdxSource:
    splits = read_source_dir(source_dir)
    return IdxSource(splits, {name: s.header_count for name, s in splits.items()})


def fingerprint(source_dir: str | os.PathLike) -> str | None:
    """sha256 over the four files (name and bytes); None when the folder is not there (the reader says why)."""
    source = Path(source_dir)
    if not source.is_dir():
        return None
    return files_fingerprint(source / name for pair in SPLIT_FILES.values() for name in pair)


def split_generators(base: type, builder, source: IdxSource, dl_manager):
    """TFDS split generators over the checked arrays: (index, {"image": PNG bytes, "label"}) per example.

    Keys are the file positions, as TFDS's own MNIST builder uses. The images go to TFDS already PNG-encoded
    (its Image feature keeps bytes as they are), by the op TFDS would run on each array, so the records hold
    the same bytes."""

    def generate(split: IdxSplit):
        for index, (png, label) in enumerate(zip(encode_pngs(split.images), split.labels)):
            yield index, {"image": png, "label": int(label)}

    return {name: generate(split) for name, split in source.splits.items()}


def encode_pngs(images):
    """uint8 [n, 28, 28] -> n PNG byte strings, each what `tf.image.encode_png` gives for that image.

    TFDS's Image feature encodes a NumPy image by one graph run per example, which made ingest take most of a
    minute; one tf.data pass, mapped in parallel, gives the same bytes in a few seconds.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(images[..., None])
    ds = ds.map(tf.image.encode_png, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return [png for batch in ds.batch(4096).as_numpy_iterator() for png in batch]


def download_url(base: type) -> str:
    """Where TFDS's MNIST-style builder downloads from (its URL prefix), for the reachability check."""
    return base.URL
