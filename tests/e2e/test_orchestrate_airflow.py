"""The generated Airflow DAG run by Airflow itself (`airflow dags test`, SQLite metadata DB, no scheduler) on tiny
data: a failed task fails the DAG run with the stage's message, and the next DAG run reuses what finished."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cli, paths
from pipeline.store import RunStore
from tests.conftest import REPO_ROOT, write_idx_dir

pytestmark = pytest.mark.skipif(importlib.util.find_spec("airflow") is None,
                                reason="needs the airflow extra: pip install -e '.[airflow]'")

STAGES = ["ingest", "validate", "train", "export", "evaluate", "push", "score", "serving_check", "report"]


def tiny_config(path: Path, source: Path, **push: str) -> Path:
    """The smallest pipeline that goes through every stage: 200 synthetic digits, one epoch, always blessed."""
    extra = "".join(f'{k} = "{v}"\n' for k, v in push.items())
    path.write_text(f'[data]\nsource_dir = "{source}"\n'
                    '[train]\narchitecture = "seed"\nepochs = 1\nmax_train_examples = 200\n'
                    '[evaluate]\naccuracy_threshold = 0.0\n'
                    f"[push]\n{extra}")
    return path


def command_env(**extra: str) -> dict[str, str]:
    """This interpreter's bin folder first on PATH: the `airflow` and `mnist-pipeline` of this environment."""
    bin_dir = os.fspath(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": os.fspath(REPO_ROOT), **extra}


def _airflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), "airflow"), *args], env=env, cwd=env["AIRFLOW_HOME"],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.timeout(900)
def test_airflow_dag_runs_every_stage_and_a_rerun_reuses_the_stages_that_finished(tmp_path, capsys):
    workdir = tmp_path / "w"
    blocker = tmp_path / "models"  # a file where push wants its model base folder: push fails, nothing before it
    blocker.write_text("not a folder")
    config = tiny_config(tmp_path / "pipeline.toml", write_idx_dir(tmp_path / "idx"), model_base_path=str(blocker))
    assert cli.main(["orchestrate", "airflow", "--output", str(tmp_path / "dags"), "--config", str(config),
                     "--workdir", str(workdir), "--retries", "0", "-q"]) == 0
    home = tmp_path / "airflow"
    home.mkdir()
    env = command_env(AIRFLOW_HOME=os.fspath(home), AIRFLOW__CORE__DAGS_FOLDER=os.fspath(tmp_path / "dags"),
                      AIRFLOW__CORE__LOAD_EXAMPLES="False")
    migrated = _airflow(env, "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]

    failed = _airflow(env, "dags", "test", "mnist_pipeline")
    log = failed.stdout + failed.stderr
    assert failed.returncode != 0, "the DAG run must fail"
    assert "mnist-pipeline orchestrate: error: stage push failed:" in log, log[-5000:]  # the push task's log
    assert "state=failed" in log, log[-3000:]
    with RunStore(paths.store_path(workdir)) as store:
        (run,) = store.list_runs()
        assert run.status == "failed" and run.failed_stage == "push"
        assert run.id.startswith("airflow-mnist_pipeline-")
        first = {ex.stage: ex for ex in store.executions(run.id)}
    assert list(first) == STAGES[:6]
    assert first["push"].status == "failed"
    who = first["train"].properties["orchestrator"]
    assert who["name"] == "airflow" and who["task"] == "train" and who["attempt"] == 1
    assert who["dag_run"].startswith("mnist_pipeline-")

    blocker.unlink()
    rerun = _airflow(env, "dags", "test", "mnist_pipeline")
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-5000:]
    with RunStore(paths.store_path(workdir)) as store:
        latest = store.list_runs()[0]
        assert latest.id != run.id and latest.status == "succeeded"
        second = {ex.stage: ex for ex in store.executions(latest.id)}
    assert list(second) == STAGES
    assert {s for s, ex in second.items() if ex.status == "cached"} == set(STAGES[:5])
    assert {s for s, ex in second.items() if ex.status == "succeeded"} == set(STAGES[5:])
    assert second["push"].properties["orchestrator"]["dag_run"] != who["dag_run"]
    assert "orchestrator" not in second["train"].properties or \
        second["train"].properties["orchestrator"]["dag_run"] != who["dag_run"], "a cache hit names its own task"

    capsys.readouterr()
    assert cli.main(["runs", "--workdir", str(workdir), "--run-id", latest.id]) == 0
    shown = capsys.readouterr().out
    assert all(stage in shown for stage in STAGES)
    assert cli.main(["lineage", "1", "--workdir", str(workdir), "--config", str(config)]) == 0
    assert f"run:          {latest.id}" in capsys.readouterr().out
