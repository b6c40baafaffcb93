"""Where things live under the workdir: the places the runner and the commands join. Each component names
the files inside its own outputs (`components.train.MODEL_FILE`, `components.export.SAVED_MODEL_DIR`, ...);
`serving.model_registry` owns the layout under the model base path.

    <workdir>/                              default ./artifacts
      data/                                 TFDS data_dir: data/<dataset>/<version>/ as tfds.load reads it
        <dataset>/ingest.json               what ingest prepared: source, its fingerprint, IDX header counts
        <dataset>/statistics.json           data validation output (per split statistics)
      runs/<run id>/                        one folder per run; run ids sort by start time
        train/                              model.keras, history.json, checkpoints/, backup/, tensorboard/, plots
        export/saved_model/                 the SavedModel with its signatures and warmup file
        evaluate/                           metrics.json, blessing.json, plots
        push/                               pushed.json (where and which version, or why not)
        score/                              predictions-*, failed-*, summary.json
        serving_check/                      serving_check.json
        report/                             report.html and its PNG plots
      serving/models/                       the model base path TF Serving watches:
        <model name>/<integer version>/     one SavedModel per pushed version
      metadata.sqlite                       run store: runs, executions, artifacts, lineage
      .lock                                 held while a run writes to the workdir
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import secrets
from pathlib import Path

from pipeline.errors import ConfigError

DEFAULT_WORKDIR = "artifacts"


def data_dir(workdir: str | os.PathLike) -> Path:
    """TFDS `data_dir`: every stage loads the dataset with `tfds.load(name, data_dir=data_dir(w))`."""
    return Path(workdir) / "data"


def statistics_path(workdir: str | os.PathLike, dataset: str) -> Path:
    return data_dir(workdir) / dataset / "statistics.json"


def runs_dir(workdir: str | os.PathLike) -> Path:
    return Path(workdir) / "runs"


def new_run_id(now: _dt.datetime | None = None) -> str:
    """A run id that sorts by start time and does not collide: 20261123T212400Z-3f9a1c."""
    now = now or _dt.datetime.now(_dt.UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_run_id(run_id: str) -> str:
    """`run_id` if it is safe as one folder name under runs/ (letters, digits, '.', '_', '-'); else a ConfigError."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        shown = repr(run_id)[:80]
        raise ConfigError(f"run id {shown} is not a valid run id: use letters, digits, '.', '_' and '-' "
                          "(at most 128, not starting with '.' and without '..'), e.g. 20261123T212400Z-3f9a1c")
    return run_id


def run_dir(workdir: str | os.PathLike, run_id: str) -> Path:
    return runs_dir(workdir) / check_run_id(run_id)


def stage_dir(workdir: str | os.PathLike, run_id: str, stage: str) -> Path:
    return run_dir(workdir, run_id) / stage


def model_base_path(workdir: str | os.PathLike) -> Path:
    """The folder TF Serving's --model_base_path points at is model_base_path(w) / model name."""
    return Path(workdir) / "serving" / "models"


def store_path(workdir: str | os.PathLike) -> Path:
    return Path(workdir) / "metadata.sqlite"


def lock_path(workdir: str | os.PathLike) -> Path:
    return Path(workdir) / ".lock"
