"""Lineage, read from the run store: which data, configuration, run and code produced a pushed model version.

    record = lineage_record(store, 3, "mnist", base_path)   # None if the store never saw version 3 pushed

`mnist-pipeline lineage` prints it; the report embeds it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.store import RunStore
from serving import model_registry


def lineage_record(store: RunStore, version: int | str, model_name: str,
                   base_path: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """Which data, configuration, run and code produced pushed version `version`, and its metrics; None if unknown.

    With `base_path`, the version pushed there is preferred (a store may have seen several base paths).

    Follows the events from the PushedModel back: push <- export (SavedModel) and evaluate (metrics, blessing)
    <- train (model) <- validate (statistics) and ingest (dataset) <- the source data. A rollback's copy leads
    through the rollback to the version it copies, and from there on the same way.
    """
    found = store.find_pushed(version, model_name)
    if not found:
        return None
    here = os.path.abspath(model_registry.version_dir(base_path, model_name, int(version))) if base_path else None
    pushed = next((a for a in found if a.uri == here), found[0])
    chain = store.lineage(pushed.id)
    # Nearest first, so a rollback's copy keeps the run that pushed the version it copies (and its configuration).
    by_stage: dict[str, Any] = {}
    for ex, ins, outs in chain:
        by_stage.setdefault(ex.stage, (ex, ins, outs))
    push_ex = chain[0][0] if chain else None
    run = store.get_run(push_ex.run_id) if push_ex else None
    made_by = store.get_run(by_stage["push"][0].run_id) if "push" in by_stage else run
    record: dict[str, Any] = {
        "model": {"name": model_name, "version": int(version), "uri": pushed.uri,
                  "fingerprint": pushed.fingerprint, "exists": Path(pushed.uri).is_dir(),
                  **{k: pushed.properties[k] for k in ("copy_of_version", "rolled_back_from") if k in pushed.properties}},
        "run": None if run is None else {"id": run.id, "status": run.status, "started": run.started,
                                         "ended": run.ended, "code_version": run.code_version},
        "config": made_by.config if made_by else None,
        "executions": [
            {"stage": ex.stage, "run_id": ex.run_id, "execution": ex.id, "status": ex.status,
             "code_version": ex.code_version, "config_fingerprint": ex.config_fingerprint,
             "started": ex.started, "duration": ex.duration,
             "inputs": {k: a.uri for k, a in ins.items()}, "outputs": {k: a.uri for k, a in outs.items()}}
            for ex, ins, outs in sorted(chain, key=lambda item: item[0].id)  # in the order they ran
        ],
    }
    if "ingest" in by_stage:
        ex, ins, outs = by_stage["ingest"]
        ds = outs.get("dataset")
        record["data"] = {
            "dataset": ds.properties.get("name") if ds else None,
            "version": ds.properties.get("version") if ds else None,
            "uri": ds.uri if ds else None,
            "fingerprint": ds.fingerprint if ds else None,
            "num_examples": ds.properties.get("num_examples") if ds else None,
            "source": (ins["source"].uri if "source" in ins else "the TFDS download"),
            "source_fingerprint": ins["source"].fingerprint if "source" in ins else None,
        }
    if "validate" in by_stage:
        stats = by_stage["validate"][2].get("statistics")
        record.setdefault("data", {})["statistics"] = stats.uri if stats else None
    if "evaluate" in by_stage:
        ex, _, outs = by_stage["evaluate"]
        record["metrics"] = ex.properties
        record["evaluation"] = {k: a.uri for k, a in outs.items()}
    if "train" in by_stage:
        ex, _, outs = by_stage["train"]
        record["training"] = {"run_id": ex.run_id, "properties": ex.properties,
                              "outputs": {k: a.uri for k, a in outs.items()}}
    return record
