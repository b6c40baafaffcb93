"""`mnist-pipeline orchestrate kfp`: the pipeline compiled to Kubeflow Pipelines v2 IR YAML (KFP 2, Vertex AI).

    compile_pipeline(config, tasks, Path("pipeline.yaml"), image="europe-docker.pkg.dev/p/r/mnist-pipeline:1")

One container component per stage, generated from the stage table: the image (built from
pipeline/orchestrate/Dockerfile) runs `mnist-pipeline orchestrate task --stage STAGE` with the pipeline job's
name as the DAG run and the task's name, so every task of a job works in one pipeline run. The workdir and
the configuration (JSON sections) are pipeline parameters. Tasks pass no artifacts: the workdir and its run
store carry them, as in `run`. KFP's own caching is off for every task: it would key on the parameters alone
and skip a stage whose inputs changed in the workdir; the runner's cache keys on the inputs' contents.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pipeline.atomic import atomic_path
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


def _component(dsl, stage: str, image: str, command: str):
    """A container component running `stage`; its name (the function's) is the stage's."""

    def component(workdir: str, config: str):
        return dsl.ContainerSpec(
            image=image,
            command=[command],
            args=["orchestrate", "task", "--stage", stage, "--orchestrator", "kfp",
                  "--dag-run", dsl.PIPELINE_JOB_NAME_PLACEHOLDER, "--task", dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
                  "--workdir", workdir, "--config-json", config],
        )

    component.__name__ = component.__qualname__ = stage
    component.__annotations__ = {"workdir": str, "config": str}  # kfp reads types, not this module's strings
    return dsl.container_component(component)


def build_pipeline(config: Config, tasks: Sequence[Task], *, name: str, image: str = DEFAULT_IMAGE, retries: int = 2,
                   command: str = "mnist-pipeline"):
    """The `@dsl.pipeline` function: parameters workdir and config (defaults: this configuration's)."""
    _, dsl = _kfp()
    components = {t.stage: _component(dsl, t.stage, image, command) for t in tasks}

    def pipeline_func(workdir: str = os.fspath(config.workdir), config: str = config_json(config)):
        made = {}
        for t in tasks:
            task = components[t.stage](workdir=workdir, config=config)
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
