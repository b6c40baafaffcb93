"""The run store: runs, executions, artifacts and the lineage queries `runs` and `lineage` rely on."""

from __future__ import annotations

import json
import sqlite3

import pytest

from pipeline.store import Artifact, RunStore


def _record(store: RunStore, run_id: str, stage: str, inputs: dict, outputs: dict, *, key: str | None = None,
            status: str = "succeeded") -> int:
    ex = store.start_execution(run_id, stage, config_fingerprint="f-" + stage, code_version="git:abc",
                               inputs=inputs, cache_key=key)
    stored = store.finish_execution(ex, status, outputs=outputs, properties={"stage": stage})
    outputs.update(stored)
    return ex


def test_runs_and_executions_round_trip(tmp_path):
    with RunStore(tmp_path / "metadata.sqlite") as store:
        store.start_run("r1", {"workdir": "w", "train": {"epochs": 1}}, "git:abc")
        ex = _record(store, "r1", "ingest", {}, {"dataset": Artifact("/d/mnist/3.0.1", "Dataset", {"fingerprint": "x"})})
        store.finish_run("r1", "succeeded")
        run = store.get_run("r1")
        assert run.status == "succeeded" and run.ended and run.config["train"]["epochs"] == 1
        [execution] = store.executions("r1")
        assert execution.id == ex and execution.status == "succeeded" and execution.duration >= 0
        assert execution.outputs["dataset"]["uri"] == "/d/mnist/3.0.1"
        assert store.output_artifacts(ex)["dataset"].fingerprint == "x"


def test_failed_run_records_stage_and_error(tmp_path):
    with RunStore(tmp_path / "m.sqlite") as store:
        store.start_run("r1", {}, "v")
        ex = store.start_execution("r1", "train", config_fingerprint="f", code_version="v", inputs={}, cache_key="k")
        store.finish_execution(ex, "failed", error="boom")
        store.finish_run("r1", "failed", failed_stage="train", error="boom")
        run = store.list_runs()[0]
        assert (run.status, run.failed_stage, run.error) == ("failed", "train", "boom")
        assert store.find_cached("k") is None  # a failed execution is never a cache hit
        assert store.latest_unfinished_run().id == "r1"


def test_find_cached_returns_newest_succeeded(tmp_path):
    with RunStore(tmp_path / "m.sqlite") as store:
        store.start_run("r1", {}, "v")
        first = _record(store, "r1", "train", {}, {}, key="k1")
        second = _record(store, "r1", "train", {}, {}, key="k1")
        _record(store, "r1", "train", {}, {}, key="k2")
        assert store.find_cached("k1").id == second != first
        assert store.find_cached("nope") is None


def test_mark_interrupted_closes_running_records(tmp_path):
    with RunStore(tmp_path / "m.sqlite") as store:
        store.start_run("r1", {}, "v")
        store.start_execution("r1", "train", config_fingerprint="f", code_version="v", inputs={}, cache_key="k")
        assert store.mark_interrupted() == ["r1"]
        run = store.get_run("r1")
        assert run.status == "interrupted" and run.failed_stage == "train"
        assert store.executions("r1")[0].status == "failed"
        assert store.finished_stages("r1") == {}


def test_lineage_walks_from_pushed_version_to_source(tmp_path):
    with RunStore(tmp_path / "m.sqlite") as store:
        store.start_run("r1", {}, "git:abc")
        source = Artifact("/idx", "ExternalData", {"fingerprint": "s"})
        ds = {"dataset": Artifact("/data/mnist/3.0.1", "Dataset", {"version": "3.0.1"})}
        _record(store, "r1", "ingest", {"source": source}, ds)
        model = {"model": Artifact("/runs/r1/train/model.keras", "Model")}
        _record(store, "r1", "train", {"dataset": ds["dataset"]}, model)
        saved = {"saved_model": Artifact("/runs/r1/export/saved_model", "SavedModel")}
        _record(store, "r1", "export", {"model": model["model"]}, saved)
        pushed = {"pushed_model": Artifact("/serving/models/mnist/1", "PushedModel", {"version": 1, "model_name": "mnist"})}
        _record(store, "r1", "push", {"model": saved["saved_model"]}, pushed)

        [found] = store.find_pushed(1, "mnist")
        assert found.uri == "/serving/models/mnist/1"
        chain = store.lineage(found.id)
        assert [ex.stage for ex, _, _ in chain] == ["push", "export", "train", "ingest"]
        ingest_inputs = chain[-1][1]
        assert ingest_inputs["source"].uri == "/idx"
        assert store.find_pushed(2) == []


def test_second_reader_sees_committed_rows_while_writer_is_open(tmp_path):
    path = tmp_path / "m.sqlite"
    with RunStore(path) as writer:
        writer.start_run("r1", {}, "v")
        reader = sqlite3.connect(path)
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert reader.execute("SELECT status FROM runs").fetchall() == [("running",)]
        reader.close()


def test_lineage_record_prefers_the_version_in_the_given_base_path(tmp_path):
    from pipeline.lineage import lineage_record

    with RunStore(tmp_path / "m.sqlite") as store:
        for run_id, base in (("r1", tmp_path / "a"), ("r2", tmp_path / "b")):
            store.start_run(run_id, {"train": {"epochs": int(run_id[1])}}, "v")
            uri = str(base / "mnist" / "1")
            _record(store, run_id, "push", {}, {"pushed_model": Artifact(uri, "PushedModel",
                                                                         {"version": 1, "model_name": "mnist"})})
        assert lineage_record(store, 1, "mnist")["run"]["id"] == "r2"  # the newest by default
        assert lineage_record(store, 1, "mnist", tmp_path / "a")["run"]["id"] == "r1"
        assert lineage_record(store, 2, "mnist") is None


def test_paths_inside_the_workdir_are_stored_relative_and_read_back_in_the_workdir_in_use(tmp_path):
    workdir = tmp_path / "w"
    with RunStore(workdir / "metadata.sqlite") as store:
        store.start_run("r1", {"workdir": str(workdir)}, "v")
        model = workdir / "runs" / "r1" / "train" / "model.keras"
        _record(store, "r1", "train", {"source": Artifact("/idx", "ExternalData")},
                {"model": Artifact(str(model), "Model", {"data_dir": str(workdir / "data")})})
    with sqlite3.connect(workdir / "metadata.sqlite") as conn:
        assert sorted(r[0] for r in conn.execute("SELECT uri FROM artifacts")) == ["/idx", "runs/r1/train/model.keras"]
        assert conn.execute("SELECT properties FROM artifacts WHERE type='Model'").fetchone()[0] == \
            '{"data_dir": "{workdir}/data"}'
    moved = tmp_path / "elsewhere"
    workdir.rename(moved)
    with RunStore(moved / "metadata.sqlite") as store:
        assert store.get_run("r1").config["workdir"] == str(moved)
        [ex] = store.executions("r1")
        art = store.output_artifacts(ex.id)["model"]
        assert art.uri == str(moved / "runs" / "r1" / "train" / "model.keras")
        assert art.properties["data_dir"] == str(moved / "data")
        assert ex.outputs["model"]["uri"] == art.uri and store.input_artifacts(ex.id)["source"].uri == "/idx"
        for form in (art.uri, "runs/r1/train/model.keras"):  # a lookup takes the path or the stored form
            assert [a.id for a in store.artifacts_by_uri(form, "Model")] == [art.id]


def _old_store(path, rows: dict) -> None:
    """A store as mnist-pipeline wrote it before schema versions: paths as the stages gave them."""
    from pipeline.store_schema import SCHEMA

    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
        for run_id, workdir in rows["runs"]:
            conn.execute("INSERT INTO runs (id, started, status, config, code_version) VALUES (?, 't', 'succeeded', ?, 'v')",
                         (run_id, json.dumps({"workdir": workdir})))
        conn.execute("INSERT INTO executions (run_id, stage, status, started, outputs) VALUES (?, 'push', 'succeeded', "
                     "'t', ?)", (rows["runs"][0][0], json.dumps({"pushed_model": {"uri": rows["uris"][-1], "id": 1}})))
        for uri in rows["uris"]:
            conn.execute("INSERT INTO artifacts (uri, type, properties, producer, created) VALUES (?, 'X', ?, 1, 't')",
                         (uri, json.dumps({"version": 1, "model_name": "mnist", "where": uri})))


def test_an_old_store_is_migrated_once_to_paths_relative_to_the_workdir_it_was_used_in(tmp_path):
    # Copied from /old/w (a recorded workdir), and /old/link/runs/r2/... (a workdir spelled otherwise, found by
    # its runs/<run id>/ layout), and "artifacts" (a relative workdir); the source and a base path outside stay.
    path = tmp_path / "copy" / "metadata.sqlite"
    uris = ["/old/w/data/mnist/3.0.1", "/old/link/runs/r2/train/model.keras", "artifacts/runs/r3/export/saved_model",
            "/idx", "/models/mnist/1", "gs://bucket/x", "/old/w/serving/models/mnist/4"]
    _old_store(path, {"runs": [("r1", "/old/w"), ("r2", "/old/real"), ("r3", "artifacts")], "uris": uris})
    with RunStore(path) as store:
        assert [a.uri for a in store.artifacts_by_uri("/idx")] == ["/idx"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        stored = [r[0] for r in conn.execute("SELECT uri FROM artifacts ORDER BY id")]
        assert stored == ["data/mnist/3.0.1", "runs/r2/train/model.keras", "runs/r3/export/saved_model", "/idx",
                          "/models/mnist/1", "gs://bucket/x", "serving/models/mnist/4"]
        props = json.loads(conn.execute("SELECT properties FROM artifacts WHERE id=1").fetchone()[0])
        assert props["where"] == "{workdir}/data/mnist/3.0.1"
        outputs = json.loads(conn.execute("SELECT outputs FROM executions").fetchone()[0])
        assert outputs["pushed_model"]["uri"] == "serving/models/mnist/4"
        assert json.loads(conn.execute("SELECT config FROM runs WHERE id='r1'").fetchone()[0]) == {"workdir": "{workdir}"}
        conn.execute("UPDATE artifacts SET uri='/old/w/again' WHERE id=4")  # a migrated store is not migrated again
    with RunStore(path) as store:
        copy = tmp_path / "copy"
        assert store.artifacts_by_uri(copy / "serving" / "models" / "mnist" / "4")[0].uri == str(copy / "serving/models/mnist/4")
        assert store.artifacts_by_uri("serving/models/mnist/4")
        assert [a.uri for a in store.artifacts_by_uri("/old/w/again")] == ["/old/w/again"]
        assert store.get_execution(1).outputs["pushed_model"]["uri"] == str(copy / "serving/models/mnist/4")


def test_a_migration_that_fails_changes_nothing(tmp_path, monkeypatch):
    from pipeline import store_schema

    path = tmp_path / "copy" / "metadata.sqlite"
    _old_store(path, {"runs": [("r1", "/old/w")], "uris": ["/old/w/data/mnist/3.0.1", "/old/w/serving/models/mnist/1"]})
    calls = []

    def fail_on_second(old, roots):
        calls.append(old)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return "x"

    monkeypatch.setattr(store_schema, "relative_to_any", fail_on_second)
    with pytest.raises(RuntimeError):
        RunStore(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
        assert [r[0] for r in conn.execute("SELECT uri FROM artifacts")] == ["/old/w/data/mnist/3.0.1",
                                                                             "/old/w/serving/models/mnist/1"]
