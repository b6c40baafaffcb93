"""The workdir lock: a second run refuses clearly (or waits), and a dead holder never blocks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from pipeline.lock import LockHeldError, WorkdirLock, read_holder


def test_second_holder_refuses_naming_the_first(tmp_path):
    with WorkdirLock(tmp_path, owner="run A"):
        with pytest.raises(LockHeldError) as err:
            WorkdirLock(tmp_path, owner="run B").acquire()
        assert f"pid {os.getpid()}" in str(err.value) and "run A" in str(err.value) and "--wait" in str(err.value)
    with WorkdirLock(tmp_path, owner="run B"):  # free again once released
        assert read_holder(tmp_path)["owner"] == "run B"


def test_holder_can_say_which_run_it_is(tmp_path):
    with WorkdirLock(tmp_path, owner="mnist-pipeline run") as lock:
        lock.describe("mnist-pipeline run 20261123T212400Z-3f9a1c")
        with pytest.raises(LockHeldError, match="20261123T212400Z-3f9a1c"):
            WorkdirLock(tmp_path, owner="other").acquire()


def test_wait_blocks_until_released(tmp_path):
    first = WorkdirLock(tmp_path, owner="run A").acquire()
    got = threading.Event()

    def second():
        with WorkdirLock(tmp_path, owner="run B", wait=True, timeout=20):
            got.set()

    t = threading.Thread(target=second)
    t.start()
    time.sleep(0.8)
    assert not got.is_set()
    first.release()
    t.join(20)
    assert got.is_set()


def test_lock_of_a_killed_process_is_free(tmp_path):
    code = textwrap.dedent(f"""
        import os, sys, time
        from pipeline.lock import WorkdirLock
        WorkdirLock({str(tmp_path)!r}, owner="doomed").acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeldError, match=f"pid {proc.pid}"):
            WorkdirLock(tmp_path, owner="me").acquire()
    finally:
        proc.kill()
        proc.wait()
    with WorkdirLock(tmp_path, owner="me"):
        pass
