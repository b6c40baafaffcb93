"""Serving benchmark: the local server (`mnist-pipeline serve`, subprocesses on loopback), gRPC and REST,
batching off and on, each figure printed against its target from one run.

    .venv/bin/python bench/serving.py [--saved-model DIR] [--workdir artifacts] [--seconds 10]

0. the host: CPU model, cores, load average, and the CPU the hypervisor stole during the run (bench/hoststat.py);
1. the model call in this process, as the server makes it (`_Signature.call`): p50 and CPU time (TensorFlow's
   threads included) at batch 1 and batch 32;
2. batch-1 Predict, sequential requests alternating with in-process model calls (so that load from other work
   falls on both alike): p50, p99 and the overhead (request minus model call, the median of the pairs) for
   gRPC (`ServingClient`, and prepared request bytes) and REST (float `instances`; a fresh connection per request
   as curl or requests make it, and one kept-alive connection). Targets: gRPC overhead <= 0.3 ms and p50 <= 1.0
   ms; REST fresh p50 <= 2 ms; REST kept-alive overhead <= 0.8 ms. Beside them, for reading them: a server
   started with --tensorflow_intra_op_parallelism=1, and the floor (a Python gRPC server answering without a model);
3. batch-1 gRPC latency on the server with docker-compose.yml's flags (batching on): p50 <= timeout + 1 ms;
4. `--clients` concurrent batch-1 gRPC clients for `--seconds` against each server, from one separate load
   process (grpc.aio, one event loop: cheap, so the clients take little of the 2 cores): throughput ratio
   on/off (target >= 2x, aim 3x), p99 with batching <= 25 ms, no failed request; the ceiling is the same load
   against a Python gRPC server answering without a model (gRPC's asyncio server on uvloop, as `serve`'s).
   Each load also prints its p99.9 and slowest answer
   (where a stop of the whole server shows), the server's CPU time per answer, the share of one core its busiest
   thread used, and the share of the machine the clients used (on one machine they compete with the server); with
   batching on, the batches the server ran, from its own `padding_size` metric (TF Serving's): how many, their mean
   size, the share of padding, and how many ran a lone request; and how long a request spent inside the server's
   Predict on average (its `request_latency` metric) against the clients' mean wait. Beside them, the server's own
   work: its Predict servicer in process, without gRPC and with the model call replaced by fixed outputs, under as
   many concurrent callers (CPU a request, batching off and on), and in that process, the model loaded, how long one
   full garbage collection stops every thread with the loaded objects frozen (as `serve` freezes them after each
   version change, serving.model_manager) and without. Then where each server's CPU an answer went: the model
   (batch 1 for batching off; for batching on, each padded batch size the load ran, called alone in this process
   and weighted by its batches), gRPC (the ceiling's CPU an answer), the own work, and the rest; and the on/off
   throughput as the product of the CPU an answer saved and the cores kept busy, and the most batching can pay on
   the machine: batching off's CPU an answer against the model's at batch 32 plus gRPC's and the own work's;
   and where h2load (nghttp2's HTTP/2 load generator, in C: Debian's and Ubuntu's nghttp2-client) is on PATH, the same
   load from it, a client neither this project's nor gRPC's, as the independent check: requests/s, p50, p99 and
   failures off and on, the on/off ratio, and the p50 of batch-1 calls one at a time on one connection;
5. roll-out under load: 8 clients (batch 8) on the batching server while version 2 is pushed: no failure.
The model is `--saved-model`, else the newest pushed version under the workdir's base path, else the default
architecture exported untrained (speed does not depend on the weights). Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.hoststat import busy_ticks, cpu_times, describe, others_share, process_ticks, steal_share, thread_ticks  # noqa: E402

DEPLOY = REPO / "serving" / "deploy"
PREDICT = "/tensorflow.serving.PredictionService/Predict"
TICK = os.sysconf("SC_CLK_TCK")  # clock ticks a second, as /proc and the tick counters count them


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

    keras_path = scratch / "model.keras"
    build_model("default", seed=0).save(keras_path)
    return export.run(keras_path, scratch / "saved_model").saved_model_dir, "default architecture, untrained"


def push(saved_model: Path, base: Path, version: int) -> None:
    tmp = base / "mnist" / f".tmp-{version}"
    shutil.copytree(saved_model, tmp)
    os.replace(tmp, base / "mnist" / str(version))


def model_base(args, scratch: Path) -> tuple[Path, Path, str]:
    """A model base path under `scratch` holding the benchmarked model as version 1: (base, SavedModel, origin)."""
    from serving import signatures as sig

    saved_model, origin = find_saved_model(args, scratch)
    base = scratch / "models"
    (base / sig.MODEL_NAME).mkdir(parents=True)
    push(saved_model, base, 1)
    return base, saved_model, origin


def predict_bytes(image: np.ndarray) -> bytes:
    """A serialized Predict request for `image` on the default signature: what the loads send, prepared once."""
    from tensorflow_serving.apis import predict_pb2

    from serving import signatures as sig
    from serving.tensors import fill_tensor_proto

    request = predict_pb2.PredictRequest()
    request.model_spec.name = sig.MODEL_NAME
    fill_tensor_proto(request.inputs[sig.IMAGE_INPUT], image)
    return request.SerializeToString()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(base: Path, scratch: Path, extra: list[str]) -> tuple[subprocess.Popen, int, int]:
    grpc_port, rest_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "serve", "--model-base-path", str(base), "--port", str(grpc_port),
         "--rest_api_port", str(rest_port), "--poll-interval", "1.0", "--workdir", str(scratch / "work"), "-q", *extra],
        cwd=REPO, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return proc, grpc_port, rest_port


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def ms(seconds, q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000, q))


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def paired(request, model_call, n: int, warmup: int = 30) -> tuple[list[float], list[float]]:
    """n (request, model call) timings, alternating one by one."""
    for _ in range(warmup):
        request()
        model_call()
    pairs = [(once(request), once(model_call)) for _ in range(n)]
    return [r for r, _ in pairs], [m for _, m in pairs]


def report(name: str, request_s: list[float], model_s: list[float], targets: str = "") -> dict:
    overhead = float(np.median(np.subtract(request_s, model_s)) * 1000)
    print(f"   {name:<44} p50 {ms(request_s, 50):6.2f} ms  p99 {ms(request_s, 99):6.2f} ms  "
          f"overhead p50 {overhead:5.2f} ms  {targets}")
    return {"p50": ms(request_s, 50), "p99": ms(request_s, 99), "overhead": overhead}


def _metric_families(rest_port: int) -> list | str:
    """The server's Prometheus metrics (parsed), or why they could not be read."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics"
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
    except OSError as exc:  # the figure is missing, the run goes on
        return f"{url} could not be read ({exc})"
    return list(text_string_to_metric_families(text))


def batches(rest_port: int) -> dict[int, tuple[float, float]] | str:
    """The batching server's own account of the batches it ran (TF Serving's `padding_size` histogram, from its
    Prometheus endpoint): {padded batch size: (batches, padding rows)}, or why it could not be read."""
    families = _metric_families(rest_port)
    if isinstance(families, str):
        return f"batches: {families}"
    found: dict[int, list[float]] = {}
    for family in families:
        if family.name != ":tensorflow:serving:batching_session:padding_size":
            continue
        for sample in family.samples:
            if sample.name.endswith(("_count", "_sum")):
                entry = found.setdefault(int(sample.labels["execution_batch_size"]), [0.0, 0.0])
                entry[sample.name.endswith("_sum")] += sample.value
    return {size: (count, padding) for size, (count, padding) in found.items()}


def predict_time(rest_port: int) -> tuple[float, float] | str:
    """The server's own account of its gRPC Predict calls (TF Serving's `request_latency` histogram): (calls,
    seconds spent in them in all), or why it could not be read."""
    families = _metric_families(rest_port)
    if isinstance(families, str):
        return families
    calls = micros = 0.0
    for family in families:
        if family.name == ":tensorflow:serving:request_latency":
            for sample in family.samples:
                if sample.labels.get("API") == "predict" and sample.labels.get("entrypoint") == "GRPC":
                    calls += sample.value if sample.name.endswith("_count") else 0.0
                    micros += sample.value if sample.name.endswith("_sum") else 0.0
    return calls, micros / 1e6


def batches_between(before: dict[int, tuple[float, float]] | str,
                    after: dict[int, tuple[float, float]] | str) -> tuple[dict[int, float], float] | str:
    """The batches run between two readings of `batches`: ({padded batch size: batches}, padding rows), or why
    there is no figure."""
    if isinstance(before, str) or isinstance(after, str):
        return before if isinstance(before, str) else after
    counts = {size: after[size][0] - before.get(size, (0.0, 0.0))[0] for size in after}
    return counts, sum(after[size][1] - before.get(size, (0.0, 0.0))[1] for size in after)


def model_cpu_at(call, row: np.ndarray, ran: tuple[dict[int, float], float], calls: int = 40) -> float | None:
    """The model's CPU an answer (ms) at the batches a batch-1 load ran: each padded size the load ran, called
    alone in this process (`call(batch)` runs the model on a batch of copies of `row`), weighted by how many
    batches of that size ran, over the requests they held."""
    counts, padding = ran
    requests = sum(size * n for size, n in counts.items()) - padding
    if requests <= 0:
        return None
    cpu_ms = 0.0
    for size, n in counts.items():
        if n > 0:
            batch = np.repeat(row, size, axis=0)
            for _ in range(5):  # a size's first calls build its kernels
                call(batch)
            start = time.process_time()  # this process runs nothing else meanwhile: its CPU is the model calls'
            for _ in range(calls):
                call(batch)
            cpu_ms += n * (time.process_time() - start) / calls * 1000
    return cpu_ms / requests


def inside_line(before: tuple[float, float] | str, after: tuple[float, float] | str, result: dict) -> str:
    """How long a request of a load spent inside the server's Predict (two `predict_time` readings around the
    load), against the clients' mean wait."""
    if isinstance(before, str) or isinstance(after, str):
        return f"time inside the server: {before if isinstance(before, str) else after}"
    calls, seconds = after[0] - before[0], after[1] - before[1]
    if calls <= 0:
        return "time inside the server: no Predict call counted"
    return (f"a request spent {seconds / calls * 1000:.2f} ms on average inside the server's Predict (its "
            f"request_latency metric: the wait for its batch, the model, the answer's tensors) of the "
            f"{result['mean']:.2f} ms the clients waited (the rest: gRPC, the event loop's queue, the clients)")


def batch_mix(ran: tuple[dict[int, float], float] | str) -> str:
    """What the batches of one load were (`batches_between`'s answer): how many, their mean size, the share of
    padding, the lone requests (the loads send batch-1 requests, so a batch's rows before padding are its
    requests)."""
    if isinstance(ran, str):
        return ran
    counts, padding = ran
    total, padded_rows = sum(counts.values()), sum(size * n for size, n in counts.items())
    if not total:
        return "no batches"
    rows = padded_rows - padding
    return (f"{total:.0f} batches of {rows / total:.1f} requests on average ({padded_rows / total:.1f} rows after "
            f"padding: {padding / padded_rows:.0%} of the rows the model ran were padding); "
            f"{counts.get(1, 0) / total:.0%} of them ran a lone request")


def rest_post(port: int, body: bytes, fresh: bool):
    """POST a prepared body: on a new connection each time (closed after, as curl does) or on one kept alive."""
    headers = {"Content-Type": "application/json"}
    kept = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30) if fresh else kept
        connection.request("POST", "/v1/models/mnist:predict", body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        if fresh:
            connection.close()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")

    return post, kept


def grpc_raw(address: str, request_bytes: bytes):
    import grpc

    channel = grpc.insecure_channel(address)
    predict = channel.unary_unary(PREDICT)  # bytes in, bytes out: what the server costs, without a client library
    return (lambda: predict(request_bytes, timeout=30)), channel


async def _load(address: str, clients: int, seconds: float, request_bytes: bytes) -> dict:
    """`clients` clients (a channel each) sending batch-1 Predicts back to back for `seconds`. gRPC's channels to
    one address share one connection, as ghz's default does; a connection each measured the same (in the history of
    bench/README.md)."""
    import grpc

    latencies: list[float] = []
    failures: list[str] = []
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            predict = channel.unary_unary(PREDICT)
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    await predict(request_bytes, timeout=30)
                    latencies.append(time.perf_counter() - t0)
                except grpc.RpcError as exc:  # counted, not raised: the figure is the count
                    failures.append(f"{exc.code().name}: {exc.details()}")

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    nan = float("nan")
    return {"ok": len(latencies), "failed": failures, "rate": len(latencies) / elapsed,
            "mean": sum(latencies) / len(latencies) * 1000 if latencies else nan,
            "p50": ms(latencies, 50) if latencies else nan, "p99": ms(latencies, 99) if latencies else nan,
            "p999": ms(latencies, 99.9) if latencies else nan, "max": max(latencies) * 1e3 if latencies else nan}


def _measured_run(command: list[str], server_pid: int | None, timeout: float) -> tuple[subprocess.CompletedProcess, dict]:
    """Run a load process and count the clock ticks used meanwhile: by the server (in all, and each of its threads),
    by the load process, by this process, and by the machine (busy, all: `busy_ticks` before and after)."""
    server_before = process_ticks(server_pid) if server_pid else 0
    threads_before = thread_ticks(server_pid) if server_pid else {}
    machine_before, own_before = busy_ticks(), process_ticks(os.getpid())
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    server_after = process_ticks(server_pid) if server_pid else 0
    threads_after = thread_ticks(server_pid) if server_pid else {}
    machine_after, own_after = busy_ticks(), process_ticks(os.getpid())
    grown = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_ticks = round((grown.ru_utime + grown.ru_stime - children.ru_utime - children.ru_stime) * TICK)
    return out, {"server": server_after - server_before, "own": own_after - own_before, "load": load_ticks,
                 "threads": [t - threads_before.get(tid, 0) for tid, t in threads_after.items()],
                 "machine": (machine_before, machine_after)}


def _share_of_machine(ticks: int, machine: tuple) -> float | None:
    """`ticks` as a share of all the machine's ticks between two `busy_ticks` readings."""
    before, after = machine
    return ticks / (after[1] - before[1]) if before and after and after[1] > before[1] else None


def load(address: str, clients: int, seconds: float, request_bytes: bytes, server_pid: int | None = None) -> dict:
    """The load, from a separate process (this one holds TensorFlow and the measuring threads); with the share of
    the machine that other processes (not the server, the load, or this one) used meanwhile."""
    out, used = _measured_run([sys.executable, __file__, "--load", address, str(clients), str(seconds),
                               request_bytes.hex()], server_pid, seconds + 120)
    if out.returncode:
        raise RuntimeError(f"the load process failed: {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["others"] = others_share(*used["machine"], used["own"] + used["server"] + used["load"])
    # Where the machine went: the server's CPU for each answer, and the clients' share of all cores.
    result["server_cpu_ms"] = used["server"] / TICK / max(result["ok"], 1) * 1000
    result["clients"] = _share_of_machine(used["load"], used["machine"])
    # The server's busiest thread: the share of one core it used while the load ran (the server idles before
    # and after).
    seconds = result["ok"] / result["rate"] if result["rate"] else 0.0
    result["busiest_thread"] = max(used["threads"]) / TICK / seconds if used["threads"] and seconds else None
    return result


def h2load(address: str, request_bytes: bytes, scratch: Path, connections: int, requests: int,
           server_pid: int | None = None) -> dict:
    """`requests` Predicts of `request_bytes` from h2load (nghttp2's HTTP/2 load generator, in C: a client that is
    neither this project's nor gRPC's) over `connections` connections of one stream each, as plain gRPC frames.
    h2load sees HTTP statuses only, and gRPC answers its errors with HTTP 200 and no message, so the calls answered
    are counted from the bytes: the data h2load received divided by a successful answer's size (one call made here)."""
    import grpc

    channel = grpc.insecure_channel(address)
    try:
        answer = len(channel.unary_unary(PREDICT)(request_bytes, timeout=30)) + 5  # gRPC's 5-byte frame header
    finally:
        channel.close()
    body, log = scratch / "h2load-request.bin", scratch / "h2load-log.tsv"
    body.write_bytes(b"\0" + len(request_bytes).to_bytes(4, "big") + request_bytes)
    log.unlink(missing_ok=True)
    out, used = _measured_run(["h2load", "-c", str(connections), "-m", "1", "-n", str(requests), "-d", str(body),
                               "--log-file", str(log), "-H", "content-type: application/grpc", "-H", "te: trailers",
                               f"http://{address}{PREDICT}"], server_pid, 600)
    if out.returncode:
        raise RuntimeError(f"h2load failed: {(out.stderr or out.stdout)[-2000:]}")
    rate = float(re.search(r"finished in \S+, ([\d.]+) req/s", out.stdout).group(1))
    data = int(re.search(r"traffic: .* \((\d+)\) data", out.stdout).group(1))
    rows = [line.split("\t") for line in log.read_text().splitlines()]
    latencies = [int(row[2]) / 1e6 for row in rows if row[1] == "200"]
    return {"rate": rate, "p50": ms(latencies, 50), "p99": ms(latencies, 99), "failed": requests - data // answer,
            "server_cpu_ms": used["server"] / TICK / requests * 1000,
            "clients": _share_of_machine(used["load"], used["machine"])}


async def _servicer(base: str, batching: bool, seconds: float, callers: int) -> dict:
    """The server's own work for a batch-1 Predict, without gRPC and without the model: the server's Predict servicer
    (request metrics included; batching through the deploy file's scheduler, or the executor as with batching off)
    on a uvloop, `callers` coroutines calling it back to back; each call parses the request bytes and serializes
    the answer, as gRPC's (de)serializers do. The model call returns fixed outputs of the right shape."""
    from concurrent import futures

    from tensorflow_serving.apis import predict_pb2

    from serving import DEFAULT_MAX_BATCH_SIZE, servable
    from serving import signatures as sig
    from serving.batching import BatchScheduler, read_batching_parameters
    from serving.metrics import ServingMetrics
    from serving.model_manager import ModelManager, ModelSettings
    from serving.server import prediction_servicer

    scheduler = BatchScheduler(read_batching_parameters(DEPLOY / "batching_parameters.txt")) if batching else None
    manager = ModelManager({sig.MODEL_NAME: ModelSettings(Path(base) / sig.MODEL_NAME)}, poll_interval=600,
                           batcher=scheduler, freeze_gc=True)  # as serving.app.ServingApp makes it
    if scheduler is not None:
        scheduler.start()
    manager.poll()
    request_bytes = predict_bytes(np.zeros((1, 28, 28, 1), np.float32))
    fixed = manager.resolve(sig.MODEL_NAME).predict(predict_pb2.PredictRequest.FromString(request_bytes))
    if not callable(getattr(servable._Signature, "call", None)):  # replaced below: a rename must not go unseen
        raise RuntimeError("serving.servable._Signature.call is gone: update bench/serving.py's _servicer")
    servable._Signature.call = lambda self, arrays: {  # this process only: the model's place, at no cost
        k: np.repeat(v, next(iter(arrays.values())).shape[0], axis=0) for k, v in fixed.items()}

    class Context:  # what Predict asks of a gRPC context when it answers (a failure would abort)
        def code(self):
            return None

        async def abort(self, code, details):
            raise RuntimeError(f"{code}: {details}")

    executor = futures.ThreadPoolExecutor(8)
    service = prediction_servicer(manager, DEFAULT_MAX_BATCH_SIZE, executor, ServingMetrics())
    calls = 0

    async def caller(deadline: float) -> None:
        nonlocal calls
        while time.perf_counter() < deadline:
            answer = await service.Predict(predict_pb2.PredictRequest.FromString(request_bytes), Context())
            answer.SerializeToString()
            calls += 1

    await asyncio.gather(*(caller(time.perf_counter() + 1.0) for _ in range(callers)))  # warm-up
    calls, cpu, started = 0, time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller(started + seconds) for _ in range(callers)))
    cpu, elapsed = time.process_time() - cpu, time.perf_counter() - started
    if scheduler is not None:
        scheduler.stop()
    executor.shutdown()
    frozen, frozen_ms = gc.get_freeze_count(), _full_collection_ms()
    gc.unfreeze()
    gc.collect()  # what the freeze kept: the pause below is a walk over live objects only, as the frozen one
    return {"rate": calls / elapsed, "cpu_us": cpu / max(calls, 1) * 1e6, "frozen": frozen,
            "gc_frozen_ms": frozen_ms, "gc_unfrozen_ms": _full_collection_ms()}


def _full_collection_ms() -> float:
    """How long one full garbage collection stops this process: the median of three."""
    took = []
    for _ in range(3):
        t = time.perf_counter()
        gc.collect()
        took.append(time.perf_counter() - t)
    return sorted(took)[1] * 1e3


def servicer_cost(base: Path, batching: bool, seconds: float = 3.0, callers: int = 32) -> dict:
    """`_servicer`, in a process of its own (it replaces the model call there)."""
    out = subprocess.run([sys.executable, __file__, "--servicer", str(base), "on" if batching else "off", str(seconds),
                          str(callers)], capture_output=True, text=True, timeout=seconds + 180,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    if out.returncode:
        raise RuntimeError(f"the servicer process failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# A gRPC server that answers Predict with fixed bytes and no model: the ceiling this machine's Python gRPC
# sets on any Python server's request rate (bounded: it exits after 10 min). It runs the local server's own
# stack, gRPC's asyncio server on uvloop (serving.server), so that its CPU an answer is gRPC's share of the local
# server's: gRPC's thread-pool server, used here before, took 0.59-0.61 ms of CPU an answer against 0.45-0.46
# on uvloop (2026-12-07, an AMD EPYC of family 25, h2load with 32 connections, two rounds each).
_TRIVIAL_SERVER = """
import asyncio, sys
import grpc
try:
    import uvloop
    loop = uvloop.new_event_loop()
except ImportError:
    loop = asyncio.new_event_loop()
answer = b"\\x00" * 64
async def predict(request, context):
    return answer
async def main():
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(predict)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService",
                                                                         {"Predict": handler})])
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    await asyncio.sleep(600)
loop.run_until_complete(main())
"""


def compose_flags() -> list[str]:
    import yaml

    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    (service,) = compose["services"].values()
    return [f for f in service["command"] if not f.startswith(("--port=", "--rest_api_port="))]


def host_line() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return f"host: {model}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start"


def rollout(address: str, base: Path, saved_model: Path, seconds: float) -> tuple[int, list[str], dict]:
    from serving.client import ServingClient

    failures: list[str] = []
    versions: dict[int, int] = {}
    lock = threading.Lock()
    done = threading.Event()
    x = np.random.default_rng(1).random((8, 28, 28, 1), dtype=np.float32)

    def client_loop() -> None:
        with ServingClient(address, timeout=30.0) as c:
            for _ in range(1_000_000):  # bounded; the event ends it
                if done.is_set():
                    return
                try:
                    v = c.predict(x).model_version
                    with lock:
                        versions[v] = versions.get(v, 0) + 1
                except Exception as exc:  # counted, not raised: the figure is the count
                    with lock:
                        failures.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client_loop) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(seconds / 4)
    push(saved_model, base, 2)
    time.sleep(seconds * 3 / 4)
    done.set()
    for t in threads:
        t.join(60)
    return sum(versions.values()) + len(failures), failures, versions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saved-model", help="a SavedModel dir with the project's signatures")
    parser.add_argument("--workdir", default="artifacts")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load and of the roll-out phase")
    parser.add_argument("--requests", type=int, default=400, help="sequential requests per latency figure")
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()

    from serving import signatures as sig
    from serving.batching import read_batching_parameters
    from serving.client import ServingClient
    from serving.servable import Servable

    print(host_line(), flush=True)
    started = cpu_times()
    scratch = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    plain = batched = single = None
    try:
        base, saved_model, origin = model_base(args, scratch)
        plain, grpc_port, rest_port = start_server(base, scratch, [])
        batched, b_grpc_port, b_rest_port = start_server(base, scratch, compose_flags())
        single, s_grpc_port, _ = start_server(base, scratch, ["--tensorflow_intra_op_parallelism=1"])
        params = read_batching_parameters(DEPLOY / "batching_parameters.txt")
        address, b_address = f"127.0.0.1:{grpc_port}", f"127.0.0.1:{b_grpc_port}"
        print(f"model: {saved_model} ({origin}); servers: batching off on {address} (REST :{rest_port}), "
              f"docker-compose.yml's flags (batching on: {params.batch_timeout_micros} us timeout, sizes "
              f"{list(params.allowed_batch_sizes)}, {params.num_batch_threads} threads) on {b_address}")

        with ServingClient(address, timeout=30.0) as client, ServingClient(b_address, timeout=30.0) as b_client, \
                ServingClient(f"127.0.0.1:{s_grpc_port}", timeout=30.0) as s_client:
            for c in (client, b_client, s_client):  # the servers load TensorFlow and warm up: not during step 1
                c.wait_until_available(timeout=180)
        rng = np.random.default_rng(0)
        one, thirty_two = rng.random((1, 28, 28, 1), dtype=np.float32), rng.random((32, 28, 28, 1), dtype=np.float32)
        local = Servable("mnist", 1, base / "mnist" / "1").signatures[sig.SERVING_DEFAULT]
        model_call = lambda: local.call({sig.IMAGE_INPUT: one})  # noqa: E731
        for _ in range(50):
            model_call()
            local.call({sig.IMAGE_INPUT: thirty_two})
        cpu = time.process_time()  # this process runs nothing else meanwhile: its CPU is the model calls'
        m1 = [once(model_call) for _ in range(args.requests)]
        cpu1, cpu = (time.process_time() - cpu) / len(m1), time.process_time()
        m32 = [once(lambda: local.call({sig.IMAGE_INPUT: thirty_two})) for _ in range(args.requests // 4)]
        cpu32 = (time.process_time() - cpu) / len(m32)
        print(f"1. the model call in process: batch 1 p50 {ms(m1, 50):.2f} ms ({cpu1 * 1000:.2f} ms of CPU a call, "
              f"TensorFlow's threads included); batch 32 p50 {ms(m32, 50):.2f} ms ({ms(m32, 50) / 32:.3f} ms an "
              f"image, {cpu32 / 32 * 1000:.3f} ms of CPU an image)")

        request_bytes = predict_bytes(one)
        print(f"2. batch-1 Predict, {args.requests} sequential requests each, alternating with the model call:")
        with ServingClient(address, timeout=30.0) as client:
            g = report("gRPC, ServingClient.predict", *paired(lambda: client.predict(one), model_call, args.requests))
            print(f"{'':50}(targets: p50 <= 1.0 ms {verdict(g['p50'] <= 1.0)}, overhead <= 0.3 ms "
                  f"{verdict(g['overhead'] <= 0.3)})")
            raw, channel = grpc_raw(address, request_bytes)
            r = report("gRPC, prepared request bytes", *paired(raw, model_call, args.requests))
            print(f"{'':50}(targets: p50 <= 1.0 ms {verdict(r['p50'] <= 1.0)}, overhead <= 0.3 ms "
                  f"{verdict(r['overhead'] <= 0.3)})")
            channel.close()
            s_raw, s_channel = grpc_raw(f"127.0.0.1:{s_grpc_port}", request_bytes)
            report("gRPC prepared bytes, intra-op threads 1", *paired(s_raw, model_call, args.requests),
                   "(--tensorflow_intra_op_parallelism=1: ops run in the calling thread)")
            s_channel.close()
            body = json.dumps({"instances": one.tolist()}).encode()
            post, kept = rest_post(rest_port, body, fresh=True)
            f = report(f"REST instances ({len(body)} B), fresh connection", *paired(post, model_call, args.requests))
            print(f"{'':50}(target p50 <= 2 ms: {verdict(f['p50'] <= 2.0)})")
            kept.close()
            post, kept = rest_post(rest_port, body, fresh=False)
            k = report("REST instances, kept-alive connection", *paired(post, model_call, args.requests))
            print(f"{'':50}(target overhead <= 0.8 ms: {verdict(k['overhead'] <= 0.8)})")
            kept.close()

            b_raw, b_channel = grpc_raw(b_address, request_bytes)
            b = report("3. batching on: gRPC prepared bytes", *paired(b_raw, model_call, args.requests))
            limit, added = params.batch_timeout_micros / 1000 + 1.0, b["p50"] - r["p50"]
            change = f"adds {added:.2f} ms to" if added >= 0 else f"answers {-added:.2f} ms sooner than"
            print(f"{'':50}(target p50 <= timeout + 1 ms = {limit:.2f} ms: {verdict(b['p50'] <= limit)}; batching "
                  f"{change} batching off's p50: {verdict(added <= limit)} against the same bound)")
            b_channel.close()

        off = load(address, args.clients, args.seconds, request_bytes, plain.pid)
        before, timed = batches(b_rest_port), predict_time(b_rest_port)
        on = load(b_address, args.clients, args.seconds, request_bytes, batched.pid)
        ran = batches_between(before, batches(b_rest_port))
        on["batches"] = batch_mix(ran)
        on["inside"] = inside_line(timed, predict_time(b_rest_port), on)
        trivial_port = free_port()
        trivial = subprocess.Popen([sys.executable, "-c", _TRIVIAL_SERVER, str(trivial_port)])
        try:
            time.sleep(2)
            floor_call, floor_channel = grpc_raw(f"127.0.0.1:{trivial_port}", request_bytes)
            for _ in range(50):
                floor_call()
            floor = [once(floor_call) for _ in range(args.requests)]
            floor_channel.close()
            ceiling = load(f"127.0.0.1:{trivial_port}", args.clients, min(args.seconds, 5.0), request_bytes, trivial.pid)
        finally:
            stop(trivial)
        print(f"   the floor: the same prepared request to a Python gRPC server answering without a model: p50 "
              f"{ms(floor, 50):.2f} ms (gRPC's own share of any overhead above)")
        print(f"4. {args.clients} concurrent batch-1 gRPC clients for {args.seconds:g} s (one grpc.aio load process):")
        for name, x in [("off", off), ("on", on), ("ceiling (no model)", ceiling)]:
            print(f"   batching {name:<20} {x['rate']:7.0f} requests/s  p50 {x['p50']:6.2f} ms  p99 {x['p99']:6.2f} ms  "
                  f"p99.9 {x['p999']:6.2f} ms  slowest {x['max']:6.1f} ms  {x['ok']} answered, {len(x['failed'])} failed")
            print(f"   {'':29}server CPU {x['server_cpu_ms']:.2f} ms an answer, its busiest thread "
                  f"{describe(x['busiest_thread'])} of a core; the clients used {describe(x['clients'])} of the "
                  f"machine, other processes {describe(x['others'])}")
            for key in ("batches", "inside"):
                if key in x:
                    print(f"   {'':29}{x[key]}")
        own = {name: servicer_cost(base, batching, callers=args.clients) for name, batching in (("off", False), ("on", True))}
        print(f"   the server's own work, without gRPC or the model (its Predict servicer in process, {args.clients} "
              f"callers on one uvloop, the model call replaced by fixed outputs): {own['off']['cpu_us']:.0f} us of CPU "
              f"a request with batching off, {own['on']['cpu_us']:.0f} us with it on (gRPC's own: the ceiling's CPU)")
        print(f"   one full garbage collection in that process, the model loaded, stops every thread for "
              f"{own['off']['gc_frozen_ms']:.2f} ms with the loaded objects frozen ({own['off']['frozen']:,} of them, as "
              f"serve freezes them after each version change), {own['off']['gc_unfrozen_ms']:.0f} ms without")
        model_on = None if isinstance(ran, str) else model_cpu_at(lambda batch: local.call({sig.IMAGE_INPUT: batch}), one, ran)
        if model_on is not None:
            grpc_ms = ceiling["server_cpu_ms"]
            print("   where the server CPU an answer went (ms): the model (called alone in this process), gRPC (the "
                  "ceiling's CPU an answer), the own work above, and the rest: what these parts, each measured alone, "
                  "leave out (negative where the model's calls cost less CPU under the load than alone)")
            for name, x, model, where in (("off", off, cpu1 * 1000, "batch 1"), ("on", on, model_on, "the batches above")):
                own_ms = own[name]["cpu_us"] / 1000
                print(f"   {'':29}batching {name:<3} {x['server_cpu_ms']:.2f} = model {model:.2f} ({where}) + gRPC "
                      f"{grpc_ms:.2f} + own work {own_ms:.2f} + the rest {x['server_cpu_ms'] - model - grpc_ms - own_ms:.2f}")
            cpu_ratio = off["server_cpu_ms"] / on["server_cpu_ms"]
            busy = {name: x["rate"] * x["server_cpu_ms"] / 1000 for name, x in (("off", off), ("on", on))}
            print(f"   {'':29}batching on spent {cpu_ratio:.2f}x less server CPU an answer and kept {busy['on']:.2f} cores "
                  f"busy against {busy['off']:.2f}: {cpu_ratio:.2f}x x {busy['on'] / busy['off']:.2f} = the on/off "
                  f"throughput below")
            # What batching could pay here at most: every batch 32 rows without padding, gRPC and the own work as
            # measured, nothing else; against batching off's CPU an answer, at the same cores busy.
            model32, own_on = cpu32 / 32 * 1000, own["on"]["cpu_us"] / 1000
            best = model32 + grpc_ms + own_on
            print(f"   {'':29}at best (batches of 32, no padding, no rest): model {model32:.2f} + gRPC "
                  f"{grpc_ms:.2f} + own work {own_on:.2f} = {best:.2f} ms an answer, "
                  f"{off['server_cpu_ms'] / best:.2f}x less than batching off: the most batching can pay on this "
                  f"machine with the cores as busy (gRPC's and the own work's share is paid by every request)")
        ratio = on["rate"] / off["rate"] if off["rate"] else float("nan")
        failed = off["failed"] + on["failed"]
        print(f"   on/off throughput {ratio:.2f}x (target >= 2x: {verdict(ratio >= 2)}, aim 3x); p99 with batching "
              f"{on['p99']:.2f} ms (target <= 25 ms: {verdict(on['p99'] <= 25)}); failed {len(failed)} "
              f"(target 0: {verdict(not failed)})")
        for line in failed[:5]:
            print(f"   failure: {line}")
        independent = sequential = {}
        if shutil.which("h2load") is None:
            print("   the same from an independent client: skipped, h2load is not on PATH (Debian and Ubuntu: apt-get "
                  "install nghttp2-client)")
        else:
            independent = {name: h2load(where, request_bytes, scratch, args.clients,
                                        max(int(x["rate"] * args.seconds), 1000), pid)
                           for name, where, x, pid in (("off", address, off, plain.pid), ("on", b_address, on, batched.pid))}
            sequential = {name: h2load(where, request_bytes, scratch, 1, args.requests)
                          for name, where in (("off", address), ("on", b_address))}
            print(f"   the same from an independent client, h2load (nghttp2's HTTP/2 load generator, in C): {args.clients} "
                  f"connections of one call each, about {args.seconds:g} s a server; and one connection, {args.requests} "
                  "calls one after another:")
            for name, x in independent.items():
                print(f"   batching {name:<20} {x['rate']:7.0f} requests/s  p50 {x['p50']:6.2f} ms  p99 {x['p99']:6.2f} ms  "
                      f"{x['failed']} failed; server CPU {x['server_cpu_ms']:.2f} ms an answer, h2load used "
                      f"{describe(x['clients'])} of the machine; one at a time: p50 {sequential[name]['p50']:.2f} ms, "
                      f"p99 {sequential[name]['p99']:.2f} ms")
            h2_ratio = independent["on"]["rate"] / independent["off"]["rate"]
            one_p50 = sequential["off"]["p50"]
            print(f"   on/off throughput {h2_ratio:.2f}x (target >= 2x: {verdict(h2_ratio >= 2)}); p99 with batching "
                  f"{independent['on']['p99']:.2f} ms (target <= 25 ms: {verdict(independent['on']['p99'] <= 25)}); "
                  f"one at a time, batching off p50 {one_p50:.2f} ms (target <= 1.0 ms: {verdict(one_p50 <= 1.0)}), "
                  f"{one_p50 - ms(m1, 50):.2f} ms above the model call's p50 in step 1 (target overhead <= 0.3 ms: "
                  f"{verdict(one_p50 - ms(m1, 50) <= 0.3)})")

        total, failures, versions = rollout(b_address, base, saved_model, args.seconds)
        print(f"5. roll-out under load (batching on): 8 clients (batch 8) for {args.seconds:g} s, version 2 pushed at "
              f"{args.seconds / 4:g} s: {total} requests, {len(failures)} failed, answered by versions "
              f"{dict(sorted(versions.items()))} (target 0 failed: {verdict(not failures)}; new version default: "
              f"{'yes' if 2 in versions else 'NO'})")
        for line in failures[:5]:
            print(f"   failure: {line}")
        print(f"host: CPU stolen by the hypervisor during the run {describe(steal_share(started, cpu_times()))}, "
              f"load average {os.getloadavg()[0]:.1f} at the end")
        lost = any(x["failed"] for x in [*independent.values(), *sequential.values()])
        return 0 if not failures and not failed and not lost else 1
    finally:
        for proc in (plain, batched, single):
            stop(proc)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--load"]:
        _, _, target, n, secs, hexed = sys.argv
        print(json.dumps(asyncio.run(_load(target, int(n), float(secs), bytes.fromhex(hexed)))))
        sys.exit(0)
    if sys.argv[1:2] == ["--servicer"]:
        import uvloop

        _, _, where, mode, secs, n = sys.argv
        print(json.dumps(uvloop.run(_servicer(where, mode == "on", float(secs), int(n)))))
        sys.exit(0)
    sys.exit(main())
