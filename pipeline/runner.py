"""The runner: the stages in order, each recorded in the run store, cached like TFX's `enable_cache`.

    specs = pipeline.stages.default_stages()
    result = run_pipeline(config, specs)                                   # every stage
    result = run_pipeline(config, specs, stages=["score", "serving_check"])  # inputs from the latest earlier runs
    result = run_pipeline(config, specs, resume="latest")                  # continue the last failed/interrupted run
    result = run_pipeline(config, specs, stages=["export"], run_id=r)      # add a stage to run r (stage commands)

Order: ingest, validate, train, export, evaluate, push, score, serving_check, report. Each stage is a
`StageSpec`: its name, the config sections that change what it does, the inputs it takes (named outputs of
earlier stages, or artifacts found in the workdir such as the currently pushed model) and a function that
calls the component (`pipeline.stage_api`). The runner is handed its stages and knows none of them by name:
`pipeline.stages` implements the pipeline's; tests pass their own. `mnist-pipeline run` and every stage
command (`train`, `export`, ...) go through `run_pipeline`: one wiring, one lock, one record, one cache.

Cache key of an execution (`pipeline.cache`) = sha256(stage name, the fingerprint of its config sections,
the identity of each input artifact (URI as the store keeps it + content fingerprint), the code version). A
succeeded execution with the same key whose outputs still exist unchanged is reused ("cached: reusing <uri>")
instead of run; `use_cache=False` reruns everything. Because finished stages are cache hits, starting a run
again after a failure or an interrupt continues where it stopped; `resume=` does the same inside the same run
id and record.

A stage that raises stops the run: the execution and the run are marked failed with the stage's name and
the error, and `StageFailed` carries both. Push is atomic (a temp folder renamed into place), so a failure
never touches a version already pushed. Only one run writes to a workdir at a time (`pipeline.lock`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.cache import cache_key, code_version, outputs_intact
from pipeline.config import Config, apply_overrides, resolve_defaults
from pipeline.errors import ConfigError, PipelineError
from pipeline.lock import WorkdirLock
from pipeline.stage_api import (
    SkipStage,
    StageContext,
    StageRecord,
    StageSpec,
)
from pipeline.store import Artifact, Execution, RunStore

log = logging.getLogger(__name__)

# The execution property naming who ran it (an orchestrator's DAG run and task: pipeline.orchestrate); a cache
# hit keeps what the earlier execution produced, not who ran it.
RAN_BY = "orchestrator"


class StageFailed(PipelineError):
    """A stage raised; the run is recorded as failed at `stage`."""

    def __init__(self, run_id: str, stage: str, error: str):
        super().__init__(f"run {run_id} failed at stage {stage!r}: {error}")
        self.run_id = run_id
        self.stage = stage
        self.error = error


@dataclass(frozen=True)
class RunResult:
    run_id: str
    status: str
    stages: tuple[StageRecord, ...]
    duration: float

    def stage(self, name: str) -> StageRecord | None:
        return next((s for s in self.stages if s.name == name), None)


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Rebuild a Config from `Config.to_dict()` (a run record), checking every key as a TOML file would be."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return resolve_defaults(apply_overrides(Config(), flat, origin="run record"))


def select_stages(
    specs: Sequence[StageSpec], stages: Iterable[str] | None = None, skip: Iterable[str] | None = None
) -> list[StageSpec]:
    known = [s.name for s in specs]
    wanted = list(stages) if stages else list(known)
    skipped = list(skip or [])
    for name in [*wanted, *skipped]:
        if name not in known:
            raise ConfigError(f"unknown stage {name!r}; stages are: {', '.join(known)}")
    return [s for s in specs if s.name in wanted and s.name not in skipped]


# -- the run ---------------------------------------------------------------------------------------------------


def run_pipeline(
    config: Config,
    specs: Sequence[StageSpec],
    *,
    stages: Iterable[str] | None = None,
    skip: Iterable[str] | None = None,
    use_cache: bool = True,
    resume: str | None = None,
    run_id: str | None = None,
    wait: bool = False,
    owner: str = "mnist-pipeline run",
    code: str | None = None,
    ran_by: Mapping[str, Any] | None = None,
) -> RunResult:
    """Run the selected stages of `specs` under the workdir lock.

    `resume`: a run id or "latest" (failed/interrupted): continue it with its recorded configuration, skipping
    the stages it finished. `run_id`: work in that run, with this configuration: a new run of that id, or an
    existing one whose finished stages feed the selected ones (how a stage command adds a stage to a run);
    the selected stages run again (or are cache hits). Neither: a new run. `ran_by`: who runs the stages (an
    orchestrator's task, `pipeline.orchestrate`), recorded on each execution as the property RAN_BY.
    """
    selected = select_stages(specs, stages, skip)  # a bad stage name is an error before anything is recorded
    config = resolve_defaults(config)  # the dataset's model name and threshold, where config leaves them None
    if resume and run_id:
        raise ConfigError("give either resume or run_id, not both")
    if run_id is not None:
        paths.check_run_id(run_id)
    # Absolute, so every path a stage writes into its records is one the store can make workdir-relative.
    config = dataclasses.replace(config, workdir=os.path.abspath(config.workdir))
    workdir = Path(config.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    code = code or code_version()
    selected_names = {s.name for s in selected}
    with WorkdirLock(workdir, owner=owner, wait=wait) as lock, RunStore(paths.store_path(workdir)) as store:
        stale = store.mark_interrupted()  # we hold the lock: anything still 'running' belongs to a dead process
        for stale_id in stale:
            log.warning("run %s was interrupted (its process stopped); resume it with `mnist-pipeline run --resume %s`",
                        stale_id, stale_id)
        finished: dict[str, Execution] = {}
        if resume:
            run = store.latest_unfinished_run() if resume == "latest" else store.get_run(resume)
            if run is None:
                what = "no failed or interrupted run" if resume == "latest" else f"no run {resume!r}"
                raise ConfigError(f"cannot resume: {what} in {str(workdir)!r}; see `mnist-pipeline runs`")
            if run.status == "succeeded":
                raise ConfigError(f"cannot resume run {run.id}: it already succeeded; start a new run instead")
            config = dataclasses.replace(config_from_dict(run.config), workdir=config.workdir)
            run_id = run.id
            rerun = {s.name for s in specs if not s.cacheable}  # the report is written again, not kept
            finished = {k: v for k, v in store.finished_stages(run_id).items() if k not in rerun}
            store.reopen_run(run_id)
            log.info("resuming run %s after %s", run_id, ", ".join(finished) or "no finished stage")
        elif run_id is not None and store.get_run(run_id) is not None:
            finished = {k: v for k, v in store.finished_stages(run_id).items() if k not in selected_names}
            store.reopen_run(run_id)
            log.info("run %s: adding %s to it", run_id, ", ".join(s.name for s in selected))
        else:
            run_id = run_id or paths.new_run_id()
            store.start_run(run_id, config.to_dict(), code)
            log.info("run %s started in %s (code %s)", run_id, workdir, code)
        lock.describe(f"{owner} {run_id}")
        run = _Run(store, config, workdir, run_id, use_cache, code, {RAN_BY: dict(ran_by)} if ran_by else {})
        return _run_stages(run, specs, selected, finished)


def latest_run_with(workdir: str | os.PathLike, stage: str) -> str | None:
    """The newest run that finished stage `stage` (succeeded or cached), or None: where a stage command that
    needs that stage's outputs adds itself by default."""
    path = paths.store_path(workdir)
    if not path.is_file():
        return None
    with RunStore(path) as store:
        ex = next(store.finished(stage), None)
        return ex.run_id if ex is not None else None


@dataclass(frozen=True)
class _Run:
    """What every stage of one run is run with."""

    store: RunStore
    config: Config
    workdir: Path
    id: str
    use_cache: bool
    code: str
    started_with: dict[str, Any]  # properties each execution starts with: who runs it (RAN_BY)

    def start_execution(self, stage: str, fingerprint: str, inputs: dict[str, Artifact], key: str | None) -> int:
        return self.store.start_execution(self.id, stage, config_fingerprint=fingerprint, code_version=self.code,
                                          inputs=inputs, cache_key=key, properties=self.started_with)


def _run_stages(run: _Run, specs: Sequence[StageSpec], selected: Sequence[StageSpec],
                finished: Mapping[str, Execution]) -> RunResult:
    store, run_id = run.store, run.id
    started = time.monotonic()
    records: dict[str, StageRecord] = {}
    selected_names = {s.name for s in selected}
    try:
        for spec in specs:
            if spec.name in finished:
                ex = finished[spec.name]
                records[spec.name] = StageRecord(
                    spec.name, "resumed", 0.0, store.output_artifacts(ex.id), ex.properties,
                    reason=ex.error if ex.status == "skipped" else None, execution_id=ex.id,
                )
                if spec.name in selected_names:
                    log.info("stage %s: finished earlier in run %s (%s); keeping its outputs", spec.name, run_id, ex.status)
                continue
            if spec.name not in selected_names:
                continue
            records[spec.name] = _run_stage(run, spec, records)
    except StageFailed as exc:
        store.finish_run(run_id, "failed", failed_stage=exc.stage, error=exc.error)
        for spec in selected:
            if spec.after_failure and spec.name not in records and spec.name != exc.stage:
                try:  # e.g. a report that shows where the run failed; its own failure must not hide the first
                    _run_stage(run, spec, records)
                except Exception as later:  # noqa: BLE001
                    log.warning("stage %s after the failure could not run either: %s", spec.name, later)
        raise
    except BaseException as exc:  # KeyboardInterrupt, SystemExit: the record must not say 'running'
        store.mark_interrupted()
        log.error("run %s interrupted (%s); resume it with `mnist-pipeline run --resume %s`",
                  run_id, type(exc).__name__, run_id)
        raise
    store.finish_run(run_id, "succeeded")
    total = time.monotonic() - started
    shown = tuple(r for r in records.values() if r.name in selected_names)
    log.info("run %s succeeded in %.1fs: %s", run_id, total, ", ".join(f"{r.name} {r.status}" for r in shown))
    return RunResult(run_id, "succeeded", shown, total)


def _upstream(store: RunStore, records: Mapping[str, StageRecord], stage: str,
              accept: Callable[[Artifact], bool] | None = None, output: str | None = None) -> StageRecord | None:
    """Stage `stage` of this run, else its latest finished execution in the store (any run) whose `output`
    `accept` takes (all of them when `accept` is None)."""
    if stage in records:
        return records[stage]
    for ex in store.finished(stage):
        outputs = store.output_artifacts(ex.id)
        if accept is None or (output in outputs and accept(outputs[output])):
            return StageRecord(stage, ex.status, 0.0, outputs, ex.properties, execution_id=ex.id)
    return None


def _resolve_inputs(
    store: RunStore, config: Config, workdir: Path, spec: StageSpec, records: dict[str, StageRecord]
) -> tuple[dict[str, Artifact], dict[str, StageRecord]]:
    inputs: dict[str, Artifact] = {}
    upstream: dict[str, StageRecord] = dict(records)
    for inp in spec.inputs:
        found: Artifact | None = None
        if inp.stage is not None:
            accept = (lambda art, inp=inp: inp.accept(config, art)) if inp.accept is not None else None
            rec = _upstream(store, records, inp.stage, accept, inp.output or inp.name)
            if rec is not None:
                upstream.setdefault(inp.stage, rec)
                found = rec.outputs.get(inp.output or inp.name)
                if found is not None:
                    _check_on_disk(store, inp.stage, rec, inp.output or inp.name, found)
            if found is None and inp.required:
                raise PipelineError(
                    f"needs output {inp.output or inp.name!r} of stage {inp.stage!r}, which no run in "
                    f"{str(workdir)!r} has produced; run `mnist-pipeline {inp.stage}` first, or include stage "
                    f"{inp.stage!r} in this run"
                )
        else:
            assert inp.resolve is not None
            found = inp.resolve(config, workdir, store, upstream, inputs)
            if found is None and inp.required:
                raise SkipStage(f"no {inp.name} available")
        if found is not None:
            inputs[inp.name] = found
    return inputs, upstream


def _check_on_disk(store: RunStore, stage: str, rec: StageRecord, name: str, art: Artifact) -> None:
    """A recorded output the disk lacks is the user's to remake, named with the stage that makes it; never
    looked for anywhere else (a copied workdir must not fall back on the original's files)."""
    if "://" in art.uri or Path(art.uri).exists():
        return
    ex = store.get_execution(rec.execution_id) if rec.execution_id is not None else None
    where = f" by run {ex.run_id}" if ex is not None else ""
    raise PipelineError(f"{name} {art.uri!r} (recorded{where} as stage {stage!r}'s output) is not on disk; run "
                        f"`mnist-pipeline {stage}` (or `mnist-pipeline run`) to make it again")


def _run_stage(run: _Run, spec: StageSpec, records: dict[str, StageRecord]) -> StageRecord:
    store, config, workdir, run_id, code = run.store, run.config, run.workdir, run.id, run.code
    t0 = time.monotonic()
    fingerprint = config.section_fingerprint(*spec.sections) if spec.sections else ""
    log.info("stage %s: start", spec.name)
    try:
        inputs, upstream = _resolve_inputs(store, config, workdir, spec, records)
    except SkipStage as skip:
        return _record_skip(run, spec.name, fingerprint, {}, str(skip), t0)
    except PipelineError as exc:
        ex_id = run.start_execution(spec.name, fingerprint, {}, None)
        store.finish_execution(ex_id, "failed", error=str(exc))
        log.error("stage %s: failed: %s", spec.name, exc)
        raise StageFailed(run_id, spec.name, str(exc)) from exc
    # Keyed on the stored (workdir-relative) URIs: a moved or copied workdir keeps its cache.
    keyed = {k: dataclasses.replace(a, uri=store.stored_uri(a.uri)) for k, a in inputs.items()
             if k in {i.name for i in spec.inputs if i.in_cache_key}}
    key = cache_key(spec.name, fingerprint, keyed, code) if spec.cacheable else None
    ex_id = run.start_execution(spec.name, fingerprint, inputs, key)
    if run.use_cache and key is not None:
        hit = store.find_cached(key)
        if hit is not None:
            outputs = store.output_artifacts(hit.id)
            problem = outputs_intact(outputs)
            if problem is None:
                # What the stage produced, not who ran that execution.
                produced = {k: v for k, v in hit.properties.items() if k != RAN_BY}
                store.finish_execution(ex_id, "cached", outputs=outputs, properties=produced, reused_execution=hit.id)
                for art in outputs.values():
                    log.info("stage %s: cached: reusing %s", spec.name, art.uri)
                if not outputs:
                    log.info("stage %s: cached: reusing the result of run %s", spec.name, hit.run_id)
                return StageRecord(spec.name, "cached", time.monotonic() - t0, outputs, hit.properties,
                                   execution_id=ex_id)
            log.info("stage %s: cache entry from run %s not usable (%s); running", spec.name, hit.run_id, problem)
    out_dir = paths.stage_dir(workdir, run_id, spec.name)
    ctx = StageContext(config, workdir, run_id, spec.name, out_dir, inputs, upstream, store, code)
    try:
        result = spec.execute(ctx)
    except SkipStage as skip:
        store.finish_execution(ex_id, "skipped", error=str(skip))
        log.warning("stage %s: skipped: %s", spec.name, skip)
        return StageRecord(spec.name, "skipped", time.monotonic() - t0, {}, {}, reason=str(skip), execution_id=ex_id)
    except Exception as exc:
        message = str(exc) if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {exc}"
        store.finish_execution(ex_id, "failed", error=message)
        if isinstance(exc, PipelineError):
            log.error("stage %s: failed: %s", spec.name, message)
        else:
            log.exception("stage %s: failed", spec.name)
        raise StageFailed(run_id, spec.name, message) from exc
    outputs = store.finish_execution(ex_id, "succeeded", outputs=result.outputs, properties=result.properties)
    duration = time.monotonic() - t0
    for art in outputs.values():
        log.info("stage %s: wrote %s %s", spec.name, art.type, art.uri)
    log.info("stage %s: succeeded in %.1fs", spec.name, duration)
    return StageRecord(spec.name, "succeeded", duration, outputs, dict(result.properties), execution_id=ex_id)


def _record_skip(run: _Run, stage: str, fingerprint: str, inputs: dict[str, Artifact], reason: str,
                 t0: float) -> StageRecord:
    ex_id = run.start_execution(stage, fingerprint, inputs, None)
    run.store.finish_execution(ex_id, "skipped", error=reason)
    log.warning("stage %s: skipped: %s", stage, reason)
    return StageRecord(stage, "skipped", time.monotonic() - t0, {}, {}, reason=reason, execution_id=ex_id)
