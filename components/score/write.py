"""Beam steps that write a scoring job's outputs: prediction rows (JSON lines, CSV, Parquet), failed rows, and
summary.json, whose counts account for every input: per input, read = predicted + failed.

    predictions-SSSSS-of-NNNNN.{jsonl,csv,parquet}   key, predicted_class, probabilities, label, model_name,
                                                     model_version (the version that answered the row)
    failed-SSSSS-of-NNNNN.jsonl                      key, reason, input
    summary.json                                     counts, accuracy, confusion matrix, failures by reason,
                                                     per input {read, predicted, failed}, accounted
"""

from __future__ import annotations

import json
import secrets

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from components.score.read import FAILED_TAG, METRICS_NAMESPACE, READ_TAG
from serving import signatures as sig

FORMATS = ("jsonl", "csv", "parquet")
STATS_TAG = "stats"
SUMMARY_FILE = "summary.json"
PREDICTIONS_PREFIX = "predictions"
FAILED_PREFIX = "failed"
CSV_COLUMNS = (
    "key", "predicted_class", "label", "model_name", "model_version",
    *(f"probability_{i}" for i in range(sig.NUM_CLASSES)),
)


def _new_stats() -> list:
    """[predictions, labeled, correct, confusion as a flat list (row = label, column = predicted),
    {input: predictions}]."""
    return [0, 0, 0, [0] * (sig.NUM_CLASSES * sig.NUM_CLASSES), {}]


class FormatPredictions(beam.DoFn):
    """((key, label, input), PredictionResult) -> chunks of output rows, plus per-bundle statistics.

    `PredictionResult.inference` is (probabilities, class) or (probabilities, class, version that answered);
    without a version the row gets `model_version`. Rows are emitted in chunks of up to `chunk_size` (text:
    lines joined by newlines, which WriteToText writes as they are; parquet: a pyarrow Table for
    WriteToParquetBatched), so the sinks pay their per-element cost once per chunk. Counts, the confusion
    matrix and predictions per input are accumulated per bundle and emitted on the `stats` output at the end
    of the bundle (combiner lifting by hand). Assumes the global window (a batch job).
    """

    def __init__(self, output_format: str, model_name: str, model_version: int | None, chunk_size: int = 512):
        self._format = output_format
        self._model_name = model_name
        self._model_version = model_version
        self._chunk_size = chunk_size
        self._predictions = Metrics.counter(METRICS_NAMESPACE, "predictions")

    def setup(self):
        self._name_json = json.dumps(self._model_name)
        self._name_csv = _csv_field(self._model_name)

    def start_bundle(self):
        self._rows: list = []
        self._stats = _new_stats()

    def process(self, element):
        (key, label, source), result = element
        inference = result.inference
        probabilities, predicted = inference[0], inference[1]
        version = inference[2] if len(inference) > 2 else self._model_version
        stats = self._stats
        stats[0] += 1
        stats[4][source] = stats[4].get(source, 0) + 1
        if label is not None and 0 <= label < sig.NUM_CLASSES:
            stats[1] += 1
            stats[2] += label == predicted
            stats[3][label * sig.NUM_CLASSES + predicted] += 1
        self._rows.append((key, label, predicted, probabilities, version))
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

    def _json_line(self, key, label, predicted, probabilities, version) -> str:
        values = probabilities.tolist()
        if not np.isfinite(probabilities).all():  # json writes NaN/Infinity, repr would not
            return json.dumps({"key": key, "predicted_class": predicted, "probabilities": values, "label": label,
                               "model_name": self._model_name, "model_version": version})
        return (
            f'{{"key": {json.dumps(key)}, "predicted_class": {predicted}, '
            f'"probabilities": [{", ".join(map(repr, values))}], "label": {"null" if label is None else label}, '
            f'"model_name": {self._name_json}, "model_version": {"null" if version is None else int(version)}}}'
        )

    def _csv_line(self, key, label, predicted, probabilities, version) -> str:
        return ",".join([_csv_field(key), str(predicted), "" if label is None else str(label), self._name_csv,
                         "" if version is None else str(int(version)), *map(repr, probabilities.tolist())])

    def _table(self, rows):
        import pyarrow as pa

        keys, labels, predicted, probabilities, versions = zip(*rows)
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
                pa.array(versions, pa.int64()),
            ],
            schema=parquet_schema(),
        )


def _csv_field(value: str) -> str:
    if any(c in value for c in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


def parquet_schema():
    import pyarrow as pa

    return pa.schema([
        ("key", pa.string()),
        ("predicted_class", pa.int64()),
        ("probabilities", pa.list_(pa.float32())),
        ("label", pa.int64()),
        ("model_name", pa.string()),
        ("model_version", pa.int64()),
    ])


def _add(counts: dict, key, n: int) -> None:
    counts[key] = counts.get(key, 0) + n


class _SummaryFn(beam.CombineFn):
    """("stats", per-bundle statistics), ("failed", (reason kind, input)), ("read", (input, n)) -> figures."""

    def create_accumulator(self):
        return [_new_stats(), {}, {}, {}]  # stats, failed by reason, failed by input, read by input

    def add_input(self, acc, element):
        kind, value = element
        if kind == STATS_TAG:
            stats = acc[0]
            stats[0] += value[0]
            stats[1] += value[1]
            stats[2] += value[2]
            stats[3] = [a + b for a, b in zip(stats[3], value[3])]
            for source, n in value[4].items():
                _add(stats[4], source, n)
        elif kind == FAILED_TAG:
            _add(acc[1], value[0], 1)
            _add(acc[2], value[1], 1)
        else:
            _add(acc[3], value[0], value[1])
        return acc

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for stats, reasons, failed, read in accs:
            self.add_input(out, (STATS_TAG, stats))
            for mine, theirs in ((out[1], reasons), (out[2], failed), (out[3], read)):
                for key, n in theirs.items():
                    _add(mine, key, n)
        return out

    def extract_output(self, acc):
        (n, labeled, correct, confusion, predicted), reasons, failed, read = acc
        k = sig.NUM_CLASSES
        files = {
            source: {"read": read.get(source, 0), "predicted": predicted.get(source, 0),
                     "failed": failed.get(source, 0)}
            for source in sorted(set(read) | set(predicted) | set(failed))
        }
        return {
            "predictions": int(n),
            "labeled": int(labeled),
            "correct": int(correct),
            "accuracy": (correct / labeled) if labeled else None,
            "confusion_matrix": [confusion[i * k:(i + 1) * k] for i in range(k)] if labeled else None,
            "failed": sum(reasons.values()),
            "failed_by_reason": dict(sorted(reasons.items())),
            "read": sum(read.values()),
            "inputs": files,
            "accounted": all(f["read"] == f["predicted"] + f["failed"] for f in files.values()),
        }


def write_json_atomic(path: str, payload: dict) -> None:
    """Write JSON beside `path` and rename it into place (any Beam filesystem: local, gs://, ...)."""
    directory, name = path.rsplit("/", 1) if "/" in path else (".", path)
    tmp = FileSystems.join(directory, f".{name}.tmp-{secrets.token_hex(4)}")
    with FileSystems.create(tmp) as fh:
        fh.write(json.dumps(payload, indent=2, sort_keys=True).encode() + b"\n")
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0]


class Summarize(beam.PTransform):
    """(per-bundle statistics, failed rows, read counts) -> summary.json; returns the one summary dict."""

    def __init__(self, summary_path: str, header: dict):
        super().__init__()
        self._path = summary_path
        self._header = header

    def expand(self, pcolls):
        stats, failed, read = pcolls
        path, header = self._path, self._header

        def write(figures):
            summary = {**header, **figures}
            write_json_atomic(path, summary)
            return summary

        return (
            (
                stats | "TagStats" >> beam.Map(lambda s: (STATS_TAG, s)),
                failed | "TagFailed" >> beam.Map(lambda row: (FAILED_TAG, (_reason_kind(row["reason"]), row["input"]))),
                read | "TagRead" >> beam.Map(lambda counts: (READ_TAG, counts)),
            )
            | "Merge" >> beam.Flatten()
            | "Combine" >> beam.CombineGlobally(_SummaryFn())
            | "WriteSummary" >> beam.Map(write)
        )
