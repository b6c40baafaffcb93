"""components.idx: reading the four IDX files, and every way they can be wrong."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from components import idx
from pipeline.errors import DataError
from tests.conftest import IDX_FILES, synthetic_digits, write_idx_images, write_idx_labels


def test_reads_the_four_files(idx_dir: Path) -> None:
    splits = idx.read_source_dir(idx_dir)
    assert set(splits) == {"train", "test"}
    train = splits["train"]
    assert train.images.shape == (200, 28, 28) and train.images.dtype == np.uint8
    assert train.labels.shape == (200,) and train.header_count == 200
    assert splits["test"].header_count == 50
    images, labels = synthetic_digits(200, 0)
    np.testing.assert_array_equal(train.images, images)
    np.testing.assert_array_equal(train.labels, labels)


def _error(call, *args) -> str:
    with pytest.raises(DataError) as info:
        call(*args)
    return str(info.value)


def test_missing_file(idx_dir: Path) -> None:
    (idx_dir / IDX_FILES["test_labels"]).unlink()
    message = _error(idx.read_source_dir, idx_dir)
    assert "t10k-labels-idx1-ubyte.gz" in message and str(idx_dir) in message
    assert "missing" in _error(idx.read_labels, idx_dir / IDX_FILES["test_labels"])


def test_source_dir_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "notadir"
    path.write_text("x")
    message = _error(idx.read_source_dir, path)
    assert str(path) in message and "is a file" in message


def test_source_dir_that_does_not_exist(tmp_path: Path) -> None:
    assert "does not exist" in _error(idx.read_source_dir, tmp_path / "nowhere")


def test_truncated_gzip(idx_dir: Path) -> None:
    path = idx_dir / IDX_FILES["train_images"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = _error(idx.read_images, path)
    assert str(path) in message and "truncated" in message


def test_corrupt_gzip(idx_dir: Path) -> None:
    path = idx_dir / IDX_FILES["train_images"]
    data = bytearray(path.read_bytes())
    for i in range(30, 60):  # scramble the deflate stream after the 10-byte gzip header
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    message = _error(idx.read_images, path)
    assert str(path) in message and "corrupt" in message


def test_not_gzip(idx_dir: Path) -> None:
    path = idx_dir / IDX_FILES["train_labels"]
    path.write_bytes(gzip.decompress(path.read_bytes()))  # a plain, uncompressed IDX file
    message = _error(idx.read_labels, path)
    assert str(path) in message and "not a gzip file" in message


def test_wrong_magic(idx_dir: Path) -> None:
    path = idx_dir / IDX_FILES["train_labels"]
    write_idx_labels(path, np.zeros(200, np.uint8), magic=2051)
    message = _error(idx.read_labels, path)
    assert str(path) in message and "magic number 2051" in message and "2049" in message
    images = idx_dir / IDX_FILES["train_images"]
    write_idx_images(images, np.zeros((3, 28, 28), np.uint8), magic=1234)
    assert "magic number 1234" in _error(idx.read_images, images)


def test_header_count_does_not_match_data(idx_dir: Path) -> None:
    path = idx_dir / IDX_FILES["train_images"]
    write_idx_images(path, np.zeros((10, 28, 28), np.uint8), count=12)
    message = _error(idx.read_images, path)
    assert str(path) in message and "12 x 28 x 28" in message and "holds 7840 data bytes" in message


def test_header_too_short(tmp_path: Path) -> None:
    path = tmp_path / "short.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(struct.pack(">I", 2049))
    assert "too short" in _error(idx.read_labels, path)


def test_labels_outside_0_to_9(idx_dir: Path) -> None:
    path = idx_dir / IDX_FILES["train_labels"]
    labels = np.arange(200) % 10
    labels[17] = 10
    write_idx_labels(path, labels)
    message = _error(idx.read_labels, path)
    assert str(path) in message and "outside 0-9" in message and "index 17" in message


def test_image_and_label_counts_differ(idx_dir: Path) -> None:
    labels_path = idx_dir / IDX_FILES["train_labels"]
    write_idx_labels(labels_path, np.arange(199) % 10)
    message = _error(idx.read_source_dir, idx_dir)
    assert "200 images but 199 labels" in message and "train-labels-idx1-ubyte.gz" in message


def test_images_that_are_not_28x28(tmp_path: Path) -> None:
    path = tmp_path / "images.gz"
    write_idx_images(path, np.zeros((2, 32, 32), np.uint8))
    assert "32x32" in _error(idx.read_images, path)


def test_a_gzip_bomb_is_refused_after_the_declared_bytes(tmp_path: Path) -> None:
    """A file that inflates far past what its header declares is read only that far."""
    import tracemalloc

    path = tmp_path / "train-labels-idx1-ubyte.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(struct.pack(">II", idx.LABELS_MAGIC, 10))
        chunk = bytes(1 << 20)
        for _ in range(64):  # 64 MB of zeros: about 64 KB on disk
            fh.write(chunk)
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        message = _error(idx.read_labels, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "truncated or its header is wrong" in message or "more data" in message
    assert peak < 8 << 20, f"reading the bomb took {peak} bytes"
