"""`mnist-pipeline train`: train a Keras model on the ingested dataset into <workdir>/runs/<run id>/train/."""

from __future__ import annotations

import argparse
import logging
import re
import sys

from pipeline.cli import config_flag
from pipeline.config import Config
from pipeline.errors import ConfigError

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

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_flag(parser, "--architecture", key="train.architecture", metavar="NAME",
                help="default (batch norm, augmentation, one-cycle schedule) or seed (the tutorial CNN)")
    config_flag(parser, "--epochs", key="train.epochs", type=int, metavar="N", help="default: the recipe's")
    config_flag(parser, "--batch-size", key="train.batch_size", type=int, metavar="N", help="default: the recipe's")
    config_flag(parser, "--learning-rate", key="train.learning_rate", type=float, metavar="LR",
                help="default: the recipe's (the peak rate of its schedule)")
    config_flag(parser, "--max-train-examples", key="train.max_train_examples", type=int, metavar="N",
                help="use only the first N examples of the train split (smoke runs)")
    config_flag(parser, "--seed", key="train.seed", type=int, metavar="N", help="random seed (default 42)")
    parser.add_argument("--run-id", metavar="ID", default=None,
                        help="the run to train in; an existing one resumes where it stopped (default: a new run)")


def run(config: Config, args: argparse.Namespace) -> int:
    from components import model, train
    from pipeline import paths

    model.recipe(config.train.architecture)  # an unknown name fails here, before a run folder appears
    run_id = args.run_id or paths.new_run_id()
    if not _RUN_ID.match(run_id):
        raise ConfigError(f"--run-id {run_id!r} is not a valid run id (letters, digits, '.', '_', '-')")
    out_dir = paths.stage_dir(config.workdir, run_id, "train")
    print(f"run {run_id}: training {config.train.architecture!r} in {out_dir}", flush=True)
    verbose = 1 if sys.stdout.isatty() else 2  # progress bar on a terminal, one line per epoch in logs
    out = train.run(config.train, config.data, paths.data_dir(config.workdir), out_dir, verbose=verbose)
    resumed = f" (resumed at epoch {out.initial_epoch})" if out.initial_epoch else ""
    print(f"run {run_id}: trained {out.epochs} epochs{resumed} in {out.train_seconds:.0f} s, "
          f"validation accuracy {out.val_accuracy:.4f}")
    print(f"  model:       {out.model_path}")
    print(f"  history:     {out.history_path}")
    print(f"  tensorboard: {out.tensorboard_dir}")
    return 0
