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
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from components.score.ahead import AheadDoFn
from components.score.progress import TALLY
from components.score.read import FAILED_TAG, METRICS_NAMESPACE, READ_TAG
from components.score.rows import (
    RowFormatter,
    add_batch,
    merge_stats,
    new_stats,
    reason_kind,
    summary_figures,
)

STATS_TAG = "stats"
SUMMARY_FILE = "summary.json"
PREDICTIONS_PREFIX = "predictions"
FAILED_PREFIX = "failed"


class FormatPredictions(AheadDoFn):
    """PredictionResult(([(key, label, input)], images), ...) -> one chunk of output rows per batch, plus
    per-bundle statistics.

    `PredictionResult.inference` is (probabilities [n, 10], classes [n], version that answered or None);
    without a version the rows get `model_version`. A chunk is text lines joined by newlines (WriteToText
    writes it as it is) or a pyarrow Table (WriteToParquetBatched), made by `rows.RowFormatter` one batch
    ahead on a background thread (`ahead.AheadDoFn`: formatting overlaps the model call on the next batch).
    Counts, the confusion matrix and predictions per input accumulate per bundle and leave on the `stats`
    output at the end of the bundle (combiner lifting by hand). Assumes the global window (a batch job).
    """

    def __init__(self, output_format: str, model_name: str, model_version: int | None,
                 class_names: tuple[str, ...] | None = None):
        self._args = (output_format, model_name, model_version, class_names)
        self._predictions = Metrics.counter(METRICS_NAMESPACE, "predictions")

    def setup(self):
        super().setup()
        self._formatter = RowFormatter(*self._args)

    def start_bundle(self):
        super().start_bundle()
        self._stats = new_stats()

    def work(self, result):
        metas, _ = result.example
        probabilities, classes, version = result.inference
        if self._formatter.format == "parquet":
            chunk = self._formatter.table(metas, probabilities, classes, version)
        else:
            chunk = "\n".join(self._formatter.lines(metas, probabilities, classes, version))
        return metas, classes, chunk

    def outputs(self, formatted):
        metas, classes, chunk = formatted
        add_batch(self._stats, metas, classes)
        self._predictions.inc(len(metas))
        TALLY.add(predicted=len(metas))
        yield chunk

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue

        yield from super().finish_bundle()
        window = GlobalWindow()
        if self._stats[0]:
            yield beam.pvalue.TaggedOutput(STATS_TAG, WindowedValue(self._stats, window.max_timestamp(), (window,)))
        self._stats = new_stats()


def _add(counts: dict, key, n: int) -> None:
    counts[key] = counts.get(key, 0) + n


class _SummaryFn(beam.CombineFn):
    """("stats", per-bundle statistics), ("failed", (reason kind, input)), ("read", (input, n)) -> figures."""

    def create_accumulator(self):
        return [new_stats(), {}, {}, {}]  # stats, failed by reason, failed by input, read by input

    def add_input(self, acc, element):
        kind, value = element
        if kind == STATS_TAG:
            merge_stats(acc[0], value)
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
        return summary_figures(*acc)


def summary_header(model, server, inputs, output_format: str, output_dir: str) -> dict:
    """summary.json's description of the job (model, inputs, output names), the same for both engines."""
    return {
        "model": {"saved_model_dir": model.saved_model_dir, "name": model.name, "version": model.version,
                  "server": server.address if server else None},
        "class_names": list(model.class_names),
        "input_pattern": inputs.pattern,
        "input_format": inputs.format,
        "format": output_format,
        "predictions_pattern": FileSystems.join(output_dir, f"{PREDICTIONS_PREFIX}-*.{output_format}"),
        "failed_pattern": FileSystems.join(output_dir, f"{FAILED_PREFIX}-*.jsonl"),
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
                failed | "TagFailed" >> beam.Map(lambda row: (FAILED_TAG, (reason_kind(row["reason"]), row["input"]))),
                read | "TagRead" >> beam.Map(lambda counts: (READ_TAG, counts)),
            )
            | "Merge" >> beam.Flatten()
            | "Combine" >> beam.CombineGlobally(_SummaryFn())
            | "WriteSummary" >> beam.Map(write)
        )
