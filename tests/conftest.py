"""Shared fixtures: tiny IDX files and CIFAR-10 archives written by the tests, and the real data when it is there."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_MNIST_DIR = REPO_ROOT.parent / "shared" / "data" / "mnist"

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def write_idx_images(path: Path, images: np.ndarray, *, magic: int = 2051, count: int | None = None) -> None:
    n, rows, cols = images.shape
    header = struct.pack(">IIII", magic, n if count is None else count, rows, cols)
    with gzip.open(path, "wb") as fh:
        fh.write(header + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray, *, magic: int = 2049, count: int | None = None) -> None:
    header = struct.pack(">II", magic, len(labels) if count is None else count)
    with gzip.open(path, "wb") as fh:
        fh.write(header + labels.astype(np.uint8).tobytes())


def synthetic_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n 28x28 uint8 images whose class is learnable (a bright bar at a label-dependent row), labels 0-9."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        row = 3 + 2 * int(label)
        images[i, row : row + 2, 4:24] = 255
    return images, labels.astype(np.uint8)


def write_idx_dir(directory: Path, n_train: int = 200, n_test: int = 50, seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tr_x, tr_y = synthetic_digits(n_train, seed)
    te_x, te_y = synthetic_digits(n_test, seed + 1)
    write_idx_images(directory / IDX_FILES["train_images"], tr_x)
    write_idx_labels(directory / IDX_FILES["train_labels"], tr_y)
    write_idx_images(directory / IDX_FILES["test_images"], te_x)
    write_idx_labels(directory / IDX_FILES["test_labels"], te_y)
    return directory


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    """A folder of the four IDX .gz files: 200 train and 50 test synthetic digits."""
    return write_idx_dir(tmp_path / "idx")


@pytest.fixture
def real_mnist_dir() -> Path:
    if not (REAL_MNIST_DIR / IDX_FILES["train_images"]).is_file():
        pytest.skip(f"real MNIST IDX files not found in {REAL_MNIST_DIR} (they come with ../shared/data/mnist)")
    return REAL_MNIST_DIR


@pytest.fixture(scope="session")
def trained_keras_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `seed` CNN trained for 3 epochs on 300 synthetic digits (learnable: >90% on them), as model.keras."""
    from components.model import build_model

    images, labels = synthetic_digits(300, seed=7)
    model = build_model("seed", seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images[..., np.newaxis].astype(np.float32) / 255.0, labels.astype(np.int64), epochs=3, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("trained") / "model.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def saved_model_dir(trained_keras_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`trained_keras_model_path` exported by `components.export.run`: the three signatures and warmup file.

    Session-scoped and shared: treat it as read-only (copy it before changing anything in it).
    """
    from components import export

    warmup = synthetic_digits(4, seed=8)[0][..., np.newaxis].astype(np.float32) / 255.0
    out = export.run(trained_keras_model_path, tmp_path_factory.mktemp("export") / "saved_model", warmup_images=warmup)
    return out.saved_model_dir


CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
REAL_CIFAR_ENV = "CIFAR10_ARCHIVE"  # path of the real cifar-10-binary.tar.gz for the slow tests


def synthetic_colour(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n 32x32x3 uint8 images whose class is learnable (a bright bar at a label-dependent row, in a
    label-dependent colour), labels 0-9."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(n, 32, 32, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        row = 3 + 2 * int(label)
        images[i, row : row + 2, 4:28, int(label) % 3] = 255
    return images, labels.astype(np.uint8)


def cifar_records(images: np.ndarray, labels: np.ndarray) -> bytes:
    """CIFAR-10's binary format: per image one label byte, then the red, green and blue 32x32 planes."""
    planes = np.asarray(images, np.uint8).transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([np.asarray(labels, np.uint8)[:, None], planes], axis=1).tobytes()


def write_cifar_archive(path: Path, n_train: int = 50, n_test: int = 20, seed: int = 0, *,
                        extracted: bool = False, names: list[str] | None = None) -> Path:
    """A tiny CIFAR-10 archive in the official layout (cifar-10-batches-bin/: data_batch_1..5.bin split the
    train images, test_batch.bin, batches.meta.txt): the .tar.gz at `path`, or with `extracted` the folder."""
    import io
    import tarfile

    tr_x, tr_y = synthetic_colour(n_train, seed)
    te_x, te_y = synthetic_colour(n_test, seed + 1)
    files = {name: cifar_records(x, y) for name, x, y in zip(
        CIFAR_TRAIN_FILES, np.array_split(tr_x, 5), np.array_split(tr_y, 5))}
    files["test_batch.bin"] = cifar_records(te_x, te_y)
    files["batches.meta.txt"] = ("\n".join(names or CIFAR_NAMES) + "\n\n").encode()
    if extracted:
        folder = path / "cifar-10-batches-bin"
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def cifar_archive(tmp_path: Path) -> Path:
    """A tiny cifar-10-binary.tar.gz: 50 train and 20 test synthetic colour images."""
    return write_cifar_archive(tmp_path / "cifar" / "cifar-10-binary.tar.gz")


@pytest.fixture
def real_cifar_archive() -> Path:
    path = os.environ.get(REAL_CIFAR_ENV)
    if not path:
        pytest.skip(f"the real CIFAR-10 archive cannot be fetched on these machines; set {REAL_CIFAR_ENV} to the path "
                    "of cifar-10-binary.tar.gz to run this test")
    return Path(path)
