"""`mnist-pipeline evaluate`: a run's exported SavedModel on the test split, and its blessing."""

from __future__ import annotations

import argparse
import logging

from pipeline.cli import config_flag
from pipeline.commands._runs import add_run_id_argument, resolve_run_id
from pipeline.config import Config

NAME = "evaluate"
HELP = "evaluate a run's exported SavedModel on the test split and decide its blessing"
DESCRIPTION = """\
Evaluate <workdir>/runs/<run>/export/saved_model (what would be served, through its serving_default signature)
on the test split: loss, accuracy, per-class precision/recall/F1 and the confusion matrix go to
<workdir>/runs/<run>/evaluate/metrics.json, with confusion_matrix.png, test_samples.png, misclassified.png and (from train/history.json)
training_curves.png.

Blessing (blessing.json), as TFX's Evaluator: accuracy >= evaluate.accuracy_threshold (default 0.99) AND not
worse than the version pushed now (the newest under the model base path, run on the same test set) by more
than evaluate.tolerance. A model that is not blessed is a result, not an error: the exit status is 0."""

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_id_argument(parser, "export")
    config_flag(parser, "--threshold", key="evaluate.accuracy_threshold", type=float, metavar="ACC",
                help="least test accuracy to bless (default 0.99)")
    config_flag(parser, "--tolerance", key="evaluate.tolerance", type=float, metavar="DELTA",
                help="how much worse than the pushed version is still blessed (default 0.001)")
    config_flag(parser, "--max-test-examples", key="evaluate.max_test_examples", type=int, metavar="N",
                help="evaluate on the first N test examples only (smoke runs)")
    config_flag(parser, "--model-base-path", key="push.model_base_path", metavar="DIR",
                help="where pushed versions live (the baseline); default <workdir>/serving/models")


def run(config: Config, args: argparse.Namespace) -> int:
    from components import evaluate
    from serving import model_registry
    from pipeline import paths
    from pipeline.config import model_base_path

    run_id = resolve_run_id(config.workdir, args.run_id, needs="export", make_it="mnist-pipeline export")
    base = model_base_path(config)
    served = model_registry.newest_version(base, config.push.model_name) if base.is_dir() else None
    out = evaluate.run(
        config.evaluate,
        paths.exported_model_dir(config.workdir, run_id),
        paths.data_dir(config.workdir),
        config.data.dataset,
        paths.stage_dir(config.workdir, run_id, "evaluate"),
        baseline_dir=served.path if served is not None else None,
        history_path=paths.history_path(config.workdir, run_id),
    )
    print(f"run {run_id}: test accuracy {out.accuracy:.4f}, loss {out.loss:.4f} on {out.num_examples} examples")
    if served is not None:
        print(f"  pushed version {served.version} ({served.path}): accuracy {out.baseline_accuracy:.4f}")
    print(f"  {'BLESSED' if out.blessed else 'NOT BLESSED'}: {out.reason}")
    print(f"  metrics:  {out.metrics_path}")
    print(f"  blessing: {out.blessing_path}")
    for path in out.plot_paths:
        print(f"  plot:     {path}")
    return 0
