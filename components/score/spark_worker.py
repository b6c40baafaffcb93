"""What runs in Spark's Python workers: the model loaded once per worker process, and the scoring task that
turns units of input rows into Arrow batches of output rows (for `spark_job.py`; `spark_udf.py` shares the
model cache).

Spark reuses its Python workers across tasks (spark.python.worker.reuse, on by default), so the module-level
caches here hold one loaded SavedModel and one set of decoders (traced TF graphs) per worker process, not per
task or batch. No pyspark import: a worker receives plain Arrow record batches.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from serving import signatures as sig

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
_MODELS: dict[str, object] = {}
_DECODERS: dict = {}

PREDICTION, FAILED, READ = "prediction", "failed", "read"


def output_schema():
    """The Arrow schema of the task's output: one row per prediction, per failed row, and per batch read."""
    import pyarrow as pa

    return pa.schema([
        ("kind", pa.string()),  # PREDICTION, FAILED or READ
        ("input", pa.string()),  # the input the row is accounted to
        ("n", pa.int64()),  # READ: rows read; else 1
        ("key", pa.string()),
        ("line", pa.string()),  # the formatted output line (jsonl/csv prediction, failed row)
        ("label", pa.int64()),
        ("predicted_class", pa.int64()),
        ("predicted_class_name", pa.string()),
        ("probabilities", pa.list_(pa.float32())),  # parquet output only
        ("model_name", pa.string()),
        ("model_version", pa.int64()),
        ("reason", pa.string()),  # FAILED: the reason's kind (before the first colon)
    ])


def loaded_model(saved_model_dir: str):
    """The SavedModel at `saved_model_dir` as a `beam_model.BatchPredictor`, loaded once per process."""
    with _LOCK:
        model = _MODELS.get(saved_model_dir)
        if model is None:
            from components.beam_model import BatchPredictor

            log.info("loading SavedModel %s", saved_model_dir)
            model = _MODELS[saved_model_dir] = BatchPredictor(saved_model_dir, sig.SERVING_DEFAULT)
        return model


def predict(saved_model_dir: str, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [n, h, w, c] (the model's shape) -> (probabilities float32 [n, 10], classes int64 [n]) with serving_default, after
    the project's one scaling function (in the same graph call)."""
    return loaded_model(saved_model_dir)(images)


def image_decoder(shape=sig.DEFAULT_IMAGE_SHAPE):
    """The scoring job's PNG/JPEG decoder for images of `shape` (the model's), built once per process and shape
    (it traces a TF graph)."""
    from components.score.decode import ImageDecoder

    return _decoders().get(("image", tuple(shape)), lambda: ImageDecoder(shape))


def _decoders():
    from components.score.readers import Decoders

    with _LOCK:
        return _DECODERS.setdefault("decoders", Decoders())


class ScoreTask:
    """mapInArrow's function: record batches of units (source, path, start, stop) -> record batches of
    `output_schema()`, one per batch of at most `batch_size` input rows (the reader's batches). A batch the
    model fails on becomes failed rows ("inference failed: ..."), as in the Beam job."""

    def __init__(self, inputs, saved_model_dir: str, formatter_args: tuple, batch_size: int, counters=()):
        self.inputs = inputs
        self.counters = counters  # Spark accumulators (read, predicted, failed) for the driver's progress bar
        self.saved_model_dir = saved_model_dir
        self.formatter_args = formatter_args
        self.batch_size = batch_size

    def __call__(self, batches):
        from components.score.decode import FAILED as EV_FAILED
        from components.score.decode import IMAGES, readable
        from components.score.readers import Unit, read_unit
        from components.score.rows import RowFormatter

        formatter = RowFormatter(*self.formatter_args)
        decoders = _decoders()
        for batch in batches:
            columns = [batch.column(i).to_pylist() for i in range(4)]
            for source, path, start, stop in zip(*columns):
                for event in read_unit(self.inputs, Unit(source, path, start, stop), self.batch_size, decoders):
                    if event[0] == IMAGES:
                        _, metas, images = event
                        try:
                            probabilities, classes = predict(self.saved_model_dir, images)
                        except Exception as exc:  # the batch fails, with the reason, like Beam's dead letters
                            reason = f"inference failed: {readable(exc)}"
                            self._count(2, len(metas))
                            yield self._failed([{"key": m[0], "reason": reason, "input": m[2]} for m in metas])
                            continue
                        self._count(1, len(metas))
                        yield self._predictions(formatter, metas, probabilities, classes)
                    elif event[0] == EV_FAILED:
                        self._count(2, 1)
                        yield self._failed([event[1]])
                    else:
                        self._count(0, event[2])
                        yield self._rows(READ, [event[1]], n=[event[2]])

    def _count(self, which: int, n: int) -> None:
        if self.counters:
            self.counters[which].add(n)

    def _rows(self, kind: str, inputs: list, **columns):
        import pyarrow as pa

        schema = output_schema()
        n = len(inputs)
        data = {"kind": [kind] * n, "input": inputs, "n": [1] * n, **columns}
        return pa.RecordBatch.from_arrays(
            [pa.array(data.get(f.name, [None] * n), f.type) for f in schema], schema=schema)

    def _failed(self, rows: list[dict]):
        from components.score.rows import failed_line, reason_kind

        return self._rows(FAILED, [r["input"] for r in rows], key=[r["key"] for r in rows],
                          line=[failed_line(r) for r in rows], reason=[reason_kind(r["reason"]) for r in rows])

    def _predictions(self, formatter, metas, probabilities, classes):
        if formatter.format == "parquet":
            table = formatter.table(metas, probabilities, classes)
            columns = {name: table.column(name).to_pylist() for name in table.column_names}
        else:
            columns = {"key": [m[0] for m in metas], "label": [m[1] for m in metas],
                       "predicted_class": classes.tolist(),
                       "line": formatter.lines(metas, probabilities, classes)}
        return self._rows(PREDICTION, [m[2] for m in metas], **columns)
