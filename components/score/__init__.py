"""Batch scoring stage: an Apache Beam RunInference job (or a Spark job, `--engine spark`) over TFRecord,
Parquet, CSV or image files, with a local SavedModel or a model TF Serving serves.

    out = score.run(config.score, model="artifacts/serving/models/mnist", input_pattern="data/*.tfrecord",
                    output_dir="artifacts/runs/<run>/score", beam_args=["--direct_num_workers=2"])

    python -m components.score --model artifacts/serving/models/mnist --input 'data/test-*.tfrecord' \\
        --output gs://bucket/scores --runner=DataflowRunner --project P --region R --temp_location gs://bucket/tmp

Modules, one job each:
  options  the `score` config section, the flags generated from it, the job's options; light
  beam_flags  the flags a command hands to Beam, checked against Beam's own option classes
  inputs   formats, layouts, keys; file-level checks and row counts before the job
  model    the model: resolve a base path, check signature and variables, or the server's model status
  decode   images and pixel rows -> uint8 images or the reason they are not (both engines)
  readers  one reader per format, over row ranges ("units"), yielding engine-neutral events (both engines)
  rows     output rows (JSON, CSV, Parquet) and summary figures (both engines)
  read     Beam steps reading each format into keyed images (bad rows to `failed`)
  write    Beam steps formatting predictions, failed rows and summary.json (read = predicted + failed)
  progress the live progress bar / periodic log line of either engine
  spark_job, spark_worker   the Spark engine (`--engine spark`): driver, and what runs in its Python workers
  spark_udf                 a pandas UDF scoring a DataFrame column with a pushed model
  spark_cluster             a standalone Spark cluster on this machine (tests, bench, trying it out)
  graph    the job's graph (stable step labels)
  job      checks, launch on a runner, accounting after the job; `main` for `python -m components.score`
The DoFns live in modules that are never `__main__` (`__main__.py` only calls `job.main`), so they pickle
under importable names that remote workers (Dataflow, Flink, a portable worker pool) can load.

Names are imported lazily, so `from components import score` costs nothing until one is used.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "run": "job", "main": "job", "make_pipeline": "job", "check_output": "job", "ScoreOutput": "job",
    "build_pipeline": "graph",
    "ModelRef": "model", "resolve_model": "model", "check_signature": "model", "check_saved_model": "model",
    "Inputs": "inputs", "check_inputs": "inputs", "detect_format": "inputs",
    "Columns": "options", "ServerRef": "options", "JobOptions": "options", "INPUT_FORMATS": "options",
    "ScoreConfig": "options", "OUTPUT_FORMATS": "options",
    "SUMMARY_FILE": "write", "write_json_atomic": "write",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'components.score' has no attribute {name!r}")
    return getattr(importlib.import_module(f"components.score.{module}"), name)


__all__ = sorted(_EXPORTS)
