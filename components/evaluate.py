"""Evaluate stage: the EXPORTED SavedModel on the test split, and its blessing (as TFX's Evaluator gives it).

    out = evaluate.run(config.evaluate, saved_model_dir, data_dir, "mnist", run_dir / "evaluate",
                       baseline_dir=served.path if served else None)
    out.blessed, out.reason, out.accuracy

What is judged is what is served: the model is called through its `serving_default` signature on
`components.data.split_dataset(...)` batches. Blessed when test accuracy >= `accuracy_threshold` AND the
accuracy is not below the baseline's (the version pushed now, run on the same test set) by more than
`tolerance`. Not blessed is an outcome, recorded with its reasons in blessing.json, not an exception.

Writes (atomically) into `out_dir`: metrics.json (loss, accuracy, per-class precision/recall/F1 with each
class's name, confusion matrix, baseline), blessing.json, confusion_matrix.png, test_samples.png, misclassified.png, and
training_curves.png when the trainer's history is given.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components import plots
from components.atomic import atomic_write_json
from components.params import EvaluateConfig
from components.portable import portable
from pipeline.errors import ConfigError, DataError, ModelError
from serving import signatures as sig

log = logging.getLogger(__name__)

_BATCH_SIZE = 500
_SAMPLES = 25  # the tutorial's last step: a 5x5 grid of test images with predicted and true labels
_MISCLASSIFIED = 25
_EPSILON = 1e-7  # as Keras clips probabilities in its cross-entropy

METRICS_FILE = "metrics.json"
BLESSING_FILE = "blessing.json"


@dataclass(frozen=True)
class EvaluateOutput:
    metrics_path: Path
    blessing_path: Path
    accuracy: float
    loss: float
    num_examples: int
    blessed: bool
    reason: str
    baseline_accuracy: float | None
    plot_paths: tuple[Path, ...]


@dataclass(frozen=True)
class _Predictions:
    probabilities: np.ndarray  # float32 [n, 10]
    labels: np.ndarray  # int64 [n]
    sample_images: np.ndarray  # the first _SAMPLES images
    wrong_images: np.ndarray  # up to _MISCLASSIFIED misclassified images
    wrong_labels: np.ndarray
    wrong_predictions: np.ndarray


def run(
    config: EvaluateConfig,
    saved_model_dir: Path,
    data_dir: Path,
    dataset: str,
    out_dir: Path,
    *,
    baseline_dir: Path | None = None,
    history_path: Path | None = None,
    record_root: Path | None = None,
) -> EvaluateOutput:
    """Metrics and blessing of the SavedModel at `saved_model_dir`; see the module docstring.

    `history_path`: the trainer's history.json (Keras History.history); if it exists, training_curves.png too.
    `record_root`: metrics and blessing name the models relative to it when inside it (None: absolute).
    """
    from components import data

    saved_model_dir, out_dir = Path(saved_model_dir), Path(out_dir)
    if config.accuracy_threshold is None:
        raise ConfigError("evaluate.accuracy_threshold is not set; pipeline.config.resolve_defaults gives the dataset's")
    predict = load_serving_function(saved_model_dir)
    class_names = sig.read_class_names(saved_model_dir)  # what the model answers, so plots say "Coat", not 4
    test = data.split_dataset(data_dir, dataset, "test", batch_size=_BATCH_SIZE, max_examples=config.max_test_examples)
    candidate = _predict(predict, test, keep_images=True)
    if len(candidate.labels) == 0:
        raise DataError(f"the test split of {dataset!r} in {os.fspath(data_dir)!r} is empty; nothing to evaluate")
    metrics = classification_metrics(candidate.probabilities, candidate.labels, class_names)

    baseline_accuracy = None
    if baseline_dir is not None:
        baseline = _predict(load_serving_function(Path(baseline_dir)), test, keep_images=False)
        baseline_accuracy = classification_metrics(baseline.probabilities, baseline.labels)["accuracy"]
    blessed, reasons = bless(metrics["accuracy"], baseline_accuracy, config)
    reason = "; ".join(reasons)

    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    record: dict[str, Any] = {
        "saved_model_dir": portable(saved_model_dir, record_root),
        "dataset": dataset,
        "split": "test",
        "evaluated_at": now,
        **metrics,
        "baseline": None if baseline_dir is None else {
            "saved_model_dir": portable(baseline_dir, record_root), "accuracy": baseline_accuracy,
        },
    }
    blessing = {
        "blessed": blessed,
        "reason": reason,
        "accuracy": metrics["accuracy"],
        "accuracy_threshold": config.accuracy_threshold,
        "tolerance": config.tolerance,
        "baseline_accuracy": baseline_accuracy,
        "baseline_dir": None if baseline_dir is None else portable(baseline_dir, record_root),
        "saved_model_dir": portable(saved_model_dir, record_root),
        "evaluated_at": now,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = write_json(out_dir / METRICS_FILE, record)
    blessing_path = write_json(out_dir / BLESSING_FILE, blessing)

    predictions = candidate.probabilities.argmax(axis=1)
    plot_paths = (
        plots.confusion_matrix(np.array(metrics["confusion_matrix"]), out_dir / "confusion_matrix.png",
                               class_names=class_names),
        plots.image_grid(candidate.sample_images, candidate.labels[:_SAMPLES], predictions[:_SAMPLES],
                         out_dir / "test_samples.png", title="test images: predicted (true)", class_names=class_names),
        plots.image_grid(candidate.wrong_images, candidate.wrong_labels, candidate.wrong_predictions,
                         out_dir / "misclassified.png", class_names=class_names,
                         title=f"misclassified: {int((predictions != candidate.labels).sum())} of {len(predictions)}"),
    )
    if history_path is not None and Path(history_path).is_file():
        try:
            history = json.loads(Path(history_path).read_text())
            plot_paths += (plots.training_curves(history, out_dir / "training_curves.png"),)
        except (OSError, ValueError) as exc:  # the curves are a view of training, not part of the verdict
            log.warning("no training curves: %s cannot be used (%s)", history_path, exc)
    log.info("test accuracy %.4f, loss %.4f on %d examples; %s: %s",
             metrics["accuracy"], metrics["loss"], metrics["num_examples"],
             "blessed" if blessed else "NOT blessed", reason)
    return EvaluateOutput(metrics_path, blessing_path, metrics["accuracy"], metrics["loss"], metrics["num_examples"],
                          blessed, reason, baseline_accuracy, plot_paths)


def bless(accuracy: float, baseline_accuracy: float | None, config: EvaluateConfig) -> tuple[bool, list[str]]:
    """TFX Evaluator's two checks: an absolute threshold and no regression beyond `tolerance`."""
    reasons = []
    ok = True
    if accuracy >= config.accuracy_threshold:
        reasons.append(f"accuracy {accuracy:.4f} >= threshold {config.accuracy_threshold:.4f}")
    else:
        ok = False
        reasons.append(f"accuracy {accuracy:.4f} is below the threshold {config.accuracy_threshold:.4f}")
    if baseline_accuracy is None:
        reasons.append("no pushed version to compare with")
    elif accuracy >= baseline_accuracy - config.tolerance:
        reasons.append(f"not worse than the pushed version ({baseline_accuracy:.4f}) by more than {config.tolerance}")
    else:
        ok = False
        reasons.append(
            f"accuracy {accuracy:.4f} is worse than the pushed version's {baseline_accuracy:.4f} "
            f"by more than the tolerance {config.tolerance}"
        )
    return ok, reasons


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray,
                           class_names: list[str] | None = None) -> dict[str, Any]:
    """Loss (sparse categorical cross-entropy), accuracy, per-class precision/recall/F1 (keyed by class index,
    each with its name), confusion matrix, and the class names ("0".."9" when None)."""
    n = len(labels)
    k = sig.NUM_CLASSES
    predictions = probabilities.argmax(axis=1)
    picked = np.clip(probabilities[np.arange(n), labels], _EPSILON, 1.0 - _EPSILON)
    matrix = np.bincount(labels * k + predictions, minlength=k * k).reshape(k, k)  # rows true, columns predicted
    true_positives = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0)
    support = matrix.sum(axis=1)
    precision = np.divide(true_positives, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(true_positives, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    names = list(class_names) if class_names is not None else sig.default_class_names(k)
    per_class = {
        str(c): {"name": names[c], "precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                 "support": int(support[c])}
        for c in range(k)
    }
    return {
        "num_examples": int(n),
        "loss": float(-np.log(picked).mean()),
        "accuracy": float((predictions == labels).mean()),
        "per_class": per_class,
        "macro_avg": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())},
        "confusion_matrix": matrix.tolist(),
        "class_names": names,
    }


def load_serving_function(saved_model_dir: Path):
    """The SavedModel's serving_default function; a ModelError naming the path if it is missing or corrupt."""
    import tensorflow as tf

    where = os.fspath(saved_model_dir)
    if not (saved_model_dir / "saved_model.pb").is_file():
        raise ModelError(f"{where!r} is not a SavedModel (no saved_model.pb); run `mnist-pipeline export` first")
    try:
        loaded = tf.saved_model.load(where)
    except Exception as exc:  # TF raises OSError, DecodeError, NotFoundError, ... for a broken model
        raise ModelError(f"SavedModel {where!r} is corrupt or partial and cannot be loaded: {exc}") from exc
    function = loaded.signatures.get(sig.SERVING_DEFAULT)
    inputs = function.structured_input_signature[1] if function is not None else {}
    if function is None or sig.IMAGE_INPUT not in inputs:
        raise ModelError(f"SavedModel {where!r} has no {sig.SERVING_DEFAULT} signature with input {sig.IMAGE_INPUT!r}")

    def predict(images):
        # Looked up through `loaded` each time: the signature function alone does not keep the variables alive.
        try:
            outputs = loaded.signatures[sig.SERVING_DEFAULT](**{sig.IMAGE_INPUT: images})
        except Exception as exc:  # a model whose variables are missing fails here, not at load
            raise ModelError(f"SavedModel {where!r} failed to predict: {exc}") from exc
        return outputs[sig.PROBABILITIES_OUTPUT].numpy()

    return predict


def _predict(predict, test, *, keep_images: bool) -> _Predictions:
    probabilities, labels = [], []
    samples, wrong_images, wrong_labels, wrong_predictions = [], [], [], []
    kept_samples = kept_wrong = 0
    for images, batch_labels in test:
        p = predict(images)
        y = batch_labels.numpy().astype(np.int64)
        probabilities.append(p)
        labels.append(y)
        if keep_images:
            x = images.numpy()
            if kept_samples < _SAMPLES:
                samples.append(x[: _SAMPLES - kept_samples])
                kept_samples += len(samples[-1])
            if kept_wrong < _MISCLASSIFIED:
                predicted = p.argmax(axis=1)
                wrong = np.flatnonzero(predicted != y)[: _MISCLASSIFIED - kept_wrong]
                wrong_images.append(x[wrong])
                wrong_labels.append(y[wrong])
                wrong_predictions.append(predicted[wrong])
                kept_wrong += len(wrong)
    empty_images = np.zeros((0, sig.IMAGE_SIZE, sig.IMAGE_SIZE, 1), np.float32)
    return _Predictions(
        probabilities=np.concatenate(probabilities) if probabilities else np.zeros((0, sig.NUM_CLASSES), np.float32),
        labels=np.concatenate(labels) if labels else np.zeros((0,), np.int64),
        sample_images=np.concatenate(samples) if samples else empty_images,
        wrong_images=np.concatenate(wrong_images) if wrong_images else empty_images,
        wrong_labels=np.concatenate(wrong_labels) if wrong_labels else np.zeros((0,), np.int64),
        wrong_predictions=np.concatenate(wrong_predictions) if wrong_predictions else np.zeros((0,), np.int64),
    )


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write JSON through a temporary file in the same folder, then rename: whole or absent."""
    atomic_write_json(path, payload)
    log.info("wrote %s", path)
    return path
