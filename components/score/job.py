"""Launching a scoring job: every check before the job, the job on its runner, the accounting after it.

    out = job.run(config.score, model="artifacts/serving/models/mnist", input_pattern="data/*.parquet",
                  output_dir="artifacts/runs/<run>/score", beam_args=["--direct_num_workers=2"])

Before the job: the config, the model (signature and variables; or the server's model status), every input
file (`inputs.check_inputs`: format, layout, rows counted), the SDK worker pool when the options name an
external one, and the output folder. A failure there raises a `PipelineError` naming the bad value and
leaves the output folder as it was. After the job: summary.json must show, for every input, read = predicted
+ failed and read = the rows counted before the job; otherwise the job fails loudly (`DataError`), leaving
the summary (`"accounted": false`) for diagnosis. A job that fails or outlives `timeout_s` leaves no
outputs behind.

Without `--runner` the job runs on `FnApiRunner` (Beam's default runner would fetch a Prism binary);
`--direct_num_workers` / `--direct_running_mode` apply to it; every other Beam option passes through.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from components.portable import portable_value, root_holding
from components.score.graph import build_pipeline
from components.score.inputs import Inputs, check_inputs
from components.score.model import ModelRef, check_saved_model, check_server, resolve_model
from components.score.options import JobOptions, ScoreConfig, from_config
from components.score.progress import TALLY, Progress
from components.score.read import readable
from components.score.write import (
    FAILED_PREFIX,
    PREDICTIONS_PREFIX,
    SUMMARY_FILE,
    summary_header,
    write_json_atomic,
)
from pipeline.errors import ConfigError, DataError, PipelineError
from serving import signatures as sig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreOutput:
    output_dir: str
    predictions_pattern: str
    failed_pattern: str
    summary_path: str
    num_predictions: int
    num_failed: int
    accuracy: float | None
    model: ModelRef
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)
    num_read: int = 0
    input_format: str = "tfrecord"


def _join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts)


def _outputs(output_dir: str) -> list[str]:
    patterns = [_join(output_dir, f"{prefix}-*") for prefix in (PREDICTIONS_PREFIX, FAILED_PREFIX)]
    patterns += [_join(output_dir, SUMMARY_FILE)]
    return [m.path for r in FileSystems.match(patterns) for m in r.metadata_list]


def check_output(output_dir: str) -> None:
    """Create `output_dir`, prove it writable, and remove outputs of an earlier job there."""
    probe = _join(output_dir, f".write-probe-{secrets.token_hex(4)}")
    try:
        if not FileSystems.exists(output_dir):
            FileSystems.mkdirs(output_dir)
        FileSystems.create(probe).close()
        FileSystems.delete([probe])
    except Exception as exc:  # BeamIOError, OSError
        raise PipelineError(f"output path {output_dir!r} cannot be written ({exc}); choose another --output") from exc
    stale = _outputs(output_dir)
    if stale:
        log.warning("removing %d output files of an earlier job in %s", len(stale), output_dir)
        FileSystems.delete(stale)


def _remove_outputs(output_dir: str) -> None:
    """After a failed job: no half-written outputs (Beam's temp folders included)."""
    try:
        leftovers = _outputs(output_dir)
        leftovers += [m.path for m in FileSystems.match([_join(output_dir, "beam-temp-*")])[0].metadata_list]
        if leftovers:
            FileSystems.delete(leftovers)
        if "://" not in output_dir:
            for name in os.listdir(output_dir):
                if name.startswith("beam-temp-") or name.startswith(".summary.json.tmp"):
                    import shutil

                    shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
    except Exception as exc:  # best effort: the job's own error matters more
        log.warning("could not remove the outputs of the failed job in %s: %s", output_dir, exc)


def check_worker_pool(beam_args: Sequence[str]) -> None:
    """With `--environment_type=EXTERNAL`, the SDK worker pool at `--environment_config` accepts connections:
    a runner waits forever for workers that never come, so say it now."""
    from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions

    portable = PipelineOptions(list(beam_args)).view_as(PortableOptions)
    if (portable.environment_type or "").upper() != "EXTERNAL":
        return
    address = portable.environment_config or ""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "localhost", int(port)), timeout=5):
            pass
    except (OSError, ValueError) as exc:
        raise PipelineError(
            f"no SDK worker pool answers at --environment_config={address!r} ({exc}); start one "
            f"(python -m apache_beam.runners.worker.worker_pool_main --service_port=PORT) or fix the address"
        ) from exc


def make_pipeline(beam_args: Sequence[str] = ()) -> beam.Pipeline:
    """A Pipeline over `beam_args`; on FnApiRunner when no --runner is given."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    options = PipelineOptions(list(beam_args))
    runner = None if options.view_as(StandardOptions).runner else FnApiRunner()
    return beam.Pipeline(runner=runner, options=options)


def _run_with_timeout(p: beam.Pipeline, timeout_s: float | None):
    """Run `p` to its end; a PipelineError when it has not ended after `timeout_s` (the job is cancelled
    where the runner can; its threads are daemons, so the process can still exit)."""
    box: dict[str, Any] = {}

    def target():
        try:
            box["result"] = result = p.run()
            result.wait_until_finish()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    if timeout_s is None:
        target()
    else:
        thread = threading.Thread(target=target, name="score-job", daemon=True)
        thread.start()
        thread.join(timeout_s)
        if thread.is_alive():
            result = box.get("result")
            try:
                if result is not None:
                    result.cancel()
            except Exception:  # not every runner can cancel
                pass
            raise PipelineError(
                f"the scoring job did not finish within --job-timeout={timeout_s:g} s; with a portable runner, "
                f"check that SDK workers start (the worker pool's log, its PATH and PYTHONPATH)")
    if "error" in box:
        raise box["error"]
    return box["result"]


def _query_metrics(result) -> dict[str, Any]:
    """Counters (summed over steps) and distributions from the finished job, keyed `namespace/name`."""
    out: dict[str, Any] = {}
    try:
        query = result.metrics().query()
    except Exception as exc:  # some runners do not report metrics
        log.warning("the runner reported no metrics (%s)", exc)
        return out
    for counter in query.get("counters", []):
        value = counter.committed if counter.committed is not None else counter.attempted
        name = f"{counter.key.metric.namespace}/{counter.key.metric.name}"
        out[name] = out.get(name, 0) + int(value or 0)
    for dist in query.get("distributions", []):
        value = dist.committed if dist.committed is not None else dist.attempted
        if value is None or not value.count:
            continue
        name = f"{dist.key.metric.namespace}/{dist.key.metric.name}"
        out[name] = {"count": value.count, "sum": value.sum, "min": value.min, "max": value.max,
                     "mean": value.sum / value.count}
    return dict(sorted(out.items()))


def account(summary: dict, inputs: Inputs) -> list[str]:
    """The inputs whose rows are not all accounted for: read != predicted + failed, or read != counted."""
    seen = summary.get("inputs", {})
    problems = []
    for source in sorted(set(seen) | set(inputs.expected)):
        got = seen.get(source, {"read": 0, "predicted": 0, "failed": 0})
        expected = inputs.expected.get(source)
        if got["read"] != got["predicted"] + got["failed"] or (expected is not None and got["read"] != expected):
            problems.append(f"{source}: {expected} rows before the job, read {got['read']}, predicted "
                            f"{got['predicted']}, failed {got['failed']}")
    return problems


def run(
    config: ScoreConfig,
    *,
    model: str | os.PathLike | None = None,
    input_pattern: str,
    output_dir: str | os.PathLike,
    beam_args: Sequence[str] = (),
    options: JobOptions | None = None,
    record_root: str | os.PathLike | None = None,
) -> ScoreOutput:
    """Score every row of `input_pattern` with `model` (a SavedModel dir or a model base path), or with the
    model `options.server` serves, into `output_dir`. `config` is the `score` section (format, batch sizes;
    and the job options when `options` is None). Checks everything before the job starts; bad rows never
    fail it (they go to `failed`). `record_root` (the workdir): summary.json, when written inside it, names
    files inside it relative to it (None: absolute paths)."""
    config.check()
    if options is None:
        options = from_config(config)
    output_format = config.output_format
    server = options.server
    spark = options.engine == "spark"
    if spark:  # before any other check: a missing pyspark or Java is the first thing to say
        _check_spark_options(options, beam_args)
    if server is not None:
        ref = check_server(server)
    else:
        if model is None:
            raise ConfigError("no model: give --model (a SavedModel or model base path) or --server")
        ref = resolve_model(model)
        check_saved_model(ref.saved_model_dir)
        ref = dataclasses.replace(ref, class_names=tuple(sig.read_class_names(ref.saved_model_dir)),
                                  image_shape=sig.read_image_shape(ref.saved_model_dir))
    inputs = check_inputs(input_pattern, options.input_format, options.columns, ref.image_shape)
    if not spark:
        check_worker_pool(beam_args)
    output_dir = os.fspath(output_dir)
    check_output(output_dir)
    total = sum(inputs.expected.values())
    log.info("scoring %s (%s, %d files, %d rows) with %s into %s (%s)", input_pattern, inputs.format,
             len(inputs.files), total, server.address if server else ref.saved_model_dir, output_dir,
             f"Spark on {options.spark_master or 'local[*]'}" if spark else "Beam")
    header = summary_header(ref, server, inputs, output_format, output_dir)
    if spark:
        return _finish(*_run_spark(config, options, ref, inputs, output_dir, header), inputs, ref, {}, record_root)

    start = time.perf_counter()
    TALLY.reset()
    with _cleanly(output_dir, "the scoring job"), Progress(total, TALLY.snapshot):
        p = make_pipeline(beam_args)
        build_pipeline(
            p, inputs=inputs, output_dir=output_dir, model=ref, output_format=output_format,
            min_batch_size=config.min_batch_size, max_batch_size=config.max_batch_size, server=server,
        )
        result = _run_with_timeout(p, options.timeout_s)
    seconds = time.perf_counter() - start
    summary_path = _join(output_dir, SUMMARY_FILE)
    with FileSystems.open(summary_path) as fh:
        summary = json.loads(fh.read())
    return _finish(summary, seconds, output_dir, inputs, ref, _query_metrics(result), record_root)


def _check_spark_options(options: JobOptions, beam_args: Sequence[str]) -> None:
    if options.server is not None:
        raise ConfigError("--engine spark scores with a local SavedModel (--model); --server is for the Beam engine")
    if beam_args:
        raise ConfigError(f"Beam pipeline options do not apply to --engine spark: {' '.join(beam_args)} "
                          f"(give the cluster with --spark-master)")
    from components.score.spark_job import require_spark

    require_spark()


def _run_spark(config, options: JobOptions, ref: ModelRef, inputs: Inputs, output_dir: str, header: dict):
    """The Spark job; (summary, seconds, output_dir). A failed job leaves no outputs behind."""
    from components.score import spark_job

    with _cleanly(output_dir, "the Spark scoring job"):
        summary, seconds = spark_job.run(model=ref, inputs=inputs, output_dir=output_dir,
                                         output_format=config.output_format, batch_size=config.max_batch_size,
                                         master=options.spark_master, header=header)
    return summary, seconds, output_dir


@contextlib.contextmanager
def _cleanly(output_dir: str, what: str):
    """A job that fails leaves no outputs behind, and fails as a one-line PipelineError."""
    try:
        yield
    except BaseException as exc:
        _remove_outputs(output_dir)
        if isinstance(exc, PipelineError) or not isinstance(exc, Exception):
            raise
        log.debug("%s failed", what, exc_info=True)
        raise PipelineError(f"{what} failed: {readable(exc)} (run with -v for its traceback)") from exc


def _finish(summary: dict, seconds: float, output_dir: str, inputs: Inputs, ref: ModelRef,
            metrics: dict[str, Any], record_root) -> ScoreOutput:
    """The accounting after either engine's job: summary.json completed and written; a DataError when a row
    is unaccounted for."""
    summary_path = _join(output_dir, SUMMARY_FILE)
    problems = account(summary, inputs)
    summary["accounted"] = not problems
    summary["seconds"] = round(seconds, 3)
    summary["metrics"] = metrics
    write_json_atomic(summary_path, portable_value(summary, root_holding(output_dir, record_root)))
    if problems:
        raise DataError(f"not every input row was predicted or failed ({'; '.join(problems[:5])}); see "
                        f"{summary_path}")
    for m in FileSystems.match([summary["predictions_pattern"], summary["failed_pattern"]]):
        for f in m.metadata_list:
            log.info("wrote %s", f.path)
    log.info("wrote %s", summary_path)
    return ScoreOutput(
        output_dir=output_dir,
        predictions_pattern=summary["predictions_pattern"],
        failed_pattern=summary["failed_pattern"],
        summary_path=summary_path,
        num_predictions=summary["predictions"],
        num_failed=summary["failed"],
        accuracy=summary["accuracy"],
        model=ref,
        seconds=seconds,
        metrics=metrics,
        num_read=summary["read"],
        input_format=inputs.format,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m components.score`: the Beam entry point users submit (Dataflow, Flink, Spark, portable). Its
    flags are `mnist-pipeline score`'s (`options.add_arguments`); any other flag must be a Beam pipeline option."""
    import argparse
    import sys

    from components.score import options as job_options
    from components.score.beam_flags import check_beam_args, split_at_dashes

    parser = argparse.ArgumentParser(prog="python -m components.score",
                                     description="Batch scoring: an Apache Beam RunInference job.")
    job_options.add_arguments(parser, skip=("split",), required=("input_pattern", "output"),
                              defaults={"server_model": sig.MODEL_NAME}, none={"model": "none: give it, or --server"})
    own, unchecked = split_at_dashes(sys.argv[1:] if argv is None else argv)
    args, beam_args = parser.parse_known_args(own)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        check_beam_args(beam_args, parser._option_string_actions)
        config = job_options.from_args(args, beam_args=(*beam_args, *unchecked))
        out = run(config, model=config.model, input_pattern=config.input_pattern, output_dir=config.output,
                  beam_args=config.beam_args)
    except PipelineError as exc:
        print(f"components.score: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(json.dumps({"read": out.num_read, "predictions": out.num_predictions, "failed": out.num_failed,
                      "accuracy": out.accuracy, "summary": out.summary_path}))
    return 0
