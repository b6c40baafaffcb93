"""`mnist-pipeline export`: the trained Keras model of a run -> its SavedModel with the serving signatures."""

from __future__ import annotations

import argparse
import logging

from pipeline.commands._runs import add_run_id_argument, resolve_run_id, test_images
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
    add_run_id_argument(parser, "train")


def run(config: Config, args: argparse.Namespace) -> int:
    from components import export
    from pipeline import paths

    run_id = resolve_run_id(config.workdir, args.run_id, needs="train", make_it="mnist-pipeline train")
    out = export.run(
        paths.trained_model_path(config.workdir, run_id),
        paths.exported_model_dir(config.workdir, run_id),
        warmup_images=test_images(config, 4),
    )
    print(f"run {run_id}: exported SavedModel {out.saved_model_dir}")
    print(f"  signatures: {', '.join(out.signature_names)}")
    print(f"  warmup:     {out.warmup_path}")
    print(f"  inspect:    saved_model_cli show --all --dir {out.saved_model_dir}")
    return 0
