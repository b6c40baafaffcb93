"""Batch scoring stage: an Apache Beam job running RunInference over files of tf.Example.

    out = score.run(config.score, model="artifacts/serving/models/mnist", input_pattern="data/*.tfrecord",
                    output_dir="artifacts/runs/<run>/score", beam_args=["--direct_num_workers=2"])

    python -m components.score --model artifacts/serving/models/mnist --input 'data/test-*.tfrecord' \\
        --output gs://bucket/scores --runner=DataflowRunner --project P --region R --temp_location gs://bucket/tmp

Steps (stable labels): ReadExamples (TFRecord files of tf.Example: `image` PNG bytes, optional `label` and
`key`; a prepared TFDS split is such a file set) -> Decode (per batch: tf.io.parse_example and the project's
`decode_png` in one tf.function; a batch with a bad record is decoded record by record so only that record
goes to `failed`) -> RunInference (KeyedModelHandler over `beam_model.SavedModelHandler`; the key is
(example key, label)) -> FormatPredictions -> WritePredictions (JSON lines, CSV or Parquet, sharded by
Beam); WriteFailed (JSON lines: key, reason); Summarize (summary.json: counts, accuracy, confusion matrix).

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
from dataclasses import dataclass, field
from typing import Any, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from components import signatures as sig
from pipeline.errors import ConfigError, DataError, ModelError, PipelineError

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
    `components.model_registry` for local paths, by listing the folder for remote ones such as gs://)."""
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
        from components import model_registry

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
    missing = [f"input {sig.IMAGE_INPUT!r}" for _ in [0] if sig.IMAGE_INPUT not in signature.inputs]
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
        FileSystems.mkdirs(output_dir) if not FileSystems.exists(output_dir) else None
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


class FormatPredictions(beam.DoFn):
    """((key, label), PredictionResult) -> a JSON line, a CSV line or a Parquet row (dict)."""

    def __init__(self, output_format: str, model_name: str, model_version: int | None):
        self._format = output_format
        self._model_name = model_name
        self._model_version = model_version
        self._predictions = Metrics.counter(METRICS_NAMESPACE, "predictions")

    def process(self, element):
        (key, label), result = element
        probabilities, predicted = result.inference
        self._predictions.inc()
        if self._format == "csv":
            version = "" if self._model_version is None else str(self._model_version)
            if any(c in key for c in ',"\n\r'):
                key = '"' + key.replace('"', '""') + '"'
            yield ",".join([key, str(predicted), "" if label is None else str(label), self._model_name, version,
                            *map(repr, probabilities.tolist())])
            return
        row = {
            "key": key,
            "predicted_class": predicted,
            "probabilities": probabilities.tolist(),
            "label": label,
            "model_name": self._model_name,
            "model_version": self._model_version,
        }
        yield json.dumps(row) if self._format == "jsonl" else row


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


class _ConfusionFn(beam.CombineFn):
    """(label or None, predicted) -> [predictions, labeled, correct, 10x10 confusion (rows: label)]."""

    def create_accumulator(self):
        return [0, 0, 0, np.zeros((sig.NUM_CLASSES, sig.NUM_CLASSES), np.int64)]

    def add_input(self, acc, element):
        label, predicted = element
        acc[0] += 1
        if label is not None and 0 <= label < sig.NUM_CLASSES:
            acc[1] += 1
            acc[2] += label == predicted
            acc[3][label, predicted] += 1
        return acc

    def merge_accumulators(self, accs):
        accs = list(accs)
        out = self.create_accumulator()
        for a in accs:
            out[0] += a[0]
            out[1] += a[1]
            out[2] += a[2]
            out[3] += a[3]
        return out

    def extract_output(self, acc):
        n, labeled, correct, confusion = acc
        return {
            "predictions": int(n),
            "labeled": int(labeled),
            "correct": int(correct),
            "accuracy": (correct / labeled) if labeled else None,
            "confusion_matrix": confusion.tolist() if labeled else None,
        }


class _ReasonCountFn(beam.CombineFn):
    """Failed rows -> {reason kind (text before ':'): count}."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, row):
        kind = row["reason"].split(":", 1)[0]
        acc[kind] = acc.get(kind, 0) + 1
        return acc

    def merge_accumulators(self, accs):
        out: dict[str, int] = {}
        for a in accs:
            for k, v in a.items():
                out[k] = out.get(k, 0) + v
        return out

    def extract_output(self, acc):
        return dict(sorted(acc.items()))


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
    """(predictions, failed rows) -> summary.json; returns the PCollection of the one summary dict."""

    def __init__(self, summary_path: str, header: dict):
        super().__init__()
        self._path = summary_path
        self._header = header

    def expand(self, pcolls):
        predictions, failed = pcolls
        stats = (
            predictions
            | "LabelAndClass" >> beam.Map(lambda kv: (kv[0][1], kv[1].inference[1]))
            | "Confusion" >> beam.CombineGlobally(_ConfusionFn())
        )
        reasons = failed | "CountFailed" >> beam.CombineGlobally(_ReasonCountFn())
        path, header = self._path, self._header

        def write(_, stats, reasons):
            summary = {**header, **stats, "failed": sum(reasons.values()), "failed_by_reason": reasons}
            write_json_atomic(path, summary)
            return summary

        return (
            predictions.pipeline
            | "Once" >> beam.Create([None])
            | "WriteSummary" >> beam.Map(write, beam.pvalue.AsSingleton(stats), beam.pvalue.AsSingleton(reasons))
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
    handler in tests. Returns the PCollections: predictions (keyed results), rows, failed, summary."""
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
    rows = predictions | "FormatPredictions" >> beam.ParDo(
        FormatPredictions(output_format, model.name, model.version)
    )
    prefix = _join(output_dir, PREDICTIONS_PREFIX)
    if output_format == "parquet":
        rows | "WritePredictions" >> beam.io.WriteToParquet(prefix, _parquet_schema(), file_name_suffix=".parquet")
    else:
        header = ",".join(CSV_COLUMNS) if output_format == "csv" else None
        rows | "WritePredictions" >> beam.io.WriteToText(prefix, file_name_suffix=f".{output_format}", header=header)
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
    summary = (predictions, failed) | "Summarize" >> Summarize(_join(output_dir, SUMMARY_FILE), header)
    return {"predictions": predictions, "rows": rows, "failed": failed, "summary": summary}


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
    raise SystemExit(main())
