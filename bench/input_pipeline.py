"""Throughput of the training input pipeline, against a numpy feed and against what training consumes.

    .venv/bin/python bench/input_pipeline.py --source-dir ../shared/data/mnist

1. pipeline: `components.data.train_and_validation` exactly as the trainer builds it (the recipe's batch size,
   the default data config), examples/s per epoch after the first (the first decodes the PNGs and fills the cache;
   printed on its own).
2. numpy feed: the same training examples held as uint8 numpy arrays, shuffled, sliced into batches of the same
   size, scaled to float32 and turned into tensors each epoch, as a hand-written feed into a Keras train step
   must do. Both feeds are measured going into the same compiled (trivial) train step, the way `fit` consumes
   them: the tf.data iterator is pulled inside the step's graph, numpy batches are converted and passed in.
   Plain Python iteration of both (nothing consuming) is printed for reference.
3. consumption: examples/s of training steps (`model.fit`) of the recipe's model on one fixed batch, so the
   figure is the model's cost alone.

Targets: pipeline >= numpy feed, and pipeline >= 10x consumption. All figures are medians over several epochs
(or steps) in this one run, so they compare under the same load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _epoch_rate(iterate) -> float:
    start = time.perf_counter()
    n = iterate()
    return n / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=str(REPO_ROOT / "artifacts"), help="holds (or gets) the prepared dataset")
    parser.add_argument("--source-dir", default=str(REPO_ROOT.parent / "shared" / "data" / "mnist"),
                        help="IDX files to ingest from when the dataset is not prepared yet")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--architecture", default="default", help="whose recipe batch size and model to use")
    parser.add_argument("--epochs", type=int, default=7, help="timed epochs per feed (after one warm-up epoch)")
    parser.add_argument("--train-steps", type=int, default=30, help="timed training steps for the consumption rate")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    from components import data, ingest
    from components import model as models
    from pipeline import paths
    from pipeline.config import DataConfig

    config = DataConfig(dataset=args.dataset, source_dir=args.source_dir)
    prepared = ingest.run(config, paths.data_dir(args.workdir))
    batch_size = models.recipe(args.architecture).batch_size
    print(f"dataset {prepared.dataset} in {prepared.data_dir} ({prepared.num_examples['train']} train examples); "
          f"batch size {batch_size} ({args.architecture} recipe); {os.cpu_count()} CPUs, "
          f"devices: {', '.join(d.device_type for d in tf.config.list_physical_devices())}")

    # 1. The pipeline, as the trainer configures it.
    train, _ = data.train_and_validation(
        prepared.data_dir, config.dataset, batch_size=batch_size, validation_fraction=config.validation_fraction,
        seed=config.seed, shuffle_buffer=config.shuffle_buffer,
    )

    def iterate_pipeline() -> int:
        n = 0
        for images, _labels in train:
            n += int(images.shape[0])
        return n

    first = _epoch_rate(iterate_pipeline)

    # 2. The same examples from in-memory numpy arrays.
    images_list, labels_list = [], []
    for images, labels in data.train_and_validation(
        prepared.data_dir, config.dataset, batch_size=4096, validation_fraction=config.validation_fraction,
        seed=config.seed, shuffle_buffer=0,
    )[0]:
        images_list.append((images.numpy() * 255).round().astype(np.uint8))
        labels_list.append(labels.numpy())
    x, y = np.concatenate(images_list), np.concatenate(labels_list)
    rng = np.random.default_rng(config.seed)

    def numpy_feed(to_tensors: bool):
        def iterate() -> int:
            order = rng.permutation(len(x))
            n = 0
            for start in range(0, len(x), batch_size):
                take = order[start : start + batch_size]
                images, labels = x[take].astype(np.float32) / 255.0, y[take]
                if to_tensors:  # what a Keras train step does with numpy input before it can use it
                    images, labels = tf.convert_to_tensor(images), tf.convert_to_tensor(labels)
                n += len(labels)
            return n

        return iterate

    # Both feeds go into the same compiled step, the way Keras's fit consumes them: a tf.data iterator is
    # pulled inside the step's graph (no Python per batch but the call); numpy batches are sliced, scaled and
    # converted in Python, then passed in. The step itself is trivial, so the figure is the feed's cost.
    steps = sum(1 for _ in train)

    @tf.function
    def step(images, labels):
        return tf.reduce_sum(images) + tf.cast(tf.reduce_sum(labels), tf.float32)

    @tf.function
    def step_from_iterator(iterator):
        images, labels = next(iterator)
        return step(images, labels)

    def pipeline_into_step() -> int:
        iterator = iter(train)
        for _ in range(steps):
            step_from_iterator(iterator)
        return steps * batch_size

    def numpy_into_step() -> int:
        order = rng.permutation(len(x))
        n = 0
        for start in range(0, len(x), batch_size):
            take = order[start : start + batch_size]
            step(tf.convert_to_tensor(x[take].astype(np.float32) / 255.0), tf.convert_to_tensor(y[take]))
            n += len(take)
        return n

    # Interleaved rounds, one epoch of each feed per round, so that both see the same load on a shared machine.
    numpy_feed(True)()
    pipeline_into_step()
    numpy_into_step()
    pipeline_rates, numpy_rates, raw_numpy_rates, fed_pipeline_rates, fed_numpy_rates = [], [], [], [], []
    for _ in range(args.epochs):
        fed_pipeline_rates.append(_epoch_rate(pipeline_into_step))
        fed_numpy_rates.append(_epoch_rate(numpy_into_step))
        pipeline_rates.append(_epoch_rate(iterate_pipeline))
        numpy_rates.append(_epoch_rate(numpy_feed(True)))
        raw_numpy_rates.append(_epoch_rate(numpy_feed(False)))

    def _fmt(rates):
        return ", ".join(f"{r:,.0f}" for r in rates)

    pipeline_rate = statistics.median(fed_pipeline_rates)
    numpy_rate = statistics.median(fed_numpy_rates)
    print(f"pipeline first epoch (decode PNG + fill cache): {first:12,.0f} examples/s")
    print(f"into a compiled train step (as fit consumes each feed; median of {args.epochs} epochs of {len(x)}):")
    print(f"  pipeline (tf.data, cached, in-graph next):    {pipeline_rate:12,.0f} examples/s  ({_fmt(fed_pipeline_rates)})")
    print(f"  numpy feed (slice, scale, convert, call):     {numpy_rate:12,.0f} examples/s  ({_fmt(fed_numpy_rates)})")
    print(f"  pipeline / numpy feed:                        {pipeline_rate / numpy_rate:12.2f}x  (target >= 1)")
    print("iterated from Python, nothing consuming (for reference):")
    print(f"  pipeline (for batch in dataset):              {statistics.median(pipeline_rates):12,.0f} examples/s  "
          f"({_fmt(pipeline_rates)})")
    print(f"  numpy feed (slice, scale, to tensors):        {statistics.median(numpy_rates):12,.0f} examples/s  "
          f"({_fmt(numpy_rates)})")
    print(f"  numpy slicing alone (no tensors):             {statistics.median(raw_numpy_rates):12,.0f} examples/s")

    # 3. What training consumes: fit() steps of the recipe's model on one fixed batch (no input cost).
    import keras

    net = models.build_model(args.architecture, seed=config.seed)
    recipe = models.recipe(args.architecture)
    models.compile_model(net, recipe, total_steps=10 * args.train_steps)
    batch = next(iter(train))
    fixed = tf.data.Dataset.from_tensors(batch).repeat()

    class StepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_train_batch_begin(self, batch, logs=None):
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self._start)

    # shuffle=False as in components.train: Keras ignores it for a tf.data.Dataset but warns at its default True.
    net.fit(fixed, steps_per_epoch=3, epochs=1, verbose=0, shuffle=False)  # trace and compile
    timer = StepTimes()
    net.fit(fixed, steps_per_epoch=args.train_steps, epochs=1, verbose=0, shuffle=False, callbacks=[timer])
    consume_rate = batch_size / statistics.median(timer.times)
    print(f"training consumes ({args.architecture} model, fit):        {consume_rate:12,.0f} examples/s  "
          f"(median of {args.train_steps} steps)")
    print(f"pipeline / consumption:                         {pipeline_rate / consume_rate:12.1f}x  (target >= 10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
