"""components.validate: statistics of the prepared dataset, and the anomalies that stop the run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from components import ingest, validate
from components.params import DataConfig
from pipeline import paths
from pipeline.errors import DataError, ValidationError
from tests.conftest import IDX_FILES, synthetic_digits, write_idx_labels


def _ingest(source: Path, workdir: Path, dataset: str = "mnist") -> DataConfig:
    config = DataConfig(dataset=dataset, source_dir=str(source))
    ingest.run(config, paths.data_dir(workdir))
    return config


def _validate(config: DataConfig, workdir: Path) -> validate.ValidateOutput:
    return validate.run(config, paths.data_dir(workdir), paths.statistics_path(workdir, config.dataset))


def test_statistics_of_a_valid_dataset(idx_dir: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    config = _ingest(idx_dir, workdir)
    out = _validate(config, workdir)
    assert out.anomalies == () and out.statistics_path == paths.statistics_path(workdir, "mnist")
    written = json.loads(out.statistics_path.read_text())
    assert written["anomalies"] == [] and written["header_counts"] == {"train": 200, "test": 50}
    images, labels = synthetic_digits(200, 0)
    train = written["splits"]["train"]
    assert train["num_examples"] == 200
    assert train["label_histogram"] == np.bincount(labels, minlength=10).tolist()
    assert (train["pixel_min"], train["pixel_max"]) == (int(images.min()), int(images.max()))
    assert train["pixel_mean"] == pytest.approx(images.mean())
    assert train["pixel_std"] == pytest.approx(images.std())
    assert train["image_shape"] == [28, 28, 1] and train["image_dtype"] == "uint8"
    assert written["splits"]["test"]["num_examples"] == 50
    assert not list(out.statistics_path.parent.glob(".*tmp*"))


def test_a_missing_class_stops_the_run(idx_dir: Path, tmp_path: Path) -> None:
    write_idx_labels(idx_dir / IDX_FILES["test_labels"], np.arange(50) % 9)  # no 9 in test
    workdir = tmp_path / "work"
    config = _ingest(idx_dir, workdir)
    with pytest.raises(ValidationError, match=r"test: class\(es\) 9 missing") as info:
        _validate(config, workdir)
    assert info.value.anomalies == ["test: class(es) 9 missing (no examples)"]
    # The statistics are still written, with the anomalies, for the user to look at.
    written = json.loads(paths.statistics_path(workdir, "mnist").read_text())
    assert written["anomalies"] == info.value.anomalies


def test_counts_that_do_not_match_the_idx_header(idx_dir: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    config = _ingest(idx_dir, workdir)
    record_path = ingest.record_path(paths.data_dir(workdir), "mnist")
    record = json.loads(record_path.read_text())
    record["header_counts"]["train"] = 60000
    record_path.write_text(json.dumps(record))
    with pytest.raises(ValidationError, match="train: 200 examples but the IDX header announces 60000"):
        _validate(config, workdir)


def test_wrong_shape_and_dtype_on_disk(tmp_path: Path) -> None:
    """A dataset named mnist whose stored features are 32x32 uint16 images: both are anomalies."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.image_classification import mnist

    rng = np.random.default_rng(0)

    with tfds.core.registered.skip_registration():

        class OddMnist(mnist.MNIST):
            name = "mnist"

            def _info(self):
                return tfds.core.DatasetInfo(
                    builder=self,
                    features=tfds.features.FeaturesDict({
                        "image": tfds.features.Image(shape=(32, 32, 1), dtype=np.uint16),
                        "label": tfds.features.ClassLabel(num_classes=10),
                    }),
                    supervised_keys=("image", "label"),
                )

            def _split_generators(self, dl_manager):
                return {"train": self._generate_examples(20), "test": self._generate_examples(10)}

            def _generate_examples(self, n):
                for i in range(n):
                    yield i, {"image": rng.integers(0, 1000, (32, 32, 1), dtype=np.uint16), "label": i % 10}

    workdir = tmp_path / "work"
    OddMnist(data_dir=str(paths.data_dir(workdir))).download_and_prepare()
    with pytest.raises(ValidationError) as info:
        _validate(DataConfig(), workdir)
    assert "train: image shape [32, 32, 1], expected [28, 28, 1]" in info.value.anomalies
    assert "train: image dtype uint16, expected uint8" in info.value.anomalies
    assert "test: image dtype uint16, expected uint8" in str(info.value)


def test_not_prepared(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not prepared.*mnist-pipeline ingest"):
        _validate(DataConfig(), tmp_path / "work")


def test_split_anomalies_names_each_problem() -> None:
    stats = validate.split_statistics([(np.zeros((4, 28, 28, 1), np.uint8), np.array([0, 1, 2, 12]))], 10)
    assert stats["labels_out_of_range"] == 1 and stats["num_examples"] == 4
    found = validate.split_anomalies("train", stats, metadata_count=5, header_count=4)
    assert "train: 4 examples but TFDS's metadata says 5" in found
    assert "train: 1 label(s) outside 0-9" in found
    assert "train: class(es) 3, 4, 5, 6, 7, 8, 9 missing (no examples)" in found
    assert not any("IDX header" in a for a in found)
