"""The run store: runs, executions, artifacts and the lineage queries `runs` and `lineage` rely on."""

from __future__ import annotations

import sqlite3

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
