"""Serving benchmark: the local server (`mnist-pipeline serve`, a subprocess on loopback) vs the SavedModel in process.

    .venv/bin/python bench/serving.py [--saved-model DIR] [--workdir artifacts] [--seconds 20]

Prints, from one run:
1. Predict latency at batch 1, p50 and p99 (target: p50 <= 2 ms);
2. throughput at batch 256 through the server vs the same signature called in this process (target >= 0.8);
3. 8 concurrent clients for `--seconds` while a new version is pushed: requests, failures (target: 0),
   and the versions that answered.
The model is `--saved-model`, else the newest pushed version under the workdir's model base path, else the
default architecture exported untrained (speed does not depend on the weights). Timings on a shared CPU are
noisy: compare the figures within one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def find_saved_model(args, scratch: Path) -> tuple[Path, str]:
    from pipeline import paths
    from serving import signatures as sig

    if args.saved_model:
        return Path(args.saved_model), "given"
    versions = paths.model_base_path(args.workdir) / sig.MODEL_NAME
    pushed = sorted((int(p.name) for p in versions.iterdir() if p.name.isdigit()), reverse=True) if versions.is_dir() else []
    if pushed:
        return versions / str(pushed[0]), f"pushed version {pushed[0]}"
    from components import export
    from components.model import build_model

    model = build_model("default", seed=0)
    keras_path = scratch / "model.keras"
    model.save(keras_path)
    return export.run(keras_path, scratch / "saved_model").saved_model_dir, "default architecture, untrained"


def push(saved_model: Path, base: Path, version: int) -> None:
    tmp = base / "mnist" / f".tmp-{version}"
    shutil.copytree(saved_model, tmp)
    os.replace(tmp, base / "mnist" / str(version))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_process_signature(saved_model: Path):
    """The same signature, called in this process as the server calls it (numpy in, numpy out)."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    return lambda images: {k: v.numpy() for k, v in fn(image=tf.constant(images)).items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saved-model", help="a SavedModel dir with the project's signatures")
    parser.add_argument("--workdir", default="artifacts")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the concurrent roll-out phase")
    parser.add_argument("--latency-requests", type=int, default=500)
    parser.add_argument("--throughput-requests", type=int, default=60)
    args = parser.parse_args()

    from serving.client import ServingClient

    scratch = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    server = None
    try:
        saved_model, origin = find_saved_model(args, scratch)
        base = scratch / "models"
        (base / "mnist").mkdir(parents=True)
        push(saved_model, base, 1)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "serve", "--model-base-path", str(base), "--port", str(port),
             "--poll-interval", "1.0", "--workdir", str(scratch / "work"), "-q"],
            cwd=REPO, stdout=subprocess.DEVNULL,
        )
        address = f"127.0.0.1:{port}"
        rng = np.random.default_rng(0)
        one = rng.random((1, 28, 28, 1), dtype=np.float32)
        batch = rng.random((256, 28, 28, 1), dtype=np.float32)
        print(f"model: {saved_model} ({origin}); server: `mnist-pipeline serve` subprocess on {address}")
        print(f"CPU: {os.cpu_count()} cores, shared with other work while this ran (timings are inflated by load)")

        with ServingClient(address, timeout=30.0) as client:
            client.wait_until_available(timeout=180)
            for _ in range(50):
                client.predict(one)
            latencies = []
            for _ in range(args.latency_requests):
                t0 = time.perf_counter()
                client.predict(one)
                latencies.append(time.perf_counter() - t0)
            ms = np.array(latencies) * 1000
            p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
            print(f"1. Predict latency, batch 1, {args.latency_requests} sequential requests: "
                  f"p50 {p50:.2f} ms, p99 {p99:.2f} ms  (target p50 <= 2 ms: {'met' if p50 <= 2 else 'MISSED'})")
            local_call = in_process_signature(saved_model)
            for _ in range(50):
                local_call(one)
            local_ms = []
            for _ in range(args.latency_requests):
                t0 = time.perf_counter()
                local_call(one)
                local_ms.append((time.perf_counter() - t0) * 1000)
            print(f"   the same signature in process, batch 1: p50 {np.percentile(local_ms, 50):.2f} ms, "
                  f"p99 {np.percentile(local_ms, 99):.2f} ms (what serving adds: p50 "
                  f"{p50 - np.percentile(local_ms, 50):.2f} ms)")

            # Requests alternate between the server and the in-process call, and the medians are compared, so
            # load from other work on the (shared) machine falls on both sides alike and bursts do not count.
            for _ in range(3):
                client.predict(batch)
                local_call(batch)
            served_t, local_t = [], []
            for _ in range(args.throughput_requests):
                t0 = time.perf_counter()
                client.predict(batch)
                t1 = time.perf_counter()
                local_call(batch)
                served_t.append(t1 - t0)
                local_t.append(time.perf_counter() - t1)
        served, local = len(batch) / np.median(served_t), len(batch) / np.median(local_t)
        ratio = served / local
        print(f"2. Throughput, batch 256, {args.throughput_requests} alternating request pairs (medians): "
              f"server {served:.0f} img/s, in process {local:.0f} img/s, ratio {ratio:.2f}  "
              f"(target >= 0.8: {'met' if ratio >= 0.8 else 'MISSED'})")

        failures: list[str] = []
        versions: dict[int, int] = {}
        counts = [0] * 8
        lock = threading.Lock()
        stop = threading.Event()

        def client_loop(i: int) -> None:
            with ServingClient(address, timeout=30.0) as c:
                x = rng.random((8, 28, 28, 1), dtype=np.float32)
                for _ in range(1_000_000):  # bounded; the event ends it
                    if stop.is_set():
                        return
                    try:
                        v = c.predict(x).model_version
                        with lock:
                            versions[v] = versions.get(v, 0) + 1
                        counts[i] += 1
                    except Exception as exc:  # counted, not raised: the figure is the count
                        with lock:
                            failures.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        time.sleep(args.seconds / 4)
        push(saved_model, base, 2)
        time.sleep(args.seconds * 3 / 4)
        stop.set()
        for t in threads:
            t.join(60)
        total = sum(counts) + len(failures)
        print(f"3. 8 concurrent clients (batch 8) for {args.seconds:g} s, version 2 pushed at {args.seconds / 4:g} s: "
              f"{total} requests, {len(failures)} failed, answered by versions {dict(sorted(versions.items()))}  "
              f"(target 0 failed: {'met' if not failures else 'MISSED'}; "
              f"new version default: {'yes' if 2 in versions else 'NO'})")
        for line in failures[:5]:
            print(f"   failure: {line}")
        return 0 if not failures else 1
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
