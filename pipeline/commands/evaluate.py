"""`mnist-pipeline evaluate`: a run's exported SavedModel on the test split, and its blessing."""

from __future__ import annotations

import argparse
import logging

from pipeline.cli import config_flag, model_name_flag, per_dataset
from pipeline.commands._runs import add_stage_arguments, run_stages
from pipeline.config import Config

NAME = "evaluate"
HELP = "evaluate a run's exported SavedModel on the test split and decide its blessing"
DESCRIPTION = """\
Evaluate <workdir>/runs/<run>/export/saved_model (what would be served, through its serving_default signature)
on the test split: loss, accuracy, per-class precision/recall/F1 and the confusion matrix go to
<workdir>/runs/<run>/evaluate/metrics.json, with confusion_matrix.png, test_samples.png, misclassified.png and
(from train/history.json) training_curves.png.

Blessing (blessing.json), as TFX's Evaluator: accuracy >= evaluate.accuracy_threshold (default: the
dataset's, mnist 0.99, fashion_mnist 0.90) AND not worse than the version pushed now (the newest of the same
dataset under the model base path, run on the same test set) by more than evaluate.tolerance. The candidate
is never compared with itself: a version that holds this very model is passed over for the one before it
(or none). A model that is not blessed is a result, not an error: the exit status is 0."""

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_arguments(parser, needs="export")
    config_flag(parser, "--threshold", key="evaluate.accuracy_threshold", type=float, metavar="ACC",
                help=f"least test accuracy to bless (default: the dataset's: {per_dataset('accuracy_threshold')})")
    config_flag(parser, "--tolerance", key="evaluate.tolerance", type=float, metavar="DELTA",
                help="how much worse than the pushed version is still blessed (default 0.001)")
    config_flag(parser, "--max-test-examples", key="evaluate.max_test_examples", type=int, metavar="N",
                help="evaluate on the first N test examples only (smoke runs)")
    model_name_flag(parser)
    config_flag(parser, "--model-base-path", key="push.model_base_path", metavar="DIR",
                help="where pushed versions live (the baseline); default <workdir>/serving/models")


def run(config: Config, args: argparse.Namespace) -> int:
    run_id, records = run_stages(config, args, ["evaluate"], needs="export")
    rec = records["evaluate"]
    p = rec.properties
    print(f"run {run_id}: test accuracy {p['accuracy']:.4f}, loss {p['loss']:.4f} on {p['num_examples']} examples")
    if p.get("baseline"):
        version = p.get("baseline_version")
        print(f"  pushed version {version if version is not None else '?'} ({p['baseline']}): "
              f"accuracy {p['baseline_accuracy']:.4f}")
    else:
        print("  no other pushed version to compare with")
    print(f"  {'BLESSED' if p['blessed'] else 'NOT BLESSED'}: {p['reason']}")
    print(f"  metrics:  {rec.outputs['evaluation'].uri}")
    print(f"  blessing: {rec.outputs['blessing'].uri}")
    for name, art in sorted(rec.outputs.items()):
        if name.startswith("plot_"):
            print(f"  plot:     {art.uri}")
    return 0
