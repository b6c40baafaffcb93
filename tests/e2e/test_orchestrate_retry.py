"""An orchestrator's retry of a killed train task (the same command, the same DAG run) resumes training after
its last finished epoch, in the same pipeline run, instead of starting over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline import cli, paths
from pipeline.orchestrate import config_json, run_id_for
from pipeline.store import RunStore
from tests.conftest import REPO_ROOT, write_idx_dir
from tests.e2e.test_orchestrate_airflow import command_env

DAG_RUN = "mnist_pipeline-manual__2026-12-04T10:00:00+00:00"


def _task(stage: str, workdir, config: str, attempt: int) -> list[str]:
    return ["orchestrate", "task", "--stage", stage, "--orchestrator", "airflow", "--dag-run", DAG_RUN,
            "--task", stage, "--attempt", str(attempt), "--workdir", str(workdir), "--config-json", config]


@pytest.mark.timeout(600)
def test_a_retried_train_task_resumes_after_its_last_epoch(tmp_path):
    workdir = tmp_path / "w"
    config = config_json(cli.load_config(None, {
        "data.source_dir": str(write_idx_dir(tmp_path / "idx")), "train.architecture": "default",
        "train.epochs": 8, "train.batch_size": 16, "train.max_train_examples": 200}))
    for stage in ("ingest", "validate"):
        assert cli.main([*_task(stage, workdir, config, 1), "-q"]) == 0
    run_id = run_id_for("airflow", DAG_RUN)
    train_dir = paths.stage_dir(workdir, run_id, "train")
    metadata = train_dir / "backup" / "training_metadata.json"

    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *_task("train", workdir, config, 1)], cwd=REPO_ROOT,
                            env=command_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        backed_up = 0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                backed_up = json.loads(metadata.read_text())["epoch"]
                if backed_up >= 2:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        assert proc.poll() is None, "training ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)  # what an orchestrator's worker loss or OOM kill does
    finally:
        proc.kill()
        proc.wait()
    assert not (train_dir / "model.keras").exists()

    retry = subprocess.run([sys.executable, "-m", "pipeline", *_task("train", workdir, config, 2)], cwd=REPO_ROOT,
                           env=command_env(), capture_output=True, text=True, timeout=300)
    assert retry.returncode == 0, retry.stderr[-3000:]
    assert f"run {run_id}: train succeeded" in retry.stdout
    history = json.loads((train_dir / "history.json").read_text())
    assert history["epoch"] == list(range(1, 9)), "every epoch once, none repeated from scratch"
    with RunStore(paths.store_path(workdir)) as store:
        (run,) = store.list_runs()
        trains = [ex for ex in store.executions(run_id) if ex.stage == "train"]
    assert run.id == run_id and run.status == "succeeded"
    assert [ex.status for ex in trains] == ["failed", "succeeded"]
    assert "interrupted" in trains[0].error
    assert trains[0].properties["orchestrator"]["attempt"] == 1, "the killed attempt names itself too"
    # The last backup, or the one before it if the kill hit a save; never epoch 0.
    assert trains[1].properties["initial_epoch"] >= max(1, backed_up - 1)
    assert trains[1].properties["orchestrator"] == {"name": "airflow", "dag_run": DAG_RUN, "task": "train", "attempt": 2}
