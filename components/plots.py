"""PNG plots of a run (matplotlib's Agg canvas, no display, no pyplot global state).

    plots.training_curves(history, out / "training_curves.png")        # Keras History.history-like dict
    plots.confusion_matrix(matrix, out / "confusion_matrix.png")
    plots.image_grid(images, labels, predictions, out / "test_samples.png", title="...")

Each file is drawn into a temporary file beside its target and renamed, so a plot is whole or absent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from components.atomic import atomic_path

log = logging.getLogger(__name__)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", bbox_inches="tight")
    log.info("wrote plot %s", path)
    return path


def training_curves(history: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Loss and accuracy per epoch, training and validation (keys as Keras names them: loss, val_loss, ...)."""
    from matplotlib.ticker import MaxNLocator

    panels = [(m, f"val_{m}") for m in ("loss", "accuracy") if m in history or f"val_{m}" in history]
    if not panels:
        raise ValueError(f"history has neither loss nor accuracy series (keys: {', '.join(history) or 'none'})")
    figure = _figure(5.0 * len(panels), 3.8)
    for i, (train_key, val_key) in enumerate(panels, start=1):
        ax = figure.add_subplot(1, len(panels), i)
        for key, label in ((train_key, "training"), (val_key, "validation")):
            values = list(history.get(key, []))
            if values:
                epochs = list(history.get("epoch", []))  # the trainer's epoch numbers, else 1..n
                x = epochs if len(epochs) == len(values) else range(1, len(values) + 1)
                ax.plot(x, values, marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(train_key)
        ax.set_title(train_key)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(figure, path)


def _name(index, class_names: Sequence[str] | None) -> str:
    """The label of class `index` in a plot: its name ("Coat"), or the index where there are no names."""
    i = int(index)
    if class_names is None or i >= len(class_names):
        return str(i)
    return str(class_names[i])


def confusion_matrix(matrix: np.ndarray, path: Path, *, class_names: Sequence[str] | None = None) -> Path:
    """Rows: true class, columns: predicted class; counts in the cells, colour on a log-like scale."""
    from matplotlib.colors import PowerNorm

    matrix = np.asarray(matrix)
    n = matrix.shape[0]
    names = [_name(i, class_names) for i in range(n)]
    figure = _figure(7.5 if any(len(x) > 2 for x in names) else 6.5, 6.0 if any(len(x) > 2 for x in names) else 5.5)
    ax = figure.add_subplot(1, 1, 1)
    image = ax.imshow(matrix, cmap="Blues", norm=PowerNorm(0.3, vmin=0, vmax=max(1, int(matrix.max()))))
    figure.colorbar(image, ax=ax)
    threshold = matrix.max() / 2 if matrix.max() else 1
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] > threshold else "black")
    long = any(len(x) > 2 for x in names)
    ax.set_xticks(range(n), names, rotation=45 if long else 0, ha="right" if long else "center")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix ({int(matrix.sum())} examples)")
    return _save(figure, path)


def image_grid(images: np.ndarray, labels: Sequence[int], predictions: Sequence[int], path: Path, *,
               title: str, columns: int = 5, class_names: Sequence[str] | None = None) -> Path:
    """Images with "predicted (true)" under each, as class names when given and they are not the indices
    themselves ("Coat (Shirt)"); wrong predictions in red. An empty set draws a note."""
    images = np.asarray(images)
    count = len(images)
    rows = max(1, -(-count // columns))
    figure = _figure(columns * 1.6, rows * 1.8 + 0.4)
    figure.suptitle(title)
    if count == 0:
        ax = figure.add_subplot(1, 1, 1)
        ax.axis("off")
        ax.text(0.5, 0.5, "none", ha="center", va="center")
    for i in range(count):
        ax = figure.add_subplot(rows, columns, i + 1)
        ax.imshow(images[i].reshape(images[i].shape[0], images[i].shape[1]), cmap="gray_r", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        right = int(predictions[i]) == int(labels[i])
        ax.set_xlabel(f"{_name(predictions[i], class_names)} ({_name(labels[i], class_names)})",
                      color="black" if right else "red", fontsize=8 if class_names else None)
    return _save(figure, path)
