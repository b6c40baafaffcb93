"""`mnist-pipeline ingest`: prepare the dataset in the workdir's TFDS data_dir, then validate it."""

from __future__ import annotations

import argparse
import logging

from pipeline.cli import config_flag
from pipeline.config import Config

NAME = "ingest"
HELP = "prepare MNIST (or fashion_mnist) as a TFDS dataset in the workdir and validate it"
DESCRIPTION = """\
Prepare the dataset as a regular TFDS dataset in <workdir>/data (tfds.load(name, data_dir=...) reads it),
then compute its statistics and check them for anomalies (<workdir>/data/<dataset>/statistics.json).

  online:   mnist-pipeline ingest
  offline:  mnist-pipeline ingest --source-dir ../shared/data/mnist
            (a folder with train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
             t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)

A second ingest of the same data reuses what is prepared."""

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_flag(parser, "--dataset", key="data.dataset", metavar="NAME",
                help="TFDS dataset name: mnist (default) or fashion_mnist")
    config_flag(parser, "--source-dir", key="data.source_dir", metavar="DIR",
                help="folder of the four IDX .gz files (offline); default: the TFDS download")


def run(config: Config, args: argparse.Namespace) -> int:
    from components import ingest, validate
    from pipeline import paths

    if args.quiet:
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()
    out = ingest.run(config.data, paths.data_dir(config.workdir))
    state = "reused (already prepared from the same data)" if out.reused else "prepared"
    source = f"IDX files in {out.source_dir}" if out.source_dir else "the TFDS download"
    print(f"{out.dataset} {out.version}: {state} from {source}")
    print(f"  TFDS data_dir: {out.data_dir}  (tfds.load({out.dataset!r}, data_dir={str(out.data_dir)!r}))")
    print(f"  dataset dir:   {out.dataset_dir}")
    print("  examples:      " + ", ".join(f"{k} {v}" for k, v in sorted(out.num_examples.items())))
    print(f"  ingest record: {out.record_path}")
    # Raises ValidationError (exit 1, anomalies named) after writing the statistics.
    checked = validate.run(config.data, out.data_dir, paths.statistics_path(config.workdir, out.dataset))
    print(f"statistics ({checked.statistics_path}): no anomalies")
    for split, s in sorted(checked.statistics["splits"].items()):
        print(f"  {split}: {s['num_examples']} examples, image {s['image_shape']} {s['image_dtype']}, "
              f"pixels min {s['pixel_min']} max {s['pixel_max']} mean {s['pixel_mean']:.2f} std {s['pixel_std']:.2f}")
        print(f"    labels 0-9: {' '.join(str(c) for c in s['label_histogram'])}")
    return 0
