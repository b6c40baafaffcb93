"""Orchestrators (Airflow, Kubeflow Pipelines) built from the stage table `run` uses, as TFX's runners are.

    tasks = stage_graph(default_stages())          # [Task("ingest", ()), Task("validate", ("ingest",)), ...]
    run_task(config, "train", orchestrator="airflow", dag_run="mnist_pipeline-manual__2026-...", task="train")

A generated DAG or pipeline YAML has one task per stage; each task runs `mnist-pipeline orchestrate task`,
which is `run --stages STAGE` in the run whose id `run_id_for` derives from the DAG run: every task of a DAG
run works in one pipeline run, through the runner, so it is locked, recorded, cached and resumable like
`run`, and a retried task (same DAG run) continues where the killed one stopped. Nothing here imports an
orchestrator's SDK (`pipeline.orchestrate.kfp` does, when it compiles).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.config import Config
from pipeline.config_check import validate
from pipeline.errors import ConfigError, PipelineError
from pipeline.stage_api import StageSpec

log = logging.getLogger(__name__)

ORCHESTRATORS = ("airflow", "kfp")


@dataclass(frozen=True)
class Task:
    """One orchestrator task: the stage it runs and the tasks it waits for."""

    stage: str
    upstream: tuple[str, ...]


def stage_graph(specs: Sequence[StageSpec], stages: Iterable[str] | None = None,
                skip: Iterable[str] | None = None) -> list[Task]:
    """The selected stages in table order, each after the stages it depends on.

    A stage depends on the stages its inputs name (`Input("model", "train")`). An input found by a resolver
    (the pushed model, the baseline, the run's own records) reads what any earlier stage may have written, so
    such a stage waits for every stage before it, as in `run`. Dependencies through a stage left out are kept
    (A -> B -> C without B is A -> C), and each task lists only its nearest ones (the transitive reduction).
    An unknown stage name is a ConfigError that lists the known ones.
    """
    from pipeline.runner import select_stages

    selected = [s.name for s in select_stages(specs, stages, skip)]
    order = [s.name for s in specs]
    direct: dict[str, set[str]] = {}
    for i, spec in enumerate(specs):
        deps = {inp.stage for inp in spec.inputs if inp.stage is not None}
        if any(inp.stage is None for inp in spec.inputs):
            deps.update(order[:i])
        unknown = deps - set(order[:i])
        if unknown:
            raise PipelineError(f"stage {spec.name!r} takes inputs of {', '.join(sorted(unknown))}, which do not "
                                "come before it in the stage table")
        direct[spec.name] = deps
    ancestors: dict[str, set[str]] = {}
    for name in order:
        ancestors[name] = set().union(*([direct[name]] + [ancestors[d] for d in direct[name]]))
    tasks = []
    for name in selected:
        kept = {a for a in ancestors[name] if a in selected}
        nearest = {a for a in kept if not any(a in ancestors[b] for b in kept)}
        tasks.append(Task(name, tuple(n for n in order if n in nearest)))
    return tasks


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def run_id_for(orchestrator: str, dag_run: str) -> str:
    """The pipeline run id of a DAG run: stable (a retried task lands in the same run) and valid as a folder
    name (`paths.check_run_id`). Airflow's run ids hold ':' and '+', so unsafe characters become '-' and a
    short hash of the original keeps two DAG runs that differ only there apart."""
    from pipeline import paths

    if not dag_run:
        raise ConfigError("--dag-run is empty; the orchestrator's DAG run id is needed to name the pipeline run")
    raw = f"{orchestrator}-{dag_run}"
    safe = _UNSAFE.sub("-", raw).replace("..", ".").strip(".-")
    if safe != raw or len(safe) > 128:
        safe = f"{safe[:119]}-{hashlib.sha256(raw.encode()).hexdigest()[:8]}"
    return paths.check_run_id(safe)


def config_json(config: Config) -> str:
    """The configuration the generated tasks run with, as JSON (Config.to_dict()); the workdir is passed apart."""
    data = {k: v for k, v in config.to_dict().items() if k != "workdir"}
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def config_from_json(text: str, workdir: str) -> Config:
    """Read back `config_json` (as an orchestrator hands it to a task), checking every key as `--config` does."""
    from pipeline.runner import config_from_dict

    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--config-json is not JSON ({exc}); pass what `mnist-pipeline orchestrate` generated") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config-json must be a JSON object of config sections, got {type(data).__name__}")
    config = config_from_dict({**data, "workdir": workdir})
    validate(config)
    return config


def run_task(config: Config, stage: str, *, orchestrator: str, dag_run: str, task: str, attempt: int | None = None,
             use_cache: bool = True) -> tuple[str, Any]:
    """Run stage `stage` as task `task` of DAG run `dag_run`: `run --stages STAGE` in that DAG run's pipeline run,
    waiting for the workdir if another task holds it. The execution records who ran it (property
    `orchestrator`, runner.RAN_BY). Returns the run id and the stage's record; a failed stage raises its own message."""
    from pipeline.runner import StageFailed, run_pipeline
    from pipeline.stages import default_stages

    if orchestrator not in ORCHESTRATORS:
        raise ConfigError(f"unknown orchestrator {orchestrator!r}; use one of {', '.join(ORCHESTRATORS)}")
    run_id = run_id_for(orchestrator, dag_run)
    who = {"name": orchestrator, "dag_run": dag_run, "task": task}
    if attempt is not None:
        who["attempt"] = attempt
    try:
        result = run_pipeline(config, default_stages(), stages=[stage], run_id=run_id, use_cache=use_cache,
                              wait=True, owner=f"{orchestrator} task {task} of {dag_run}", ran_by=who)
    except StageFailed as exc:
        raise PipelineError(f"stage {stage} failed: {exc.error} (recorded in run {exc.run_id})") from exc
    return run_id, result.stages[0]
