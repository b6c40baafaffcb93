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
from json.encoder import encode_basestring_ascii as _json_string  # json.dumps's own (C) string encoder

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from components.score.read import FAILED_TAG, METRICS_NAMESPACE, READ_TAG
from serving import signatures as sig

STATS_TAG = "stats"
SUMMARY_FILE = "summary.json"
PREDICTIONS_PREFIX = "predictions"
FAILED_PREFIX = "failed"
CSV_COLUMNS = (
    "key", "predicted_class", "predicted_class_name", "label", "model_name", "model_version",
    *(f"probability_{i}" for i in range(sig.NUM_CLASSES)),
)


def _new_stats() -> list:
    """[predictions, labeled, correct, confusion as a flat list (row = label, column = predicted),
    {input: predictions}]."""
    return [0, 0, 0, [0] * (sig.NUM_CLASSES * sig.NUM_CLASSES), {}]


class FormatPredictions(beam.DoFn):
    """PredictionResult(([(key, label, input)], images), ...) -> one chunk of output rows per batch, plus
    per-bundle statistics.

    `PredictionResult.inference` is (probabilities [n, 10], classes [n], version that answered or None);
    without a version the rows get `model_version`. A chunk is text lines joined by newlines (WriteToText
    writes it as it is) or a pyarrow Table (WriteToParquetBatched). Counts, the confusion matrix and
    predictions per input accumulate per bundle and leave on the `stats` output at the end of the bundle
    (combiner lifting by hand). Assumes the global window (a batch job).
    """

    def __init__(self, output_format: str, model_name: str, model_version: int | None,
                 class_names: tuple[str, ...] | None = None):
        self._format = output_format
        # predicted_class_name beside predicted_class: the model's names ("Coat" beside 4; MNIST's are "0".."9")
        self._class_names = tuple(class_names) if class_names else tuple(sig.default_class_names())
        self._model_name = model_name
        self._model_version = model_version
        self._predictions = Metrics.counter(METRICS_NAMESPACE, "predictions")

    def setup(self):
        self._name_json = json.dumps(self._model_name)
        self._name_csv = _csv_field(self._model_name)
        self._class_json = [json.dumps(n) for n in self._class_names]
        self._class_csv = [_csv_field(n) for n in self._class_names]

    def start_bundle(self):
        self._stats = _new_stats()

    def process(self, result):
        metas, _ = result.example
        probabilities, classes, version = result.inference
        version = self._model_version if version is None else version
        classes = np.asarray(classes, np.int64)
        stats = self._stats
        stats[0] += len(metas)
        labels = [meta[1] for meta in metas]
        for meta in metas:
            stats[4][meta[2]] = stats[4].get(meta[2], 0) + 1
        labeled = np.array([-1 if y is None else y for y in labels], np.int64)
        ok = (labeled >= 0) & (labeled < sig.NUM_CLASSES)
        if ok.any():
            stats[1] += int(ok.sum())
            stats[2] += int((labeled[ok] == classes[ok]).sum())
            cells = np.bincount(labeled[ok] * sig.NUM_CLASSES + classes[ok], minlength=sig.NUM_CLASSES ** 2)
            stats[3] = [a + int(b) for a, b in zip(stats[3], cells)]
        self._predictions.inc(len(metas))
        if self._format == "parquet":
            yield self._table(metas, labels, classes, probabilities, version)
        else:  # one tolist and one finiteness check per batch, not per row
            line = self._csv_line if self._format == "csv" else self._json_line
            finite = bool(np.isfinite(probabilities).all())
            yield "\n".join(line(meta[0], label, c, p, version, finite)
                             for meta, label, c, p in zip(metas, labels, classes.tolist(), probabilities.tolist()))

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue

        window = GlobalWindow()
        if self._stats[0]:
            yield beam.pvalue.TaggedOutput(STATS_TAG, WindowedValue(self._stats, window.max_timestamp(), (window,)))
        self._stats = _new_stats()

    def _json_line(self, key, label, predicted, values, version, finite=True) -> str:
        """What json.dumps writes for the row, built directly (json.dumps costs several microseconds a row)."""
        if not finite:  # json writes NaN/Infinity, repr would not
            return json.dumps({"key": key, "predicted_class": predicted,
                               "predicted_class_name": self._class_names[predicted], "probabilities": values,
                               "label": label, "model_name": self._model_name, "model_version": version})
        return (
            f'{{"key": {_json_string(key)}, "predicted_class": {predicted}, '
            f'"predicted_class_name": {self._class_json[predicted]}, '
            f'"probabilities": [{", ".join(map(repr, values))}], "label": {"null" if label is None else label}, '
            f'"model_name": {self._name_json}, "model_version": {"null" if version is None else int(version)}}}'
        )

    def _csv_line(self, key, label, predicted, values, version, finite=True) -> str:
        return ",".join([_csv_field(key), str(predicted), self._class_csv[predicted],
                         "" if label is None else str(label), self._name_csv,
                         "" if version is None else str(int(version)), *map(repr, values)])

    def _table(self, metas, labels, classes, probabilities, version):
        import pyarrow as pa

        n = len(metas)
        flat = pa.array(np.asarray(probabilities, np.float32).reshape(-1))
        offsets = pa.array(np.arange(0, (n + 1) * sig.NUM_CLASSES, sig.NUM_CLASSES, dtype=np.int32))
        return pa.Table.from_arrays(
            [
                pa.array([m[0] for m in metas], pa.string()),
                pa.array(classes, pa.int64()),
                pa.array([self._class_names[c] for c in classes.tolist()], pa.string()),
                pa.ListArray.from_arrays(offsets, flat),
                pa.array(labels, pa.int64()),
                pa.array([self._model_name] * n, pa.string()),
                pa.array([version] * n, pa.int64()),
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
        ("predicted_class_name", pa.string()),
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
