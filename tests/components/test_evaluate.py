"""Evaluation of the exported SavedModel on the test split, and the blessing both ways."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from components import evaluate
from components.params import DataConfig, EvaluateConfig
from pipeline.errors import ModelError
from tests.conftest import write_idx_dir


@pytest.fixture(scope="module")
def prepared_data_dir(tmp_path_factory) -> Path:
    """A TFDS data_dir with synthetic MNIST (200 train, 120 test) ingested from IDX files."""
    from components import ingest

    root = tmp_path_factory.mktemp("evaluate_data")
    idx = write_idx_dir(root / "idx", n_train=200, n_test=120, seed=5)
    return ingest.run(DataConfig(source_dir=str(idx)), root / "data").data_dir


@pytest.fixture(scope="module")
def evaluated(saved_model_dir, prepared_data_dir, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("run") / "evaluate"
    return evaluate.run(EvaluateConfig(accuracy_threshold=0.5), saved_model_dir, prepared_data_dir, "mnist", out_dir)


def test_metrics_json_has_loss_accuracy_per_class_scores_and_confusion_matrix(evaluated):
    metrics = json.loads(evaluated.metrics_path.read_text())
    assert metrics["num_examples"] == 120 == evaluated.num_examples
    assert metrics["accuracy"] == pytest.approx(evaluated.accuracy)
    assert evaluated.accuracy > 0.8  # the synthetic digits are learnable; the fixture's model learned them
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 120
    assert np.trace(matrix) / matrix.sum() == pytest.approx(metrics["accuracy"])
    assert set(metrics["per_class"]) == {str(c) for c in range(10)}
    assert sum(c["support"] for c in metrics["per_class"].values()) == 120
    assert metrics["loss"] > 0 and metrics["baseline"] is None


def test_evaluation_agrees_with_the_keras_model(evaluated, trained_keras_model_path, prepared_data_dir):
    import keras

    from components import data

    model = keras.models.load_model(trained_keras_model_path)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    loss, accuracy = model.evaluate(data.split_dataset(prepared_data_dir, "mnist", "test", batch_size=64), verbose=0)
    assert evaluated.accuracy == pytest.approx(accuracy, abs=1e-6)
    assert evaluated.loss == pytest.approx(loss, rel=1e-3)


def test_plots_are_written(evaluated):
    names = sorted(p.name for p in evaluated.plot_paths)
    assert names == ["confusion_matrix.png", "misclassified.png", "test_samples.png"]
    for path in evaluated.plot_paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_blessed_above_threshold_without_baseline(evaluated):
    blessing = json.loads(evaluated.blessing_path.read_text())
    assert blessing["blessed"] is evaluated.blessed is True
    assert "no pushed version" in blessing["reason"]


def test_not_blessed_below_threshold_is_a_recorded_outcome(saved_model_dir, prepared_data_dir, tmp_path):
    out = evaluate.run(EvaluateConfig(accuracy_threshold=1.01 - 1e-9), saved_model_dir, prepared_data_dir, "mnist",
                       tmp_path / "evaluate")
    assert out.blessed is False
    blessing = json.loads(out.blessing_path.read_text())
    assert blessing["blessed"] is False and "below the threshold" in blessing["reason"]
    assert out.metrics_path.is_file()


def test_bless_compares_with_the_baseline_within_tolerance():
    config = EvaluateConfig(accuracy_threshold=0.9, tolerance=0.01)
    assert evaluate.bless(0.95, None, config)[0] is True
    assert evaluate.bless(0.95, 0.955, config)[0] is True  # worse, but within tolerance
    ok, reasons = evaluate.bless(0.95, 0.97, config)
    assert ok is False and "worse than the pushed version" in reasons[-1]
    assert evaluate.bless(0.89, 0.5, config)[0] is False


def test_worse_than_the_pushed_version_is_not_blessed(
    saved_model_dir, prepared_data_dir, tmp_path, trained_keras_model_path
):
    # The baseline is the same model: equal accuracy is blessed; with a negative tolerance it is "worse".
    config = EvaluateConfig(accuracy_threshold=0.5, tolerance=0.0)
    same = evaluate.run(config, saved_model_dir, prepared_data_dir, "mnist", tmp_path / "a", baseline_dir=saved_model_dir)
    assert same.blessed and same.baseline_accuracy == pytest.approx(same.accuracy)

    # A genuinely worse candidate: an untrained model of the same architecture, against the trained baseline.
    from components import export
    from components.model import build_model

    untrained = tmp_path / "untrained.keras"
    build_model("seed", seed=1).save(untrained)
    worse_dir = export.run(untrained, tmp_path / "worse" / "saved_model").saved_model_dir
    out = evaluate.run(dataclasses.replace(config, accuracy_threshold=0.0), worse_dir, prepared_data_dir, "mnist",
                       tmp_path / "b", baseline_dir=saved_model_dir)
    assert out.blessed is False
    assert out.baseline_accuracy > out.accuracy
    assert "worse than the pushed version" in json.loads(out.blessing_path.read_text())["reason"]
    metrics = json.loads(out.metrics_path.read_text())
    assert metrics["baseline"]["accuracy"] == pytest.approx(out.baseline_accuracy)


@pytest.mark.parametrize("damage", ["no_saved_model_pb", "garbage_pb", "no_variables"])
def test_corrupt_or_partial_saved_model_is_a_model_error_naming_the_path(
    damage, saved_model_dir, prepared_data_dir, tmp_path
):
    broken = tmp_path / "broken_model"
    shutil.copytree(saved_model_dir, broken)
    if damage == "no_saved_model_pb":
        (broken / "saved_model.pb").unlink()
    elif damage == "garbage_pb":
        (broken / "saved_model.pb").write_bytes(b"\x00garbage" * 10)
    else:
        shutil.rmtree(broken / "variables")
    with pytest.raises(ModelError, match="broken_model"):
        evaluate.run(EvaluateConfig(accuracy_threshold=0.99), broken, prepared_data_dir, "mnist", tmp_path / "evaluate")
    assert not (tmp_path / "evaluate" / "metrics.json").exists()


def test_training_curves_are_drawn_from_the_trainers_history(saved_model_dir, prepared_data_dir, tmp_path):
    history = tmp_path / "history.json"
    history.write_text(json.dumps({"epoch": [1, 2], "loss": [1.0, 0.5], "val_loss": [1.1, 0.6],
                                   "accuracy": [0.6, 0.8], "val_accuracy": [0.5, 0.7], "learning_rate": [1e-3, 1e-3]}))
    out = evaluate.run(EvaluateConfig(accuracy_threshold=0.99), saved_model_dir, prepared_data_dir, "mnist",
                       tmp_path / "evaluate", history_path=history)
    curves = tmp_path / "evaluate" / "training_curves.png"
    assert curves in out.plot_paths and curves.read_bytes()[:4] == b"\x89PNG"
