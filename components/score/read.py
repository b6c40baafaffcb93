"""Beam steps that read each input format into batches of keyed images: ([(key, label, input)], uint8 [n, h, w, c]),
of the model's image shape (`Inputs.image_shape`).

    images, failed, read = read_inputs(p, check_inputs(pattern), min_batch_size=1, max_batch_size=256)

The reading itself is `readers.py`'s, shared with the Spark engine; the DoFns here translate its events:
a batch of good rows to the main output, each bad row to `failed` as {"key", "reason", "input"}, and
(input, number of rows read) once per batch to `read`, so the summary can prove read = predicted + failed
per input. The counters examples_read / examples_failed are the job's progress (see `progress.py`).
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from components.score.ahead import AheadDoFn
from components.score.decode import FAILED, IMAGES, READ, default_key, readable  # noqa: F401 (re-exported)
from components.score.inputs import Inputs
from components.score.progress import TALLY
from components.score.readers import (
    CsvReader,
    ExampleDecoder,
    ImageFileDecoder,
    TableDecoder,
    parquet_columns,
    tfrecord_chunks,
)

METRICS_NAMESPACE = "mnist_score"
FAILED_TAG = FAILED
READ_TAG = READ


class _EventsDoFn(beam.DoFn):
    """Translates reader events into Beam outputs and counters."""

    def __init__(self):
        self._failed_counter = Metrics.counter(METRICS_NAMESPACE, "examples_failed")
        self._read_counter = Metrics.counter(METRICS_NAMESPACE, "examples_read")

    def _emit(self, events):
        for event in events:
            kind = event[0]
            if kind == IMAGES:
                yield event[1], event[2]
            elif kind == FAILED:
                self._failed_counter.inc()
                TALLY.add(failed=1)
                yield beam.pvalue.TaggedOutput(FAILED_TAG, event[1])
            else:
                self._read_counter.inc(event[2])
                TALLY.add(read=event[2])
                yield beam.pvalue.TaggedOutput(READ_TAG, (event[1], event[2]))


class _DecodeAheadDoFn(AheadDoFn, _EventsDoFn):
    """An _EventsDoFn whose decoding (`work`: an element -> its list of events) runs one element ahead on a
    background thread (`ahead.AheadDoFn`): the next batch is parsed and decoded while RunInference predicts
    this one, as tf.data's map overlaps the model call."""

    def outputs(self, events: list):
        return self._emit(events)


class ReadTFRecordFiles(beam.DoFn):
    """A TFRecord file -> (file, [serialized record, ...]) in lists of `batch_size` (`readers.tfrecord_chunks`)."""

    def __init__(self, batch_size: int):
        self._batch_size = batch_size

    def process(self, path: str):
        for records in tfrecord_chunks(path, self._batch_size):
            yield path, records


class DecodeExamples(_DecodeAheadDoFn):
    """(file, [serialized tf.Example]) -> ([(key, label, file)], images); bad records to `failed`."""

    def __init__(self, shape):
        super().__init__()
        self._shape = shape  # the model's image shape

    def setup(self):
        super().setup()
        self._examples = ExampleDecoder(self._shape)

    def work(self, element: tuple[str, list[bytes]]) -> list:
        return list(self._examples.decode(*element))


class DecodeTables(_DecodeAheadDoFn):
    """(file, pyarrow.Table) from Beam's Parquet reader -> ([(key, label, file)], images); bad rows to `failed`."""

    def __init__(self, inputs: Inputs, batch_size: int = 256):
        super().__init__()
        self._inputs = inputs
        self._batch_size = batch_size

    def setup(self):
        super().setup()
        self._tables = TableDecoder(self._inputs, self._batch_size)

    def work(self, element) -> list:
        return list(self._tables.decode(*element))


class ReadCsvFiles(_EventsDoFn):
    """A CSV file (Kaggle's digit-recognizer layout) -> ([(key, label, file)], images); bad rows to `failed`."""

    def __init__(self, columns, chunk_rows: int, shape):
        super().__init__()
        self._reader = CsvReader(columns, chunk_rows, shape)

    def process(self, path: str):
        yield from self._emit(self._reader.read(path))


class DecodeImageFiles(_DecodeAheadDoFn):
    """A batch of image file paths -> ([(path relative to the folder, None, folder)], images); bad ones to `failed`."""

    def __init__(self, root: str, shape):
        super().__init__()
        self._root = root
        self._shape = shape  # the model's image shape

    def setup(self):
        super().setup()
        self._files = ImageFileDecoder(self._root, self._shape)

    def work(self, paths: list[str]) -> list:
        return list(self._files.decode(paths))


def _slices(element, batch_size: int):
    """(file, a Parquet row group as a pyarrow Table) -> (file, zero-copy slices of `batch_size` rows), so that
    Decode, which decodes one element ahead, holds one batch's images at a time, not a whole row group's."""
    path, table = element
    for start in range(0, table.num_rows, batch_size):
        yield path, table.slice(start, batch_size)


def read_inputs(p: beam.Pipeline, inputs: Inputs, *, min_batch_size: int, max_batch_size: int):
    """(images, failed, read) PCollections for `inputs` (see the module docstring)."""
    outputs = (FAILED_TAG, READ_TAG)
    batch = {"min_batch_size": min_batch_size, "max_batch_size": max_batch_size}
    files = p | "ListFiles" >> beam.Create(list(inputs.files))
    if inputs.format == "tfrecord":
        decoded = (
            files
            | "Spread" >> beam.Reshuffle()
            | "ReadExamples" >> beam.ParDo(ReadTFRecordFiles(max_batch_size))
            | "Decode" >> beam.ParDo(DecodeExamples(inputs.image_shape)).with_outputs(*outputs, main="images")
        )
    elif inputs.format == "parquet":
        decoded = (
            files
            | "ReadParquet" >> beam.io.ReadAllFromParquetBatched(columns=parquet_columns(inputs), with_filename=True)
            | "Slice" >> beam.FlatMap(_slices, max_batch_size)
            | "Decode" >> beam.ParDo(DecodeTables(inputs, max_batch_size)).with_outputs(*outputs, main="images")
        )
    elif inputs.format == "csv":
        decoded = (
            files
            | "Spread" >> beam.Reshuffle()
            | "ReadCsv" >> beam.ParDo(ReadCsvFiles(inputs.columns, max_batch_size, inputs.image_shape))
            .with_outputs(*outputs, main="images")
        )
    elif inputs.format == "images":
        decoded = (
            files
            | "Spread" >> beam.Reshuffle()
            | "BatchFiles" >> beam.BatchElements(**batch)
            | "Decode" >> beam.ParDo(DecodeImageFiles(inputs.root, inputs.image_shape)).with_outputs(*outputs, main="images")
        )
    else:  # checked by inputs.detect_format
        raise ValueError(inputs.format)
    return decoded.images, decoded[FAILED_TAG], decoded[READ_TAG]
