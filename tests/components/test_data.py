"""components.data and components.preprocessing: the tf.data input pipeline over a prepared TFDS dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from components import ingest
from components.params import DataConfig
from pipeline import paths
from pipeline.errors import DataError
from tests.conftest import write_idx_dir

tf = pytest.importorskip("tensorflow")

from components import data, preprocessing  # noqa: E402


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    source = write_idx_dir(root / "idx", n_train=200, n_test=50)
    return ingest.run(DataConfig(source_dir=str(source)), paths.data_dir(root / "work")).data_dir


def _keys(ds) -> list[bytes]:
    """Each example's image bytes (back to uint8): synthetic images are unique, so these identify examples."""
    keys = []
    for images, _ in ds:
        for image in (images.numpy() * 255).round().astype(np.uint8):
            keys.append(image.tobytes())
    return keys


def _split(data_dir: Path, seed: int = 42, **kwargs):
    return data.train_and_validation(data_dir, "mnist", batch_size=32, validation_fraction=0.2, seed=seed, **kwargs)


def test_batches_are_scaled_float_images_and_int_labels(data_dir: Path) -> None:
    train, _ = _split(data_dir)
    images, labels = next(iter(train))
    assert images.dtype == tf.float32 and images.shape == (32, 28, 28, 1)
    assert labels.dtype == tf.int64 and labels.shape == (32,)
    assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) == 1.0
    assert set(labels.numpy().tolist()) <= set(range(10))
    assert train.element_spec[0].shape.as_list() == [None, 28, 28, 1]


def test_validation_is_carved_from_train_seeded_disjoint_and_stable(data_dir: Path) -> None:
    train, val = _split(data_dir)
    train_keys, val_keys = _keys(train), _keys(val)
    assert len(train_keys) + len(val_keys) == 200
    assert 20 <= len(val_keys) <= 60  # about 20%
    assert not set(train_keys) & set(val_keys)
    everything = set(_keys(data.split_dataset(data_dir, "mnist", "train", batch_size=64)))
    test = set(_keys(data.split_dataset(data_dir, "mnist", "test", batch_size=64)))
    assert set(train_keys) | set(val_keys) == everything
    assert not set(val_keys) & test  # never from test

    # Stable across epochs and across calls; train is reshuffled each epoch but holds the same examples.
    assert _keys(val) == val_keys
    second_epoch = _keys(train)
    assert sorted(second_epoch) == sorted(train_keys) and second_epoch != train_keys
    _, val_again = _split(data_dir)
    assert _keys(val_again) == val_keys
    _, other_val = _split(data_dir, seed=7)
    assert set(_keys(other_val)) != set(val_keys)


def test_max_examples_limits_train_before_the_split(data_dir: Path) -> None:
    train, val = _split(data_dir, max_examples=50)
    assert len(_keys(train)) + len(_keys(val)) == 50


def test_split_dataset_is_the_whole_split(data_dir: Path) -> None:
    test = data.split_dataset(data_dir, "mnist", "test", batch_size=16)
    sizes = [int(images.shape[0]) for images, _ in test]
    assert sizes == [16, 16, 16, 2]
    assert data.num_examples(data_dir, "mnist", "test") == 50


def test_load_split_errors(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not prepared.*mnist-pipeline ingest"):
        data.load_split(tmp_path, "mnist", "train")
    with pytest.raises(DataError, match="no split 'validation'.*train"):
        data.load_split(data_dir, "mnist", "validation")
    with pytest.raises(DataError, match="unknown dataset 'nosuch'"):
        data.load_split(data_dir, "nosuch", "train")


def test_scale_images_shapes_and_range() -> None:
    raw = np.array([[0, 255] * 14] * 28, np.uint8)
    single = preprocessing.scale_images(raw)
    assert single.shape == (28, 28, 1) and single.dtype == tf.float32
    assert float(single[0, 0, 0]) == 0.0 and float(single[0, 1, 0]) == 1.0
    batch = preprocessing.scale_images(np.stack([raw[..., None]] * 3))
    assert batch.shape == (3, 28, 28, 1)


def test_decode_png_round_trip_and_wrong_size() -> None:
    image = np.arange(28 * 28, dtype=np.uint32).reshape(28, 28, 1).astype(np.uint8)
    png = tf.io.encode_png(image)
    np.testing.assert_array_equal(preprocessing.decode_png(png).numpy(), image)
    scaled = preprocessing.decode_and_scale_pngs(tf.stack([png, png]))
    assert scaled.shape == (2, 28, 28, 1)
    np.testing.assert_allclose(scaled[0].numpy(), image / 255.0, rtol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="28x28"):
        preprocessing.decode_png(tf.io.encode_png(np.zeros((20, 20, 1), np.uint8)))
