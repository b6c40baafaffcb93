"""`mnist-pipeline orchestrate kfp`: the pipeline compiled to Kubeflow Pipelines v2 IR YAML (KFP 2, Vertex AI).

    compile_pipeline(config, tasks, Path("pipeline.yaml"), image="europe-docker.pkg.dev/p/r/mnist-pipeline:1")

One component per stage, generated from the stage table, each a container of the project's image (built from
pipeline/orchestrate/Dockerfile) that runs `mnist-pipeline orchestrate task --stage STAGE` with the pipeline
job's name as the DAG run and the task's name, so every task of a job works in one pipeline run. They are
lightweight Python components (`stage_task` starts the command) rather than `dsl.container_component`s
because kfp.local's SubprocessRunner, the way to run the YAML without Kubernetes or Docker, runs only those;
on KFP and Vertex AI both are one container with a command. The workdir and the configuration (JSON
sections) are pipeline parameters. Tasks pass no artifacts: the workdir and its run store carry them, as in
`run`. KFP's own caching is off for every task: it would key on the parameters alone and skip a stage whose
inputs changed in the workdir; the runner's cache keys on the inputs' contents.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path

from components.atomic import atomic_path
from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.orchestrate import Task, config_json

DEFAULT_IMAGE = "mnist-pipeline:latest"


def _kfp():
    try:
        from kfp import compiler, dsl
    except ImportError:
        raise PipelineError("the kfp package is not installed; install the extra: pip install 'mnist-pipeline[kfp]'") \
            from None
    return compiler, dsl


def stage_task(stage: str, workdir: str, config: str, dag_run: str, task: str):
    """Run one stage as this task (`mnist-pipeline orchestrate task`). Its source is copied into the YAML and
    called by kfp's executor in the project's image, so it imports only the standard library."""
    import subprocess
    import sys

    done = subprocess.run(["mnist-pipeline", "orchestrate", "task", "--stage", stage, "--orchestrator", "kfp",
                           "--dag-run", dag_run, "--task", task, "--workdir", workdir, "--config-json", config])
    if done.returncode != 0:
        print(f"stage {stage} failed (exit status {done.returncode}): see its error above", file=sys.stderr)
        sys.exit(done.returncode)


def _components(dsl, stages: Sequence[str], image: str) -> dict:
    """One component per stage, named after it (so the YAML's tasks are the stages), all running `stage_task`."""
    stage_task.__annotations__ = {"stage": str, "workdir": str, "config": str, "dag_run": str, "task": str}
    generic = dsl.component(stage_task, base_image=image, install_kfp_package=False)  # kfp is in the image
    made = {}
    for stage in stages:
        component = copy.deepcopy(generic)
        component.component_spec.name = component.name = stage
        made[stage] = component
    return made


def build_pipeline(config: Config, tasks: Sequence[Task], *, name: str, image: str = DEFAULT_IMAGE, retries: int = 2):
    """The `@dsl.pipeline` function: parameters workdir and config (defaults: this configuration's)."""
    _, dsl = _kfp()
    components = _components(dsl, [t.stage for t in tasks], image)

    def pipeline_func(workdir: str = os.fspath(config.workdir), config: str = config_json(config)):
        made = {}
        for t in tasks:
            task = components[t.stage](stage=t.stage, workdir=workdir, config=config,
                                       dag_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, task=dsl.PIPELINE_TASK_NAME_PLACEHOLDER)
            task.set_display_name(t.stage)
            task.set_caching_options(False)
            if retries:
                task.set_retry(num_retries=retries)
            for up in t.upstream:
                task.after(made[up])
            made[t.stage] = task

    pipeline_func.__name__ = pipeline_func.__qualname__ = name.replace("-", "_")
    pipeline_func.__annotations__ = {"workdir": str, "config": str}
    return dsl.pipeline(name=name, description="mnist-pipeline: one task per stage (mnist-pipeline orchestrate kfp)")(
        pipeline_func)


def compile_pipeline(config: Config, tasks: Sequence[Task], output: Path, *, name: str = "mnist-pipeline",
                     image: str = DEFAULT_IMAGE, retries: int = 2) -> Path:
    """Compile to IR YAML at `output` (written to a temp file and renamed)."""
    compiler, _ = _kfp()
    pipeline = build_pipeline(config, tasks, name=name, image=image, retries=retries)
    with atomic_path(output) as tmp:
        compiler.Compiler().compile(pipeline_func=pipeline, package_path=os.fspath(tmp))
    return output
