"""Benchmark: how long `mnist-pipeline <command> --help` takes, per subcommand, as a user starts it.

    .venv/bin/python bench/cli.py [--repeat 3]

Each figure is a whole process (interpreter start, imports, argument parsing, printing), best of `--repeat`,
printed beside the bare interpreter's start (`python -c pass`) measured in the same run, so the part the CLI
adds can be read apart from the machine's speed. Target: every `--help` within 1.5 s. Each process also reports
which heavy modules (TensorFlow, Keras, TFDS, Beam, gRPC) it imported: none is expected, which
tests/pipeline/test_cli.py checks too; here it is printed, because a heavy import is what would make `--help` slow.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hoststat import cpu_times, describe, steal_share  # noqa: E402  (bench/, the script's folder)

from pipeline.cli import COMMAND_MODULES  # noqa: E402 (light: the commands import their heavy modules lazily)

TARGET_S = 1.5
HEAVY = ("tensorflow", "keras", "tensorflow_datasets", "apache_beam", "grpc")

# Runs `main(argv)` and prints, as its last line, the modules of HEAVY it imported.
_PROBE = (
    "import json, sys\n"
    "from pipeline.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit:\n"
    "    pass\n"
    f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
)


def _best(cmd: list[str], repeat: int) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    best, proc = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        best = min(best, time.perf_counter() - start)
    return best, proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="processes per figure; the best is printed (default 3)")
    args = parser.parse_args()
    commands = [[]] + [[importlib.import_module(name).NAME] for name in COMMAND_MODULES]

    before = cpu_times()
    bare, _ = _best([sys.executable, "-c", "pass"], args.repeat)
    print(f"bare interpreter start (python -c pass): {bare:.3f} s, best of {args.repeat}")
    print(f"{'command':<38} {'seconds':>8} {'above bare':>10}  heavy imports  target <= {TARGET_S} s")
    missed = 0
    for argv in commands:
        seconds, proc = _best([sys.executable, "-c", _PROBE, *argv, "--help"], args.repeat)
        label = " ".join(["mnist-pipeline", *argv, "--help"])
        if proc.returncode != 0 or "usage: mnist-pipeline" not in proc.stdout:
            print(f"{label:<38} FAILED (exit {proc.returncode})\n{proc.stderr[-2000:]}")
            return 1
        heavy = json.loads(proc.stdout.strip().splitlines()[-1])
        met = seconds <= TARGET_S and not heavy
        missed += not met
        print(f"{label:<38} {seconds:8.3f} {seconds - bare:10.3f}  {', '.join(heavy) or 'none':<13}  "
              f"{'met' if met else 'MISSED'}")
    print(f"cpu steal {describe(steal_share(before, cpu_times()))} (CPU time the host gave to other guests)")
    print(f"{len(commands) - missed} of {len(commands)} within target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
