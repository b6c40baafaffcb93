"""Batch scoring stage: an Apache Beam job running RunInference over files of tf.Example.

    out = score.run(config.score, model="artifacts/serving/models/mnist", input_pattern="data/*.tfrecord",
                    output_dir="artifacts/runs/<run>/score", beam_args=["--direct_num_workers=2"])

    python -m components.score --model artifacts/serving/models/mnist --input 'data/test-*.tfrecord' \\
        --output gs://bucket/scores --runner=DataflowRunner --project P --region R --temp_location gs://bucket/tmp

Steps (stable labels): ReadExamples (TFRecord files of tf.Example: `image` PNG bytes, optional `label` and
`key`; a prepared TFDS split is such a file set) -> Decode (per batch: tf.io.parse_example and the project's
`decode_png` in one tf.function; a batch with a bad record is decoded record by record so only that record
goes to `failed`) -> RunInference (KeyedModelHandler over `beam_model.SavedModelHandler`; the key is
(example key, label); a batch the model fails on goes to `failed` too, via `with_exception_handling`) ->
FormatPredictions (rows in chunks, plus per-bundle counts and confusion matrix) -> WritePredictions (JSON
lines, CSV or Parquet, sharded by Beam); WriteFailed (JSON lines: key, reason); Summarize (summary.json:
counts, accuracy, confusion matrix, failures by reason; the launcher adds Beam's metrics after the job).

A record without a `key` feature is keyed by the SHA-1 of its image bytes (of the record when it has no
image), so a key always identifies its input. Outputs under `output_dir`:
`predictions-SSSSS-of-NNNNN.{jsonl,csv,parquet}`, `failed-SSSSS-of-NNNNN.jsonl`, `summary.json`.

Without `--runner` the job runs on `FnApiRunner` (Beam's default runner would fetch a Prism binary);
`--direct_num_workers` / `--direct_running_mode` apply to it; every other Beam option passes through.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipeline.errors import ConfigError, DataError, ModelError, PipelineError
from serving import signatures as sig

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv", "parquet")
METRICS_NAMESPACE = "mnist_score"
FAILED_TAG = "failed"
SUMMARY_FILE = "summary.json"
PREDICTIONS_PREFIX = "predictions"
FAILED_PREFIX = "failed"
CSV_COLUMNS = (
    "key", "predicted_class", "label", "model_name", "model_version",
    *(f"probability_{i}" for i in range(sig.NUM_CLASSES)),
)


@dataclass(frozen=True)
class ModelRef:
    saved_model_dir: str
    name: str
    version: int | None  # the integer folder of TF Serving's layout; None for a bare SavedModel dir


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


# --------------------------------------------------------------------------------------------- checks


def _join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts)


def resolve_model(path: str | os.PathLike) -> ModelRef:
    """A SavedModel dir, or a model base path `<base>/<model>` meaning its newest integer version (resolved by
    `serving.model_registry` for local paths, by listing the folder for remote ones such as gs://)."""
    import tensorflow as tf

    path = os.fspath(path)
    gfile = tf.io.gfile
    if gfile.exists(_join(path, "saved_model.pb")):
        base, leaf = os.path.split(path.rstrip("/"))
        if leaf.isdigit():
            return ModelRef(path, os.path.basename(base) or sig.MODEL_NAME, int(leaf))
        return ModelRef(path, sig.MODEL_NAME, None)
    if not gfile.isdir(path):
        raise ModelError(
            f"model {path!r} does not exist; give a SavedModel folder or a model base path <base>/<model> "
            f"(run `mnist-pipeline push` to fill the workdir's)"
        )
    name = os.path.basename(path.rstrip("/")) or sig.MODEL_NAME
    if "://" not in path:
        from serving import model_registry

        newest = model_registry.newest_version(os.path.dirname(path.rstrip("/")) or ".", name)
        version = newest.version if newest is not None and newest.complete else None
    else:
        versions = sorted(int(n.rstrip("/")) for n in gfile.listdir(path) if n.rstrip("/").isdigit())
        version = versions[-1] if versions and gfile.exists(_join(path, str(versions[-1]), "saved_model.pb")) else None
    if version is None:
        raise ModelError(
            f"model {path!r} is neither a SavedModel (no saved_model.pb) nor a model base path whose newest "
            f"<integer version>/ holds a saved_model.pb"
        )
    return ModelRef(_join(path, str(version)), name, version)


def check_signature(saved_model_dir: str) -> None:
    """The SavedModel has `serving_default` taking `image` float32 and giving probabilities and classes."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        with tf.io.gfile.GFile(_join(saved_model_dir, "saved_model.pb"), "rb") as fh:
            proto.ParseFromString(fh.read())
    except Exception as exc:  # OSError, DecodeError
        raise ModelError(f"SavedModel {saved_model_dir!r} cannot be read ({exc}); export it again") from exc
    signatures = proto.meta_graphs[0].signature_def if proto.meta_graphs else {}
    if sig.SERVING_DEFAULT not in signatures:
        raise ModelError(
            f"SavedModel {saved_model_dir!r} has no {sig.SERVING_DEFAULT!r} signature "
            f"(it has: {', '.join(signatures) or 'none'}); export it with `mnist-pipeline export`"
        )
    signature = signatures[sig.SERVING_DEFAULT]
    missing = [f"input {sig.IMAGE_INPUT!r}"] if sig.IMAGE_INPUT not in signature.inputs else []
    missing += [f"output {k!r}" for k in (sig.PROBABILITIES_OUTPUT, sig.CLASSES_OUTPUT) if k not in signature.outputs]
    if missing:
        raise ModelError(
            f"SavedModel {saved_model_dir!r}: signature {sig.SERVING_DEFAULT!r} lacks {', '.join(missing)}; "
            f"export it with `mnist-pipeline export`"
        )


def check_input(input_pattern: str) -> int:
    """The number of files the pattern matches; a DataError when it matches none."""
    try:
        matched = FileSystems.match([input_pattern])[0].metadata_list
    except Exception as exc:  # BeamIOError for a bad scheme or folder
        raise DataError(f"input pattern {input_pattern!r} cannot be matched: {exc}") from exc
    if not matched:
        raise DataError(f"input pattern {input_pattern!r} matches no file; give TFRecord files of tf.Example")
    return len(matched)


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
    stale = [
        m.path
        for prefix in (PREDICTIONS_PREFIX, FAILED_PREFIX)
        for m in FileSystems.match([_join(output_dir, f"{prefix}-*")])[0].metadata_list
    ]
    if stale:
        log.warning("removing %d output files of an earlier job in %s", len(stale), output_dir)
        FileSystems.delete(stale)


# --------------------------------------------------------------------------------------------- steps


def _default_key(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16]


class DecodeExamples(beam.DoFn):
    """A list of serialized tf.Example -> ((key, label or None), uint8 [28,28,1]); bad ones to `failed`."""

    def __init__(self):
        self._read = Metrics.counter(METRICS_NAMESPACE, "examples_read")
        self._failed = Metrics.counter(METRICS_NAMESPACE, "examples_failed")

    def setup(self):
        import tensorflow as tf

        from components.preprocessing import decode_png

        image_spec = tf.TensorSpec([sig.IMAGE_SIZE, sig.IMAGE_SIZE, 1], tf.uint8)
        spec = {
            sig.EXAMPLE_IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string),
            sig.EXAMPLE_LABEL_FEATURE: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
            sig.EXAMPLE_KEY_FEATURE: tf.io.FixedLenFeature([], tf.string, default_value=""),
        }

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def decode_batch(records):
            f = tf.io.parse_example(records, spec)
            images = tf.map_fn(decode_png, f[sig.EXAMPLE_IMAGE_FEATURE], fn_output_signature=image_spec)
            return f[sig.EXAMPLE_KEY_FEATURE], f[sig.EXAMPLE_LABEL_FEATURE], f[sig.EXAMPLE_IMAGE_FEATURE], images

        @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
        def decode_one(png):
            return decode_png(png)

        self._tf = tf
        self._decode_batch = decode_batch
        self._decode_one = decode_one

    def process(self, records: list[bytes]):
        self._read.inc(len(records))
        try:
            keys, labels, pngs, images = (t.numpy() for t in self._decode_batch(records))
        except self._tf.errors.InvalidArgumentError:
            yield from self._one_by_one(records)  # rare: find the bad record(s) in this batch
            return
        for key, label, png, image in zip(keys.tolist(), labels.tolist(), pngs.tolist(), images):
            key = key.decode("utf-8", "replace") if key else _default_key(png)
            yield (key, label if label >= 0 else None), image

    def _one_by_one(self, records: list[bytes]):
        from google.protobuf.message import DecodeError
        from tensorflow.core.example import example_pb2

        for record in records:
            key, reason = _default_key(record), None
            try:
                feature = example_pb2.Example.FromString(record).features.feature
            except DecodeError:
                feature, reason = {}, "not a tf.Example: the record cannot be parsed"
            if sig.EXAMPLE_KEY_FEATURE in feature and feature[sig.EXAMPLE_KEY_FEATURE].bytes_list.value:
                key = feature[sig.EXAMPLE_KEY_FEATURE].bytes_list.value[0].decode("utf-8", "replace")
            label = None
            if reason is None:
                images = feature[sig.EXAMPLE_IMAGE_FEATURE].bytes_list.value if sig.EXAMPLE_IMAGE_FEATURE in feature else []
                labels = feature[sig.EXAMPLE_LABEL_FEATURE].int64_list.value if sig.EXAMPLE_LABEL_FEATURE in feature else None
                if len(images) != 1:
                    reason = f"missing feature: {sig.EXAMPLE_IMAGE_FEATURE!r} must hold one PNG (bytes), found {len(images)}"
                elif labels is not None and len(labels) != 1:
                    reason = f"bad feature: {sig.EXAMPLE_LABEL_FEATURE!r} must hold one int64, found {len(labels)}"
                else:
                    label = labels[0] if labels else None
                    if key == _default_key(record):
                        key = _default_key(images[0])
            if reason is None:
                try:  # diagnose with the raw decoder, then decode with the project's function
                    shape = self._tf.io.decode_png(images[0], channels=1).shape
                except self._tf.errors.InvalidArgumentError as exc:
                    reason = f"undecodable image: {exc.message.strip().splitlines()[0]}"
                else:
                    if tuple(shape[:2]) != (sig.IMAGE_SIZE, sig.IMAGE_SIZE):
                        reason = f"wrong size: {shape[0]}x{shape[1]} pixels, expected {sig.IMAGE_SIZE}x{sig.IMAGE_SIZE}"
                    else:
                        image = self._decode_one(images[0]).numpy()
            if reason is None:
                yield (key, label), image
            else:
                self._failed.inc()
                yield beam.pvalue.TaggedOutput(FAILED_TAG, {"key": key, "reason": reason})


STATS_TAG = "stats"


def _new_stats() -> list:
    """[predictions, labeled, correct, confusion as a flat list (row = label, column = predicted)]."""
    return [0, 0, 0, [0] * (sig.NUM_CLASSES * sig.NUM_CLASSES)]


class FormatPredictions(beam.DoFn):
    """((key, label), PredictionResult) -> chunks of output rows, plus per-bundle statistics.

    Rows are emitted in chunks of up to `chunk_size` (text: lines joined by newlines, which WriteToText writes
    as they are; parquet: a pyarrow Table for WriteToParquetBatched), so the sinks pay their per-element cost
    once per chunk. Counts and the confusion matrix are accumulated per bundle and emitted on the `stats`
    output at the end of the bundle (combiner lifting by hand), so the summary costs nothing per element.
    Assumes the global window (a batch job).
    """

    def __init__(self, output_format: str, model_name: str, model_version: int | None, chunk_size: int = 512):
        self._format = output_format
        self._model_name = model_name
        self._model_version = model_version
        self._chunk_size = chunk_size
        self._predictions = Metrics.counter(METRICS_NAMESPACE, "predictions")

    def setup(self):
        self._name_json = json.dumps(self._model_name)
        self._version_json = "null" if self._model_version is None else str(int(self._model_version))
        self._version_csv = "" if self._model_version is None else str(int(self._model_version))
        self._name_csv = _csv_field(self._model_name)

    def start_bundle(self):
        self._rows: list = []
        self._stats = _new_stats()

    def process(self, element):
        (key, label), result = element
        probabilities, predicted = result.inference
        stats = self._stats
        stats[0] += 1
        if label is not None and 0 <= label < sig.NUM_CLASSES:
            stats[1] += 1
            stats[2] += label == predicted
            stats[3][label * sig.NUM_CLASSES + predicted] += 1
        self._rows.append((key, label, predicted, probabilities))
        if len(self._rows) >= self._chunk_size:
            yield self._flush()

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue

        window = GlobalWindow()
        if self._rows:
            yield WindowedValue(self._flush(), window.max_timestamp(), (window,))
        if self._stats[0]:
            yield beam.pvalue.TaggedOutput(STATS_TAG, WindowedValue(self._stats, window.max_timestamp(), (window,)))
        self._stats = _new_stats()

    def _flush(self):
        rows, self._rows = self._rows, []
        self._predictions.inc(len(rows))
        if self._format == "parquet":
            return self._table(rows)
        line = self._csv_line if self._format == "csv" else self._json_line
        return "\n".join(line(*row) for row in rows)

    def _json_line(self, key, label, predicted, probabilities) -> str:
        values = probabilities.tolist()
        if not np.isfinite(probabilities).all():  # json writes NaN/Infinity, repr would not
            return json.dumps({"key": key, "predicted_class": predicted, "probabilities": values, "label": label,
                               "model_name": self._model_name, "model_version": self._model_version})
        return (
            f'{{"key": {json.dumps(key)}, "predicted_class": {predicted}, '
            f'"probabilities": [{", ".join(map(repr, values))}], "label": {"null" if label is None else label}, '
            f'"model_name": {self._name_json}, "model_version": {self._version_json}}}'
        )

    def _csv_line(self, key, label, predicted, probabilities) -> str:
        return ",".join([_csv_field(key), str(predicted), "" if label is None else str(label), self._name_csv,
                         self._version_csv, *map(repr, probabilities.tolist())])

    def _table(self, rows):
        import pyarrow as pa

        keys, labels, predicted, probabilities = zip(*rows)
        n = len(rows)
        flat = pa.array(np.stack(probabilities).astype(np.float32).reshape(-1))
        offsets = pa.array(np.arange(0, (n + 1) * sig.NUM_CLASSES, sig.NUM_CLASSES, dtype=np.int32))
        return pa.Table.from_arrays(
            [
                pa.array(keys, pa.string()),
                pa.array(predicted, pa.int64()),
                pa.ListArray.from_arrays(offsets, flat),
                pa.array(labels, pa.int64()),
                pa.array([self._model_name] * n, pa.string()),
                pa.array([self._model_version] * n, pa.int64()),
            ],
            schema=_parquet_schema(),
        )


def _csv_field(value: str) -> str:
    if any(c in value for c in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _parquet_schema():
    import pyarrow as pa

    return pa.schema([
        ("key", pa.string()),
        ("predicted_class", pa.int64()),
        ("probabilities", pa.list_(pa.float32())),
        ("label", pa.int64()),
        ("model_name", pa.string()),
        ("model_version", pa.int64()),
    ])


class _SummaryFn(beam.CombineFn):
    """("stats", per-bundle statistics) and ("failed", reason kind) -> the summary's figures."""

    def create_accumulator(self):
        return [_new_stats(), {}]

    def add_input(self, acc, element):
        kind, value = element
        if kind == STATS_TAG:
            stats = acc[0]
            stats[0] += value[0]
            stats[1] += value[1]
            stats[2] += value[2]
            stats[3] = [a + b for a, b in zip(stats[3], value[3])]
        else:
            acc[1][value] = acc[1].get(value, 0) + 1
        return acc

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for stats, reasons in accs:
            self.add_input(out, (STATS_TAG, stats))
            for reason, count in reasons.items():
                out[1][reason] = out[1].get(reason, 0) + count
        return out

    def extract_output(self, acc):
        (n, labeled, correct, confusion), reasons = acc
        k = sig.NUM_CLASSES
        return {
            "predictions": int(n),
            "labeled": int(labeled),
            "correct": int(correct),
            "accuracy": (correct / labeled) if labeled else None,
            "confusion_matrix": [confusion[i * k:(i + 1) * k] for i in range(k)] if labeled else None,
            "failed": sum(reasons.values()),
            "failed_by_reason": dict(sorted(reasons.items())),
        }


def write_json_atomic(path: str, payload: dict) -> None:
    """Write JSON beside `path` and rename it into place (any Beam filesystem: local, gs://, ...)."""
    directory, name = path.rsplit("/", 1) if "/" in path else (".", path)
    tmp = _join(directory, f".{name}.tmp-{secrets.token_hex(4)}")
    with FileSystems.create(tmp) as fh:
        fh.write(json.dumps(payload, indent=2, sort_keys=True).encode() + b"\n")
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


class Summarize(beam.PTransform):
    """(per-bundle statistics, failed rows) -> summary.json; returns the PCollection of the one summary dict."""

    def __init__(self, summary_path: str, header: dict):
        super().__init__()
        self._path = summary_path
        self._header = header

    def expand(self, pcolls):
        stats, failed = pcolls
        path, header = self._path, self._header

        def write(figures):
            summary = {**header, **figures}
            write_json_atomic(path, summary)
            return summary

        return (
            (
                stats | "TagStats" >> beam.Map(lambda s: (STATS_TAG, s)),
                failed | "TagFailed" >> beam.Map(lambda row: (FAILED_TAG, row["reason"].split(":", 1)[0])),
            )
            | "Merge" >> beam.Flatten()
            | "Combine" >> beam.CombineGlobally(_SummaryFn())
            | "WriteSummary" >> beam.Map(write)
        )


def build_pipeline(
    p: beam.Pipeline,
    *,
    input_pattern: str,
    output_dir: str,
    model: ModelRef,
    output_format: str = "jsonl",
    min_batch_size: int = 1,
    max_batch_size: int = 256,
    model_handler=None,
) -> dict[str, beam.PCollection]:
    """Compose the scoring job on `p`. `model_handler` (unkeyed, uint8 images in) replaces the SavedModel
    handler in tests. Returns the PCollections: predictions (keyed results), rows (chunks of formatted rows), failed,
    summary."""
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

    from components.beam_model import SavedModelHandler

    handler = model_handler or SavedModelHandler(
        model.saved_model_dir, min_batch_size=min_batch_size, max_batch_size=max_batch_size,
        model_id=f"{model.name}/{model.version}" if model.version is not None else model.saved_model_dir,
    )
    records = p | "ReadExamples" >> beam.io.ReadFromTFRecord(input_pattern)
    decoded = (
        records
        | "BatchRecords" >> beam.BatchElements(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        | "Decode" >> beam.ParDo(DecodeExamples()).with_outputs(FAILED_TAG, main="images")
    )
    predictions, errors = (
        decoded.images | "RunInference" >> RunInference(KeyedModelHandler(handler)).with_exception_handling()
    )
    inference_failed = errors.failed_inferences | "InferenceFailures" >> beam.FlatMap(
        lambda batch_exc: (
            {"key": key_label[0], "reason": f"inference failed: {batch_exc[1]!r}"} for key_label, _ in batch_exc[0]
        )
    )
    failed = (decoded[FAILED_TAG], inference_failed) | "AllFailed" >> beam.Flatten()
    formatted = predictions | "FormatPredictions" >> beam.ParDo(
        FormatPredictions(output_format, model.name, model.version)
    ).with_outputs(STATS_TAG, main="rows")
    prefix = _join(output_dir, PREDICTIONS_PREFIX)
    if output_format == "parquet":
        formatted.rows | "WritePredictions" >> beam.io.WriteToParquetBatched(
            prefix, _parquet_schema(), file_name_suffix=".parquet")
    else:
        header = ",".join(CSV_COLUMNS) if output_format == "csv" else None
        formatted.rows | "WritePredictions" >> beam.io.WriteToText(
            prefix, file_name_suffix=f".{output_format}", header=header)
    (
        failed
        | "FormatFailed" >> beam.Map(lambda row: json.dumps(row))
        | "WriteFailed" >> beam.io.WriteToText(_join(output_dir, FAILED_PREFIX), file_name_suffix=".jsonl")
    )
    header = {
        "model": {"saved_model_dir": model.saved_model_dir, "name": model.name, "version": model.version},
        "input_pattern": input_pattern,
        "format": output_format,
        "predictions_pattern": f"{prefix}-*.{output_format}",
        "failed_pattern": _join(output_dir, f"{FAILED_PREFIX}-*.jsonl"),
    }
    summary = (formatted[STATS_TAG], failed) | "Summarize" >> Summarize(_join(output_dir, SUMMARY_FILE), header)
    return {"predictions": predictions, "rows": formatted.rows, "failed": failed, "summary": summary}


# --------------------------------------------------------------------------------------------- entry


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


def make_pipeline(beam_args: Sequence[str] = ()) -> beam.Pipeline:
    """A Pipeline over `beam_args`; on FnApiRunner when no --runner is given."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    options = PipelineOptions(list(beam_args))
    runner = None if options.view_as(StandardOptions).runner else FnApiRunner()
    return beam.Pipeline(runner=runner, options=options)


def run(
    config,
    *,
    model: str | os.PathLike,
    input_pattern: str,
    output_dir: str | os.PathLike,
    beam_args: Sequence[str] = (),
) -> ScoreOutput:
    """Score every example matched by `input_pattern` with `model` (a SavedModel dir or a model base path)
    into `output_dir`. `config` is the `score` section (format, batch sizes). Checks every input before the
    job starts; bad records never fail it (they go to `failed`)."""
    output_format = config.output_format
    if output_format not in FORMATS:
        raise ConfigError(f"unknown output format {output_format!r}; choose one of {', '.join(FORMATS)}")
    if not 1 <= config.min_batch_size <= config.max_batch_size:
        raise ConfigError(
            f"batch sizes must satisfy 1 <= min_batch_size <= max_batch_size, "
            f"got {config.min_batch_size} and {config.max_batch_size}"
        )
    ref = resolve_model(model)
    check_signature(ref.saved_model_dir)
    n_files = check_input(input_pattern)
    output_dir = os.fspath(output_dir)
    check_output(output_dir)
    log.info("scoring %s (%d files) with %s (%s version %s) into %s", input_pattern, n_files,
             ref.saved_model_dir, ref.name, ref.version, output_dir)

    start = time.perf_counter()
    p = make_pipeline(beam_args)
    build_pipeline(
        p, input_pattern=input_pattern, output_dir=output_dir, model=ref, output_format=output_format,
        min_batch_size=config.min_batch_size, max_batch_size=config.max_batch_size,
    )
    result = p.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - start

    metrics = _query_metrics(result)
    summary_path = _join(output_dir, SUMMARY_FILE)
    with FileSystems.open(summary_path) as fh:
        summary = json.loads(fh.read())
    summary["seconds"] = round(seconds, 3)
    summary["metrics"] = metrics
    write_json_atomic(summary_path, summary)
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
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m components.score`: the Beam entry point users submit (Dataflow, Flink, Spark)."""
    import argparse
    import sys

    from pipeline.config import ScoreConfig

    parser = argparse.ArgumentParser(prog="python -m components.score", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="SavedModel folder or model base path <base>/<model>")
    parser.add_argument("--input", required=True, help="file pattern of TFRecord files of tf.Example")
    parser.add_argument("--output", required=True, help="output folder (local or gs://...)")
    parser.add_argument("--format", default="jsonl", choices=FORMATS)
    parser.add_argument("--min-batch-size", type=int, default=ScoreConfig.min_batch_size)
    parser.add_argument("--max-batch-size", type=int, default=ScoreConfig.max_batch_size)
    args, beam_args = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ScoreConfig(output_format=args.format, min_batch_size=args.min_batch_size,
                         max_batch_size=args.max_batch_size)
    try:
        out = run(config, model=args.model, input_pattern=args.input, output_dir=args.output, beam_args=beam_args)
    except PipelineError as exc:
        print(f"components.score: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"predictions": out.num_predictions, "failed": out.num_failed, "accuracy": out.accuracy,
                      "summary": out.summary_path}))
    return 0


if __name__ == "__main__":
    # Run the imported module's main, not this `__main__` copy, so the DoFns pickle as `components.score.*`:
    # names remote workers (Dataflow, Flink) can import, where `__main__` would be a different program.
    from components import score as _score

    raise SystemExit(_score.main())
