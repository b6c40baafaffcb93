"""`mnist-pipeline train`: train a Keras model on the ingested dataset into <workdir>/runs/<run id>/train/."""

from __future__ import annotations

import argparse
import logging

from components.model import PRECISIONS, architectures
from pipeline.cli import config_flag
from pipeline.commands._runs import add_stage_arguments, run_stages
from pipeline.config import Config

NAME = "train"
HELP = "train a CNN (default: batch norm, augmentation, one-cycle; seed: the tutorial CNN) on the ingested dataset"
DESCRIPTION = """\
Train on the ingested dataset (run `mnist-pipeline ingest` first) and write, under
<workdir>/runs/<run id>/train/: model.keras, history.json, checkpoints/best.keras, tensorboard/.

  mnist-pipeline train                              a new run, the default architecture and its recipe
  mnist-pipeline train --architecture seed          the TensorFlow tutorial CNN (5 epochs, batch 32)
  mnist-pipeline train --run-id 20261123T212400Z-3f9a1c
                                                    resume that run where it stopped (after a kill)

Unset --epochs/--batch-size/--learning-rate take the architecture's recipe. A terminal gets Keras's progress
bar, anything else one line per epoch. Watch it with: tensorboard --logdir <workdir>/runs/<run id>/train/tensorboard"""

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_flag(parser, "--architecture", key="train.architecture", choices=architectures(),
                help="default (batch norm, augmentation, one-cycle schedule) or seed (the tutorial CNN)")
    config_flag(parser, "--epochs", key="train.epochs", type=int, metavar="N", help="default: the recipe's")
    config_flag(parser, "--batch-size", key="train.batch_size", type=int, metavar="N", help="default: the recipe's")
    config_flag(parser, "--learning-rate", key="train.learning_rate", type=float, metavar="LR",
                help="default: the recipe's (the peak rate of its schedule)")
    config_flag(parser, "--max-train-examples", key="train.max_train_examples", type=int, metavar="N",
                help="use only the first N examples of the train split (smoke runs)")
    config_flag(parser, "--seed", key="train.seed", type=int, metavar="N", help="random seed (default 42)")
    config_flag(parser, "--precision", key="train.precision", choices=PRECISIONS,
                help="training's compute dtype (default: the recipe's: auto for default, mixed_bfloat16 where the "
                     "CPU has AMX-BF16 or the GPU bfloat16 units, else float32; float32 for seed). The saved model "
                     "computes in float32")
    add_stage_arguments(parser, needs=None)


def run(config: Config, args: argparse.Namespace) -> int:
    from components import model

    model.recipe(config.train.architecture)  # an unknown name fails here, before a run is recorded
    run_id, records = run_stages(config, args, ["train"], needs=None)
    rec = records["train"]
    p = rec.properties
    resumed = f" (resumed at epoch {p['initial_epoch']})" if p.get("initial_epoch") else ""
    precision = f" ({p['precision']})" if p.get("precision") else ""
    print(f"run {run_id}: trained {p['architecture']!r} {p['epochs']} epochs{resumed}{precision} in "
          f"{p['train_seconds']:.0f} s, "
          f"validation accuracy {p['val_accuracy']:.4f}")
    print(f"  model:       {rec.outputs['model'].uri}")
    print(f"  history:     {rec.outputs['history'].uri}")
    if p.get("tensorboard"):
        print(f"  tensorboard: {p['tensorboard']}")
    return 0
