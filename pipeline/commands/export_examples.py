"""`mnist-pipeline export-examples`: a TFDS split -> sharded TFRecord files of tf.Example (a scoring sample)."""

from __future__ import annotations

import argparse
import logging

from components.score.options import INPUT_FORMATS
from pipeline.cli import config_flag, dataset_flag
from pipeline.config import Config

NAME = "export-examples"
HELP = "write a split of the workdir's dataset as files to score: TFRecord, Parquet, CSV or PNG images"
DESCRIPTION = """\
Write the split's rows (keys <split>-<index>) in a format `mnist-pipeline score --input` reads:
  tfrecord  <prefix>-NNNNN-of-MMMMM.tfrecord  tf.Example: image (PNG bytes), label (int64), key
  parquet   <prefix>-NNNNN-of-MMMMM.parquet   columns key, label, image (PNG bytes)
  csv       <prefix>-NNNNN-of-MMMMM.csv       Kaggle's digit-recognizer layout plus a key column (colour:
                                              h*w*c pixel columns in row, column, channel order)
  images    <prefix>/<key>.png                one PNG per row: 28x28 grey (MNIST), 32x32 colour (CIFAR-10)

  mnist-pipeline export-examples --split test --output samples/test
  mnist-pipeline score --input 'samples/test-*.tfrecord'
  mnist-pipeline export-examples --format csv --limit 1000 --output samples/test
  mnist-pipeline score --input 'samples/test-*.csv'
  mnist-pipeline export-examples --dataset cifar10 --format images --output samples/cifar   # 32x32 colour PNGs"""

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    dataset_flag(parser, "the ingested dataset whose split to write")
    config_flag(parser, "--split", key="score.split", metavar="NAME", help="the split to write (default: test)")
    parser.add_argument("--output", metavar="PREFIX", required=True, help="path prefix of the files to write")
    parser.add_argument("--num-shards", type=int, default=4, metavar="N", help="number of files (default 4)")
    parser.add_argument("--format", dest="sample_format", default="tfrecord",
                        choices=INPUT_FORMATS, help="file format (default tfrecord)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N rows of the split")


def run(config: Config, args: argparse.Namespace) -> int:
    from components import examples
    from pipeline import paths

    out = examples.write_sample(paths.data_dir(config.workdir), config.data.dataset, config.score.split,
                                args.output, output_format=args.sample_format, num_shards=args.num_shards,
                                limit=args.limit)
    print(f"wrote {out.num_examples} examples of split {config.score.split!r} to {len(out.paths)} "
          f"{args.sample_format} files")
    print(f"  pattern: {out.file_pattern}")
    return 0
