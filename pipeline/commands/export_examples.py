"""`mnist-pipeline export-examples`: a TFDS split -> sharded TFRecord files of tf.Example (a scoring sample)."""

from __future__ import annotations

import argparse
import logging

from pipeline.cli import config_flag
from pipeline.config import Config

NAME = "export-examples"
HELP = "write a split of the workdir's dataset as TFRecord files of tf.Example (image PNG, label, key)"
DESCRIPTION = """\
Write <prefix>-NNNNN-of-MMMMM.tfrecord: tf.Example records with `image` (PNG bytes), `label` (int64) and
`key` (<split>-<index>), the format `mnist-pipeline score --input` and Dataflow jobs read.

  mnist-pipeline export-examples --split test --output samples/test
  mnist-pipeline score --input 'samples/test-*.tfrecord'"""

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_flag(parser, "--split", key="score.split", metavar="NAME", help="the split to write (default: test)")
    parser.add_argument("--output", metavar="PREFIX", required=True, help="path prefix of the files to write")
    parser.add_argument("--num-shards", type=int, default=4, metavar="N", help="number of files (default 4)")


def run(config: Config, args: argparse.Namespace) -> int:
    from components import examples
    from pipeline import paths

    out = examples.write_examples(paths.data_dir(config.workdir), config.data.dataset, config.score.split,
                                  args.output, num_shards=args.num_shards)
    print(f"wrote {out.num_examples} examples of split {config.score.split!r} to {len(out.paths)} files")
    print(f"  pattern: {out.file_pattern}")
    return 0
