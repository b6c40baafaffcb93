"""The run's PNG plots: written whole, from the data each stage has, showing what a reader looks for.

Each test reads the written PNG back (its size, that something is drawn on it) and inspects the matplotlib
Figure it was drawn from (titles, axis labels, the plotted values, the cell counts and the captions), caught
as `components.plots` hands it to its writer.
"""

from __future__ import annotations

import matplotlib.colors
import matplotlib.image
import numpy as np
import pytest

from components import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def drawn(monkeypatch):
    """The Figures the plots were drawn in, in order, as they were when written to their PNG files."""
    figures = []
    write = plots._save

    def keep(figure, path):
        figures.append(figure)
        return write(figure, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def _pixels(path):
    """The PNG as a reader sees it: (height, width, RGB) floats in [0, 1]."""
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    return image[:, :, :3]


def _assert_drawn(rgb, *, least_ink: float) -> None:
    """Not a blank canvas: a share of the pixels is clearly off the white background, and they vary."""
    ink = (rgb < 0.9).any(axis=2).mean()
    assert ink >= least_ink, f"only {ink:.1%} of the pixels are drawn on"
    assert rgb.std() > 0.02  # not one flat colour either


def test_training_curves_from_a_keras_history(tmp_path, drawn):
    history = {"loss": [0.9, 0.4, 0.2], "val_loss": [0.8, 0.5, 0.3], "accuracy": [0.7, 0.9, 0.95],
               "val_accuracy": [0.72, 0.88, 0.93], "learning_rate": [0.001, 0.001, 0.0005]}
    path = plots.training_curves(history, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temporary file left

    rgb = _pixels(path)
    height, width = rgb.shape[:2]
    assert 700 <= width <= 1100 and 250 <= height <= 450, (width, height)  # two panels side by side
    _assert_drawn(rgb, least_ink=0.03)

    (figure,) = drawn
    loss, accuracy = figure.axes
    for ax, metric in ((loss, "loss"), (accuracy, "accuracy")):
        assert ax.get_title() == metric
        assert ax.get_xlabel() == "epoch"
        assert ax.get_ylabel() == metric
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["training", "validation"]
        train, val = ax.get_lines()
        assert list(train.get_xdata()) == [1, 2, 3]
        assert list(train.get_ydata()) == history[metric]
        assert list(val.get_ydata()) == history[f"val_{metric}"]


def test_training_curves_use_the_trainers_epoch_numbers(tmp_path, drawn):
    # A resumed run's history says which epochs it holds; the x axis shows those.
    plots.training_curves({"loss": [0.5, 0.4], "epoch": [3, 4]}, tmp_path / "curves.png")
    (figure,) = drawn
    (ax,) = figure.axes
    assert ax.get_title() == "loss"
    assert list(ax.get_lines()[0].get_xdata()) == [3, 4]


def test_training_curves_without_loss_or_accuracy_is_refused(tmp_path):
    with pytest.raises(ValueError, match="learning_rate"):
        plots.training_curves({"learning_rate": [0.1]}, tmp_path / "curves.png")
    assert not list(tmp_path.iterdir())


def test_confusion_matrix_and_image_grids(tmp_path, drawn):
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 50, size=(10, 10))
    cm_path = plots.confusion_matrix(matrix, tmp_path / "cm.png")
    assert cm_path.read_bytes()[:8] == PNG_MAGIC
    images = rng.random((7, 28, 28, 1)).astype(np.float32)
    grid = plots.image_grid(images, [1, 2, 3, 4, 5, 6, 7], [1, 2, 0, 4, 5, 6, 7], tmp_path / "grid.png", title="t")
    assert grid.read_bytes()[:8] == PNG_MAGIC
    empty = plots.image_grid(images[:0], [], [], tmp_path / "none.png", title="misclassified: 0 of 10")
    assert empty.read_bytes()[:8] == PNG_MAGIC
    cm_figure, grid_figure, empty_figure = drawn

    # The confusion matrix: a square-ish picture in blues, every cell's count written in it.
    rgb = _pixels(cm_path)
    height, width = rgb.shape[:2]
    assert 450 <= width <= 750 and 400 <= height <= 650, (width, height)
    _assert_drawn(rgb, least_ink=0.2)
    hue = matplotlib.colors.rgb_to_hsv(rgb)
    blue = (hue[..., 1] > 0.3) & (0.5 < hue[..., 0]) & (hue[..., 0] < 0.7)
    assert blue.mean() > 0.1  # the "Blues" cells
    ax = cm_figure.axes[0]
    assert ax.get_title() == f"confusion matrix ({int(matrix.sum())} examples)"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(i) for i in range(10)]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cells == {(i, j): str(matrix[i, j]) for i in range(10) for j in range(10)}

    # The grid: seven images under the title, "predicted (true)" under each, the wrong one in red.
    rgb = _pixels(grid)
    _assert_drawn(rgb, least_ink=0.2)
    assert rgb.shape[1] > rgb.shape[0]  # five columns, two rows
    assert grid_figure.get_suptitle() == "t"
    captions = [(ax.get_xlabel(), matplotlib.colors.to_hex(ax.xaxis.label.get_color())) for ax in grid_figure.axes]
    assert captions == [("1 (1)", "#000000"), ("2 (2)", "#000000"), ("0 (3)", "#ff0000"), ("4 (4)", "#000000"),
                        ("5 (5)", "#000000"), ("6 (6)", "#000000"), ("7 (7)", "#000000")]
    assert all(len(ax.get_images()) == 1 for ax in grid_figure.axes)

    # Nothing to show: the title and a note, not an empty canvas.
    _assert_drawn(_pixels(empty), least_ink=0.005)
    assert empty_figure.get_suptitle() == "misclassified: 0 of 10"
    assert [t.get_text() for t in empty_figure.axes[0].texts] == ["none"]


def test_plots_name_the_classes_when_the_dataset_has_names(tmp_path, drawn):
    names = ["T-shirt/top", "Trouser", "Pullover"]
    plots.confusion_matrix(np.eye(3, dtype=int) * 5, tmp_path / "cm.png", class_names=names)
    images = np.zeros((2, 28, 28, 1), np.float32)
    plots.image_grid(images, [0, 2], [0, 1], tmp_path / "grid.png", title="samples", class_names=names)
    cm_figure, grid_figure = drawn
    ax = cm_figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert [ax.get_xlabel() for ax in grid_figure.axes] == ["T-shirt/top (T-shirt/top)", "Trouser (Pullover)"]
