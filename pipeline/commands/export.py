"""`mnist-pipeline export`: the trained Keras model of a run -> its SavedModel with the serving signatures."""

from __future__ import annotations

import argparse
import logging

from pipeline.commands._runs import add_stage_arguments, run_stages
from pipeline.config import Config

NAME = "export"
HELP = "export a run's trained model as a SavedModel (serving_default, predict_png, classify, warmup)"
DESCRIPTION = """\
Export <workdir>/runs/<run>/train/model.keras as a TF2 SavedModel in <workdir>/runs/<run>/export/saved_model:

  serving_default  (tensorflow/serving/predict)   image float32 [b,28,28,1] -> probabilities, classes
  predict_png      (tensorflow/serving/predict)   image_png string [b] (PNG files) -> probabilities, classes
  classify         (tensorflow/serving/classify)  inputs string [b] (tf.Example: image PNG, label) -> classes, scores

plus warmup requests in assets.extra/tf_serving_warmup_requests. Inspect it with
  saved_model_cli show --all --dir <workdir>/runs/<run>/export/saved_model"""

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_arguments(parser, needs="train")


def run(config: Config, args: argparse.Namespace) -> int:
    run_id, records = run_stages(config, args, ["export"], needs="train")
    rec = records["export"]
    saved = rec.outputs["saved_model"].uri
    print(f"run {run_id}: exported SavedModel {saved}")
    print(f"  signatures: {', '.join(rec.properties['signatures'])}")
    if rec.properties.get("warmup"):
        print(f"  warmup:     {rec.properties['warmup']}")
    print(f"  inspect:    saved_model_cli show --all --dir {saved}")
    return 0
