"""One stage, one wiring: the stage commands are `mnist-pipeline run` restricted to their stage.

Each test here is a drift the two wirings once had (each passed on the old command path only by luck or not at
all): the stage commands now go through the runner, so they are locked, recorded and resolve their inputs as
`run` does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import cli, paths
from pipeline.lock import WorkdirLock
from pipeline.store import RunStore
from serving import model_registry


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory) -> Path:
    """A workdir where `ingest` and `train` (seed CNN, 1 epoch, tiny data) ran through the CLI."""
    from tests.conftest import write_idx_dir

    root = tmp_path_factory.mktemp("wiring")
    workdir = root / "w"
    source = write_idx_dir(root / "idx", n_train=200, n_test=50)
    assert cli.main(["ingest", "--source-dir", str(source), "--workdir", str(workdir), "-q"]) == 0
    assert cli.main(["train", "--workdir", str(workdir), "--architecture", "seed", "--epochs", "1", "-q"]) == 0
    return workdir


@pytest.fixture
def workdir(trained_workdir, tmp_path) -> Path:
    """A private copy of the trained workdir: the store keeps paths relative to it, so a copy reads its own files."""
    import shutil

    return Path(shutil.copytree(trained_workdir, tmp_path / "w"))


def test_stage_commands_chain_into_one_recorded_run_and_lineage_answers(workdir, capsys):
    base = ["--workdir", str(workdir)]
    code, out, err = _main(capsys, "export", *base, "-q")
    assert code == 0, err
    code, out, err = _main(capsys, "evaluate", *base, "--threshold", "0", "-q")
    assert code == 0, err
    assert "BLESSED" in out and "training_curves.png" in out  # the curves are drawn on the stage path too
    code, out, err = _main(capsys, "push", *base, "-q")
    assert code == 0, err
    assert "as version 1" in out

    with RunStore(paths.store_path(workdir)) as store:
        train_run = next(store.finished("train")).run_id
        stages = {ex.stage: ex.status for ex in store.executions(train_run)}
        assert {"train", "export", "evaluate", "push"} <= set(stages)  # one run, as `run` would record it
        assert store.get_run(train_run).status == "succeeded"

    code, out, err = _main(capsys, "lineage", "1", *base)
    assert code == 0, err
    assert f"run:          {train_run}" in out and "executions:" in out and "push" in out


def test_evaluate_never_uses_the_candidate_itself_as_baseline(workdir, capsys):
    base = ["--workdir", str(workdir)]
    for command in (["export"], ["evaluate", "--threshold", "0"], ["push"]):
        assert _main(capsys, *command, *base, "-q")[0] == 0
    # Version 1 now holds this very model: evaluating it again compares with the previous version (none),
    # never with itself.
    code, out, err = _main(capsys, "evaluate", *base, "--threshold", "0", "--no-cache", "-q")
    assert code == 0, err
    assert "no other pushed version to compare with" in out
    with RunStore(paths.store_path(workdir)) as store:
        ev = next(store.finished("evaluate"))
        blessing = json.loads(Path(store.output_artifacts(ev.id)["blessing"].uri).read_text())
    assert blessing["baseline_dir"] is None and blessing["baseline_accuracy"] is None


def test_a_stage_command_refuses_while_run_holds_the_workdir(workdir, capsys):
    with WorkdirLock(workdir, owner="mnist-pipeline run 20261201T000000Z-abcdef"):
        code, out, err = _main(capsys, "export", "--workdir", str(workdir), "-q")
    assert code == 1
    assert "mnist-pipeline run 20261201T000000Z-abcdef" in err and "Traceback" not in err
    assert not list(paths.runs_dir(workdir).glob("*/export"))


@pytest.mark.parametrize("path", ["command", "run"])
def test_push_checks_real_test_images_on_both_paths(workdir, capsys, monkeypatch, path):
    from components import data, push

    seen = {}
    real_run = push.run

    def spy(*args, **kwargs):
        seen["images"] = kwargs.get("check_images")
        return real_run(*args, **kwargs)

    monkeypatch.setattr(push, "run", spy)
    base = ["--workdir", str(workdir)]
    for command in (["export"], ["evaluate", "--threshold", "0"]):
        assert _main(capsys, *command, *base, "-q")[0] == 0
    if path == "command":
        code, _, err = _main(capsys, "push", *base, "-q")
    else:
        code, _, err = _main(capsys, "run", "--stages", "push", *base, "-q")
    assert code == 0, err
    expected = next(iter(data.split_dataset(paths.data_dir(workdir), "mnist", "test", batch_size=8, max_examples=8)))
    assert seen["images"] is not None
    np.testing.assert_array_equal(seen["images"], expected[0].numpy())
    assert [v.version for v in model_registry.list_versions(paths.model_base_path(workdir), "mnist")] == [1]


def test_run_stages_and_the_stage_command_give_the_same_result(workdir, capsys):
    base = ["--workdir", str(workdir)]
    assert _main(capsys, "run", "--stages", "export", *base, "-q")[0] == 0
    code, out, err = _main(capsys, "export", *base, "-q")
    assert code == 0, err
    assert "export cached" in out  # the same stage, inputs, configuration and code: a cache hit
    with RunStore(paths.store_path(workdir)) as store:
        runs = {ex.run_id: ex for run in store.list_runs() for ex in store.executions(run.id) if ex.stage == "export"}
        outputs = {store.output_artifacts(ex.id)["saved_model"].uri for ex in runs.values()}
    assert len(runs) == 2 and len(outputs) == 1


def test_push_refuses_a_blessing_of_another_model(workdir, capsys):
    base = ["--workdir", str(workdir)]
    for command in (["export"], ["evaluate", "--threshold", "0"]):
        assert _main(capsys, *command, *base, "-q")[0] == 0
    # A new export in a new run (no cache): its model was never evaluated, the blessing above is another's.
    assert _main(capsys, "run", "--stages", "export", "--no-cache", *base, "-q")[0] == 0
    code, _, err = _main(capsys, "run", "--stages", "push", *base, "-q")
    assert code == 1
    assert "not of the model to push" in err
    assert model_registry.list_versions(paths.model_base_path(workdir), "mnist") == []


def test_rollback_is_a_recorded_run_whose_lineage_leads_to_the_copied_version(workdir, capsys):
    base = ["--workdir", str(workdir)]
    for command in (["export"], ["evaluate", "--threshold", "0"], ["push"], ["push", "--force"]):
        code, _, err = _main(capsys, *command, *base, "-q")
        assert code == 0, err
    with RunStore(paths.store_path(workdir)) as store:
        train_run = next(store.finished("train")).run_id

    code, out, err = _main(capsys, "rollback", *base, "--to", "1", "-q")
    assert code == 0, err
    assert "version 3 (a copy of version 1) is now served instead of version 2" in out
    with RunStore(paths.store_path(workdir)) as store:
        rollback = next(store.finished("rollback"))
        assert rollback.run_id != train_run and store.get_run(rollback.run_id).status == "succeeded"
        assert rollback.properties["rolled_back_from"] == 2 and rollback.properties["copy_of_version"] == 1
        copied = store.input_artifacts(rollback.id)["pushed_model"]
        assert copied.properties["version"] == 1 and store.producer(copied.id).stage == "push"  # the push's own record
        [made] = store.find_pushed(3, "mnist")
        assert store.producer(made.id).id == rollback.id

    code, out, err = _main(capsys, "runs", *base)
    assert code == 0, err
    assert rollback.run_id in out and "rollback: copy of v1, was serving v2" in out

    code, out, err = _main(capsys, "lineage", "3", *base)
    assert code == 0, err
    assert "rollback:     a copy of version 1 (version 2 was served)" in out
    assert f"run:          {rollback.run_id}" in out
    executions = out.split("executions:")[1]
    assert "rollback" in executions and "push" in executions and f"train      run {train_run}" in executions


def test_rollback_refuses_while_a_run_holds_the_workdir(tmp_path, capsys):
    workdir = tmp_path / "w"
    for version in (1, 2):  # what rollback checks before it takes the lock: two versions to choose between
        model_registry.version_dir(paths.model_base_path(workdir), "mnist", version).mkdir(parents=True)
    with WorkdirLock(workdir, owner="mnist-pipeline run 20261201T000000Z-abcdef"):
        code, out, err = _main(capsys, "rollback", "--workdir", str(workdir), "-q")
    assert code == 1
    assert "in use by" in err and "mnist-pipeline run 20261201T000000Z-abcdef" in err and "Traceback" not in err
    assert [v.version for v in model_registry.list_versions(paths.model_base_path(workdir), "mnist")] == [1, 2]
    if paths.store_path(workdir).exists():
        with RunStore(paths.store_path(workdir)) as store:
            assert store.list_runs() == []  # refused before anything is recorded
