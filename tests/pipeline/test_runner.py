"""The runner: order, records, caching, resume, failures and the lock, on fake stages (fast); and one
integration test of the whole `mnist-pipeline run` on tiny synthetic IDX data."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from pipeline import paths
from pipeline.config import Config, apply_overrides
from pipeline.errors import ConfigError
from pipeline.lock import LockHeldError, WorkdirLock
from pipeline.runner import StageFailed, run_pipeline
from pipeline.stage_api import Input, SkipStage, StageResult, StageSpec, artifact
from pipeline.store import RunStore


class FakeStages:
    """Three chained stages writing small files; counts how often each really ran; can be told to fail."""

    def __init__(self):
        self.calls: Counter[str] = Counter()
        self.fail: set[str] = set()
        self.interrupt: set[str] = set()

    def _make(self, name: str, upstream: str | None, section: str):
        def execute(ctx):
            self.calls[name] += 1
            if name in self.fail:
                raise ValueError(f"{name} exploded")
            if name in self.interrupt:
                raise KeyboardInterrupt
            ctx.out_dir.mkdir(parents=True, exist_ok=True)
            out = ctx.out_dir / f"{name}.txt"
            before = Path(ctx.inputs["data"].uri).read_text() if "data" in ctx.inputs else ""
            out.write_text(before + f"{name}:{ctx.config.train.epochs}\n")
            return StageResult({"data": artifact(out, "Text")}, {"lines": len(out.read_text().splitlines())})

        inputs = (Input("data", upstream, "data"),) if upstream else ()
        return StageSpec(name, execute, sections=(section,), inputs=inputs)

    def specs(self):
        return [self._make("a", None, "data"), self._make("b", "a", "train"), self._make("c", "b", "evaluate")]


def _config(tmp_path, **overrides) -> Config:
    return apply_overrides(Config(), {"workdir": str(tmp_path / "w"), **overrides})


def test_runs_stages_in_order_and_records_them(tmp_path):
    fake = FakeStages()
    result = run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1")
    assert [s.name for s in result.stages] == ["a", "b", "c"] and result.status == "succeeded"
    assert result.stage("c").properties == {"lines": 3}
    with RunStore(paths.store_path(tmp_path / "w")) as store:
        run = store.get_run(result.run_id)
        assert run.status == "succeeded" and run.code_version == "v1"
        execs = store.executions(result.run_id)
        assert [(e.stage, e.status) for e in execs] == [("a", "succeeded"), ("b", "succeeded"), ("c", "succeeded")]
        assert execs[1].inputs["data"]["uri"].endswith("a.txt") and execs[1].cache_key


def test_second_run_unchanged_is_all_cached(tmp_path, caplog):
    fake = FakeStages()
    first = run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1")
    caplog.set_level("INFO", logger="pipeline.runner")
    second = run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1")
    assert [s.status for s in second.stages] == ["cached"] * 3
    assert fake.calls == Counter(a=1, b=1, c=1)
    assert second.stage("c").outputs["data"].uri == first.stage("c").outputs["data"].uri
    assert "cached: reusing" in caplog.text


def test_changed_config_reruns_that_stage_and_the_ones_after(tmp_path):
    fake = FakeStages()
    run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1")
    result = run_pipeline(_config(tmp_path, **{"train.epochs": 7}), specs=fake.specs(), code="v1")
    assert [s.status for s in result.stages] == ["cached", "succeeded", "succeeded"]
    assert fake.calls == Counter(a=1, b=2, c=2)


def test_new_code_version_or_no_cache_reruns(tmp_path):
    fake = FakeStages()
    run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1")
    run_pipeline(_config(tmp_path), specs=fake.specs(), code="v2")
    assert fake.calls == Counter(a=2, b=2, c=2)
    result = run_pipeline(_config(tmp_path), specs=fake.specs(), code="v2", use_cache=False)
    assert [s.status for s in result.stages] == ["succeeded"] * 3


def test_deleted_or_modified_output_is_not_reused(tmp_path):
    fake = FakeStages()
    first = run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1")
    Path(first.stage("b").outputs["data"].uri).write_text("tampered\n")
    result = run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1")
    assert [s.status for s in result.stages] == ["cached", "succeeded", "succeeded"]


def test_failing_stage_stops_the_run_and_is_recorded(tmp_path):
    fake = FakeStages()
    fake.fail.add("b")
    with pytest.raises(StageFailed) as err:
        run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1")
    assert err.value.stage == "b" and "exploded" in str(err.value) and "'b'" in str(err.value)
    assert fake.calls["c"] == 0
    with RunStore(paths.store_path(tmp_path / "w")) as store:
        run = store.get_run(err.value.run_id)
        assert (run.status, run.failed_stage) == ("failed", "b") and "exploded" in run.error
        assert [e.status for e in store.executions(run.id)] == ["succeeded", "failed"]


def test_resume_continues_from_the_last_finished_stage(tmp_path):
    fake = FakeStages()
    fake.fail.add("c")
    with pytest.raises(StageFailed) as err:
        run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1")
    fake.fail.clear()
    result = run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1", resume="latest")
    assert result.run_id == err.value.run_id
    assert fake.calls == Counter(a=1, b=1, c=2)
    assert [s.status for s in result.stages] == ["resumed", "resumed", "succeeded"]
    with RunStore(paths.store_path(tmp_path / "w")) as store:
        assert store.get_run(result.run_id).status == "succeeded"


def test_interrupted_run_is_marked_and_a_new_run_continues_through_the_cache(tmp_path):
    fake = FakeStages()
    fake.interrupt.add("b")
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1")
    with RunStore(paths.store_path(tmp_path / "w")) as store:
        [run] = store.list_runs()
        assert run.status == "interrupted" and run.failed_stage == "b"
    fake.interrupt.clear()
    result = run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1")
    assert [s.status for s in result.stages] == ["cached", "succeeded", "succeeded"]
    assert fake.calls["a"] == 1


def test_resume_uses_the_recorded_configuration(tmp_path):
    fake = FakeStages()
    fake.fail.add("c")
    with pytest.raises(StageFailed):
        run_pipeline(_config(tmp_path, **{"train.epochs": 5}), specs=fake.specs(), code="v1")
    fake.fail.clear()
    result = run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1", resume="latest")
    assert Path(result.stage("c").outputs["data"].uri).read_text().endswith("c:5\n")


def test_stage_selection_takes_inputs_from_earlier_runs(tmp_path):
    fake = FakeStages()
    run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1")
    result = run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1", stages=["c"], use_cache=False)
    assert [s.name for s in result.stages] == ["c"] and fake.calls["c"] == 2
    result = run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1", skip=["a", "b"], use_cache=False)
    assert [s.name for s in result.stages] == ["c"]
    with pytest.raises(ConfigError, match="unknown stage 'zz'"):
        run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1", stages=["zz"])
    with RunStore(paths.store_path(tmp_path / "w")) as store:
        assert store.list_runs()[0].status == "succeeded"  # the refused run left no record


def test_an_input_from_another_run_is_the_newest_one_the_config_accepts(tmp_path):
    """A workdir with MNIST and Fashion-MNIST runs: a stage alone takes the dataset its config names, not
    whichever was ingested last."""
    seen = []

    def ingest(ctx):
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        out = ctx.out_dir / "data.txt"
        out.write_text(ctx.config.data.dataset)
        return StageResult({"dataset": artifact(out, "Dataset", name=ctx.config.data.dataset)}, {})

    def use(ctx):
        seen.append(ctx.inputs["dataset"].properties["name"])
        return StageResult({}, {})

    specs = [StageSpec("ingest", ingest, sections=("data",)),
             StageSpec("use", use, inputs=(Input("dataset", "ingest", accept=lambda config, art:
                                                 art.properties.get("name") == config.data.dataset),))]
    for dataset in ("mnist", "fashion_mnist"):
        run_pipeline(_config(tmp_path, **{"data.dataset": dataset}), specs=specs, code="v1", stages=["ingest"])
    run_pipeline(_config(tmp_path), specs=specs, code="v1", stages=["use"])
    run_pipeline(_config(tmp_path, **{"data.dataset": "fashion_mnist"}), specs=specs, code="v1", stages=["use"])
    assert seen == ["mnist", "fashion_mnist"]


def test_missing_upstream_fails_clearly(tmp_path):
    fake = FakeStages()
    with pytest.raises(StageFailed, match="include stage 'a'"):
        run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1", stages=["b"])


def test_skipped_stage_is_recorded_and_the_run_goes_on(tmp_path):
    def nothing(ctx):
        raise SkipStage("no model has been pushed")

    fake = FakeStages()
    specs = [*fake.specs()[:1], StageSpec("s", nothing), *fake.specs()[1:]]
    result = run_pipeline(_config(tmp_path), specs=specs, code="v1")
    assert result.stage("s").status == "skipped" and "pushed" in result.stage("s").reason
    assert result.stage("c").status == "succeeded"


def test_report_like_stage_runs_after_a_failure_and_again_on_resume(tmp_path):
    seen = []

    def report(ctx):
        seen.append([(e.stage, e.status) for e in ctx.store.executions(ctx.run_id)])
        return StageResult()

    fake = FakeStages()
    fake.fail.add("b")
    specs = [*fake.specs(), StageSpec("report", report, cacheable=False, after_failure=True)]
    with pytest.raises(StageFailed, match="'b'"):
        run_pipeline(_config(tmp_path), specs=specs, code="v1")
    assert seen[-1][:2] == [("a", "succeeded"), ("b", "failed")]  # the report saw where it failed
    with RunStore(paths.store_path(tmp_path / "w")) as store:
        assert store.list_runs()[0].failed_stage == "b"  # the report did not clear the failure
    fake.fail.clear()
    result = run_pipeline(_config(tmp_path), specs=specs, code="v1", resume="latest")
    assert result.stage("report").status == "succeeded" and len(seen) == 2


def test_second_run_on_a_locked_workdir_refuses(tmp_path):
    fake = FakeStages()
    with WorkdirLock(tmp_path / "w", owner="another run"):
        with pytest.raises(LockHeldError, match="another run"):
            run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1")
    assert fake.calls == Counter()


# -- the whole pipeline, for real, on tiny synthetic data ---------------------------------------------------------


@pytest.mark.timeout(900)
def test_whole_pipeline_end_to_end_then_cached_then_failure_and_resume(idx_dir, tmp_path, capsys, monkeypatch):
    from pipeline.cli import main
    from pipeline.lineage import lineage_record
    from pipeline.stage_api import fingerprint_path
    from serving import model_registry

    workdir = tmp_path / "work"
    def flags(epochs: int) -> list[str]:
        return ["--workdir", str(workdir), "--source-dir", str(idx_dir), "--architecture", "seed",
                "--epochs", str(epochs), "--accuracy-threshold", "0"]

    assert main(["run", *flags(1)]) == 0
    first_out = capsys.readouterr().out

    store = RunStore(paths.store_path(workdir))
    [run1] = store.list_runs()
    assert run1.status == "succeeded"
    statuses = {e.stage: e.status for e in store.executions(run1.id)}
    assert statuses == {s: "succeeded" for s in ("ingest", "validate", "train", "export", "evaluate", "push", "score",
                                                 "serving_check", "report")}
    [v1] = model_registry.list_versions(paths.model_base_path(workdir), "mnist")
    assert v1.version == 1 and v1.complete
    score_ex = next(e for e in store.executions(run1.id) if e.stage == "score")
    assert score_ex.properties["num_predictions"] == 50 and score_ex.properties["num_failed"] == 0
    check = json.loads((paths.stage_dir(workdir, run1.id, "serving_check") / "serving_check.json").read_text())
    assert check["passed"] and check["model_version"] == 1 and check["num_examples"] == 50
    assert check["expected_accuracy"] is not None  # compared with the evaluator's accuracy
    report_html = paths.stage_dir(workdir, run1.id, "report") / "report.html"
    assert report_html.is_file() and "data:image/png;base64," in report_html.read_text()
    assert str(report_html) in first_out

    lineage = lineage_record(store, 1, "mnist")
    assert lineage["run"]["id"] == run1.id and lineage["data"]["dataset"] == "mnist"
    assert lineage["data"]["source"] == str(idx_dir.resolve()) and lineage["data"]["statistics"]
    assert lineage["config"]["train"]["architecture"] == "seed" and "accuracy" in lineage["metrics"]
    assert main(["lineage", "1", "--workdir", str(workdir)]) == 0
    assert run1.id in capsys.readouterr().out
    assert main(["runs", "--workdir", str(workdir)]) == 0
    assert "v1" in capsys.readouterr().out

    # Nothing changed: every stage but the report is a cache hit, and nothing new is pushed.
    assert main(["run", *flags(1)]) == 0
    run2 = store.list_runs()[0]
    statuses = {e.stage: e.status for e in store.executions(run2.id)}
    assert statuses.pop("report") == "succeeded" and set(statuses.values()) == {"cached"}, statuses
    assert [v.version for v in model_registry.list_versions(paths.model_base_path(workdir), "mnist")] == [1]
    capsys.readouterr()

    # A stage that fails stops the run, names the stage, and leaves the pushed version as it was.
    before = fingerprint_path(v1.path)
    from components import train

    real_train = train.run
    monkeypatch.setattr(train, "run", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk on fire")))
    assert main(["run", *flags(2)]) == 1
    err = capsys.readouterr().err
    assert "'train'" in err and "disk on fire" in err
    run3 = store.list_runs()[0]
    assert (run3.status, run3.failed_stage) == ("failed", "train")
    assert fingerprint_path(v1.path) == before
    assert [v.version for v in model_registry.list_versions(paths.model_base_path(workdir), "mnist")] == [1]

    # Resumed, it continues from train with the recorded configuration (2 epochs).
    monkeypatch.setattr(train, "run", real_train)
    assert main(["run", "--workdir", str(workdir), "--resume"]) == 0
    resumed = store.get_run(run3.id)
    assert resumed.status == "succeeded"
    execs = store.executions(run3.id)
    assert [e.stage for e in execs if e.status == "cached"] == ["ingest", "validate"]
    train_ex = [e for e in execs if e.stage == "train"]
    assert [e.status for e in train_ex] == ["failed", "succeeded"] and train_ex[-1].properties["epochs"] == 2
    # The training time itself (the 10-minute budget's figure) is recorded apart from the stage's wall time.
    assert 0 < train_ex[-1].properties["train_seconds"] <= train_ex[-1].duration

    # Not blessed (a model trained on 10 examples, threshold 0.99) is a recorded outcome, not a failure:
    # nothing is pushed, and scoring and the serving check use the version served now.
    served = [v.version for v in model_registry.list_versions(paths.model_base_path(workdir), "mnist")]
    weak = [*flags(1)[:-1], "0.99", "--max-train-examples", "10"]
    assert main(["run", *weak]) == 0
    run5 = store.list_runs()[0]
    execs = {e.stage: e for e in store.executions(run5.id)}
    assert run5.status == "succeeded" and execs["evaluate"].properties["blessed"] is False
    assert execs["push"].properties["pushed"] is False and "not blessed" in execs["push"].properties["reason"]
    assert [v.version for v in model_registry.list_versions(paths.model_base_path(workdir), "mnist")] == served
    assert execs["score"].properties["model_version"] == served[-1]
    assert execs["serving_check"].status in ("cached", "succeeded")
    store.close()


def test_a_moved_workdir_reads_its_own_files_and_keeps_its_cache(tmp_path):
    import shutil

    fake = FakeStages()
    first = run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1")
    shutil.move(tmp_path / "w", tmp_path / "moved")
    moved = apply_overrides(Config(), {"workdir": str(tmp_path / "moved")})
    second = run_pipeline(moved, specs=fake.specs(), code="v1")
    assert [s.status for s in second.stages] == ["cached"] * 3 and fake.calls == Counter(a=1, b=1, c=1)
    assert second.stage("c").outputs["data"].uri == str(tmp_path / "moved" / "runs" / first.run_id / "c" / "c.txt")


def test_a_recorded_input_missing_on_disk_names_the_stage_that_makes_it(tmp_path):
    fake = FakeStages()
    first = run_pipeline(_config(tmp_path), specs=fake.specs(), code="v1")
    made = Path(first.stage("a").outputs["data"].uri)
    made.unlink()
    with pytest.raises(StageFailed) as failed:
        run_pipeline(_config(tmp_path), specs=fake.specs(), stages=["b"], code="v1", use_cache=False)
    assert failed.value.stage == "b" and fake.calls["b"] == 1  # b never ran on a file that is not there
    assert str(made) in failed.value.error and "run `mnist-pipeline a`" in failed.value.error
    assert f"by run {first.run_id}" in failed.value.error
