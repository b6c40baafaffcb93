"""`mnist-pipeline ingest`: prepare the dataset in the workdir's TFDS data_dir, then validate it."""

from __future__ import annotations

import argparse
import logging

from pipeline.cli import config_flag, dataset_flag
from pipeline.commands._runs import add_stage_arguments, run_stages
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
    dataset_flag(parser, "the TFDS dataset to prepare")
    config_flag(parser, "--source-dir", key="data.source_dir", metavar="DIR",
                help="folder of the four IDX .gz files (offline); default: the TFDS download")
    add_stage_arguments(parser, needs=None)


def run(config: Config, args: argparse.Namespace) -> int:
    import json

    from components import ingest

    ingest.check_config(config.data)  # a bad dataset or source folder is refused before a run is recorded
    if args.quiet:
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()
    # Raises StageFailed (exit 1, anomalies named) after validate wrote the statistics.
    run_id, records = run_stages(config, args, ["ingest", "validate"], needs=None)
    ingest, validate = records["ingest"], records["validate"]
    ds = ingest.outputs["dataset"]
    p = ds.properties
    reused = ingest.status == "cached" or ingest.properties.get("reused")
    state = "reused (already prepared from the same data)" if reused else "prepared"
    source = f"IDX files in {p['source_dir']}" if p.get("source_dir") else "the TFDS download"
    print(f"run {run_id}: {p['name']} {p['version']}: {state} from {source}")
    print(f"  TFDS data_dir: {p['data_dir']}  (tfds.load({p['name']!r}, data_dir={p['data_dir']!r}))")
    print(f"  dataset dir:   {ds.uri}")
    print("  examples:      " + ", ".join(f"{k} {v}" for k, v in sorted(p["num_examples"].items())))
    statistics_path = validate.outputs["statistics"].uri
    print(f"statistics ({statistics_path}): no anomalies")
    with open(statistics_path) as fh:
        statistics = json.load(fh)
    for split, s in sorted(statistics["splits"].items()):
        print(f"  {split}: {s['num_examples']} examples, image {s['image_shape']} {s['image_dtype']}, "
              f"pixels min {s['pixel_min']} max {s['pixel_max']} mean {s['pixel_mean']:.2f} std {s['pixel_std']:.2f}")
        print(f"    labels 0-9: {' '.join(str(c) for c in s['label_histogram'])}")
    return 0
