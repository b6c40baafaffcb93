"""The pipeline's stages as the runner sees them: which inputs each takes, which config sections change it,
and a small adapter that calls the component and names its output artifacts.

    ingest -> validate -> train -> export -> evaluate -> push -> score -> serving_check -> report

Components are imported inside the adapters, so importing this module (the CLI's `--help`, `runs`,
`lineage`) never imports TensorFlow. Artifact types: ExternalData, Dataset, Statistics, Model,
TrainingHistory, SavedModel, ModelEvaluation, ModelBlessing, PushedModel, PushResult, Predictions,
ServingCheck, Report.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pipeline import paths, resolvers
from pipeline.config import Config, model_base_path
from pipeline.errors import PipelineError
from pipeline.lineage import lineage_record
from pipeline.resolvers import model_identity
from pipeline.stage_api import Input, StageContext, StageResult, StageSpec, artifact
from pipeline.store import Artifact
from serving import model_registry

log = logging.getLogger(__name__)

def _test_images(ctx: StageContext, count: int):
    """The first `count` test images of the run's dataset (float32 [n, 28, 28, 1]) for warmup requests and the
    push check, or None (the component then uses seeded stand-ins) when the run has no dataset input."""
    if "dataset" not in ctx.inputs:
        return None
    from components import data

    name, data_dir = _dataset(ctx)
    batch = next(iter(data.split_dataset(data_dir, name, "test", batch_size=count, max_examples=count)), None)
    return batch[0].numpy() if batch is not None else None


# -- adapters ----------------------------------------------------------------------------------------------------


def ingest_stage(ctx: StageContext) -> StageResult:
    from components import ingest

    out = ingest.run(ctx.config.data, paths.data_dir(ctx.workdir))
    dataset = artifact(
        out.dataset_dir, "Dataset", name=out.dataset, version=out.version, data_dir=os.fspath(out.data_dir),
        num_examples=out.num_examples, source=out.source, source_dir=os.fspath(out.source_dir) if out.source_dir else None,
        class_names=list(out.class_names),
    )
    return StageResult({"dataset": dataset}, {"dataset": out.dataset, "version": out.version,
                                              "num_examples": out.num_examples, "reused": out.reused})


def _class_names(ctx: StageContext) -> list[str] | None:
    """The dataset's class names as ingest read them from TFDS (None: a dataset recorded before they were)."""
    found = ctx.inputs["dataset"].properties.get("class_names") if "dataset" in ctx.inputs else None
    return list(found) if found else None


def _dataset(ctx: StageContext) -> tuple[str, Path]:
    ds = ctx.inputs["dataset"]
    return ds.properties["name"], Path(ds.properties["data_dir"])


def validate_stage(ctx: StageContext) -> StageResult:
    from components import validate

    name, data_dir = _dataset(ctx)
    out = validate.run(ctx.config.data, data_dir, paths.statistics_path(ctx.workdir, name), record_root=ctx.workdir)
    splits = {s: v.get("num_examples") for s, v in out.statistics.get("splits", {}).items()}
    return StageResult({"statistics": artifact(out.statistics_path, "Statistics", dataset=name)},
                       {"num_examples": splits, "anomalies": list(out.anomalies)})


def train_stage(ctx: StageContext) -> StageResult:
    from components import train

    name, data_dir = _dataset(ctx)
    # A resumed run trains into the same folder, so Keras's BackupAndRestore continues after the last epoch.
    verbose = 1 if sys.stdout.isatty() else 2  # Keras's progress bar on a terminal, one line per epoch in logs
    out = train.run(ctx.config.train, ctx.config.data, data_dir, ctx.out_dir, verbose=verbose)
    outputs = {"model": artifact(out.model_path, "Model", architecture=out.architecture),
               "history": artifact(out.history_path, "TrainingHistory")}
    return StageResult(outputs, {"architecture": out.architecture, "epochs": out.epochs,
                                 "batch_size": out.batch_size, "learning_rate": out.learning_rate,
                                 "precision": out.precision,
                                 "train_examples": out.train_examples, "validation_examples": out.validation_examples,
                                 "val_accuracy": out.val_accuracy, "val_loss": out.val_loss,
                                 "initial_epoch": out.initial_epoch, "tensorboard": os.fspath(out.tensorboard_dir),
                                 # fit and the batch norm recalibration, without loading data or saving
                                 "train_seconds": round(out.train_seconds, 1)})


def export_stage(ctx: StageContext) -> StageResult:
    from components import export

    out = export.run(Path(ctx.inputs["model"].uri), ctx.out_dir / export.SAVED_MODEL_DIR,
                     warmup_images=_test_images(ctx, 4), class_names=_class_names(ctx))
    return StageResult({"saved_model": artifact(out.saved_model_dir, "SavedModel",
                                                signatures=list(out.signature_names), class_names=list(out.class_names))},
                       {"signatures": list(out.signature_names), "warmup": os.fspath(out.warmup_path),
                        "class_names": list(out.class_names)})


def evaluate_stage(ctx: StageContext) -> StageResult:
    from components import evaluate

    name, data_dir = _dataset(ctx)
    baseline = ctx.inputs.get("baseline")
    history = ctx.inputs.get("history")
    out = evaluate.run(ctx.config.evaluate, Path(ctx.inputs["model"].uri), data_dir, name, ctx.out_dir,
                       baseline_dir=Path(baseline.uri) if baseline else None,
                       history_path=Path(history.uri) if history else None, record_root=ctx.workdir)
    plots = {p.stem: p for p in out.plot_paths}
    outputs = {"evaluation": artifact(out.metrics_path, "ModelEvaluation", accuracy=out.accuracy),
               "blessing": artifact(out.blessing_path, "ModelBlessing", blessed=out.blessed)}
    outputs.update({f"plot_{k}": artifact(v, "Plot") for k, v in plots.items()})
    return StageResult(outputs, {"accuracy": out.accuracy, "loss": out.loss, "num_examples": out.num_examples,
                                 "blessed": out.blessed, "reason": out.reason,
                                 "baseline_accuracy": out.baseline_accuracy,
                                 "baseline": baseline.uri if baseline else None,
                                 "baseline_version": baseline.properties.get("version") if baseline else None})


def _blessing(ctx: StageContext) -> dict[str, Any] | None:
    """The evaluator's blessing of the model being pushed; None (push only with --force) without one. A blessing
    the evaluator gave another model (an older export, another run) is refused, never applied to this one."""
    found = ctx.inputs.get("blessing")
    if found is None:
        if ctx.config.push.force:
            return None
        raise PipelineError(f"the model {ctx.inputs['model'].uri!r} has not been evaluated; run "
                            "`mnist-pipeline evaluate` first, or push with --force")
    producer = ctx.store.producer(found.id) if found.id is not None else None
    evaluated = ctx.store.input_artifacts(producer.id).get("model") if producer is not None else None
    if evaluated is not None and evaluated.uri != ctx.inputs["model"].uri:
        raise PipelineError(f"the newest evaluation ({found.uri!r}) is of {evaluated.uri!r}, not of the model to push "
                            f"({ctx.inputs['model'].uri!r}); run `mnist-pipeline evaluate` on this run first")
    try:
        return json.loads(Path(found.uri).read_text())
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{found.uri!r} cannot be read ({exc}); run `mnist-pipeline evaluate` again") from exc


def push_stage(ctx: StageContext) -> StageResult:
    from components import push

    blessing = _blessing(ctx)
    accuracy = blessing.get("accuracy") if blessing else None
    dataset = ctx.inputs["dataset"].properties.get("name") if "dataset" in ctx.inputs else ctx.config.data.dataset
    # Records name files inside the workdir relative to it (the version's own record too, when the model base
    # path is inside it): a copied workdir must not point at the original's folder.
    out = push.run(ctx.config.push, Path(ctx.inputs["model"].uri), model_base_path(ctx.config), blessing=blessing,
                   dataset=dataset, metadata={"run_id": ctx.run_id, "accuracy": accuracy},
                   record_path=ctx.out_dir / push.RECORD_FILE, check_images=_test_images(ctx, 8),
                   record_root=ctx.workdir)
    outputs: dict[str, Artifact] = {}
    if out.record_path is not None:
        outputs["push_record"] = artifact(out.record_path, "PushResult")
    if out.pushed:
        outputs["pushed_model"] = artifact(out.version_dir, "PushedModel", version=out.version,
                                           model_name=ctx.config.push.model_name, accuracy=accuracy)
    return StageResult(outputs, {"pushed": out.pushed, "version": out.version, "reason": out.reason,
                                 "blessed": bool(blessing and blessing.get("blessed")),
                                 "removed_versions": list(out.removed_versions)})


def rollback_stage(ctx: StageContext) -> StageResult:
    """Push the version in input `pushed_model` again, as a copy under a new, higher version (what TF Serving
    serves); its record keeps the judgement the version got when first pushed."""
    from components import push

    target = model_registry.version_at(ctx.inputs["pushed_model"].uri)
    base = model_base_path(ctx.config)
    served = model_registry.list_versions(base, ctx.config.push.model_name)[-1]
    meta = target.metadata
    out = push.run(
        dataclasses.replace(ctx.config.push, force=True),  # the operator's decision; it was checked when first pushed
        target.path, base, blessing=None,
        metadata={"run_id": meta.get("run_id"), "accuracy": meta.get("accuracy"), "dataset": meta.get("dataset"),
                  "blessed": meta.get("blessed"), "forced": meta.get("forced"),
                  "blessing_reason": meta.get("blessing_reason"), "rollback_run_id": ctx.run_id,
                  "rolled_back_from": served.version, "copy_of_version": target.version},
        record_root=ctx.workdir,  # the copy's record names its source (the version copied) as push does
    )
    copied = {"rolled_back_from": served.version, "copy_of_version": target.version}
    pushed = artifact(out.version_dir, "PushedModel", version=out.version, model_name=ctx.config.push.model_name,
                      accuracy=meta.get("accuracy"), **copied)
    return StageResult({"pushed_model": pushed}, {"pushed": True, "version": out.version, **copied,
                                                  "removed_versions": list(out.removed_versions)})


def rollback_spec(to: int | None = None) -> StageSpec:
    """`mnist-pipeline rollback`'s one stage: serve version `to` (default: the one before the newest) again."""
    return StageSpec("rollback", rollback_stage, sections=("push",), cacheable=False,
                     inputs=(Input("pushed_model", resolve=resolvers.version_to_roll_back_to(to)),))


def score_stage(ctx: StageContext) -> StageResult:
    from components import examples, score
    from pipeline.workdir import remove_stale_temp_dirs

    remove_stale_temp_dirs(ctx.workdir)  # Beam temp folders a killed score left (we hold the workdir lock)
    cfg = ctx.config.score
    if cfg.input_pattern:
        pattern = cfg.input_pattern
    elif "dataset" not in ctx.inputs:
        raise PipelineError(f"no dataset is ingested in {os.fspath(ctx.workdir)!r} to score its {cfg.split!r} split; "
                            "run `mnist-pipeline ingest` first, or pass files with --input")
    else:
        name, data_dir = _dataset(ctx)
        pattern = examples.split_file_pattern(data_dir, name, cfg.split)
    out = score.run(cfg, model=None if cfg.server else ctx.inputs["model"].uri, input_pattern=pattern,
                    output_dir=cfg.output or ctx.out_dir, beam_args=list(cfg.beam_args), record_root=ctx.workdir)
    local = "://" not in str(out.output_dir)
    outputs = ({"predictions": artifact(out.output_dir, "Predictions", format=cfg.output_format,
                                        model_version=out.model.version)} if local else {})
    return StageResult(
        outputs,
        {"num_predictions": out.num_predictions, "num_failed": out.num_failed, "accuracy": out.accuracy,
         "model_name": out.model.name, "model_version": out.model.version,
         "model": out.model.saved_model_dir or f"{cfg.server} (served)", "num_read": out.num_read,
         "input_format": out.input_format,
         "seconds": out.seconds, "output_dir": str(out.output_dir), "summary": str(out.summary_path),
         "predictions": str(out.predictions_pattern), "failed": str(out.failed_pattern), "metrics": out.metrics},
    )


def serving_check_stage(ctx: StageContext) -> StageResult:
    from components import serving_check

    name, data_dir = _dataset(ctx)
    served = ctx.inputs["model"]
    model = model_registry.version_at(served.uri)
    version = model.version
    expected, expected_n = None, None
    evaluation = ctx.upstream.get("evaluate")
    saved = ctx.inputs.get("saved_model")
    # The evaluator's accuracy is the yardstick when the served version is the model it evaluated;
    # otherwise (not blessed, an older version serves) the Beam scorer's run over the same version.
    if (evaluation is not None and "evaluation" in ctx.inputs and saved is not None
            and model_identity(saved.uri) == model_identity(served.uri)):
        expected, expected_n = evaluation.properties.get("accuracy"), evaluation.properties.get("num_examples")
    elif "predictions" in ctx.inputs and ctx.upstream.get("score") is not None:
        sc = ctx.upstream["score"].properties
        if sc.get("model_version") == version and sc.get("model_name") == model.name:
            expected, expected_n = sc.get("accuracy"), sc.get("num_predictions")
    out = serving_check.run(model, data_dir, name, ctx.out_dir, max_examples=ctx.config.evaluate.max_test_examples,
                            expected_accuracy=expected, expected_examples=expected_n, record_root=ctx.workdir)
    return StageResult({"result": artifact(out.result_path, "ServingCheck")},
                       {"passed": out.passed, "model_version": out.model_version, "num_examples": out.num_examples,
                        "accuracy": out.accuracy, "expected_accuracy": out.expected_accuracy})


def report_stage(ctx: StageContext) -> StageResult:
    from components import report

    run = ctx.store.get_run(ctx.run_id)
    stages = []
    for ex in ctx.store.executions(ctx.run_id):
        stages.append({"name": ex.stage, "status": ex.status, "duration": ex.duration, "reason": ex.error,
                       "outputs": {k: v["uri"] for k, v in ex.outputs.items() if not k.startswith("plot_")}})
    up = ctx.upstream

    def out(stage: str, name: str) -> Path | None:
        rec = up.get(stage)
        return Path(rec.outputs[name].uri) if rec is not None and name in rec.outputs else None

    evaluation = up.get("evaluate")
    figures = {k[len("plot_"):]: Path(a.uri) for k, a in (evaluation.outputs if evaluation else {}).items()
               if k.startswith("plot_")}
    push = up.get("push")
    lineage = None
    served = ctx.inputs.get("served_model")
    if served is not None:
        model = model_registry.version_at(served.uri)
        lineage = lineage_record(ctx.store, model.version, model.name, model.path.parent.parent)
    score_dir = out("score", "predictions")
    inputs = report.ReportInputs(
        run={"id": ctx.run_id, "status": run.status if run else "running", "started": run.started if run else None,
             "code_version": ctx.code_version, "config": ctx.config.to_dict()},
        stages=stages,
        statistics_path=out("validate", "statistics"),
        history_path=out("train", "history"),
        metrics_path=out("evaluate", "evaluation"),
        blessing=({k: v for k, v in evaluation.properties.items() if k in ("blessed", "reason", "baseline",
                                                                            "baseline_accuracy")}
                  if evaluation else None),
        score_summary_path=(score_dir / "summary.json") if score_dir else None,
        serving_check_path=out("serving_check", "result"),
        push=dict(push.properties) if push else None,
        lineage=lineage,
        figures=figures,
    )
    result = report.run(inputs, ctx.out_dir, record_root=ctx.workdir)
    return StageResult({"report": artifact(result.report_path, "Report")}, {"plots": [p.name for p in result.plot_paths]})


def _is_configured_dataset(config: Config, dataset: Artifact) -> bool:
    """A Dataset artifact of `data.dataset` (from another run: a workdir holds MNIST and Fashion-MNIST ones)."""
    return dataset.properties.get("name") == config.data.dataset


def default_stages() -> list[StageSpec]:
    optional = dict(required=False)
    dataset = Input("dataset", "ingest", accept=_is_configured_dataset)
    return [
        StageSpec("ingest", ingest_stage, sections=("data",), inputs=(Input("source", resolve=resolvers.source, **optional),)),
        StageSpec("validate", validate_stage, sections=("data",), inputs=(dataset,)),
        StageSpec("train", train_stage, sections=("data", "train"),
                  # The statistics are derived from the dataset (and carry a date): lineage, not cache identity.
                  inputs=(dataset, Input("statistics", "validate", in_cache_key=False))),
        StageSpec("export", export_stage, inputs=(Input("model", "train"), dataset)),
        StageSpec("evaluate", evaluate_stage, sections=("evaluate",),
                  inputs=(Input("model", "export", "saved_model"), dataset,
                          Input("history", "train", **optional),
                          Input("baseline", resolve=resolvers.baseline, **optional))),
        StageSpec("push", push_stage, sections=("push",),
                  inputs=(Input("model", "export", "saved_model"), Input("blessing", "evaluate", **optional),
                          Input("dataset", "ingest", accept=_is_configured_dataset, **optional))),
        StageSpec("score", score_stage, sections=("score",),
                  inputs=(Input("model", resolve=resolvers.model_to_score),
                          Input("dataset", "ingest", accept=_is_configured_dataset, **optional),
                          Input("input_files", resolve=resolvers.score_input, **optional))),
        StageSpec("serving_check", serving_check_stage,
                  inputs=(Input("model", resolve=resolvers.model_to_serve), dataset,
                          Input("saved_model", "export", **optional), Input("evaluation", "evaluate", **optional),
                          Input("predictions", "score", **optional))),
        StageSpec("report", report_stage, cacheable=False, after_failure=True,
                  inputs=(Input("served_model", resolve=resolvers.served_model, **optional),)),
    ]
