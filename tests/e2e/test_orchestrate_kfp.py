"""The generated Kubeflow Pipelines v2 YAML: one task per stage with the stage table's dependencies, and run by
kfp.local (subprocess runner, no Docker, no cluster) on tiny data into one recorded run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import yaml

from pipeline import cli, paths
from pipeline.orchestrate import stage_graph
from pipeline.stages import default_stages
from pipeline.store import RunStore
from tests.conftest import write_idx_dir
from tests.e2e.test_orchestrate_airflow import STAGES, command_env, tiny_config

pytestmark = pytest.mark.skipif(importlib.util.find_spec("kfp") is None,
                                reason="needs the kfp extra: pip install -e '.[kfp]'")

RUN_LOCALLY = """
import sys
import kfp.local
from kfp import components
kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=sys.argv[2])
components.load_component_from_file(sys.argv[1])()
"""


def _task_name(stage: str) -> str:
    return stage.replace("_", "-")  # KFP's task names: serving_check -> serving-check


@pytest.mark.timeout(900)
def test_kfp_yaml_has_the_stage_graph_and_runs_every_stage_with_kfp_local(tmp_path, capsys):
    workdir = tmp_path / "w"
    config = tiny_config(tmp_path / "pipeline.toml", write_idx_dir(tmp_path / "idx"))
    yaml_path = tmp_path / "pipeline.yaml"
    assert cli.main(["orchestrate", "kfp", "--output", str(yaml_path), "--config", str(config),
                     "--workdir", str(workdir), "--image", "registry.example/mnist-pipeline:1", "-q"]) == 0

    spec = yaml.safe_load(yaml_path.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {_task_name(s) for s in STAGES}
    for task in stage_graph(default_stages()):
        entry = tasks[_task_name(task.stage)]
        assert sorted(entry.get("dependentTasks", [])) == sorted(_task_name(u) for u in task.upstream)
        assert entry["inputs"]["parameters"]["stage"]["runtimeValue"]["constant"] == task.stage
        assert entry["cachingOptions"].get("enableCache", False) is False, "KFP's cache would skip changed inputs"
        assert entry["retryPolicy"]["maxRetryCount"] == 2
    executors = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {"registry.example/mnist-pipeline:1"}
    assert spec["root"]["inputDefinitions"]["parameters"]["workdir"]["defaultValue"] == str(workdir)

    ran = subprocess.run([sys.executable, "-c", RUN_LOCALLY, str(yaml_path), str(tmp_path / "kfp_root")],
                         env=command_env(), cwd=tmp_path, capture_output=True, text=True, timeout=800)
    assert ran.returncode == 0, (ran.stdout + ran.stderr)[-5000:]
    with RunStore(paths.store_path(workdir)) as store:
        (run,) = store.list_runs()
        executions = store.executions(run.id)
    assert run.status == "succeeded" and run.id.startswith("kfp-mnist-pipeline-")
    assert [ex.stage for ex in executions] == STAGES
    assert all(ex.status == "succeeded" for ex in executions)
    assert {ex.properties["orchestrator"]["task"] for ex in executions} == {_task_name(s) for s in STAGES}
    capsys.readouterr()
    assert cli.main(["lineage", "1", "--workdir", str(workdir)]) == 0
    assert f"run:          {run.id}" in capsys.readouterr().out
