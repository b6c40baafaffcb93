"""`mnist-pipeline orchestrate`: the task graph comes from the stage table, DAG run ids become valid run ids,
bad input fails at generation with one line, and nothing on the way imports an orchestrator's SDK."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from pipeline import cli, paths
from pipeline.errors import ConfigError
from pipeline.orchestrate import Task, config_from_json, config_json, run_id_for, stage_graph
from pipeline.stage_api import Input, StageSpec
from pipeline.stages import default_stages
from tests.conftest import REPO_ROOT


def _ancestors(tasks: list[Task]) -> dict[str, set[str]]:
    up = {t.stage: set(t.upstream) for t in tasks}
    seen: dict[str, set[str]] = {}
    for t in tasks:
        seen[t.stage] = set().union(*([up[t.stage]] + [seen[u] for u in up[t.stage]]))
    return seen


def test_every_stage_is_a_task_after_the_stages_it_takes_inputs_from():
    specs = default_stages()
    tasks = stage_graph(specs)
    assert [t.stage for t in tasks] == [s.name for s in specs]
    before = _ancestors(tasks)
    for spec in specs:
        for inp in spec.inputs:
            if inp.stage is not None:
                assert inp.stage in before[spec.name], (spec.name, inp.name)
    # score reads the pushed model (a resolver): it must wait for push, as in `run`.
    assert "push" in before["score"]
    assert before["report"] == {s.name for s in specs[:-1]}


def test_a_new_stage_in_the_table_becomes_a_task_without_an_edit_elsewhere():
    def noop(ctx):
        raise AssertionError("never run here")

    specs = [StageSpec("a", noop), StageSpec("b", noop, inputs=(Input("x", "a"),)),
             StageSpec("c", noop, inputs=(Input("y", "a"),)), StageSpec("d", noop, inputs=(Input("z", "b"), Input("w", "c")))]
    assert stage_graph(specs) == [Task("a", ()), Task("b", ("a",)), Task("c", ("a",)), Task("d", ("b", "c"))]
    # Leaving b and c out keeps d after a; each task lists only its nearest upstream tasks.
    assert stage_graph(specs, skip=["b", "c"]) == [Task("a", ()), Task("d", ("a",))]


def test_an_unknown_stage_fails_with_the_known_ones():
    with pytest.raises(ConfigError, match="unknown stage 'bogus'; stages are: ingest, validate"):
        stage_graph(default_stages(), ["ingest", "bogus"])


@pytest.mark.parametrize("dag_run", ["mnist_pipeline-manual__2026-12-04T14:46:40.158927+00:00",
                                     "mnist-pipeline-20261204144846", "x" * 300, "../../etc"])
def test_a_dag_run_id_becomes_one_stable_valid_run_id(dag_run):
    run_id = run_id_for("airflow", dag_run)
    assert paths.check_run_id(run_id) == run_id
    assert run_id == run_id_for("airflow", dag_run), "a retried task must land in the same run"
    assert run_id.startswith("airflow-")


def test_dag_runs_that_differ_only_in_unsafe_characters_get_different_run_ids():
    unsafe, safe = "d-manual__2026-12-04T14:46:40+00:00", "d-manual__2026-12-04T14-46-40-00-00"
    assert run_id_for("airflow", unsafe) != run_id_for("airflow", safe)
    assert run_id_for("kfp", "job-1") == "kfp-job-1"


def test_the_configuration_survives_the_trip_through_the_orchestrator(tmp_path):
    config = cli.load_config(None, {"train.epochs": 3, "data.dataset": "fashion_mnist"})
    back = config_from_json(config_json(config), str(tmp_path))
    assert back.to_dict() == {**config.to_dict(), "workdir": str(tmp_path)}
    with pytest.raises(ConfigError, match="train.epochz|epochz"):
        config_from_json(json.dumps({"train": {"epochz": 3}}), str(tmp_path))
    with pytest.raises(ConfigError, match="not JSON"):
        config_from_json("{", str(tmp_path))


def test_the_airflow_dag_file_lists_the_stage_graph_and_imports_only_airflow(tmp_path, capsys):
    assert cli.main(["orchestrate", "airflow", "--output", str(tmp_path / "dags"), "--workdir", str(tmp_path / "w"),
                     "--retries", "3"]) == 0
    assert "9 tasks" in capsys.readouterr().out
    source = (tmp_path / "dags" / "mnist_pipeline.py").read_text()
    tree = ast.parse(source)
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "datetime", "json", "airflow"}, imported
    constants = {t.id: n.value for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    stages = ast.literal_eval(constants["STAGES"])
    assert [(s, tuple(up)) for s, up in stages] == [(t.stage, t.upstream) for t in stage_graph(default_stages())]
    assert ast.literal_eval(constants["WORKDIR"]) == str(tmp_path / "w")
    assert ast.literal_eval(constants["RETRIES"]) == 3
    assert "schedule=None" in source


@pytest.mark.parametrize("argv, message", [
    (["orchestrate", "airflow", "--output", "OUT", "--stages", "ingest,trian"], "unknown stage 'trian'"),
    (["orchestrate", "kfp", "--output", "OUT/p.yaml", "--config", "CONFIG"], "train.epochz"),
    (["orchestrate", "airflow"], "needs --output"),
    (["orchestrate", "airflow", "--output", "OUT", "--image", "x:1"], "--image does not apply to orchestrate airflow"),
    (["orchestrate", "airflow", "--output", "OUT", "--name", "../dags"], "not a usable name"),
    (["orchestrate", "task", "--stage", "train"], "needs --orchestrator, --dag-run"),
    (["orchestrate", "task", "--stage", "nope", "--orchestrator", "airflow", "--dag-run", "r"], "unknown stage 'nope'"),
])
def test_bad_input_fails_with_one_line_before_anything_is_written(tmp_path, capsys, argv, message):
    config = tmp_path / "bad.toml"
    config.write_text("[train]\nepochz = 3\n")
    argv = [a.replace("OUT", str(tmp_path / "out")).replace("CONFIG", str(config)) for a in argv]
    assert cli.main([*argv, "--workdir", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "w" / "metadata.sqlite").exists()


def test_help_and_generation_import_no_orchestrator_sdk_nor_tensorflow(tmp_path):
    code = ("import sys; from pipeline import cli; cli.main(['orchestrate', 'airflow', '--output', sys.argv[1], '-q']); "
            "print(sorted(m for m in ('airflow', 'kfp', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_cache_hit_keeps_what_the_stage_produced_but_not_who_ran_the_earlier_execution(tmp_path):
    from pipeline.runner import RAN_BY, run_pipeline
    from pipeline.store import RunStore
    from tests.pipeline.test_runner import FakeStages, _config

    fake = FakeStages()
    first = run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1", ran_by={"name": "airflow", "task": "a"})
    with RunStore(paths.store_path(tmp_path / "w")) as store:
        assert store.executions(first.run_id)[0].properties == {"lines": 1, RAN_BY: {"name": "airflow", "task": "a"}}
    second = run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1")
    with RunStore(paths.store_path(tmp_path / "w")) as store:
        cached = store.executions(second.run_id)
    assert [ex.status for ex in cached] == ["cached"] * 3
    assert [ex.properties for ex in cached] == [{"lines": 1}, {"lines": 2}, {"lines": 3}]
