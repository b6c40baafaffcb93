"""The run's PNG plots: written whole, from the data each stage has."""

from __future__ import annotations

import numpy as np
import pytest

from components import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_training_curves_from_a_keras_history(tmp_path):
    history = {"loss": [0.9, 0.4, 0.2], "val_loss": [0.8, 0.5, 0.3], "accuracy": [0.7, 0.9, 0.95],
               "val_accuracy": [0.72, 0.88, 0.93], "learning_rate": [0.001, 0.001, 0.0005]}
    path = plots.training_curves(history, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temporary file left


def test_training_curves_without_loss_or_accuracy_is_refused(tmp_path):
    with pytest.raises(ValueError, match="learning_rate"):
        plots.training_curves({"learning_rate": [0.1]}, tmp_path / "curves.png")
    assert not list(tmp_path.iterdir())


def test_confusion_matrix_and_image_grids(tmp_path):
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 50, size=(10, 10))
    assert plots.confusion_matrix(matrix, tmp_path / "cm.png").read_bytes()[:8] == PNG_MAGIC
    images = rng.random((7, 28, 28, 1)).astype(np.float32)
    grid = plots.image_grid(images, [1, 2, 3, 4, 5, 6, 7], [1, 2, 0, 4, 5, 6, 7], tmp_path / "grid.png", title="t")
    assert grid.read_bytes()[:8] == PNG_MAGIC
    empty = plots.image_grid(images[:0], [], [], tmp_path / "none.png", title="misclassified: 0 of 10")
    assert empty.read_bytes()[:8] == PNG_MAGIC
