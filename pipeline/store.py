"""The run store: the part of ML Metadata users rely on, in SQLite from the standard library.

    store = RunStore(paths.store_path(workdir))
    run = store.start_run(run_id, config_json, code_version)
    ex = store.start_execution(run_id, "train", fingerprint, code_version, inputs, cache_key)
    store.finish_execution(ex, "succeeded", outputs=[Artifact(uri, "Model", {...})])
    store.lineage_of_version("/.../serving/models/mnist/3")

Tables: runs, executions (one per stage per run: running, succeeded, failed, cached or skipped), artifacts
(uri, type, properties; produced by an execution) and events (execution -> artifact, input or output), so
that "which data, configuration, run and code produced this served version" is one query. The database is
in WAL mode and every write is one short transaction, so `mnist-pipeline runs` can read while a run writes.
(ml-metadata itself needs protobuf 4 and cannot be installed beside TensorFlow 2.21.)
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    started TEXT NOT NULL,
    ended TEXT,
    status TEXT NOT NULL,            -- running, succeeded, failed, interrupted
    config TEXT NOT NULL,            -- the whole configuration as JSON
    code_version TEXT NOT NULL,
    failed_stage TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS executions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(id),
    stage TEXT NOT NULL,
    status TEXT NOT NULL,            -- running, succeeded, failed, cached, skipped
    started TEXT NOT NULL,
    ended TEXT,
    duration REAL,
    config_fingerprint TEXT,
    code_version TEXT,
    inputs TEXT NOT NULL DEFAULT '{}',
    outputs TEXT NOT NULL DEFAULT '{}',
    properties TEXT NOT NULL DEFAULT '{}',
    cache_key TEXT,
    reused_execution INTEGER REFERENCES executions(id),
    error TEXT
);
CREATE INDEX IF NOT EXISTS executions_by_run ON executions(run_id, id);
CREATE INDEX IF NOT EXISTS executions_by_key ON executions(cache_key, status);
CREATE TABLE IF NOT EXISTS artifacts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uri TEXT NOT NULL,
    type TEXT NOT NULL,
    properties TEXT NOT NULL DEFAULT '{}',
    producer INTEGER REFERENCES executions(id),
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS artifacts_by_uri ON artifacts(uri);
CREATE TABLE IF NOT EXISTS events (
    execution INTEGER NOT NULL REFERENCES executions(id),
    artifact INTEGER NOT NULL REFERENCES artifacts(id),
    kind TEXT NOT NULL,              -- input or output
    name TEXT NOT NULL               -- the stage's name for it: "model", "dataset", ...
);
CREATE INDEX IF NOT EXISTS events_by_execution ON events(execution);
CREATE INDEX IF NOT EXISTS events_by_artifact ON events(artifact);
"""

FINISHED = ("succeeded", "cached")


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Artifact:
    """An artifact as stages see it: where it is, what it is, and a few properties (fingerprint, version...)."""

    uri: str
    type: str
    properties: dict[str, Any] = field(default_factory=dict)
    id: int | None = None  # set once stored

    @property
    def fingerprint(self) -> str | None:
        return self.properties.get("fingerprint")


@dataclass(frozen=True)
class Run:
    id: str
    started: str
    ended: str | None
    status: str
    config: dict[str, Any]
    code_version: str
    failed_stage: str | None
    error: str | None


@dataclass(frozen=True)
class Execution:
    id: int
    run_id: str
    stage: str
    status: str
    started: str
    ended: str | None
    duration: float | None
    config_fingerprint: str | None
    code_version: str | None
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    properties: dict[str, Any]
    cache_key: str | None
    reused_execution: int | None
    error: str | None


class RunStore:
    """A handle on `metadata.sqlite`; one connection per handle, one short transaction per write."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(os.fspath(self.path), timeout=30.0, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=30000")
        self._conn.executescript(SCHEMA)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- runs ---------------------------------------------------------------------------------------------

    def start_run(self, run_id: str, config: dict[str, Any], code_version: str) -> Run:
        with self._tx() as c:
            c.execute(
                "INSERT INTO runs (id, started, status, config, code_version) VALUES (?, ?, 'running', ?, ?)",
                (run_id, now(), json.dumps(config, sort_keys=True, default=str), code_version),
            )
        return self.get_run(run_id)  # type: ignore[return-value]

    def reopen_run(self, run_id: str) -> None:
        """A resumed run is running again; its earlier failure is kept only in the failed execution."""
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET status='running', ended=NULL, failed_stage=NULL, error=NULL WHERE id=?", (run_id,)
            )

    def finish_run(self, run_id: str, status: str, *, failed_stage: str | None = None, error: str | None = None) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET status=?, ended=?, failed_stage=?, error=? WHERE id=?",
                (status, now(), failed_stage, error, run_id),
            )

    def mark_interrupted(self) -> list[str]:
        """Runs and executions left 'running' by a process that died; call only while holding the workdir lock."""
        with self._tx() as c:
            ids = [r["id"] for r in c.execute("SELECT id FROM runs WHERE status='running'")]
            stamp = now()
            c.execute(
                "UPDATE executions SET status='failed', ended=?, error='interrupted: the process stopped before "
                "the stage finished' WHERE status='running'",
                (stamp,),
            )
            for run_id in ids:
                stage = c.execute(
                    "SELECT stage FROM executions WHERE run_id=? ORDER BY id DESC LIMIT 1", (run_id,)
                ).fetchone()
                c.execute(
                    "UPDATE runs SET status='interrupted', ended=?, failed_stage=?, "
                    "error='interrupted: the process stopped before the run finished' WHERE id=?",
                    (stamp, stage["stage"] if stage else None, run_id),
                )
        return ids

    def get_run(self, run_id: str) -> Run | None:
        row = self._conn.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return _run(row) if row else None

    def list_runs(self, limit: int | None = None) -> list[Run]:
        sql = "SELECT * FROM runs ORDER BY started DESC, id DESC"
        rows = self._conn.execute(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ()).fetchall()
        return [_run(r) for r in rows]

    def latest_unfinished_run(self) -> Run | None:
        row = self._conn.execute(
            "SELECT * FROM runs WHERE status IN ('failed', 'interrupted', 'running') ORDER BY started DESC, id DESC LIMIT 1"
        ).fetchone()
        return _run(row) if row else None

    # -- executions ---------------------------------------------------------------------------------------

    def start_execution(
        self,
        run_id: str,
        stage: str,
        *,
        config_fingerprint: str | None,
        code_version: str | None,
        inputs: dict[str, Artifact],
        cache_key: str | None,
    ) -> int:
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO executions (run_id, stage, status, started, config_fingerprint, code_version, inputs, "
                "cache_key) VALUES (?, ?, 'running', ?, ?, ?, ?, ?)",
                (run_id, stage, now(), config_fingerprint, code_version, _artifacts_json(inputs), cache_key),
            )
            execution_id = int(cur.lastrowid)
            for name, art in inputs.items():
                art_id = art.id if art.id is not None else self._insert_artifact(c, art, None)
                c.execute(
                    "INSERT INTO events (execution, artifact, kind, name) VALUES (?, ?, 'input', ?)",
                    (execution_id, art_id, name),
                )
        return execution_id

    def finish_execution(
        self,
        execution_id: int,
        status: str,
        *,
        outputs: dict[str, Artifact] | None = None,
        properties: dict[str, Any] | None = None,
        error: str | None = None,
        reused_execution: int | None = None,
    ) -> dict[str, Artifact]:
        """Record the outcome; new output artifacts get ids (reused ones keep theirs). Returns them with ids."""
        outputs = dict(outputs or {})
        stored: dict[str, Artifact] = {}
        with self._tx() as c:
            for name, art in outputs.items():
                art_id = art.id if art.id is not None else self._insert_artifact(c, art, execution_id)
                c.execute(
                    "INSERT INTO events (execution, artifact, kind, name) VALUES (?, ?, 'output', ?)",
                    (execution_id, art_id, name),
                )
                stored[name] = Artifact(art.uri, art.type, dict(art.properties), art_id)
            started = c.execute("SELECT started FROM executions WHERE id=?", (execution_id,)).fetchone()["started"]
            ended = now()
            duration = (_dt.datetime.fromisoformat(ended) - _dt.datetime.fromisoformat(started)).total_seconds()
            c.execute(
                "UPDATE executions SET status=?, ended=?, duration=?, outputs=?, properties=?, error=?, "
                "reused_execution=? WHERE id=?",
                (
                    status,
                    ended,
                    duration,
                    _artifacts_json(stored),
                    json.dumps(properties or {}, sort_keys=True, default=str),
                    error,
                    reused_execution,
                    execution_id,
                ),
            )
        return stored

    @staticmethod
    def _insert_artifact(c: sqlite3.Connection, art: Artifact, producer: int | None) -> int:
        cur = c.execute(
            "INSERT INTO artifacts (uri, type, properties, producer, created) VALUES (?, ?, ?, ?, ?)",
            (art.uri, art.type, json.dumps(art.properties, sort_keys=True, default=str), producer, now()),
        )
        return int(cur.lastrowid)

    def executions(self, run_id: str) -> list[Execution]:
        rows = self._conn.execute("SELECT * FROM executions WHERE run_id=? ORDER BY id", (run_id,)).fetchall()
        return [_execution(r) for r in rows]

    def finished_stages(self, run_id: str) -> dict[str, Execution]:
        """The last succeeded or cached execution of each stage in a run (what a resumed run keeps)."""
        done: dict[str, Execution] = {}
        for ex in self.executions(run_id):
            if ex.status in FINISHED or ex.status == "skipped":
                done[ex.stage] = ex
            elif ex.stage in done and ex.status == "failed":
                del done[ex.stage]
        return done

    def find_cached(self, cache_key: str) -> Execution | None:
        """The newest execution that ran (not itself a cache hit) and succeeded with this cache key."""
        row = self._conn.execute(
            "SELECT * FROM executions WHERE cache_key=? AND status='succeeded' ORDER BY id DESC LIMIT 1",
            (cache_key,),
        ).fetchone()
        return _execution(row) if row else None

    def latest_finished(self, stage: str) -> Execution | None:
        """The newest succeeded or cached execution of `stage` in any run."""
        row = self._conn.execute(
            "SELECT * FROM executions WHERE stage=? AND status IN ('succeeded', 'cached') ORDER BY id DESC LIMIT 1",
            (stage,),
        ).fetchone()
        return _execution(row) if row else None

    def finished(self, stage: str) -> Iterator[Execution]:
        """Every succeeded or cached execution of `stage` in any run, newest first."""
        rows = self._conn.execute(
            "SELECT * FROM executions WHERE stage=? AND status IN ('succeeded', 'cached') ORDER BY id DESC", (stage,),
        ).fetchall()
        return (_execution(row) for row in rows)

    def output_artifacts(self, execution_id: int) -> dict[str, Artifact]:
        return self._event_artifacts(execution_id, "output")

    def input_artifacts(self, execution_id: int) -> dict[str, Artifact]:
        return self._event_artifacts(execution_id, "input")

    def _event_artifacts(self, execution_id: int, kind: str) -> dict[str, Artifact]:
        rows = self._conn.execute(
            "SELECT e.name, a.* FROM events e JOIN artifacts a ON a.id = e.artifact "
            "WHERE e.execution=? AND e.kind=? ORDER BY a.id",
            (execution_id, kind),
        ).fetchall()
        return {r["name"]: Artifact(r["uri"], r["type"], json.loads(r["properties"]), r["id"]) for r in rows}

    # -- lineage ------------------------------------------------------------------------------------------

    def artifacts_by_uri(self, uri: str, type: str | None = None) -> list[Artifact]:
        sql = "SELECT * FROM artifacts WHERE uri=?" + (" AND type=?" if type else "") + " ORDER BY id"
        rows = self._conn.execute(sql, (uri, type) if type else (uri,)).fetchall()
        return [Artifact(r["uri"], r["type"], json.loads(r["properties"]), r["id"]) for r in rows]

    def producer(self, artifact_id: int) -> Execution | None:
        row = self._conn.execute(
            "SELECT x.* FROM artifacts a JOIN executions x ON x.id = a.producer WHERE a.id=?", (artifact_id,)
        ).fetchone()
        return _execution(row) if row else None

    def pushed_versions(self) -> list[Artifact]:
        """Every pushed model version on record, oldest first."""
        rows = self._conn.execute("SELECT * FROM artifacts WHERE type='PushedModel' ORDER BY id").fetchall()
        return [Artifact(r["uri"], r["type"], json.loads(r["properties"]), r["id"]) for r in rows]

    def find_pushed(self, version: int | str, model_name: str | None = None) -> list[Artifact]:
        """PushedModel artifacts of this version number (in any base path), newest first."""
        found = [
            a
            for a in self.pushed_versions()
            if str(a.properties.get("version")) == str(version)
            and (model_name is None or a.properties.get("model_name") == model_name)
        ]
        return list(reversed(found))

    def lineage(self, artifact_id: int) -> list[tuple[Execution, dict[str, Artifact], dict[str, Artifact]]]:
        """The executions upstream of an artifact, nearest first: (execution, its inputs, its outputs).

        Walks producer -> inputs -> their producers ... the graph the events record.
        """
        seen: set[int] = set()
        chain: list[tuple[Execution, dict[str, Artifact], dict[str, Artifact]]] = []
        frontier = [artifact_id]
        while frontier:
            art = frontier.pop(0)
            ex = self.producer(art)
            if ex is None or ex.id in seen:
                continue
            seen.add(ex.id)
            inputs = self.input_artifacts(ex.id)
            chain.append((ex, inputs, self.output_artifacts(ex.id)))
            frontier.extend(a.id for a in inputs.values() if a.id is not None)
        return chain


def _artifacts_json(artifacts: dict[str, Artifact]) -> str:
    return json.dumps(
        {name: {"uri": a.uri, "type": a.type, "id": a.id, **({"properties": a.properties} if a.properties else {})}
         for name, a in artifacts.items()},
        sort_keys=True,
        default=str,
    )


def _run(row: sqlite3.Row) -> Run:
    return Run(
        id=row["id"],
        started=row["started"],
        ended=row["ended"],
        status=row["status"],
        config=json.loads(row["config"]),
        code_version=row["code_version"],
        failed_stage=row["failed_stage"],
        error=row["error"],
    )


def _execution(row: sqlite3.Row) -> Execution:
    return Execution(
        id=row["id"],
        run_id=row["run_id"],
        stage=row["stage"],
        status=row["status"],
        started=row["started"],
        ended=row["ended"],
        duration=row["duration"],
        config_fingerprint=row["config_fingerprint"],
        code_version=row["code_version"],
        inputs=json.loads(row["inputs"]),
        outputs=json.loads(row["outputs"]),
        properties=json.loads(row["properties"]),
        cache_key=row["cache_key"],
        reused_execution=row["reused_execution"],
        error=row["error"],
    )
