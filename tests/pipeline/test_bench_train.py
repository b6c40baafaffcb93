"""bench/train.py's verdicts: a mean accuracy just under its target reads as missed, with the margin shown."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def train(monkeypatch):
    # bench/ after the project's folders: the script imports its helpers as top-level modules, and its pipeline.py
    # must not hide the project's pipeline package, which the script imports where needed.
    monkeypatch.setattr(sys, "path", [*sys.path, str(BENCH)])
    import train

    return train


def _row(architecture: str, seed: int, correct: int) -> dict:
    return dict(architecture=architecture, seed=seed, params=1, epochs=1, batch_size=1, precision="float32",
                test_accuracy=correct / 10_000, test_correct=correct, test_examples=10_000, train_seconds=100,
                examples_per_second=1, seconds_to_99=None, peak_rss_mib=1, serving_ms=1.0, cpu_steal=0.0,
                dataset="mnist")


def test_a_mean_just_under_the_target_prints_its_margin(train, capsys):
    # 2026-12-07's seeds on a 2-core EPYC: the mean, 99.6467%, printed "0.9965 >= 0.9965: missed by 0.00 points".
    train.summarize([_row("default", 0, 9958), _row("default", 1, 9965), _row("default", 2, 9971)])
    out = capsys.readouterr().out
    assert "mean test accuracy 99.647% >= 99.65%: missed by 0.003 points" in out
    assert "every seed's test accuracy (the lowest) 99.580% >= 99.6%: missed by 0.020 points" in out

    train.summarize([_row("default", 0, 9965), _row("default", 1, 9966)])
    assert "mean test accuracy 99.655% >= 99.65%: met" in capsys.readouterr().out


def test_a_datasets_line_prints_its_seeds_in_percent(train, capsys):
    # 2026-12-07's Fashion-MNIST seeds printed "(min 0.9088 max 0.9118; ...): 91.050% >= ...": two units in a line.
    rows = [dict(_row("default", s, c), dataset="fashion_mnist") for s, c in enumerate((9088, 9118, 9109))]
    train._against_dataset_target(rows, "fashion_mnist")
    assert capsys.readouterr().out == (
        "fashion_mnist default: test accuracy mean over 3 seed(s) (min 90.88% max 91.18%; 10000 test images): "
        "91.050% >= the blessing threshold 90%: met\n")
