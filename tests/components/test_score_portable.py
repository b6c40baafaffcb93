"""The scoring job on Beam's PortableRunner with an external SDK worker pool in its own processes (the
README's recipe), its output equal to the in-process run's; and bounded failure when no worker can start."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.components.test_score import _good_records, _write_records
from tests.conftest import REPO_ROOT

VENV_BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(out: Path) -> dict:
    return {r["key"]: r for f in out.glob("predictions-*.jsonl") for r in map(json.loads, f.read_text().splitlines())}


def _score_cli(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "components.score", *argv], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=REPO_ROOT)


@pytest.fixture
def worker_pool(tmp_path):
    """`python -m apache_beam.runners.worker.worker_pool_main` on a loopback port; workers start `python` from
    PATH, so the venv's bin goes first, and PYTHONPATH names the checkout."""
    port = _free_port()
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = open(tmp_path / "worker_pool.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                             f"--service_port={port}"], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    yield f"localhost:{port}"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_portable_runner_with_external_worker_pool_equals_in_process(worker_pool, saved_model_dir, tmp_path):
    """About 80 s on 2 shared cores (the SDK worker imports TensorFlow)."""
    good, _ = _good_records(40, seed=41)
    pattern = _write_records(tmp_path / "in.tfrecord", good + [b"\xff\xfe\x80garbage\xc3"])
    common = ["--model", str(saved_model_dir), "--input", pattern, "--max-batch-size", "16"]
    local = _score_cli([*common, "--output", str(tmp_path / "local")], timeout=300)
    assert local.returncode == 0, local.stderr[-3000:]
    portable = _score_cli([*common, "--output", str(tmp_path / "portable"), "--runner=PortableRunner",
                           "--job_endpoint=embed", "--environment_type=EXTERNAL",
                           f"--environment_config={worker_pool}", "--job-timeout", "400"], timeout=500)
    assert portable.returncode == 0, portable.stderr[-3000:]
    assert "Starting worker" in (tmp_path / "worker_pool.log").read_text()  # the pool's processes did the work
    a, b = _rows(tmp_path / "local"), _rows(tmp_path / "portable")
    assert len(a) == 40 and a.keys() == b.keys()
    for key in a:  # batch boundaries may differ: probabilities agree to float tolerance, classes exactly
        assert (a[key]["predicted_class"], a[key]["label"]) == (b[key]["predicted_class"], b[key]["label"])
        np.testing.assert_allclose(a[key]["probabilities"], b[key]["probabilities"], atol=1e-5)
    sa, sb = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("local", "portable"))
    for field in ("read", "predictions", "failed", "failed_by_reason", "confusion_matrix", "inputs", "accounted"):
        assert sa[field] == sb[field], field


@pytest.mark.timeout(120)
def test_no_worker_pool_fails_before_the_job(saved_model_dir, tmp_path):
    pattern = _write_records(tmp_path / "in.tfrecord", _good_records(2)[0])
    port = _free_port()
    started = time.monotonic()
    proc = _score_cli(["--model", str(saved_model_dir), "--input", pattern, "--output", str(tmp_path / "out"),
                       "--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
                       f"--environment_config=localhost:{port}"], timeout=100)
    assert proc.returncode == 1 and f"localhost:{port}" in proc.stderr and "worker pool" in proc.stderr
    assert "Traceback" not in proc.stderr and time.monotonic() - started < 90


@pytest.mark.timeout(180)
def test_a_pool_that_starts_no_worker_fails_at_the_job_timeout(saved_model_dir, tmp_path):
    """Something listens at the address but never starts a worker: Beam alone would wait forever."""
    pattern = _write_records(tmp_path / "in.tfrecord", _good_records(2)[0])
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        proc = _score_cli(["--model", str(saved_model_dir), "--input", pattern, "--output", str(tmp_path / "out"),
                           "--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
                           f"--environment_config=localhost:{port}", "--job-timeout", "15"], timeout=150)
    assert proc.returncode == 1 and "--job-timeout=15" in proc.stderr, proc.stderr[-2000:]
    out = tmp_path / "out"
    assert not out.exists() or not any(p for p in out.iterdir() if not p.name.startswith("beam-temp")), \
        list(out.iterdir())

