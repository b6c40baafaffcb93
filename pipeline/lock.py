"""The workdir lock: one run writes to a workdir at a time.

    with WorkdirLock(workdir, owner="run 20261123T212400Z-3f9a1c"):        # refuses at once if held
        ...
    with WorkdirLock(workdir, owner=..., wait=True):                        # blocks until free

`fcntl.flock` on `<workdir>/.lock`: the kernel drops it when the holder's process ends, however it ends,
so a crashed run never leaves the workdir locked. The holder writes its pid and what it is doing into the
file, so the refusal can say who holds it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


class LockHeldError(PipelineError):
    """Another process holds the workdir lock."""


def read_holder(workdir: str | os.PathLike) -> dict[str, Any]:
    """What the current (or last) holder wrote: {"pid": ..., "owner": ..., "since": ...}; {} if unreadable."""
    try:
        return json.loads(paths.lock_path(workdir).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def holder_alive(workdir: str | os.PathLike) -> bool:
    """Whether the process the lock file names is still alive (False when none is named: released, or never
    taken). A run killed with SIGKILL leaves its pid in the file but no process, and its run 'running'."""
    pid = read_holder(workdir).get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        return True
    return True


def close_interrupted_runs(workdir: str | os.PathLike, store) -> list[str]:
    """Mark the runs a dead process left 'running' as interrupted (`store.mark_interrupted`), once nobody holds
    the lock; taken without waiting, and only when the named holder is gone, so a live run is never touched."""
    if holder_alive(workdir):
        return []
    import sqlite3

    try:
        with WorkdirLock(workdir, owner="mnist-pipeline: closing interrupted runs"):
            return store.mark_interrupted()
    except (PipelineError, sqlite3.Error) as exc:  # taken meanwhile (a run starting) or read-only: leave them
        log.debug("runs left 'running' in %s not closed: %s", workdir, exc)
        return []


class WorkdirLock:
    def __init__(self, workdir: str | os.PathLike, *, owner: str, wait: bool = False, timeout: float | None = None):
        self.workdir = Path(workdir)
        self.path = paths.lock_path(workdir)
        self.owner = owner
        self.wait = wait
        self.timeout = timeout
        self._fd: int | None = None

    def acquire(self) -> WorkdirLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PipelineError(f"workdir {str(self.workdir)!r} cannot be written ({exc.strerror}: "
                                f"{exc.filename}); pass a writable folder to --workdir") from exc
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
                    holder = read_holder(self.workdir)
                    who = f"pid {holder.get('pid', '?')} ({holder.get('owner', 'unknown')}, since {holder.get('since', '?')})"
                    if not self.wait or (deadline is not None and time.monotonic() >= deadline):
                        raise LockHeldError(
                            f"workdir {str(self.workdir)!r} is in use by {who}; wait for it to finish, pass --wait "
                            f"to queue behind it, or use another --workdir"
                        ) from None
                    if not getattr(self, "_announced", False):
                        log.info("waiting for workdir %s, held by %s", self.workdir, who)
                        self._announced = True
                    time.sleep(0.5)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._write()
        log.debug("locked workdir %s (%s)", self.workdir, self.path)
        return self

    def describe(self, owner: str) -> None:
        """Say what the holder is doing now (e.g. once the run id is known), for whoever is refused."""
        if self._fd is None:
            return
        self.owner = owner
        self._write()

    def _write(self) -> None:
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        os.pwrite(self._fd, json.dumps({"pid": os.getpid(), "owner": self.owner, "since": stamp}).encode(), 0)
        os.fsync(self._fd)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
