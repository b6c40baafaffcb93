"""Benchmark: the whole `mnist-pipeline score` process against a plain process that loads the same SavedModel and
predicts the same images, in one bench run (whole processes: interpreter start, imports, model load included).

    .venv/bin/python bench/score.py                       # trains a 1-epoch seed model on real MNIST first
    .venv/bin/python bench/score.py --model artifacts/serving/models/mnist [--batch-size 256] [--work DIR]

Inputs: the 10,000 test images (the TFDS split's own TFRecord file, real MNIST from ../shared/data/mnist),
and ten copies of it (100,000 images, ten files).
  plain   `python bench/score.py --_plain`: tf.data reads the TFRecord files, parses and decodes the PNGs,
          scales them, and calls serving_default in batches; counts the classes (writes nothing);
  score   `python -m pipeline score --input ... --output ...` (FnApiRunner in-process, JSON lines);
  remote  the same `score` with `--server` against `mnist-pipeline serve` (started before the clock) on
          the 10,000 images at batch 256, against local `score` at batch 256;
  spark   `score --engine spark` on the 100,000 images, on local[2] and on a standalone cluster of two
          1-core workers on this machine (started before the clock), against the plain process (no target:
          the figure beside Beam's; needs the [spark] extra and Java, else skipped).
Ratios are throughputs (plain seconds / score seconds), in wall time and, less sensitive to other users'
load, in CPU time (the server's CPU is not counted in the remote run's). Targets: score/plain >= 0.8 on 10k
and >= 0.9 on 100k; remote/local >= 0.7; spark/plain is printed without a target. Processes alternate
(plain, score, plain, ...) and each ratio uses the mean of the plain runs around its score run: the 2 CPUs
are shared with other users whose load changes minute by minute.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
MNIST = REPO.parent / "shared" / "data" / "mnist"


def _plain(argv: list[str]) -> None:
    """Child process: the plain baseline. Prints {"images", "correct"} as JSON."""
    import glob

    import tensorflow as tf

    from components.preprocessing import decode_and_scale_pngs
    from serving import signatures as sig

    model_dir, pattern, batch = argv[0], argv[1], int(argv[2])
    files = sorted(glob.glob(pattern))
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}

    def parse(records):
        f = tf.io.parse_example(records, spec)
        return decode_and_scale_pngs(f["image"]), f["label"]

    data = tf.data.TFRecordDataset(files).batch(batch).map(parse).prefetch(2)
    fn = tf.saved_model.load(model_dir).signatures[sig.SERVING_DEFAULT]
    n = correct = 0
    for images, labels in data:
        classes = fn(**{sig.IMAGE_INPUT: images})[sig.CLASSES_OUTPUT]
        correct += int(tf.reduce_sum(tf.cast(tf.equal(classes, labels), tf.int32)))
        n += int(labels.shape[0])
    print(json.dumps({"images": n, "correct": correct}))


CPU: dict[str, float] = {}  # command kind -> CPU seconds of its last run


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    """Wall seconds of the whole process (and its CPU seconds in CPU["last"]), and its stdout."""
    start, cpu0 = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    seconds = time.perf_counter() - start
    CPU["last"] = _children_cpu() - cpu0
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def prepare(work: Path, model: str | None, source_dir: Path = MNIST) -> tuple[Path, str]:
    """(data_dir with real MNIST prepared, SavedModel path): ingests, and trains + exports when no model."""
    from components import data, export, ingest
    from components.model import build_model, compile_model, recipe
    from pipeline import paths
    from pipeline.config import DataConfig

    data_dir = paths.data_dir(work)
    ingest.run(DataConfig(source_dir=str(source_dir)), data_dir)
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


def spark_figures(work: Path, scored, plain, pattern: str, model_dir: str, plain_runs: list[float]) -> list:
    """`score --engine spark` on the 100k images, local[2] and a 2-worker standalone cluster, against the plain
    process (the mean of the 100k plain runs so far and one more after the Spark runs)."""
    from components.score.spark_cluster import LocalCluster
    from components.score.spark_job import require_spark
    from pipeline.errors import PipelineError

    try:
        require_spark()
    except PipelineError as exc:
        print(f"spark: skipped ({exc})")
        return []
    out = []
    local_s, summary = scored(pattern, "outspark", "--engine", "spark", "--spark-master", "local[2]", "--model",
                              model_dir)
    with LocalCluster(work / "spark-cluster", workers=2) as cluster:
        cluster_s, cluster_summary = scored(pattern, "outspark", "--engine", "spark", "--spark-master",
                                            cluster.master_url, "--model", model_dir)
    after, _ = plain(pattern)
    base = sum(plain_runs + [after]) / len(plain_runs + [after])
    for name, seconds, s in (("local[2]", local_s, summary), ("2-worker cluster", cluster_s, cluster_summary)):
        print(f"spark {name}: score --engine spark process {seconds:.1f} s (CPU of the driver {s['cpu_s']:.1f} s) "
              f"for {s['predictions']:,} images ({s['predictions'] / seconds:.0f} images/s, accuracy "
              f"{s['accuracy']:.4f}, failed {s['failed']}); plain process {after:.1f} s after")
        out.append((f"spark/plain 100k {name}", base / seconds, None))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_plain":
        return _plain(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="SavedModel or model base path (default: train a 1-epoch seed model)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--copies", type=int, default=10, help="copies of the test set in the large run")
    parser.add_argument("--work", help="keep prepared data and model in this folder and reuse them next time")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: 100k, remote, spark")
    parser.add_argument("--source-dir", default=os.fspath(MNIST), help="real MNIST IDX files (default %(default)s)")
    args, beam_args = parser.parse_known_args()

    from components import examples, score

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_score_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.model is None and (work / "saved_model" / "saved_model.pb").is_file():
        args.model = os.fspath(work / "saved_model")
    skip = set(filter(None, args.skip.split(",")))
    server = None
    try:
        data_dir, model = prepare(work, args.model, Path(args.source_dir))
        model_dir = score.resolve_model(model).saved_model_dir
        test_file = examples.split_files(data_dir, "mnist", "test")[0]
        copies = work / "copies"
        shutil.rmtree(copies, ignore_errors=True)
        copies.mkdir()
        for i in range(args.copies):
            shutil.copy(test_file, copies / f"test-{i:02d}.tfrecord")
        py = sys.executable
        batch = str(args.batch_size)
        print(f"cpus: {os.cpu_count()} (shared with other users: timings are under contention)")
        print(f"model: {model_dir}   batch size: {batch}   beam options: {' '.join(beam_args) or '(none)'}")

        def plain(pattern: str) -> tuple[float, float]:
            seconds, out = timed([py, __file__, "--_plain", model_dir, pattern, batch])
            return seconds, CPU["last"]

        def scored(pattern: str, out: str, *flags: str) -> tuple[float, dict]:
            seconds, _ = timed([py, "-m", "pipeline", "score", "--workdir", os.fspath(work), "--input", pattern,
                                "--output", os.fspath(work / out), "--min-batch-size", batch, "--max-batch-size",
                                batch, "-q", "--no-cache", *flags, *beam_args])
            summary = json.loads((work / out / "summary.json").read_text())
            summary["cpu_s"] = CPU["last"]
            return seconds, summary

        results = []
        plain_100k: list[float] = []
        sets = [("10k", test_file)] + ([] if "100k" in skip else [("100k", os.fspath(copies / "test-*.tfrecord"))])
        for name, pattern in sets:
            (before, cpu_b), = [plain(pattern)]
            seconds, summary = scored(pattern, f"out{name}", "--model", model_dir)
            (after, cpu_a), = [plain(pattern)]
            base, cpu_base = (before + after) / 2, (cpu_b + cpu_a) / 2
            if name == "100k":
                plain_100k += [before, after]
            print(f"{name:>4}: plain process {before:.1f} s / {after:.1f} s (before / after; CPU {cpu_b:.1f} / "
                  f"{cpu_a:.1f} s); score process {seconds:.1f} s (CPU {summary['cpu_s']:.1f} s) for "
                  f"{summary['predictions']:,} images ({summary['predictions'] / seconds:.0f} images/s, accuracy "
                  f"{summary['accuracy']:.4f}, failed {summary['failed']})")
            results.append((name, base / seconds, 0.8 if name == "10k" else 0.9))
            results.append((name + " in CPU time", cpu_base / summary["cpu_s"], 0.8 if name == "10k" else 0.9))

        if "remote" not in skip:
            port = _free_port()
            base_path = work / "serving"
            shutil.rmtree(base_path, ignore_errors=True)
            shutil.copytree(model_dir, base_path / "mnist" / "1")
            server = subprocess.Popen([py, "-m", "pipeline", "serve", "--workdir", os.fspath(work),
                                       "--model-base-path", os.fspath(base_path), "--port", str(port), "-q"],
                                      cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            from serving.client import ServingClient

            with ServingClient(f"127.0.0.1:{port}") as client:
                client.wait_until_available(timeout=120)
            local_s, _ = scored(test_file, "outlocal", "--model", model_dir)
            remote_s, summary = scored(test_file, "outremote", "--server", f"127.0.0.1:{port}")
            local_s2, _ = scored(test_file, "outlocal", "--model", model_dir)
            local = (local_s + local_s2) / 2
            local_rows = {r["key"]: r["predicted_class"] for f in (work / "outlocal").glob("predictions-*")
                          for r in map(json.loads, f.read_text().splitlines())}
            remote_rows = {r["key"]: r["predicted_class"] for f in (work / "outremote").glob("predictions-*")
                           for r in map(json.loads, f.read_text().splitlines())}
            print(f"remote classes == local classes: {remote_rows == local_rows} ({len(remote_rows):,} rows)")
            print(f"remote: score --server process {remote_s:.1f} s for {summary['predictions']:,} images (failed "
                  f"{summary['failed']}); local score process {local_s:.1f} s / {local_s2:.1f} s (before / after)")
            results.append(("remote/local 10k, batch " + batch, local / remote_s, 0.7))

        if "spark" not in skip and "100k" not in skip:
            results += spark_figures(work, scored, plain, os.fspath(copies / "test-*.tfrecord"), model_dir, plain_100k)

        for name, ratio, target in results:
            label = f"score/plain {name}" if not name.startswith(("remote", "spark")) else name
            verdict = "(no target)" if target is None else (
                f"(target >= {target})   {'met' if ratio >= target else 'MISSED'}")
            print(f"ratio {label:<32} {ratio:.2f}   {verdict}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        for name in ("copies", "out10k", "out100k", "outlocal", "outremote", "serving", "outspark", "spark-cluster"):
            shutil.rmtree(work / name, ignore_errors=True)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
