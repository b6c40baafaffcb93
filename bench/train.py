"""Train the default and the seed architecture on real MNIST in one run; print test accuracy, training wall
time, examples per second and peak memory for each.

    .venv/bin/python bench/train.py                       # both recipes as configured (about 12 min on 2 idle cores)
    .venv/bin/python bench/train.py --epochs 1            # a quick look

Each training runs in its own child process (`mnist-pipeline`'s components, nothing else), so its peak
resident memory is that child's `ru_maxrss`. The data is ingested into the workdir first when it is not
there. Wall times depend on what else runs on the machine and its host: the load average is printed before and
after, the share of CPU time the host took for other guests (steal) beside each training,
and the default/seed throughput ratio, measured in the same run, is the figure to compare across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hoststat import cpu_times, describe, steal_share  # bench/, the script's folder

REPO = Path(__file__).resolve().parent.parent
MNIST = REPO.parent / "shared" / "data" / "mnist"


def child(architecture: str, workdir: Path, result_path: Path, epochs: int | None) -> None:
    """Train one architecture, evaluate it on the test split, write a JSON result."""
    sys.path.insert(0, str(REPO))
    import dataclasses

    from components import data, train
    from pipeline import paths
    from pipeline.config import Config

    config = Config()
    tc = dataclasses.replace(config.train, architecture=architecture, epochs=epochs)
    out_dir = Path(tempfile.mkdtemp(prefix=f"train-{architecture}-", dir=workdir))
    out = train.run(tc, config.data, paths.data_dir(workdir), out_dir, verbose=2)

    import keras

    # Plain cross-entropy on the test set, whatever loss (label smoothing) the recipe trained with.
    model = keras.models.load_model(out.model_path, compile=False)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    test = data.split_dataset(paths.data_dir(workdir), config.data.dataset, "test", batch_size=1000)
    loss, accuracy = model.evaluate(test, verbose=0)
    result = {
        "architecture": architecture,
        "epochs": out.epochs,
        "batch_size": out.batch_size,
        "train_examples": out.train_examples,
        "train_seconds": out.train_seconds,
        "examples_per_second": out.train_examples * out.epochs_run / out.train_seconds,
        "test_accuracy": float(accuracy),
        "test_loss": float(loss),
        "params": int(model.count_params()),
    }
    result_path.write_text(json.dumps(result))


def ensure_ingested(workdir: Path, source_dir: Path) -> None:
    sys.path.insert(0, str(REPO))
    from pipeline import paths

    if (paths.data_dir(workdir) / "mnist").is_dir():
        return
    print(f"ingesting {source_dir} into {workdir}", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pipeline", "ingest", "--source-dir", str(source_dir), "--workdir", str(workdir), "-q"],
        cwd=REPO, check=True, stdout=subprocess.DEVNULL,
    )


def measure(architecture: str, workdir: Path, epochs: int | None) -> dict:
    result_path = workdir / f"result-{architecture}.json"
    cmd = [sys.executable, __file__, "--child", architecture, "--workdir", str(workdir)]
    if epochs:
        cmd += ["--epochs", str(epochs)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    log_path = workdir / f"train-{architecture}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"training {architecture} failed; see {log_path}")
    result = json.loads(result_path.read_text())
    result["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux reports KiB
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="a workdir with MNIST ingested (default: a temp dir)")
    parser.add_argument("--source-dir", type=Path, default=MNIST, help="the four MNIST IDX .gz files")
    parser.add_argument("--architectures", nargs="+", default=["default", "seed"])
    parser.add_argument("--epochs", type=int, help="override every recipe's epoch count (quick looks)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-train-"))
    if args.child:
        child(args.child, workdir, workdir / f"result-{args.child}.json", args.epochs)
        return

    ensure_ingested(workdir, args.source_dir)
    print(f"cpus: {os.cpu_count()}, load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results = []
    for architecture in args.architectures:
        started, before = time.time(), cpu_times()
        r = measure(architecture, workdir, args.epochs)
        r["cpu_steal"] = steal_share(before, cpu_times())
        results.append(r)
        print(f"  {architecture}: done in {time.time() - started:.0f} s (process, with data loading and evaluation)",
              flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    header = (f"{'architecture':<13}{'params':>9}{'epochs':>7}{'batch':>6}{'test acc':>10}{'train s':>9}{'ex/s':>8}"
              f"{'peak RSS MiB':>14}{'cpu steal':>11}")
    print(header)
    for r in results:
        print(f"{r['architecture']:<13}{r['params']:>9}{r['epochs']:>7}{r['batch_size']:>6}{r['test_accuracy']:>10.4f}"
              f"{r['train_seconds']:>9.0f}{r['examples_per_second']:>8.0f}{r['peak_rss_mib']:>14.0f}"
              f"{describe(r['cpu_steal']):>11}")
    by_name = {r["architecture"]: r for r in results}
    if "default" in by_name and "seed" in by_name:
        d, b = by_name["default"], by_name["seed"]
        ratio = d["train_seconds"] / b["train_seconds"]
        print(f"\ndefault/seed: throughput {d['examples_per_second'] / b['examples_per_second']:.2f}x, "
              f"training time {ratio:.2f}x")
        # The machine's speed drifts (shared hosts): the seed CNN, trained in this same run, is the yardstick.
        # The issue measured it at 180-210 s on this kind of machine, so 10 minutes is about 2.9-3.3x the seed.
        print(f"seed trained in {b['train_seconds']:.0f} s here (the issue measured 180-210 s); at the issue's "
              f"seed time the default would train in {ratio * 180:.0f}-{ratio * 210:.0f} s")
    if "default" in by_name:
        d = by_name["default"]
        acc_ok, time_ok = d["test_accuracy"] >= 0.996, d["train_seconds"] <= 600
        print(f"default targets: test accuracy {d['test_accuracy']:.4f} >= 0.9960: {'met' if acc_ok else 'MISSED'}; "
              f"training {d['train_seconds']:.0f} s <= 600 s: {'met' if time_ok else 'MISSED'}")
    print(f"\nworkdir: {workdir} (logs: train-<architecture>.log)")


if __name__ == "__main__":
    main()
