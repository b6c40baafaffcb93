"""A standalone Spark cluster on this machine, from pyspark's own jars (the wheel has no start-master.sh):
a master and workers on 127.0.0.1, to try `score --engine spark --spark-master` on one machine, and for the
tests and bench/score.py. Needs Java 17.

    cluster = LocalCluster(Path("/tmp/spark"), workers=2)    # each worker: 1 core, 1 GiB
    ... score --engine spark --spark-master cluster.master_url ...
    cluster.stop()
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """A standalone Spark master and workers on 127.0.0.1, started from pyspark's own jars (spark-class)."""

    def __init__(self, work: Path, workers: int = 2, cores: int = 1, memory: str = "1g"):
        import pyspark

        self.spark_class = os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-class")
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.ui_port = _free_port()
        self.master_url = f"spark://127.0.0.1:{self.port}"
        self.env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_NO_DAEMONIZE": "1"}
        self.workers: list[subprocess.Popen] = []
        self.master = self._start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                  "--port", str(self.port), "--webui-port", str(self.ui_port))
        self.workers = [self._start(f"worker{i}", "org.apache.spark.deploy.worker.Worker", self.master_url,
                                    "--host", "127.0.0.1", "--cores", str(cores), "--memory", memory,
                                    "--webui-port", str(_free_port()), "--work-dir", str(work / f"worker{i}"))
                        for i in range(workers)]
        try:
            self.wait_for_workers(workers)
        except BaseException:
            self.stop()
            raise

    def _start(self, name: str, cls: str, *args: str) -> subprocess.Popen:
        with open(self.work / f"{name}.log", "wb") as log:  # the child keeps its own handle
            return subprocess.Popen([self.spark_class, cls, *args], env=self.env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def alive_workers(self) -> int:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as r:
                return int(json.load(r).get("aliveworkers", 0))
        except OSError:
            return 0

    def wait_for_workers(self, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.alive_workers() < n:
            if time.monotonic() > deadline:
                logs = {p.name: p.read_text()[-1500:] for p in self.work.glob("*.log")}
                raise RuntimeError(f"the Spark cluster did not get {n} workers in {timeout} s: {logs}")
            time.sleep(1)

    def kill_worker(self, i: int) -> None:
        """SIGKILL the worker and its executor (its process group): a machine lost mid-job."""
        os.killpg(self.workers[i].pid, signal.SIGKILL)
        self.workers[i].wait(30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        for proc in [*self.workers, self.master]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in [*self.workers, self.master]:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
