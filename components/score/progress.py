"""Live progress of a scoring job: on a terminal a bar (rows read of the total, predicted, failed, rows/s,
ETA), in a pipe or a log a line every few seconds; summary.json keeps the final counts.

    with Progress(total=10_000, poll=tally.snapshot):      # poll() -> (read, predicted, failed)
        run the job

Sources: the Beam job's DoFns count rows into Beam metrics (examples_read, examples_failed, predictions)
and, beside them, into this process's `TALLY`, which the bar reads while the job runs (Beam's in-process
FnApiRunner reports its metrics only when the job ends; out-of-process workers are not seen, and the bar
then says nothing until the end). The Spark job counts rows in accumulators, which reach the driver as each
task ends (`spark_poll`). Quiet runs (-q: logging above INFO) show nothing.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

log = logging.getLogger(__name__)

LOG_INTERVAL_S = 5.0  # a line this often in a pipe or log
BAR_INTERVAL_S = 0.5


class Tally:
    """Thread-safe row counts of the jobs running in this process."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts = [0, 0, 0]

    def add(self, read: int = 0, predicted: int = 0, failed: int = 0) -> None:
        with self._lock:
            self._counts[0] += read
            self._counts[1] += predicted
            self._counts[2] += failed

    def reset(self) -> None:
        with self._lock:
            self._counts = [0, 0, 0]

    def snapshot(self) -> tuple[int, int, int]:
        with self._lock:
            return tuple(self._counts)


TALLY = Tally()


def _eta(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


def line(read: int, predicted: int, failed: int, total: int | None, elapsed: float) -> str:
    """One progress line: rows read (of the total), predicted, failed, rows/s, ETA where the total is known."""
    rate = read / elapsed if elapsed > 0 else 0.0
    of = f"/{total:,} ({100 * read / total:.0f}%)" if total else ""
    eta = f", ETA {_eta((total - read) / rate)}" if total and rate > 0 and read < total else ""
    return f"score: {read:,}{of} rows read, {predicted:,} predicted, {failed:,} failed, {rate:,.0f} rows/s{eta}"


class Progress:
    """Polls `poll()` -> (read, predicted, failed) on a thread while the `with` block runs."""

    def __init__(self, total: int | None, poll, *, stream=None, interval: float | None = None):
        self.total = total or None
        self._poll = poll
        self._stream = stream or sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._interval = interval or (BAR_INTERVAL_S if self._tty else LOG_INTERVAL_S)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar = None
        self._start = time.perf_counter()
        self.enabled = logging.getLogger("components").isEnabledFor(logging.INFO)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        self._start = time.perf_counter()
        if self._tty:
            import shutil

            from tqdm import tqdm

            width = shutil.get_terminal_size((100, 20)).columns or 100  # a pty without a size reports 0
            self._bar = tqdm(total=self.total, unit="rows", desc="score", file=self._stream, ncols=width)
        self._thread = threading.Thread(target=self._run, name="score-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._show()

    def _show(self) -> None:
        try:
            read, predicted, failed = self._poll()
        except Exception as exc:  # a poll that fails (a stopped Spark context) must not stop the job
            log.debug("progress poll failed: %s", exc)
            return
        if self._bar is not None:
            self._bar.n = min(read, self.total) if self.total else read
            self._bar.set_postfix_str(f"predicted {predicted:,}, failed {failed:,}", refresh=False)
            self._bar.refresh()
        else:
            log.info("%s", line(read, predicted, failed, self.total, time.perf_counter() - self._start))

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(5)
        self._thread = None
        self._show()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
