"""A workdir is the unit a user moves: copied elsewhere with the original deleted, every command works on the
copy's own files (the run store keeps paths inside the workdir relative to it), a change to the copy is seen
there, and a file the store names but the copy lacks is a one-line error naming the stage that makes it."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from pipeline import cli, paths
from pipeline.store import RunStore
from serving import model_registry
from tests.conftest import write_idx_dir


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def moved(tmp_path_factory) -> dict:
    """`run` through every stage (tiny synthetic IDX data, the seed CNN for 1 epoch, blessing threshold 0) in
    one workdir, which is then copied elsewhere and deleted."""
    root = tmp_path_factory.mktemp("relocate")
    original, copy = root / "original", root / "elsewhere" / "copy"
    source = write_idx_dir(root / "idx", n_train=200, n_test=50)
    assert cli.main(["run", "--source-dir", str(source), "--workdir", str(original), "--architecture", "seed",
                     "--epochs", "1", "--accuracy-threshold", "0", "--max-train-examples", "200", "-q"]) == 0
    with RunStore(paths.store_path(original)) as store:
        run_id = store.list_runs()[0].id
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    return {"original": original, "copy": copy, "source": source, "run_id": run_id}


@pytest.fixture
def workdir(moved, tmp_path) -> Path:
    """A private copy of the moved workdir (moved once more), for the tests that change it."""
    return Path(shutil.copytree(moved["copy"], tmp_path / "w"))


def test_the_store_names_files_in_the_workdir_relative_to_it_and_the_source_where_it_is(moved):
    with sqlite3.connect(paths.store_path(moved["copy"])) as conn:
        uris = [row[0] for row in conn.execute("SELECT uri FROM artifacts")]
        texts = [row[0] for row in conn.execute("SELECT inputs || outputs || properties FROM executions")]
        texts += [row[0] for row in conn.execute("SELECT config FROM runs")]
    assert str(moved["source"]) in uris  # outside the workdir: absolute
    assert f"runs/{moved['run_id']}/export/saved_model" in uris and "serving/models/mnist/1" in uris
    assert not [t for t in [*uris, *texts] if str(moved["original"]) in t]
    with RunStore(paths.store_path(moved["copy"])) as store:
        for ex in store.executions(moved["run_id"]):
            for art in store.output_artifacts(ex.id).values():
                assert Path(art.uri).is_relative_to(moved["copy"]) and Path(art.uri).exists(), art.uri


def test_runs_and_lineage_read_the_copy(moved, capsys):
    copy = moved["copy"]
    code, out, err = _main(capsys, "runs", "--workdir", str(copy))
    assert code == 0, err
    assert moved["run_id"] in out and "succeeded" in out and "v1" in out
    code, out, err = _main(capsys, "runs", "--workdir", str(copy), "--run-id", moved["run_id"])
    assert code == 0, err
    assert str(copy / "runs" / moved["run_id"] / "export" / "saved_model") in out and str(moved["original"]) not in out
    code, out, err = _main(capsys, "lineage", "1", "--workdir", str(copy))
    assert code == 0, err
    assert f"model mnist version 1: {copy / 'serving' / 'models' / 'mnist' / '1'}" in out
    assert "no longer on disk" not in out and str(moved["original"]) not in out
    assert f"source:       {moved['source']}" in out
    code, out, err = _main(capsys, "versions", "--workdir", str(copy), "--json")
    assert code == 0, err
    assert '"served": true' in out and str(copy / "serving" / "models" / "mnist" / "1") in out
    assert str(moved["original"]) not in out  # the version's own record names its source inside the workdir


def test_the_copy_keeps_its_cache_and_evaluate_score_and_the_serving_check_run_on_its_files(workdir, capsys):
    base = ["--workdir", str(workdir), "-q"]
    code, out, err = _main(capsys, "export", *base)
    assert code == 0, err
    assert "export cached" in out  # the cache keys on paths relative to the workdir: a copy keeps its cache
    code, out, err = _main(capsys, "evaluate", "--threshold", "0", "--no-cache", *base)
    assert code == 0, err
    code, out, err = _main(capsys, "score", "--no-cache", *base)
    assert code == 0, err
    code, out, err = _main(capsys, "run", "--stages", "serving_check", "--no-cache", *base)
    assert code == 0, err
    with RunStore(paths.store_path(workdir)) as store:
        for stage in ("evaluate", "score", "serving_check"):
            ex = next(store.finished(stage))
            assert ex.status == "succeeded"
            for art in [*store.input_artifacts(ex.id).values(), *store.output_artifacts(ex.id).values()]:
                if art.type != "ExternalData":
                    assert Path(art.uri).is_relative_to(workdir), (stage, art.uri)
        assert next(store.finished("serving_check")).properties["passed"] is True


def test_push_force_reads_the_copys_export_and_refuses_it_corrupt(workdir, moved, capsys):
    saved_model = workdir / "runs" / moved["run_id"] / "export" / "saved_model"
    (saved_model / "saved_model.pb").write_bytes(b"not a SavedModel")
    code, out, err = _main(capsys, "push", "--force", "--workdir", str(workdir), "-q")
    assert code == 1
    assert str(saved_model) in err and "corrupt" in err and "Traceback" not in err
    assert [v.version for v in model_registry.list_versions(paths.model_base_path(workdir), "mnist")] == [1]


def test_a_missing_recorded_file_names_the_stage_that_makes_it_again(workdir, moved, capsys):
    model = workdir / "runs" / moved["run_id"] / "train" / "model.keras"
    model.unlink()
    code, out, err = _main(capsys, "export", "--no-cache", "--workdir", str(workdir), "-q")
    assert code == 1
    assert str(model) in err and "is not on disk" in err and "`mnist-pipeline train`" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_no_record_or_report_in_the_workdir_names_it_by_absolute_path(moved):
    """Every JSON record and the HTML report a stage writes names files inside the workdir relative to it, so
    the copy's records point at nothing of the original's (and still name the IDX source outside it)."""
    copy, original = moved["copy"], moved["original"]
    found = sorted(p for p in copy.rglob("*") if p.suffix in (".json", ".html") and p.is_file())
    assert {"statistics.json", "metrics.json", "blessing.json", "pushed.json", "summary.json", "serving_check.json",
            "report.html"} <= {p.name for p in found}
    absolute = [os.fspath(p.relative_to(copy)) for p in found if os.fspath(original) in p.read_text(errors="replace")]
    assert not absolute
    report = next(p for p in found if p.name == "report.html").read_text()
    assert os.fspath(moved["source"]) in report  # outside the workdir: named as given
