"""Train the default and the seed architecture on real MNIST, once per seed, in one run; print per seed test
accuracy, training seconds, examples per second, peak memory, the time to 99.0% validation accuracy and the
batch-1 latency of the exported `serving_default` called in process (median of 300 calls), then the default's
mean/min/max and the default/seed time ratio, each against the recipe's targets.

    .venv/bin/python bench/train.py --seeds 0,1,2         # both recipes, three seeds each (about 22 min on 2 cores)
    .venv/bin/python bench/train.py --epochs 1            # a quick look (one seed, the config's)
    .venv/bin/python bench/train.py --dataset cifar10 --source-dir cifar-10-binary.tar.gz --seeds 0,1,2

CIFAR-10 (`--dataset cifar10`) trains its recipe (resnet) on the real archive given with --source-dir (or
$CIFAR10_ARCHIVE) and prints the mean test accuracy over the seeds against its target (at least 90%, aim 94%);
the time to the dataset's validation mark is the time to 90% there. Without the archive it says so and exits:
no CIFAR-10 accuracy is claimed anywhere without a run on the real data.
Fashion-MNIST (`--dataset fashion_mnist --source-dir /usr/share/datasets/fashion-mnist`, Debian's
dataset-fashion-mnist) prints each architecture's mean test accuracy against the dataset's blessing threshold
(0.90), and the time to 90% validation accuracy; MNIST's targets are MNIST's only.

Each training runs in its own child process (`mnist-pipeline`'s components, nothing else), so its peak resident
memory is that child's `ru_maxrss` (training, test evaluation and export). The two architectures alternate
(default, seed, default, seed, ...) so both see the machine's same spells. The data is ingested into the workdir
first when it is not there. Wall times depend on what else runs on the machine and its host: the load average is
printed before and after, the share of CPU time the host took for other guests (steal) beside each training, and
the default/seed time ratio, measured in the same run, is the figure to compare across machines. The time to 99.0%
validation accuracy is read from history.json's per-epoch "seconds", so it is the end of the first epoch
(validation included) at or above 99.0%: an upper bound at epoch granularity.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

from hoststat import cpu_times, describe, steal_share  # bench/, the script's folder

REPO = Path(__file__).resolve().parent.parent
MNIST = REPO.parent / "shared" / "data" / "mnist"
sys.path.insert(0, str(REPO))  # the project's modules, imported where needed (the children import TensorFlow)

CIFAR10_ARCHIVE_ENV = "CIFAR10_ARCHIVE"

# Per dataset: the architectures run by default, the validation accuracy whose first epoch is timed, and, beside
# MNIST (whose targets follow), the mean test accuracy the dataset's recipe must reach with the figure it aims at;
# without a target, the dataset's blessing threshold (components.datasets), which the recipe must clear.
DATASETS = {
    "mnist": {"architectures": ["default", "seed"], "mark": 0.99},
    "fashion_mnist": {"architectures": ["default", "seed"], "mark": 0.90},
    "cifar10": {"architectures": ["resnet"], "mark": 0.90, "target": 0.90, "aim": 0.94},
}

# The default recipe's targets (MNIST's only: another dataset's is above).
TARGET_MEAN_ACCURACY = 0.9965
TARGET_MIN_ACCURACY = 0.9960
TARGET_TIME_RATIO = 2.0  # default's training time / the seed CNN's, same run (aim: 1.0)
TARGET_QUIET_SECONDS = 180.0  # on a quiet machine
TARGET_SECONDS_TO_99 = 30.0
TARGET_PEAK_RSS_MIB = 1.5 * 1024


def child(architecture: str, workdir: Path, result_path: Path, epochs: int | None, seed: int | None,
          precision: str | None, dataset: str = "mnist") -> None:
    """Train one architecture, evaluate it on the test split, write a JSON result."""
    import dataclasses

    from components import data, train
    from pipeline import paths
    from pipeline.config import Config

    config = Config()
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, dataset=dataset))
    tc = dataclasses.replace(config.train, architecture=architecture, epochs=epochs, precision=precision,
                             seed=config.train.seed if seed is None else seed)
    out_dir = Path(tempfile.mkdtemp(prefix=f"train-{architecture}-", dir=workdir))
    out = train.run(tc, config.data, paths.data_dir(workdir), out_dir, verbose=2)

    import keras

    # Plain cross-entropy on the test set, whatever loss (label smoothing) the recipe trained with.
    model = keras.models.load_model(out.model_path, compile=False)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    test = data.split_dataset(paths.data_dir(workdir), config.data.dataset, "test", batch_size=1000)
    loss, accuracy = model.evaluate(test, verbose=0)
    test_examples = sum(int(labels.shape[0]) for _, labels in test)
    history = json.loads(out.history_path.read_text())
    serving_ms = serving_latency_ms(out.model_path, out_dir / "saved_model")
    reached = [t for t, a in zip(history["seconds"], history["val_accuracy"]) if a >= DATASETS[dataset]["mark"]]
    result = {
        "dataset": dataset,
        "architecture": architecture,
        "seed": tc.seed,
        "seconds_to_99": reached[0] if reached else None,
        "epochs": out.epochs,
        "batch_size": out.batch_size,
        "precision": out.precision,
        "train_examples": out.train_examples,
        "train_seconds": out.train_seconds,
        "examples_per_second": out.train_examples * out.epochs_run / out.train_seconds,
        "test_accuracy": float(accuracy),
        # Keras's accuracy is a float32 mean: near correct/examples, not equal to it. The targets are checked on
        # the exact fraction, so 9,965 of 10,000 meets 99.65%.
        "test_correct": round(float(accuracy) * test_examples),
        "test_examples": test_examples,
        "test_loss": float(loss),
        "params": int(model.count_params()),
        "serving_ms": serving_ms,
    }
    result_path.write_text(json.dumps(result))


def serving_latency_ms(model_path: Path, export_dir: Path, calls: int = 300) -> float:
    """Median ms of one batch-1 call of the exported `serving_default`, in this process, as the server calls it."""
    import numpy as np

    from components import export
    from serving import signatures as sig
    from serving.servable import Servable

    export.run(model_path, export_dir)
    signature = Servable("bench", 1, export_dir).signatures[sig.SERVING_DEFAULT]
    shape = sig.read_image_shape(export_dir)  # the dataset's: 28x28x1, 32x32x3
    one = {sig.IMAGE_INPUT: np.random.default_rng(0).random((1, *shape), dtype=np.float32)}
    for _ in range(50):
        signature.call(one)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        signature.call(one)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def ensure_ingested(workdir: Path, source_dir: Path, dataset: str = "mnist") -> None:
    from pipeline import paths

    if (paths.data_dir(workdir) / dataset).is_dir():
        return
    print(f"ingesting {source_dir} into {workdir}", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pipeline", "ingest", "--dataset", dataset, "--source-dir", str(source_dir),
         "--workdir", str(workdir), "-q"],
        cwd=REPO, check=True, stdout=subprocess.DEVNULL,
    )


def _result_path(workdir: Path, architecture: str, seed: int | None) -> Path:
    return workdir / f"result-{architecture}-{'config' if seed is None else seed}.json"


def measure(architecture: str, workdir: Path, epochs: int | None, seed: int | None, precision: str | None,
            dataset: str = "mnist") -> dict:
    result_path = _result_path(workdir, architecture, seed)
    cmd = [sys.executable, __file__, "--child", architecture, "--workdir", str(workdir), "--dataset", dataset]
    if epochs:
        cmd += ["--epochs", str(epochs)]
    if seed is not None:
        cmd += ["--seeds", str(seed)]
    if precision:
        cmd += ["--precision", precision]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    log_path = workdir / f"train-{architecture}-{'config' if seed is None else seed}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"training {architecture} failed; see {log_path}")
    result = json.loads(result_path.read_text())
    result["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux reports KiB
    return result


def _against(value: float, target: float, *, at_most: bool, unit: str = "", scale: float = 1.0,
             digits: int = 2) -> str:
    """'met', or 'missed by X' in the value's unit, with `digits` decimals."""
    missed = value - target if at_most else target - value
    return "met" if missed <= 0 else f"missed by {float(missed * scale):.{digits}f}{unit}"


def _accuracy_against(accuracy: Fraction, target: float, label: str = "") -> str:
    """`99.647% >= 99.65%: missed by 0.003 points`: a mean over seeds of 10,000 test images each moves in steps
    smaller than 0.01 points, so three decimals, where two printed 0.9965 >= 0.9965 as missed by 0.00."""
    verdict = _against(accuracy, Fraction(str(target)), at_most=False, unit=" points", scale=100, digits=3)
    return f"{float(accuracy) * 100:.3f}% >= {label}{target * 100:g}%: {verdict}"


def _parse_seeds(text: str | None) -> list[int | None]:
    if not text:
        return [None]  # the config's seed
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        sys.exit(f"--seeds must be comma-separated integers, got {text!r}")


def summarize(results: list[dict]) -> None:
    """The per-seed table and, where both architectures ran, the default's figures against its targets."""
    dataset = results[0].get("dataset", "mnist") if results else "mnist"
    mark = DATASETS[dataset]["mark"]
    header = (f"{'architecture':<13}{'seed':>5}{'params':>9}{'epochs':>7}{'batch':>6}{'precision':>16}{'test acc':>10}"
              f"{'train s':>9}{'ex/s':>8}{f's to {mark:.0%}':>10}{'peak RSS MiB':>14}{'serve ms':>10}{'cpu steal':>11}")
    print(header)
    for r in results:
        t99 = "never" if r["seconds_to_99"] is None else f"{r['seconds_to_99']:.0f}"
        print(f"{r['architecture']:<13}{r['seed']:>5}{r['params']:>9}{r['epochs']:>7}{r['batch_size']:>6}"
              f"{r['precision']:>16}{r['test_accuracy']:>10.4f}{r['train_seconds']:>9.0f}{r['examples_per_second']:>8.0f}{t99:>10}"
              f"{r['peak_rss_mib']:>14.0f}{r['serving_ms']:>10.2f}{describe(r['cpu_steal']):>11}")
    d = [r for r in results if r["architecture"] == "default"]
    b = [r for r in results if r["architecture"] == "seed"]
    if dataset != "mnist":
        _against_dataset_target(results, dataset)
        return
    for name, rs in (("default", d), ("seed", b)):
        if rs:
            acc = [r["test_accuracy"] for r in rs]
            secs = [r["train_seconds"] for r in rs]
            print(f"{name}: test accuracy mean {statistics.mean(acc):.3%} min {min(acc):.2%} max {max(acc):.2%}; "
                  f"training s mean {statistics.mean(secs):.0f} min {min(secs):.0f} max {max(secs):.0f} "
                  f"({len(rs)} seed{'s' if len(rs) > 1 else ''})")
    if not d:
        return
    acc = [Fraction(r["test_correct"], r["test_examples"]) for r in d]
    print("\ndefault against its targets:")
    print(f"  mean test accuracy {_accuracy_against(statistics.mean(acc), TARGET_MEAN_ACCURACY)}")
    print(f"  every seed's test accuracy (the lowest) {_accuracy_against(min(acc), TARGET_MIN_ACCURACY)}")
    if b:
        ratio = sum(r["train_seconds"] for r in d) / sum(r["train_seconds"] for r in b)
        per_seed = [x["train_seconds"] / y["train_seconds"] for x, y in zip(d, b)]
        print(f"  training time default/seed {ratio:.2f}x (per seed {', '.join(f'{x:.2f}' for x in per_seed)}) "
              f"<= {TARGET_TIME_RATIO:.1f}x: {_against(ratio, TARGET_TIME_RATIO, at_most=True, unit='x')} "
              f"(aim 1.0x: {_against(ratio, 1.0, at_most=True, unit='x')})")
    slowest = max(r["train_seconds"] for r in d)
    print(f"  training time (slowest seed {slowest:.0f} s) <= {TARGET_QUIET_SECONDS:.0f} s on a quiet machine: "
          f"{_against(slowest, TARGET_QUIET_SECONDS, at_most=True, unit=' s')} (this machine's load: see above)")
    t99 = [r["seconds_to_99"] for r in d]
    if any(t is None for t in t99):
        print(f"  99.0% validation accuracy within {TARGET_SECONDS_TO_99:.0f} s: missed (never reached by some seed)")
    else:
        print(f"  99.0% validation accuracy within {TARGET_SECONDS_TO_99:.0f} s (slowest seed {max(t99):.0f} s, at "
              f"epoch ends): {_against(max(t99), TARGET_SECONDS_TO_99, at_most=True, unit=' s')}")
    serve = statistics.median(r["serving_ms"] for r in d)
    seed_serve = f" (the seed CNN's {statistics.median(r['serving_ms'] for r in b):.2f} ms, same run)" if b else ""
    print(f"  batch-1 serving_default in process: median {serve:.2f} ms{seed_serve}")
    rss = max(r["peak_rss_mib"] for r in d)
    print(f"  peak RSS {rss:.0f} MiB <= {TARGET_PEAK_RSS_MIB:.0f} MiB: "
          f"{_against(rss, TARGET_PEAK_RSS_MIB, at_most=True, unit=' MiB')}")


def _against_dataset_target(results: list[dict], dataset: str) -> None:
    """The mean test accuracy over the seeds of each architecture against the dataset's target (CIFAR-10's), or
    where it has none (Fashion-MNIST), against its blessing threshold; MNIST's targets do not apply."""
    recipe = DATASETS[dataset]
    if "target" in recipe:
        against = [("", recipe["target"]), ("aim ", recipe["aim"])]
    else:
        from components.datasets import dataset as dataset_entry

        against = [("the blessing threshold ", dataset_entry(dataset).accuracy_threshold)]
    for name in dict.fromkeys(r["architecture"] for r in results):
        rs = [r for r in results if r["architecture"] == name]
        acc = [Fraction(r["test_correct"], r["test_examples"]) for r in rs]
        mean = statistics.mean(acc)
        verdicts = "; ".join(_accuracy_against(mean, target, label) for label, target in against)
        print(f"{dataset} {name}: test accuracy mean over {len(rs)} seed(s) (min {float(min(acc)):.2%} max "
              f"{float(max(acc)):.2%}; {rs[0]['test_examples']} test images): {verdicts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="a workdir with MNIST ingested (default: a temp dir)")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    parser.add_argument("--source-dir", type=Path, help="the dataset's files: the four MNIST IDX .gz files "
                        f"(default {MNIST}), or cifar-10-binary.tar.gz (default ${CIFAR10_ARCHIVE_ENV})")
    parser.add_argument("--architectures", nargs="+", help="default: the dataset's (mnist: default and seed)")
    parser.add_argument("--epochs", type=int, help="override every recipe's epoch count (quick looks)")
    parser.add_argument("--seeds", help="comma-separated training seeds, e.g. 0,1,2 (default: the config's train.seed)")
    parser.add_argument("--precision", choices=["auto", "float32", "mixed_bfloat16"],
                        help="override every recipe's training precision (default: each recipe's; default's is auto)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    seeds = _parse_seeds(args.seeds)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-train-"))
    if args.child:
        child(args.child, workdir, _result_path(workdir, args.child, seeds[0]), args.epochs, seeds[0], args.precision,
              args.dataset)
        return

    source = args.source_dir
    if source is None and args.dataset == "cifar10":
        source = Path(os.environ[CIFAR10_ARCHIVE_ENV]) if os.environ.get(CIFAR10_ARCHIVE_ENV) else None
    elif source is None:
        source = MNIST
    if source is None or not source.exists():
        sys.exit(f"no {args.dataset} data: {source or 'no archive given'} (pass --source-dir, or set "
                 f"${CIFAR10_ARCHIVE_ENV} to cifar-10-binary.tar.gz); nothing was trained and no accuracy is claimed")
    ensure_ingested(workdir, source, args.dataset)
    architectures = args.architectures or DATASETS[args.dataset]["architectures"]
    print(f"cpus: {os.cpu_count()}, load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results = []
    for seed in seeds:
        for architecture in architectures:
            started, before = time.time(), cpu_times()
            r = measure(architecture, workdir, args.epochs, seed, args.precision, args.dataset)
            r["cpu_steal"] = steal_share(before, cpu_times())
            results.append(r)
            print(f"  {architecture} seed {r['seed']}: test accuracy {r['test_accuracy']:.4f}, training "
                  f"{r['train_seconds']:.0f} s; done in {time.time() - started:.0f} s (process, with data loading and "
                  f"evaluation); load average {os.getloadavg()[0]:.2f}", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    summarize(results)
    print(f"\nworkdir: {workdir} (logs: train-<architecture>-<seed>.log)")


if __name__ == "__main__":
    main()
