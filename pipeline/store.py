"""The run store: the part of ML Metadata users rely on, in SQLite from the standard library.

    store = RunStore(paths.store_path(workdir))
    run = store.start_run(run_id, config.to_dict(), code_version)
    ex = store.start_execution(run_id, "train", config_fingerprint=fp, code_version=code_version,
                               inputs={"dataset": dataset}, cache_key=key)
    store.finish_execution(ex, "succeeded", outputs={"model": Artifact(uri, "Model", {...})})
    pushed = store.find_pushed(3, "mnist")[0]          # or store.artifacts_by_uri(".../serving/models/mnist/3")
    chain = store.lineage(pushed.id)                    # the executions upstream of it, nearest first

Tables: runs, executions (one per stage per run: running, succeeded, failed, cached or skipped), artifacts
(uri, type, properties; produced by an execution) and events (execution -> artifact, input or output), so
that "which data, configuration, run and code produced this served version" is one query. The database is
in WAL mode and every write is one short transaction, so `mnist-pipeline runs` can read while a run writes.
The store lives at <workdir>/metadata.sqlite and knows its workdir from that: paths inside it are stored
relative to it and read back as paths in the workdir in use (`pipeline.uris`), so a copy reads its own files;
an older store is migrated on open (`pipeline.store_schema`).
(ml-metadata itself needs protobuf 4 and cannot be installed beside TensorFlow 2.21.)
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import store_schema
from pipeline.store_schema import Execution, Run
from pipeline.uris import WorkdirURIs

__all__ = ["FINISHED", "Artifact", "Execution", "Run", "RunStore", "now"]

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
        self._conn.executescript(store_schema.SCHEMA)
        self.uris = WorkdirURIs(self.path.parent)  # the store lives at <workdir>/metadata.sqlite
        try:
            store_schema.migrate(self._conn, self.uris.workdir)
        except BaseException:
            self._conn.close()
            raise

    @property
    def workdir(self) -> Path:
        return self.uris.workdir

    def stored_uri(self, uri: str | os.PathLike) -> str:
        """`uri` as this store keeps it: relative to the workdir when inside it (what cache keys use)."""
        return self.uris.stored(uri)

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
                (run_id, now(), json.dumps(self.uris.stored_value(config), sort_keys=True, default=str), code_version),
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
        return self._run(row) if row else None

    def list_runs(self, limit: int | None = None) -> list[Run]:
        sql = "SELECT * FROM runs ORDER BY started DESC, id DESC"
        rows = self._conn.execute(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ()).fetchall()
        return [self._run(r) for r in rows]

    def latest_unfinished_run(self) -> Run | None:
        row = self._conn.execute(
            "SELECT * FROM runs WHERE status IN ('failed', 'interrupted', 'running') ORDER BY started DESC, id DESC LIMIT 1"
        ).fetchone()
        return self._run(row) if row else None

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
        properties: dict[str, Any] | None = None,
    ) -> int:
        """A running execution; `properties` known from the start (who runs it) are kept when it finishes."""
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO executions (run_id, stage, status, started, config_fingerprint, code_version, inputs, "
                "cache_key, properties) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?)",
                (run_id, stage, now(), config_fingerprint, code_version, self._artifacts_json(inputs), cache_key,
                 self._properties_json(properties or {})),
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
        """Record the outcome; new output artifacts get ids (reused ones keep theirs). Returns them with ids.
        `properties` are added to those the execution started with."""
        outputs = dict(outputs or {})
        stored: dict[str, Artifact] = {}
        with self._tx() as c:
            for name, art in outputs.items():
                art_id = art.id if art.id is not None else self._insert_artifact(c, art, execution_id)
                c.execute(
                    "INSERT INTO events (execution, artifact, kind, name) VALUES (?, ?, 'output', ?)",
                    (execution_id, art_id, name),
                )
                uri = self.uris.resolved(self.uris.stored(art.uri))
                stored[name] = Artifact(uri, art.type, dict(art.properties), art_id)
            row = c.execute("SELECT started, properties FROM executions WHERE id=?", (execution_id,)).fetchone()
            ended = now()
            duration = (_dt.datetime.fromisoformat(ended) - _dt.datetime.fromisoformat(row["started"])).total_seconds()
            c.execute(
                "UPDATE executions SET status=?, ended=?, duration=?, outputs=?, properties=?, error=?, "
                "reused_execution=? WHERE id=?",
                (
                    status,
                    ended,
                    duration,
                    self._artifacts_json(stored),
                    self._properties_json({**json.loads(row["properties"] or "{}"), **(properties or {})}),
                    error,
                    reused_execution,
                    execution_id,
                ),
            )
        return stored

    def _properties_json(self, properties: dict[str, Any]) -> str:
        return json.dumps(self.uris.stored_value(properties), sort_keys=True, default=str)

    def _insert_artifact(self, c: sqlite3.Connection, art: Artifact, producer: int | None) -> int:
        props = self._properties_json(art.properties)
        cur = c.execute(
            "INSERT INTO artifacts (uri, type, properties, producer, created) VALUES (?, ?, ?, ?, ?)",
            (self.uris.stored(art.uri), art.type, props, producer, now()),
        )
        return int(cur.lastrowid)

    def get_execution(self, execution_id: int) -> Execution | None:
        row = self._conn.execute("SELECT * FROM executions WHERE id=?", (execution_id,)).fetchone()
        return self._execution(row) if row else None

    def executions(self, run_id: str) -> list[Execution]:
        rows = self._conn.execute("SELECT * FROM executions WHERE run_id=? ORDER BY id", (run_id,)).fetchall()
        return [self._execution(r) for r in rows]

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
        return self._execution(row) if row else None

    def finished(self, stage: str) -> Iterator[Execution]:
        """Every succeeded or cached execution of `stage` in any run, newest first."""
        rows = self._conn.execute(
            "SELECT * FROM executions WHERE stage=? AND status IN ('succeeded', 'cached') ORDER BY id DESC", (stage,),
        ).fetchall()
        return (self._execution(row) for row in rows)

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
        return {r["name"]: self._artifact(r) for r in rows}

    # -- lineage ------------------------------------------------------------------------------------------

    def artifacts_by_uri(self, uri: str | os.PathLike, type: str | None = None) -> list[Artifact]:
        """Artifacts at `uri`: a path (absolute, or relative to the working directory) or the stored form
        (relative to the workdir), either one."""
        forms = {self.uris.stored(uri)}
        if not os.path.isabs(os.fspath(uri)):
            forms.add(os.fspath(uri))
        marks = ", ".join("?" for _ in forms)
        sql = f"SELECT * FROM artifacts WHERE uri IN ({marks})" + (" AND type=?" if type else "") + " ORDER BY id"
        rows = self._conn.execute(sql, (*forms, type) if type else tuple(forms)).fetchall()
        return [self._artifact(r) for r in rows]

    def producer(self, artifact_id: int) -> Execution | None:
        row = self._conn.execute(
            "SELECT x.* FROM artifacts a JOIN executions x ON x.id = a.producer WHERE a.id=?", (artifact_id,)
        ).fetchone()
        return self._execution(row) if row else None

    def pushed_versions(self) -> list[Artifact]:
        """Every pushed model version on record, oldest first."""
        rows = self._conn.execute("SELECT * FROM artifacts WHERE type='PushedModel' ORDER BY id").fetchall()
        return [self._artifact(r) for r in rows]

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


    # -- rows <-> objects: paths stored relative to the workdir, read back in the workdir in use ---------------

    def _artifacts_json(self, artifacts: dict[str, Artifact]) -> str:
        return json.dumps(
            {name: {"uri": self.uris.stored(a.uri), "type": a.type, "id": a.id,
                    **({"properties": self.uris.stored_value(a.properties)} if a.properties else {})}
             for name, a in artifacts.items()},
            sort_keys=True,
            default=str,
        )

    def _resolved_artifacts_json(self, text: str) -> dict[str, Any]:
        found = json.loads(text)
        for art in found.values():
            art["uri"] = self.uris.resolved(art.get("uri") or "")
            if "properties" in art:
                art["properties"] = self.uris.resolved_value(art["properties"])
        return found

    def _artifact(self, row: sqlite3.Row) -> Artifact:
        props = self.uris.resolved_value(json.loads(row["properties"]))
        return Artifact(self.uris.resolved(row["uri"]), row["type"], props, row["id"])

    def _run(self, row: sqlite3.Row) -> Run:
        return _from_row(Run, row, config=self.uris.resolved_value(json.loads(row["config"])))

    def _execution(self, row: sqlite3.Row) -> Execution:
        return _from_row(
            Execution, row,
            inputs=self._resolved_artifacts_json(row["inputs"]),
            outputs=self._resolved_artifacts_json(row["outputs"]),
            properties=self.uris.resolved_value(json.loads(row["properties"])),
        )


def _from_row(cls, row: sqlite3.Row, **decoded: Any):
    """A row type built from the columns of the same names; `decoded` gives the columns stored as JSON."""
    return cls(**{f.name: decoded[f.name] if f.name in decoded else row[f.name] for f in dataclasses.fields(cls)})
