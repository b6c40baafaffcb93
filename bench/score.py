"""Benchmark: the Beam scoring job end to end vs the SavedModel's serving_default called in a loop.

    .venv/bin/python bench/score.py                       # trains a 1-epoch seed model on real MNIST first
    .venv/bin/python bench/score.py --model artifacts/serving/models/mnist [--batch-size 256]

One run, one SavedModel, the 10,000 test images (the TFDS split's own TFRecord file, real MNIST from
../shared/data/mnist):
  raw   images/s of serving_default on preloaded float batches (same batch size), in this process;
  beam  images/s of `components.score.run` end to end (pipeline start, model load, read, decode, infer,
        format, write, summary), in a subprocess (its peak RSS from ru_maxrss);
  then the same job on ten copies of the test set (100,000 images, ten files).
Targets: beam/raw >= 0.7; 100k throughput >= 10k throughput; 100k peak RSS <= 1.3x the 10k run's.
Raw throughput is measured before and after the jobs; the ratio uses the faster of the two.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
MNIST = REPO.parent / "shared" / "data" / "mnist"


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its waited-for children (multi_processing workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _job(argv: list[str]) -> None:
    """Child process: one scoring job; prints its figures as JSON on the last line."""
    import logging

    import pyarrow  # noqa: F401
    import tensorflow  # noqa: F401  importing TF (5-8 s) is process start-up, not the job: done before the clock

    from components import score
    from pipeline.config import ScoreConfig

    logging.basicConfig(level=logging.WARNING)
    model, pattern, out, batch, fmt, *beam_args = argv
    config = ScoreConfig(output_format=fmt, min_batch_size=int(batch), max_batch_size=int(batch))
    cpu0, start = _cpu_seconds(), time.perf_counter()
    result = score.run(config, model=model, input_pattern=pattern, output_dir=out, beam_args=beam_args)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu0
    load = result.metrics.get("RunInference/load_model_latency_milli_secs", {}).get("sum", 0) / 1000
    print(json.dumps({
        "images": result.num_predictions, "failed": result.num_failed, "seconds": seconds, "cpu_s": cpu,
        "accuracy": result.accuracy,
        "model_load_s": load,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children_maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))


def run_job(model: str, pattern: str, out: Path, batch: int, fmt: str, beam_args: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--_job", model, pattern, str(out), str(batch), fmt, *beam_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        sys.exit(f"job failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def prepare(work: Path, model: str | None) -> tuple[Path, str]:
    """(data_dir with real MNIST prepared, SavedModel path): ingests, and trains + exports when no model."""
    from components import data, export, ingest
    from components.model import build_model, compile_model, recipe
    from pipeline import paths
    from pipeline.config import DataConfig

    data_dir = paths.data_dir(work)
    ingest.run(DataConfig(source_dir=str(MNIST)), data_dir)
    if model:
        return data_dir, model
    train, _ = data.train_and_validation(data_dir, "mnist", batch_size=128, validation_fraction=0.1, seed=42)
    keras_model = build_model("seed", seed=42)
    compile_model(keras_model, recipe("seed"), total_steps=1)  # the seed's own recipe: Adam 1e-3, constant
    t = time.perf_counter()
    keras_model.fit(train, epochs=1, verbose=0)
    print(f"trained the seed CNN for 1 epoch in {time.perf_counter() - t:.0f} s")
    keras_path = work / "seed.keras"
    keras_model.save(keras_path)
    return data_dir, os.fspath(export.run(keras_path, work / "saved_model").saved_model_dir)


class RawLoop:
    """serving_default called in a loop over the preloaded, scaled test set at one batch size (in this process)."""

    def __init__(self, saved_model_dir: str, data_dir: Path, batch: int):
        import tensorflow as tf

        from components import data
        from serving import signatures as sig

        self._tf, self._sig = tf, sig
        self.batches = [(x.numpy(), y.numpy()) for x, y in data.split_dataset(data_dir, "mnist", "test", batch_size=batch)]
        self._loaded = tf.saved_model.load(saved_model_dir)
        self._fn = self._loaded.signatures[sig.SERVING_DEFAULT]
        self._fn(**{sig.IMAGE_INPUT: tf.constant(self.batches[0][0])})  # warm up

    def measure(self) -> tuple[float, float, float]:
        """(images/s, images per CPU-second, accuracy) over the 10,000 test images."""
        import numpy as np

        correct = n = 0
        cpu0, start = _cpu_seconds(), time.perf_counter()
        for x, y in self.batches:
            classes = self._fn(**{self._sig.IMAGE_INPUT: self._tf.constant(x)})[self._sig.CLASSES_OUTPUT].numpy()
            correct += int(np.sum(classes == y))
            n += len(y)
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu0
        return n / seconds, n / cpu, correct / n


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_job":
        return _job(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="SavedModel or model base path (default: train a 1-epoch seed model)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--format", default="jsonl", choices=["jsonl", "csv", "parquet"])
    parser.add_argument("--copies", type=int, default=10, help="copies of the test set in the large run")
    parser.add_argument("--work", help="keep prepared data and model in this folder and reuse them next time")
    args, beam_args = parser.parse_known_args()

    from components import examples, score

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_score_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.model is None and (work / "saved_model" / "saved_model.pb").is_file():
        args.model = os.fspath(work / "saved_model")
    try:
        data_dir, model = prepare(work, args.model)
        model_dir = score.resolve_model(model).saved_model_dir
        test_file = examples.split_files(data_dir, "mnist", "test")[0]
        copies = work / "copies"
        shutil.rmtree(copies, ignore_errors=True)
        copies.mkdir()
        for i in range(args.copies):
            shutil.copy(test_file, copies / f"test-{i:02d}.tfrecord")

        print(f"cpus: {os.cpu_count()} (shared with other users: timings are under contention)")
        print(f"model: {model_dir}   batch size: {args.batch_size}   format: {args.format}   "
              f"beam options: {' '.join(beam_args) or '(none: FnApiRunner in memory)'}")
        loop = RawLoop(model_dir, data_dir, args.batch_size)
        # Other users' load changes minute by minute: measure raw right before and after each job, and compare
        # each job with the mean of its two neighbours.
        raws = [loop.measure()]
        small = run_job(model_dir, test_file, work / "out10k", args.batch_size, args.format, beam_args)
        raws.append(loop.measure())
        large = run_job(model_dir, os.fspath(copies / "test-*.tfrecord"), work / "out100k", args.batch_size,
                        args.format, beam_args)
        raws.append(loop.measure())
        raw_acc = raws[0][2]
        print("raw serving_default loop, 10,000 images: " + ", ".join(f"{r[0]:.0f}" for r in raws)
              + " images/s (before, between, after the jobs); "
              + ", ".join(f"{r[1]:.0f}" for r in raws) + f" images per CPU-second; accuracy {raw_acc:.4f}")
        for job, (before, after) in ((small, raws[0:2]), (large, raws[1:3])):
            job["ips"] = job["images"] / job["seconds"]
            job["raw"] = (before[0] + after[0]) / 2
            job["raw_cpu"] = (before[1] + after[1]) / 2
            job["rss"] = job["maxrss_mb"] + (job["children_maxrss_mb"] if job["children_maxrss_mb"] > 1 else 0)
            print(f"beam job end to end, {job['images']:>7,} images: {job['ips']:6.0f} images/s, "
                  f"{job['images'] / job['cpu_s']:.0f} per CPU-second ({job['seconds']:.1f} s, model load "
                  f"{job['model_load_s']:.1f} s; accuracy {job['accuracy']:.4f}; failed {job['failed']}; "
                  f"peak RSS {job['rss']:.0f} MB)")
        marginal = (large["images"] - small["images"]) / (large["seconds"] - small["seconds"])
        print(f"ratio beam/raw, 10k:   {small['ips'] / small['raw']:.2f}   (target >= 0.7)")
        print(f"ratio beam/raw, 100k:  {large['ips'] / large['raw']:.2f}")
        print(f"ratio beam/raw, marginal images (100k - 10k, start-up excluded): {marginal / large['raw']:.2f}")
        print(f"ratio in CPU time (less sensitive to other users' load): 10k "
              f"{small['images'] / small['cpu_s'] / small['raw_cpu']:.2f}, 100k "
              f"{large['images'] / large['cpu_s'] / large['raw_cpu']:.2f}")
        print(f"throughput 100k/10k:   {large['ips'] / small['ips']:.2f}   (target >= 1.0)")
        print(f"peak RSS 100k/10k:     {large['rss'] / small['rss']:.2f}   (target <= 1.3)")
        print(f"accuracy beam == raw:  {small['accuracy'] == raw_acc and large['accuracy'] == raw_acc}")
    finally:
        for name in ("copies", "out10k", "out100k"):
            shutil.rmtree(work / name, ignore_errors=True)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
