"""A scoring job's output rows and summary figures, for both engines (Beam's `write.py`, Spark's `spark_job.py`):
the same bytes per prediction row whichever engine wrote it.

    fmt = RowFormatter("jsonl", "mnist", 3, class_names)
    text = fmt.lines(metas, probabilities, classes)          # jsonl or csv lines of one batch
    table = fmt.table(metas, probabilities, classes)         # parquet: a pyarrow Table (parquet_schema())
    stats = new_stats(); add_batch(stats, metas, classes)    # counts, confusion, predictions per input
    summary_figures(stats, failed_by_reason, failed_by_input, read_by_input)   # summary.json's figures
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii as _json_string  # json.dumps's own (C) string encoder

import numpy as np

from serving import signatures as sig

CSV_COLUMNS = (
    "key", "predicted_class", "predicted_class_name", "label", "model_name", "model_version",
    *(f"probability_{i}" for i in range(sig.NUM_CLASSES)),
)


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


def csv_field(value: str) -> str:
    if any(c in value for c in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


class RowFormatter:
    """One batch's predictions -> its output rows: JSON lines, CSV lines (CSV_COLUMNS) or a pyarrow Table.

    `metas` are (key, label, input); predicted_class_name comes from the model's class names ("Coat" beside 4;
    MNIST's are "0".."9"); `version` is the version that answered the batch (a served model), else the job's."""

    def __init__(self, output_format: str, model_name: str, model_version: int | None,
                 class_names: tuple[str, ...] | None = None):
        self.format = output_format
        self._class_names = tuple(class_names) if class_names else tuple(sig.default_class_names())
        self._model_name = model_name
        self._model_version = model_version
        self._name_json = json.dumps(model_name)
        self._name_csv = csv_field(model_name)
        self._class_json = [json.dumps(n) for n in self._class_names]
        self._class_csv = [csv_field(n) for n in self._class_names]

    def lines(self, metas, probabilities, classes, version=None) -> list[str]:
        """JSON or CSV lines, one per row (one tolist and one finiteness check per batch, not per row)."""
        version = self._model_version if version is None else version
        line = self._csv_line if self.format == "csv" else self._json_line
        finite = bool(np.isfinite(probabilities).all())
        return [line(meta[0], meta[1], c, p, version, finite)
                for meta, c, p in zip(metas, np.asarray(classes).tolist(), np.asarray(probabilities).tolist())]

    def _json_line(self, key, label, predicted, values, version, finite=True) -> str:
        """What json.dumps writes for the row, built directly (json.dumps costs several microseconds a row; the
        repr of a list of floats is its JSON array)."""
        if not finite:  # json writes NaN/Infinity, repr would not
            return json.dumps({"key": key, "predicted_class": predicted,
                               "predicted_class_name": self._class_names[predicted], "probabilities": values,
                               "label": label, "model_name": self._model_name, "model_version": version})
        return (
            f'{{"key": {_json_string(key)}, "predicted_class": {predicted}, '
            f'"predicted_class_name": {self._class_json[predicted]}, '
            f'"probabilities": {values!r}, "label": {"null" if label is None else label}, '
            f'"model_name": {self._name_json}, "model_version": {"null" if version is None else int(version)}}}'
        )

    def _csv_line(self, key, label, predicted, values, version, finite=True) -> str:
        return ",".join([csv_field(key), str(predicted), self._class_csv[predicted],
                         "" if label is None else str(label), self._name_csv,
                         "" if version is None else str(int(version)), *map(repr, values)])

    def table(self, metas, probabilities, classes, version=None):
        import pyarrow as pa

        version = self._model_version if version is None else version
        n = len(metas)
        classes = np.asarray(classes, np.int64)
        flat = pa.array(np.asarray(probabilities, np.float32).reshape(-1))
        offsets = pa.array(np.arange(0, (n + 1) * sig.NUM_CLASSES, sig.NUM_CLASSES, dtype=np.int32))
        return pa.Table.from_arrays(
            [
                pa.array([m[0] for m in metas], pa.string()),
                pa.array(classes, pa.int64()),
                pa.array([self._class_names[c] for c in classes.tolist()], pa.string()),
                pa.ListArray.from_arrays(offsets, flat),
                pa.array([m[1] for m in metas], pa.int64()),
                pa.array([self._model_name] * n, pa.string()),
                pa.array([version] * n, pa.int64()),
            ],
            schema=parquet_schema(),
        )


def failed_line(row: dict) -> str:
    """A failed row {"key", "reason", "input"} as its JSON line."""
    return json.dumps(row)


def reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0]


def new_stats() -> list:
    """[predictions, labeled, correct, confusion as a flat list (row = label, column = predicted),
    {input: predictions}]."""
    return [0, 0, 0, [0] * (sig.NUM_CLASSES * sig.NUM_CLASSES), {}]


def add_batch(stats: list, metas, classes) -> None:
    """Count one batch of predictions (metas: (key, label, input)) into `stats`."""
    classes = np.asarray(classes, np.int64)
    stats[0] += len(metas)
    for meta in metas:
        stats[4][meta[2]] = stats[4].get(meta[2], 0) + 1
    labeled = np.array([-1 if meta[1] is None else meta[1] for meta in metas], np.int64)
    ok = (labeled >= 0) & (labeled < sig.NUM_CLASSES)
    if ok.any():
        stats[1] += int(ok.sum())
        stats[2] += int((labeled[ok] == classes[ok]).sum())
        cells = np.bincount(labeled[ok] * sig.NUM_CLASSES + classes[ok], minlength=sig.NUM_CLASSES ** 2)
        stats[3] = [a + int(b) for a, b in zip(stats[3], cells)]


def add_counts(stats: list, predicted_by_input: dict, cells) -> None:
    """Count predictions already aggregated elsewhere (Spark's groupBy) into `stats`: `predicted_by_input`
    {input: predictions}, and `cells` (label, predicted class, count) of the labeled ones."""
    for source, n in predicted_by_input.items():
        stats[4][source] = stats[4].get(source, 0) + n
        stats[0] += n
    k = sig.NUM_CLASSES
    for label, predicted, n in cells:
        stats[1] += n
        stats[2] += n if label == predicted else 0
        stats[3][label * k + predicted] += n


def merge_stats(stats: list, other: list) -> None:
    stats[0] += other[0]
    stats[1] += other[1]
    stats[2] += other[2]
    stats[3] = [a + b for a, b in zip(stats[3], other[3])]
    for source, n in other[4].items():
        stats[4][source] = stats[4].get(source, 0) + n


def summary_figures(stats: list, reasons: dict, failed: dict, read: dict) -> dict:
    """summary.json's figures from the prediction stats and the failed (by reason kind, by input) and read
    (by input) counts; `accounted` says whether read = predicted + failed for every input."""
    n, labeled, correct, confusion, predicted = stats
    k = sig.NUM_CLASSES
    files = {
        source: {"read": read.get(source, 0), "predicted": predicted.get(source, 0), "failed": failed.get(source, 0)}
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
