"""Server-side batching as TF Serving's `--enable_batching` does it: concurrent requests for the same version and
signature are merged into one model call, and each caller gets its own rows back.

    params = read_batching_parameters("serving/deploy/batching_parameters.txt")
    scheduler = BatchScheduler(params); scheduler.start()
    servable.batcher = scheduler      # Servable.predict/classify now queue their (checked) inputs here

One queue per (model, version, signature, input dtypes and shapes past the batch dimension), so requests that
cannot be concatenated are never merged and answers are never mixed. A batch closes when it holds
`max_batch_size` rows or its first request has waited `batch_timeout_micros`; `num_batch_threads` threads run
closed batches. As in TF Serving's BasicBatchScheduler: a request that would need a new batch when a queue
already holds `max_enqueued_batches` answers UNAVAILABLE ("The batch scheduling queue to which this task was
submitted is full"); a batch is padded (with copies of its first row) up to the next of `allowed_batch_sizes`;
a request larger than `max_batch_size` is split into parts that are queued separately and joined again
(TF Serving's `enable_large_batch_splitting`). Without a parameters file, TF Serving's defaults apply.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from serving.errors import RequestError, ServingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's BatchingParameters (session_bundle_config.proto); the defaults are its defaults."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 100
    num_batch_threads: int = os.cpu_count() or 1
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self):
        if self.max_batch_size < 1 or self.max_enqueued_batches < 1 or self.num_batch_threads < 1:
            raise ServingError(f"batching parameters: max_batch_size, max_enqueued_batches and num_batch_threads "
                               f"must be positive, got {self}")
        if self.batch_timeout_micros < 0:
            raise ServingError(f"batching parameters: batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")
        sizes = list(self.allowed_batch_sizes)
        if sizes and (sizes != sorted(set(sizes)) or sizes[-1] != self.max_batch_size or sizes[0] < 1):
            # TF Serving refuses these too (batching_session.cc): increasing, and the last is max_batch_size.
            raise ServingError(f"batching parameters: allowed_batch_sizes {sizes} must increase and end with "
                               f"max_batch_size ({self.max_batch_size})")
        if self.pad_variable_length_inputs:
            raise ServingError("batching parameters: pad_variable_length_inputs is not supported by the local server; "
                               "set it to false")

    def padded_size(self, n: int) -> int:
        for size in self.allowed_batch_sizes:
            if size >= n:
                return size
        return n


def read_batching_parameters(path: str | os.PathLike | None) -> BatchingParameters:
    """Parse a BatchingParameters text proto (unknown fields and wrong types are errors, as in the model server)."""
    if path is None:
        return BatchingParameters()
    from serving.tfs_protos import message_classes, read_text_proto

    proto = read_text_proto(path, message_classes()["BatchingParameters"](), what="batching parameters file",
                            flag="--batching_parameters_file")
    defaults = BatchingParameters()

    def value(field: str) -> int:
        return getattr(proto, field).value if proto.HasField(field) else getattr(defaults, field)

    return BatchingParameters(
        max_batch_size=value("max_batch_size"),
        batch_timeout_micros=value("batch_timeout_micros"),
        max_enqueued_batches=value("max_enqueued_batches"),
        num_batch_threads=value("num_batch_threads"),
        allowed_batch_sizes=tuple(proto.allowed_batch_sizes),
        pad_variable_length_inputs=proto.pad_variable_length_inputs,
    )


@dataclass
class _Task:
    arrays: Mapping[str, np.ndarray]
    size: int
    future: Future
    enqueued: float


class _Queue:
    """The tasks waiting for one (servable, signature, shapes); `call` runs a merged batch."""

    def __init__(self, key, call: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]):
        self.key = key
        self.call = call
        self.tasks: deque[_Task] = deque()
        self.rows = 0


class BatchScheduler:
    """The batching queues of one server, shared by every servable and both protocols."""

    def __init__(self, params: BatchingParameters, *, on_batch: Callable[[str, int, int, float], None] | None = None):
        self.params = params
        self._cond = threading.Condition()
        self._queues: dict[Any, _Queue] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._on_batch = on_batch  # (model name, rows, padded rows, seconds the oldest request waited), for metrics

    def start(self) -> None:
        for i in range(self.params.num_batch_threads):
            thread = threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)

    # -- submitting -----------------------------------------------------------------------------------------

    def run(self, servable, signature_name: str, signature, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Queue checked inputs and block until their own rows of the batch's outputs are back."""
        future = self.submit(servable, signature_name, signature, arrays)
        return signature.call(arrays) if future is None else future.result()

    def submit(self, servable, signature_name: str, signature, arrays: Mapping[str, np.ndarray]) -> Future | None:
        """Queue checked inputs; the future gets their own rows of the batch's outputs. None when the inputs have
        no common batch dimension (or no rows): such a request is served alone, by the caller, as TF Serving would."""
        sizes = {a.shape[0] if a.ndim else None for a in arrays.values()}
        if len(sizes) != 1 or None in sizes or not all(s.shape.rank and s.shape[0] is None for s in signature.inputs.values()):
            return None
        (n,) = sizes
        if n == 0:
            return None
        key = (id(servable), servable.name, servable.version, signature_name,
               tuple((k, a.dtype.str, a.shape[1:]) for k, a in sorted(arrays.items())))
        limit = self.params.max_batch_size
        if n <= limit:
            return self._submit(key, signature.call, arrays, n)
        parts = [self._submit(key, signature.call, {k: a[i:i + limit] for k, a in arrays.items()}, min(limit, n - i))
                 for i in range(0, n, limit)]
        return _joined(parts)

    def _submit(self, key, call, arrays: Mapping[str, np.ndarray], size: int) -> Future:
        future: Future = Future()
        with self._cond:
            if self._stopping:
                raise RequestError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(key, call)
            limit = self.params.max_batch_size
            open_rows = queue.rows % limit
            needs_new_batch = queue.rows == 0 or open_rows == 0 or open_rows + size > limit
            batches = -(-queue.rows // limit)
            if needs_new_batch and batches >= self.params.max_enqueued_batches:
                raise RequestError(grpc.StatusCode.UNAVAILABLE,
                                   "The batch scheduling queue to which this task was submitted is full")
            queue.tasks.append(_Task(arrays, size, future, time.monotonic()))
            queue.rows += size
            # Wake a batch thread only when it has something new to act on: a first task (a new deadline) or a
            # full batch; waking one per request costs more than the model call it would save.
            if len(queue.tasks) == 1 or queue.rows >= limit:
                self._cond.notify()
        return future

    # -- the batch threads ----------------------------------------------------------------------------------

    def _take(self) -> tuple[tuple[_Queue, list[_Task]] | None, float | None]:
        """Under the lock: the oldest ready batch (full, or its first task waited the timeout), or None and
        how long to wait for the next one to become ready."""
        timeout = self.params.batch_timeout_micros / 1e6
        now = time.monotonic()
        best, best_wait = None, None
        for queue in self._queues.values():
            if not queue.tasks:
                continue
            wait = queue.tasks[0].enqueued + timeout - now
            if queue.rows >= self.params.max_batch_size:
                wait = -1.0
            if best_wait is None or wait < best_wait:
                best, best_wait = queue, wait
        if best is None:
            return None, None
        if best_wait > 0:
            return None, best_wait
        tasks, rows = [], 0
        while best.tasks and rows + best.tasks[0].size <= self.params.max_batch_size:
            task = best.tasks.popleft()
            tasks.append(task)
            rows += task.size
        best.rows -= rows
        if best.tasks:
            self._cond.notify()  # the rest of the queue is another thread's to time and take
        else:
            del self._queues[best.key]
        return (best, tasks), None

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping and not any(q.tasks for q in self._queues.values()):
                        return
                    taken, wait = self._take()
                    if taken is not None:
                        break
                    self._cond.wait(wait)
            queue, tasks = taken
            self._process(queue, tasks)

    def _process(self, queue: _Queue, tasks: list[_Task]) -> None:
        # A caller that cancelled its future is dropped; the others' futures can no longer be cancelled.
        tasks = [t for t in tasks if t.future.set_running_or_notify_cancel()]
        if not tasks:
            return
        waited = time.monotonic() - tasks[0].enqueued
        rows = sum(t.size for t in tasks)
        padded = self.params.padded_size(rows)
        try:
            if len(tasks) == 1 and padded == rows:
                merged = tasks[0].arrays
            else:
                merged = {}
                for k in tasks[0].arrays:
                    parts = [t.arrays[k] for t in tasks]
                    if padded > rows:  # TF Serving pads with copies of the first row
                        first = parts[0][:1]
                        parts.append(np.repeat(first, padded - rows, axis=0))
                    merged[k] = np.concatenate(parts)
            outputs = queue.call(merged)
            for k, v in outputs.items():
                if v.ndim == 0 or v.shape[0] != padded:
                    raise RequestError(grpc.StatusCode.INTERNAL,
                                       f"batched output {k!r} has shape {list(v.shape)}, not {padded} rows; "
                                       f"this signature cannot be batched")
        except BaseException as exc:  # every caller of the batch gets the error
            for task in tasks:
                task.future.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(queue.key[1], rows, padded, waited)
        start = 0
        for task in tasks:
            task.future.set_result({k: v[start:start + task.size] for k, v in outputs.items()})
            start += task.size


def _joined(parts: list[Future]) -> Future:
    """One future for the parts of a split request: their outputs concatenated in order, or the first error."""
    joined: Future = Future()
    joined.set_running_or_notify_cancel()  # its parts are queued already: it cannot be taken back
    remaining = [len(parts)]
    lock = threading.Lock()

    def done(_part: Future) -> None:
        with lock:
            remaining[0] -= 1
            if remaining[0]:
                return
        errors = [p.exception() for p in parts if p.exception() is not None]
        if errors:
            joined.set_exception(errors[0])
        else:
            results = [p.result() for p in parts]
            joined.set_result({k: np.concatenate([r[k] for r in results]) for k in results[0]})

    for part in parts:
        part.add_done_callback(done)
    return joined
