"""The one module that knows where things live under the workdir. Nobody else joins path strings.

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
import secrets
from pathlib import Path

DEFAULT_WORKDIR = "artifacts"


def data_dir(workdir: str | os.PathLike) -> Path:
    """TFDS `data_dir`: every stage loads the dataset with `tfds.load(name, data_dir=data_dir(w))`."""
    return Path(workdir) / "data"


def ingest_record_path(data_dir_: str | os.PathLike, dataset: str) -> Path:
    """`<data_dir>/<dataset>/ingest.json`. Takes the TFDS data_dir (the ingest stage's input), not the workdir."""
    return Path(data_dir_) / dataset / "ingest.json"


def statistics_path(workdir: str | os.PathLike, dataset: str) -> Path:
    return data_dir(workdir) / dataset / "statistics.json"


def runs_dir(workdir: str | os.PathLike) -> Path:
    return Path(workdir) / "runs"


def new_run_id(now: _dt.datetime | None = None) -> str:
    """A run id that sorts by start time and does not collide: 20261123T212400Z-3f9a1c."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def run_dir(workdir: str | os.PathLike, run_id: str) -> Path:
    return runs_dir(workdir) / run_id


def stage_dir(workdir: str | os.PathLike, run_id: str, stage: str) -> Path:
    return run_dir(workdir, run_id) / stage


def latest_run_id(workdir: str | os.PathLike, *, having: str | None = None) -> str | None:
    """The newest run id, or the newest whose `having` stage folder exists; None if there is none."""
    root = runs_dir(workdir)
    if not root.is_dir():
        return None
    for run in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True):
        if having is None or (run / having).is_dir():
            return run.name
    return None


def trained_model_path(workdir: str | os.PathLike, run_id: str) -> Path:
    return stage_dir(workdir, run_id, "train") / "model.keras"


def exported_model_dir(workdir: str | os.PathLike, run_id: str) -> Path:
    return stage_dir(workdir, run_id, "export") / "saved_model"


def metrics_path(workdir: str | os.PathLike, run_id: str) -> Path:
    return stage_dir(workdir, run_id, "evaluate") / "metrics.json"


def history_path(workdir: str | os.PathLike, run_id: str) -> Path:
    """Keras's History.history of the run's training (components.train.HISTORY_FILE in the train folder)."""
    return stage_dir(workdir, run_id, "train") / "history.json"


def blessing_path(workdir: str | os.PathLike, run_id: str) -> Path:
    return stage_dir(workdir, run_id, "evaluate") / "blessing.json"


def push_record_path(workdir: str | os.PathLike, run_id: str) -> Path:
    return stage_dir(workdir, run_id, "push") / "pushed.json"


def model_base_path(workdir: str | os.PathLike) -> Path:
    """The folder TF Serving's --model_base_path points at is model_base_path(w) / model name."""
    return Path(workdir) / "serving" / "models"


def store_path(workdir: str | os.PathLike) -> Path:
    return Path(workdir) / "metadata.sqlite"


def lock_path(workdir: str | os.PathLike) -> Path:
    return Path(workdir) / ".lock"
