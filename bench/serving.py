"""Serving benchmark: the local server (`mnist-pipeline serve`, subprocesses on loopback), gRPC and REST,
batching off and on.

    .venv/bin/python bench/serving.py [--saved-model DIR] [--workdir artifacts] [--seconds 20]

Prints, from one run, each figure against its target:
1. gRPC Predict latency at batch 1 through `ServingClient`, p50 and p99 (target: p50 <= 1.0 ms), and the split:
   the same signature called in this process as the server calls it (the model) vs what serving adds;
2. REST Predict latency at batch 1 (a kept-alive connection, prepared bodies): float `instances` and a
   b64 PNG to `predict_png` (target: p50 <= 2 ms each);
3. 32 concurrent batch-1 gRPC clients for `--seconds`, against a server with batching off and one started
   with docker-compose.yml's flags (batching on, serving/deploy/batching_parameters.txt): throughput ratio
   (target >= 3x), p99 with batching (target <= 25 ms), failed requests (target 0);
4. 8 concurrent clients (batch 8) on the batching server for `--seconds` while version 2 is pushed:
   requests, failures (target: 0), and the versions that answered.
The model is `--saved-model`, else the newest pushed version under the workdir's model base path, else the
default architecture exported untrained (speed does not depend on the weights). Only loopback addresses;
every loop is bounded. Timings on a shared CPU are noisy: compare the figures within one run.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
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

DEPLOY = REPO / "serving" / "deploy"


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


def start_server(base: Path, scratch: Path, extra: list[str]) -> tuple[subprocess.Popen, int, int]:
    grpc_port, rest_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "serve", "--model-base-path", str(base), "--port", str(grpc_port),
         "--rest_api_port", str(rest_port), "--poll-interval", "1.0", "--workdir", str(scratch / "work"), "-q", *extra],
        cwd=REPO, stdout=subprocess.DEVNULL,
    )
    return proc, grpc_port, rest_port


def stop_server(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.array(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def timed(fn, n: int, warmup: int = 50) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def rest_poster(port: int, path: str, body: bytes):
    """POST a prepared body on one kept-alive connection, as a REST client that reuses its connection does."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}

    def post():
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
        return data

    return post, connection


def load(address: str, clients: int, seconds: float, request_bytes: bytes) -> dict:
    """`clients` threads, each with its own channel, sending prepared batch-1 Predict requests for `seconds`."""
    import grpc

    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client(i: int) -> None:
        with grpc.insecure_channel(address) as channel:
            predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")  # bytes in, bytes out
            for _ in range(10_000_000):  # bounded; the event ends it
                if stop.is_set():
                    return
                t0 = time.perf_counter()
                try:
                    predict(request_bytes, timeout=30)
                    latencies[i].append(time.perf_counter() - t0)
                except grpc.RpcError as exc:  # counted, not raised: the figure is the count
                    with lock:
                        failures.append(f"{exc.code().name}: {exc.details()}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(60)
    elapsed = time.perf_counter() - started
    flat = [x for per in latencies for x in per]
    p50, p99 = percentiles(flat) if flat else (float("nan"), float("nan"))
    return {"requests": len(flat) + len(failures), "ok": len(flat), "failed": failures, "rate": len(flat) / elapsed,
            "p50": p50, "p99": p99}


# A gRPC server that answers Predict with fixed bytes and no model: the ceiling this machine's Python gRPC
# sets on any Python server's request rate, whatever batching saves on the model (bounded: it exits after 10 min).
_TRIVIAL_SERVER = """
import sys, time
from concurrent import futures
import grpc
answer = b"\\x00" * 64
server = grpc.server(futures.ThreadPoolExecutor(64))
handler = grpc.unary_unary_rpc_method_handler(lambda request, context: answer)
server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService",
                                                                     {"Predict": handler})])
server.add_insecure_port("127.0.0.1:" + sys.argv[1])
server.start()
time.sleep(600)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saved-model", help="a SavedModel dir with the project's signatures")
    parser.add_argument("--workdir", default="artifacts")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the load and roll-out phases")
    parser.add_argument("--latency-requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()

    from tensorflow_serving.apis import predict_pb2

    from serving import signatures as sig
    from serving.client import ServingClient
    from serving.rest_client import RestClient
    from serving.tensors import fill_tensor_proto

    scratch = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    plain = batched = None
    try:
        saved_model, origin = find_saved_model(args, scratch)
        base = scratch / "models"
        (base / "mnist").mkdir(parents=True)
        push(saved_model, base, 1)
        plain, grpc_port, rest_port = start_server(base, scratch, [])
        compose_flags = [f for f in _compose_command() if not f.startswith(("--port=", "--rest_api_port="))]
        batched, b_grpc_port, b_rest_port = start_server(base, scratch, compose_flags)
        address = f"127.0.0.1:{grpc_port}"
        rng = np.random.default_rng(0)
        one = rng.random((1, 28, 28, 1), dtype=np.float32)
        print(f"model: {saved_model} ({origin})")
        print(f"servers: `mnist-pipeline serve` subprocesses; batching off on {address} (REST :{rest_port}); "
              f"docker-compose.yml's flags (batching on) on 127.0.0.1:{b_grpc_port} (REST :{b_rest_port})")
        print(f"CPU: {os.cpu_count()} cores, shared with other work while this ran (timings are inflated by load); "
              f"load average at start {os.getloadavg()[0]:.1f}")

        # 1. gRPC batch-1 latency, and the split: the model call in this process vs what serving adds. The two
        # alternate, request by request, so that load from other work on the machine falls on both alike.
        from serving.servable import Servable

        local = Servable("mnist", 1, base / "mnist" / "1").signatures[sig.SERVING_DEFAULT]
        model_call = lambda: local.call({sig.IMAGE_INPUT: one})  # noqa: E731
        with ServingClient(address, timeout=30.0) as client:
            client.wait_until_available(timeout=180)
            pairs = [(timed(lambda: client.predict(one), 1, warmup=0 if i else 50)[0],
                      timed(model_call, 1, warmup=0 if i else 50)[0]) for i in range(args.latency_requests)]
        grpc_s, model_s = [g for g, _ in pairs], [m for _, m in pairs]
        p50, p99 = percentiles(grpc_s)
        m50, m99 = percentiles(model_s)
        added = float(np.median([g - m for g, m in pairs]) * 1000)
        print(f"1. gRPC Predict, batch 1, {args.latency_requests} sequential requests (ServingClient): p50 {p50:.2f} ms, "
              f"p99 {p99:.2f} ms, p10 {np.percentile(grpc_s, 10) * 1000:.2f} ms  (target p50 <= 1.0 ms: {verdict(p50 <= 1.0)})")
        print(f"   split: the model call alone (the same signature and call, in this process, alternating with the "
              f"requests) p50 {m50:.2f} ms, p10 {np.percentile(model_s, 10) * 1000:.2f} ms; serving adds p50 {added:.2f} ms "
              f"(client, gRPC both ways, checks, conversion)")

        # 2. REST batch-1 latency: float instances, and a b64 PNG.
        import tensorflow as tf

        png = tf.io.encode_png((one[0] * 255).astype(np.uint8)).numpy()
        with RestClient(f"http://127.0.0.1:{rest_port}", timeout=30.0) as rest_client:
            rest_client.wait_until_available(timeout=60)
        floats_body = json.dumps({"instances": one.tolist()}).encode()
        png_body = json.dumps({"signature_name": sig.PNG_SIGNATURE,
                               "instances": [{"b64": base64.b64encode(png).decode()}]}).encode()
        for name, body in [("float instances", floats_body), ("b64 PNG (predict_png)", png_body)]:
            post, connection = rest_poster(rest_port, "/v1/models/mnist:predict", body)
            rest_s = timed(post, args.latency_requests)
            connection.close()
            r50, r99 = percentiles(rest_s)
            print(f"2. REST predict, batch 1, {name} ({len(body)} bytes), kept-alive connection: p50 {r50:.2f} ms, "
                  f"p99 {r99:.2f} ms, p10 {np.percentile(rest_s, 10) * 1000:.2f} ms  "
                  f"(target p50 <= 2 ms: {verdict(r50 <= 2.0)})")

        # 3. Concurrent batch-1 clients, batching off vs on.
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mnist"
        fill_tensor_proto(request.inputs[sig.IMAGE_INPUT], one)
        request_bytes = request.SerializeToString()
        with ServingClient(f"127.0.0.1:{b_grpc_port}", timeout=30.0) as c:
            c.wait_until_available(timeout=180)
            for _ in range(20):
                c.predict(one)
        off = load(address, args.clients, args.seconds, request_bytes)
        on = load(f"127.0.0.1:{b_grpc_port}", args.clients, args.seconds, request_bytes)
        trivial_port = free_port()
        trivial = subprocess.Popen([sys.executable, "-c", _TRIVIAL_SERVER, str(trivial_port)])
        try:
            time.sleep(2)
            ceiling = load(f"127.0.0.1:{trivial_port}", args.clients, min(args.seconds, 5.0), request_bytes)
        finally:
            stop_server(trivial)
        for name, r in [("off", off), ("on ", on)]:
            print(f"3. {args.clients} concurrent batch-1 gRPC clients for {args.seconds:g} s, batching {name}: "
                  f"{r['rate']:.0f} requests/s, p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, {r['requests']} requests, "
                  f"{len(r['failed'])} failed")
        ratio = on["rate"] / off["rate"] if off["rate"] else float("nan")
        failed = len(off["failed"]) + len(on["failed"])
        print(f"   batching on/off throughput {ratio:.2f}x (target >= 3x: {verdict(ratio >= 3)}); p99 with batching "
              f"{on['p99']:.2f} ms (target <= 25 ms: {verdict(on['p99'] <= 25)}); failed {failed} "
              f"(target 0: {verdict(failed == 0)})")
        print(f"   the ceiling: the same clients against a Python gRPC server that answers without a model: "
              f"{ceiling['rate']:.0f} requests/s ({ceiling['rate'] / off['rate']:.2f}x batching off's rate)")
        for line in (off["failed"] + on["failed"])[:5]:
            print(f"   failure: {line}")

        # 4. Roll-out under load, on the batching server.
        failures: list[str] = []
        versions: dict[int, int] = {}
        counts = [0] * 8
        lock = threading.Lock()
        stop = threading.Event()
        b_address = f"127.0.0.1:{b_grpc_port}"

        def client_loop(i: int) -> None:
            with ServingClient(b_address, timeout=30.0) as c:
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
        print(f"4. roll-out under load (batching on): 8 concurrent clients (batch 8) for {args.seconds:g} s, version 2 "
              f"pushed at {args.seconds / 4:g} s: {total} requests, {len(failures)} failed, answered by versions "
              f"{dict(sorted(versions.items()))}  (target 0 failed: {verdict(not failures)}; "
              f"new version default: {'yes' if 2 in versions else 'NO'})")
        for line in failures[:5]:
            print(f"   failure: {line}")
        return 0 if not failures and not failed else 1
    finally:
        stop_server(plain)
        stop_server(batched)
        shutil.rmtree(scratch, ignore_errors=True)


def _compose_command() -> list[str]:
    import yaml

    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    (service,) = compose["services"].values()
    return list(service["command"])


if __name__ == "__main__":
    sys.exit(main())
