"""Batching parameters compared under one load: several local servers side by side, the same concurrent batch-1
gRPC load (bench/serving.py's) over each in turn, in rounds, so that the VM's swings fall on every server alike.

    .venv/bin/python bench/batching_sweep.py [--rounds 3] [--seconds 8] [--clients 32] [SERVER ...]

A SERVER is NAME=off (batching off), NAME=deploy (docker-compose.yml's flags, serving/deploy's batching file) or
NAME=PATH (docker-compose.yml's flags with PATH as the BatchingParameters file); `+FLAG` after it adds a serve flag,
e.g. `one-thread=deploy+--tensorflow_intra_op_parallelism=1`. Default: `off=off deploy=deploy`. Each round prints
every server's requests/s, p50, p99, p99.9, slowest answer and CPU per answer; the end prints each server's median,
its ratio to the first server round by round, and for batching servers the batches they ran (their own
padding_size metric).
The model is chosen as bench/serving.py chooses it (`--saved-model`, the workdir's newest pushed version, or the
default architecture exported untrained). Loopback only; every load is bounded.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.hoststat import describe  # noqa: E402
from bench.serving import (  # noqa: E402
    DEPLOY,
    batch_mix,
    batches,
    batches_between,
    compose_flags,
    host_line,
    load,
    model_base,
    predict_bytes,
    start_server,
    stop,
)


def server_flags(spec: str) -> tuple[str, list[str], bool]:
    """NAME=off | NAME=deploy | NAME=PATH, each with optional `+FLAG`s: the name, the serve flags, batching on."""
    name, sep, what = spec.partition("=")
    if not sep or not name or not what:
        raise SystemExit(f"server {spec!r}: write NAME=off, NAME=deploy or NAME=PATH (a BatchingParameters file)")
    what, *extra = what.split("+")
    if what == "off":
        return name, extra, False
    path = DEPLOY / "batching_parameters.txt" if what == "deploy" else Path(what).resolve()
    if not path.is_file():
        raise SystemExit(f"server {name!r}: no batching parameters file at {path}")
    from serving.batching import read_batching_parameters
    from serving.errors import ServingError

    try:  # a bad file is refused here, not by a server that never comes up
        read_batching_parameters(path)
    except ServingError as exc:
        raise SystemExit(f"server {name!r}: {exc}") from None
    flags = [f"--batching_parameters_file={path}" if f.startswith("--batching_parameters_file") else f
             for f in compose_flags()]
    return name, flags + extra, True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("servers", nargs="*", default=["off=off", "deploy=deploy"], metavar="SERVER")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each load")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--saved-model", help="a SavedModel dir with the project's signatures")
    parser.add_argument("--workdir", default="artifacts")
    args = parser.parse_args()
    specs = {name: (flags, batching) for name, flags, batching in map(server_flags, args.servers)}
    if len(specs) != len(args.servers):
        raise SystemExit("two servers have the same name; give each its own")

    from serving.client import ServingClient

    print(host_line(), flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    servers: dict[str, tuple] = {}
    try:
        base, saved_model, origin = model_base(args, scratch)
        for name, (flags, _) in specs.items():
            servers[name] = start_server(base, scratch, flags)
        request_bytes = predict_bytes(np.random.default_rng(0).random((1, 28, 28, 1), dtype=np.float32))
        for proc, port, _ in servers.values():  # every server loaded and warm before the first round
            with ServingClient(f"127.0.0.1:{port}", timeout=30.0) as client:
                client.wait_until_available(timeout=240)
            load(f"127.0.0.1:{port}", args.clients, 2.0, request_bytes, proc.pid)
        print(f"model: {saved_model} ({origin}); {len(servers)} servers side by side, {args.clients} concurrent "
              f"batch-1 gRPC clients for {args.seconds:g} s on each in turn, {args.rounds} rounds", flush=True)
        before = {name: batches(rest) for name, (_, _, rest) in servers.items() if specs[name][1]}
        results: dict[str, list[dict]] = {name: [] for name in servers}
        for r in range(args.rounds):
            for name, (proc, port, _) in servers.items():
                x = load(f"127.0.0.1:{port}", args.clients, args.seconds, request_bytes, proc.pid)
                results[name].append(x)
                print(f"round {r + 1}  {name:<20} {x['rate']:7.0f} requests/s  p50 {x['p50']:6.2f} ms  p99 "
                      f"{x['p99']:6.2f} ms  p99.9 {x['p999']:6.2f} ms  slowest {x['max']:6.1f} ms  server CPU "
                      f"{x['server_cpu_ms']:.2f} ms an answer  {len(x['failed'])} failed  (other processes "
                      f"{describe(x['others'])})", flush=True)
        baseline = next(iter(servers))
        print(f"requests/s by server (ratio to {baseline!r}, round by round):")
        for name, rounds in results.items():
            rates = [x["rate"] for x in rounds]
            ratios = ", ".join(f"{x / b['rate']:.2f}x" for x, b in zip(rates, results[baseline]) if b["rate"])
            p99, slowest = [x["p99"] for x in rounds], [x["max"] for x in rounds]
            print(f"  {name:<20} median {np.median(rates):6.0f}  rounds {', '.join(f'{x:.0f}' for x in rates)}  "
                  f"({ratios})  p99 {min(p99):.1f}-{max(p99):.1f} ms  slowest {min(slowest):.1f}-{max(slowest):.1f} ms")
            if name in before:
                print(f"  {'':20} {batch_mix(batches_between(before[name], batches(servers[name][2])))}")
        failed = sum(len(x["failed"]) for rounds in results.values() for x in rounds)
        print(f"failed requests: {failed}")
        return 1 if failed else 0
    finally:
        for proc, _, _ in servers.values():
            stop(proc)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
