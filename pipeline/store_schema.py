"""The run store's tables, their rows (`Run`, `Execution`) and versions (`PRAGMA user_version`), and the
migration of older stores.

    migrate(conn, workdir)   # RunStore does this on open: once, in one transaction

Version 0 (before versions were recorded) kept artifact paths as the stages gave them: absolute, or relative
to the working directory of the process that wrote them. Version 1 keeps paths inside the workdir relative
to it (`pipeline.uris`), so a copied or moved workdir reads its own files. Migrating a version 0 store makes
relative every path inside any workdir the store was ever used from, found two ways, both from its records:
each run's recorded configuration `workdir` (which also covers data/ and serving/models/, outside runs/), and
the `<workdir>/runs/<run id>/` prefix of the paths of its own runs (a workdir spelled otherwise than in the
configuration: through a symlink, or resumed from another directory). The folder the store is opened in is
not enough on its own: a workdir copied before it was migrated names the original's paths.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.uris import is_remote, relative_to_any, token

log = logging.getLogger(__name__)

VERSION = 1

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
    uri TEXT NOT NULL,               -- relative to the workdir when inside it (version 1)
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


def migrate(conn: sqlite3.Connection, workdir: Path) -> None:
    """Bring the store to VERSION: nothing to do for a current one; else one transaction, version included."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found == VERSION:
        return
    if found > VERSION:
        raise PipelineError(f"the run store in {os.fspath(workdir)!r} has schema version {found}, newer than this "
                            f"mnist-pipeline knows ({VERSION}); upgrade mnist-pipeline to use this workdir")
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated meanwhile
        if found < 1:
            _workdir_relative_paths(conn, workdir)
        conn.execute(f"PRAGMA user_version={VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def recorded_workdirs(conn: sqlite3.Connection, workdir: Path) -> set[str]:
    """Every spelling of this workdir its records hold (see the module docstring), normalized."""
    roots = {os.path.abspath(workdir), os.path.realpath(workdir)}
    run_ids = []
    for row in conn.execute("SELECT id, config FROM runs"):
        run_ids.append(row[0])
        try:
            recorded = json.loads(row[1]).get("workdir")
        except (ValueError, AttributeError):
            recorded = None
        if isinstance(recorded, str) and recorded:
            roots.add(os.path.normpath(recorded))
    if run_ids:
        under_runs = re.compile(r"^(.*?)/runs/(?:" + "|".join(re.escape(r) for r in run_ids) + r")(?:/|$)")
        for (uri,) in conn.execute("SELECT uri FROM artifacts"):
            match = under_runs.match(uri)
            if match and match.group(1):
                roots.add(os.path.normpath(match.group(1)))
    return roots


def _workdir_relative_paths(conn: sqlite3.Connection, workdir: Path) -> None:
    roots = recorded_workdirs(conn, workdir)
    prop_roots = roots - {"."}  # in a property, a relative string is a path only under a named folder

    def uri(old: str) -> str:
        if not old or is_remote(old):
            return old
        rel = relative_to_any(old, roots)
        # Outside the workdir: absolute. A relative one was relative to a working directory nobody recorded;
        # this process's is the best guess (only score input patterns were ever written so).
        return rel if rel is not None else os.path.abspath(old)

    def value(old):
        if isinstance(old, str):
            rel = relative_to_any(old, prop_roots) if old and not is_remote(old) and ("/" in old or old in roots) else None
            return old if rel is None else token(rel)
        if isinstance(old, dict):
            return {k: value(v) for k, v in old.items()}
        if isinstance(old, list):
            return [value(v) for v in old]
        return old

    def artifacts_json(text: str) -> str:
        arts = json.loads(text)
        for art in arts.values():
            art["uri"] = uri(art.get("uri") or "")
            if "properties" in art:
                art["properties"] = value(art["properties"])
        return json.dumps(arts, sort_keys=True)

    def props_json(text: str) -> str:
        return json.dumps(value(json.loads(text)), sort_keys=True, default=str)

    changed = 0
    for row in conn.execute("SELECT id, uri, properties FROM artifacts").fetchall():
        new = (uri(row[1]), props_json(row[2]))
        if new != (row[1], row[2]):
            conn.execute("UPDATE artifacts SET uri=?, properties=? WHERE id=?", (*new, row[0]))
            changed += 1
    for row in conn.execute("SELECT id, inputs, outputs, properties FROM executions").fetchall():
        conn.execute("UPDATE executions SET inputs=?, outputs=?, properties=? WHERE id=?",
                     (artifacts_json(row[1]), artifacts_json(row[2]), props_json(row[3]), row[0]))
    for row in conn.execute("SELECT id, config FROM runs").fetchall():
        conn.execute("UPDATE runs SET config=? WHERE id=?", (props_json(row[1]), row[0]))
    log.info("run store %s: paths inside the workdir (recorded as %s) made relative to it; %d artifacts changed",
             os.fspath(workdir), ", ".join(sorted(roots)), changed)
