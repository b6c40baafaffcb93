"""components.ingest: IDX files -> a regular TFDS dataset in the workdir; reuse; bad input leaves nothing behind."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from components import ingest, validate
from components.params import DataConfig
from pipeline import paths
from pipeline.errors import DataError
from tests.conftest import IDX_FILES, write_idx_dir, write_idx_labels

MNIST_TRAIN_HISTOGRAM = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_idx_files_become_a_regular_tfds_dataset(idx_dir: Path, tmp_path: Path) -> None:
    import tensorflow_datasets as tfds

    data_dir = paths.data_dir(tmp_path / "work")
    out = ingest.run(DataConfig(source_dir=str(idx_dir)), data_dir)
    assert (out.dataset, out.version, out.source, out.reused) == ("mnist", "3.0.1", "idx", False)
    assert out.num_examples == {"train": 200, "test": 50}
    assert out.header_counts == {"train": 200, "test": 50}
    assert out.dataset_dir == data_dir / "mnist" / "3.0.1"
    # No temporary folders left, nothing outside <data_dir>/mnist/.
    assert [p.name for p in data_dir.iterdir()] == ["mnist"]
    assert json.loads(out.record_path.read_text())["header_counts"] == {"train": 200, "test": 50}

    # Later stages use plain TFDS, with TFDS's own registered builder.
    ds = tfds.load("mnist", split="test", data_dir=str(data_dir), as_supervised=True)
    images, labels = zip(*tfds.as_numpy(ds))
    assert len(images) == 50 and images[0].shape == (28, 28, 1) and images[0].dtype == np.uint8
    assert sorted(int(x) for x in labels) == sorted(np.arange(50) % 10)


def test_stored_images_are_the_idx_pixels_encoded_as_tfds_would(idx_dir: Path, tmp_path: Path) -> None:
    import tensorflow_datasets as tfds

    from components import idx

    data_dir = paths.data_dir(tmp_path / "work")
    ingest.run(DataConfig(source_dir=str(idx_dir)), data_dir)
    source = idx.read_source_dir(idx_dir)["test"]
    # The PNG bytes are those TFDS's Image feature writes for each array (as a TFDS download would hold).
    feature = tfds.features.Image(shape=(28, 28, 1))
    expected = [feature.encode_example(image[..., None]) for image in source.images]
    assert ingest._encode_pngs(source.images) == expected
    # And the prepared split decodes to exactly the IDX pixels, each with its label.
    ds = tfds.load("mnist", split="test", data_dir=str(data_dir), as_supervised=True)
    stored = sorted((image.tobytes(), int(label)) for image, label in tfds.as_numpy(ds))
    assert stored == sorted((image[..., None].tobytes(), int(label)) for image, label in zip(source.images, source.labels))


def test_second_ingest_of_the_same_files_reuses(idx_dir: Path, tmp_path: Path, caplog) -> None:
    data_dir = paths.data_dir(tmp_path / "work")
    first = ingest.run(DataConfig(source_dir=str(idx_dir)), data_dir)
    before = {p: p.stat().st_mtime_ns for p in first.dataset_dir.iterdir()}
    caplog.set_level("INFO", logger="components.ingest")
    second = ingest.run(DataConfig(source_dir=str(idx_dir)), data_dir)
    assert second.reused and second.num_examples == first.num_examples
    assert {p: p.stat().st_mtime_ns for p in second.dataset_dir.iterdir()} == before
    assert "reusing mnist" in caplog.text


def test_other_files_replace_the_prepared_data(idx_dir: Path, tmp_path: Path) -> None:
    data_dir = paths.data_dir(tmp_path / "work")
    ingest.run(DataConfig(source_dir=str(idx_dir)), data_dir)
    other = write_idx_dir(tmp_path / "other", n_train=120, n_test=30, seed=5)
    out = ingest.run(DataConfig(source_dir=str(other)), data_dir)
    assert not out.reused and out.num_examples == {"train": 120, "test": 30}
    assert [p.name for p in data_dir.iterdir()] == ["mnist"]


def test_fashion_mnist_from_idx_files(idx_dir: Path, tmp_path: Path) -> None:
    import tensorflow_datasets as tfds

    data_dir = paths.data_dir(tmp_path / "work")
    out = ingest.run(DataConfig(dataset="fashion_mnist", source_dir=str(idx_dir)), data_dir)
    assert out.dataset_dir == data_dir / "fashion_mnist" / "3.0.1"
    builder = tfds.builder("fashion_mnist", data_dir=str(data_dir))
    assert builder.is_prepared() and builder.info.splits["train"].num_examples == 200
    assert builder.info.features["label"].names[0] == "T-shirt/top"  # TFDS's own FashionMNIST features


def _bad_source(tmp_path: Path, idx_dir: Path, case: str) -> tuple[Path, str]:
    """Damage `idx_dir` as `case` says; returns the source dir and a phrase the error must contain."""
    labels = idx_dir / IDX_FILES["train_labels"]
    images = idx_dir / IDX_FILES["train_images"]
    if case == "missing file":
        images.unlink()
        return idx_dir, "train-images-idx3-ubyte.gz"
    if case == "truncated gzip":
        images.write_bytes(images.read_bytes()[:-40])
        return idx_dir, "truncated"
    if case == "wrong magic":
        write_idx_labels(labels, np.arange(200) % 10, magic=2051)
        return idx_dir, "magic number 2051"
    if case == "count mismatch":
        write_idx_labels(labels, np.arange(190) % 10)
        return idx_dir, "200 images but 190 labels"
    if case == "label out of range":
        write_idx_labels(labels, np.full(200, 11))
        return idx_dir, "outside 0-9"
    if case == "source is a file":
        path = tmp_path / "a-file.gz"
        path.write_bytes(b"x")
        return path, "is a file"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case", ["missing file", "truncated gzip", "wrong magic", "count mismatch", "label out of range", "source is a file"]
)
def test_bad_input_is_named_and_leaves_nothing(case: str, idx_dir: Path, tmp_path: Path) -> None:
    source, phrase = _bad_source(tmp_path, idx_dir, case)
    workdir = tmp_path / "work"
    with pytest.raises(DataError, match=phrase):
        ingest.run(DataConfig(source_dir=str(source)), paths.data_dir(workdir))
    assert _files(workdir) == []


def test_unknown_dataset_lists_the_supported_ones(idx_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'cifar10'.*mnist, fashion_mnist"):
        ingest.run(DataConfig(dataset="cifar10", source_dir=str(idx_dir)), paths.data_dir(tmp_path / "work"))
    assert _files(tmp_path / "work") == []


def test_offline_without_source_dir_fails_fast_naming_the_flag(tmp_path: Path, monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    start = time.monotonic()
    with pytest.raises(DataError, match="--source-dir"):
        ingest.run(DataConfig(), paths.data_dir(tmp_path / "work"))
    assert time.monotonic() - start < 30  # TFDS itself retries for minutes; generous for a loaded machine
    assert _files(tmp_path / "work") == []


def test_failure_while_preparing_leaves_nothing_half_written(idx_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from components import idx

    real = idx.read_source_dir

    def broken(source_dir):
        splits = real(source_dir)
        train = splits["train"]
        # The 151st label is out of range: TFDS fails in the middle of writing the train split.
        labels = train.labels.astype(np.int64)
        labels[150] = 12
        splits["train"] = idx.IdxSplit(images=train.images, labels=labels, header_count=len(labels))
        return splits

    monkeypatch.setattr(idx, "read_source_dir", broken)
    data_dir = paths.data_dir(tmp_path / "work")
    with pytest.raises(ValueError, match="12"):  # TFDS's own check of the label feature
        ingest.run(DataConfig(source_dir=str(idx_dir)), data_dir)
    assert [p for p in _files(data_dir) if "ingest" in p or "mnist" in p] == []


@pytest.mark.slow
def test_real_mnist(real_mnist_dir: Path, tmp_path: Path) -> None:
    config = DataConfig(source_dir=str(real_mnist_dir))
    workdir = tmp_path / "work"
    out = ingest.run(config, paths.data_dir(workdir))
    assert out.num_examples == {"train": 60000, "test": 10000}
    assert out.header_counts == {"train": 60000, "test": 10000}
    checked = validate.run(config, out.data_dir, paths.statistics_path(workdir, "mnist"))
    train = checked.statistics["splits"]["train"]
    assert train["num_examples"] == 60000 and checked.statistics["splits"]["test"]["num_examples"] == 10000
    assert train["label_histogram"] == MNIST_TRAIN_HISTOGRAM
    assert (train["pixel_min"], train["pixel_max"]) == (0, 255)
    assert train["pixel_mean"] == pytest.approx(33.32, abs=0.01)
