"""Records name files inside the workdir relative to it and everything else as given (components.portable)."""

from __future__ import annotations

import os

import pytest

from components.portable import portable, portable_value, root_holding


def test_a_path_inside_the_root_is_relative_and_one_outside_it_or_remote_is_as_given(tmp_path):
    root = tmp_path / "w"
    assert portable(root / "runs" / "r1" / "export" / "saved_model", root) == "runs/r1/export/saved_model"
    assert portable(root, root) == "."
    assert portable(f"{root}/runs/r1/score/predictions-*.jsonl", root) == "runs/r1/score/predictions-*.jsonl"
    assert portable(tmp_path / "idx", root) == os.fspath(tmp_path / "idx")
    assert portable(f"{root}-old/data", root) == f"{root}-old/data"  # a sibling sharing the prefix is outside
    assert portable("gs://bucket/scores", root) == "gs://bucket/scores"
    assert portable(root / "data", None) == os.fspath(root / "data")  # no root: absolute, as before


def test_a_root_reached_through_a_symlink_matches_its_real_path(tmp_path):
    real = tmp_path / "real"
    (real / "data").mkdir(parents=True)
    link = tmp_path / "link"
    try:
        link.symlink_to(real, target_is_directory=True)
    except OSError:
        pytest.skip("no symlinks here")
    assert portable(real / "data", link) == "data" and portable(link / "data", link) == "data"


def test_a_record_keeps_only_the_absolute_paths_outside_the_root_and_other_strings_untouched(tmp_path):
    root = tmp_path / "w"
    record = {"inputs": {f"{root}/data/test.tfrecord": {"read": 2}}, "source": os.fspath(tmp_path / "idx"),
              "reason": "accuracy 0.9", "split": "data", "files": [f"{root}/a.csv"], "count": 3}
    assert portable_value(record, root) == {
        "inputs": {"data/test.tfrecord": {"read": 2}}, "source": os.fspath(tmp_path / "idx"),
        "reason": "accuracy 0.9", "split": "data", "files": ["a.csv"], "count": 3}
    assert portable_value(record, None) is record


def test_a_record_written_outside_the_root_keeps_absolute_paths(tmp_path):
    root = tmp_path / "w"
    assert root_holding(root / "runs" / "r1" / "score", root) == root
    assert root_holding(tmp_path / "models", root) is None
    assert root_holding("gs://bucket/scores", root) is None
    assert root_holding(root / "x", None) is None
