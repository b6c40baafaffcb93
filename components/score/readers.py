"""One reader per input format, shared by both engines (Beam's DoFns in `read.py`, Spark's tasks in
`spark_job.py`): each yields `decode`'s events (IMAGES batches, FAILED rows, READ counts once per batch, so
the summary can prove read = predicted + failed per input; a failure never escapes a row).

    for event in read_unit(inputs, unit, batch_size=256, decoders=Decoders()): ...

A unit (`Unit`) is a row range of one input file (images: a range of the image files), so an engine can
spread one large file over several tasks; `split_units` cuts the checked inputs into units.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass

import numpy as np

from components.score.decode import (
    FAILED,
    IMAGES,
    READ,
    Batch,
    ImageDecoder,
    RowError,
    default_key,
    failed,
    int_pixels,
    pixel_rows,
    readable,
)
from components.score.inputs import Inputs, csv_header, image_key, pixel_columns, record_iterator
from serving import signatures as sig

__all__ = ["FAILED", "IMAGES", "READ", "CsvReader", "Decoders", "ExampleDecoder", "ImageFileDecoder", "TableDecoder",
           "Unit", "parquet_columns", "read_unit", "split_units", "tfrecord_chunks"]


def _open(path: str):
    from apache_beam.io.filesystems import FileSystems  # any Beam file system (local, gs://, ...)

    return FileSystems.open(path, compression_type="uncompressed")


def tfrecord_chunks(path: str, batch_size: int, start: int = 0, stop: int | None = None):
    """A TFRecord file's records [start, stop) in lists of `batch_size`, read by TF's C++ record reader
    (lengths and CRCs checked; `.gz` as gzip): a few microseconds per record where a Python reader costs
    tens, which shows at 100,000 records."""
    import tensorflow as tf

    options = tf.io.TFRecordOptions("GZIP" if path.endswith(".gz") else "")
    batch = []
    for i, record in enumerate(record_iterator(path, options)):
        if i < start:
            continue
        if stop is not None and i >= stop:
            break
        batch.append(record)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


class ExampleDecoder:
    """(file, [serialized tf.Example]) -> events; bad records FAILED. Build once per worker; `shape` is the
    model's image shape."""

    def __init__(self, shape=sig.DEFAULT_IMAGE_SHAPE):
        import tensorflow as tf

        spec = {
            sig.EXAMPLE_IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string),
            sig.EXAMPLE_LABEL_FEATURE: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
            sig.EXAMPLE_KEY_FEATURE: tf.io.FixedLenFeature([], tf.string, default_value=""),
        }
        self._images = ImageDecoder(shape)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
        def parse(records):
            f = tf.io.parse_example(records, spec)
            return f[sig.EXAMPLE_KEY_FEATURE], f[sig.EXAMPLE_LABEL_FEATURE], f[sig.EXAMPLE_IMAGE_FEATURE]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
        def parse_and_decode(records):  # the common case in one graph call: every record parses and decodes
            keys, labels, pngs = parse(records)
            return keys, labels, pngs, self._images.graph(pngs)

        self._parse = parse
        self._parse_and_decode = parse_and_decode

    def decode(self, source: str, records: list[bytes]):
        yield READ, source, len(records)
        try:
            keys, labels, pngs, images = self._parse_and_decode(records)
        except Exception:  # a record that is not a tf.Example, or a bad image: found below, record by record
            pass
        else:
            yield IMAGES, self._metas(source, *(t.numpy().tolist() for t in (keys, labels, pngs))), images.numpy()
            return
        try:
            keys, labels, pngs = (t.numpy().tolist() for t in self._parse(records))
        except Exception:  # a record that is not a tf.Example (its error message may not even be text)
            yield from self._one_by_one(source, records)
            return
        metas = self._metas(source, keys, labels, pngs)
        images = self._images.decode_all(pngs)
        if images is not None:  # the common case: the whole batch as it came out of the graph
            yield IMAGES, metas, images
            return
        good = Batch()
        for meta, image in zip(metas, self._images.diagnose(pngs)):
            if isinstance(image, str):
                yield failed(meta[0], image, source)
            else:
                good.add(meta, image)
        yield from good.emit()

    @staticmethod
    def _metas(source: str, keys: list, labels: list, pngs: list) -> list:
        return [(key.decode("utf-8", "replace") if key else default_key(png), label if label >= 0 else None, source)
                for key, label, png in zip(keys, labels, pngs)]

    def _one_by_one(self, source: str, records: list[bytes]):
        good = Batch()
        for record in records:
            key = default_key(record)
            try:
                key, label, result = self._diagnose(record)
            except Exception as exc:  # whatever a record raises, it fails alone, with a reason
                label, result = None, f"unexpected error: {readable(exc)}"
            if isinstance(result, str):
                yield failed(key, result, source)
            else:
                good.add((key, label, source), result)
        yield from good.emit()

    def _diagnose(self, record: bytes):
        from google.protobuf.message import DecodeError
        from tensorflow.core.example import example_pb2

        key = default_key(record)
        try:
            feature = example_pb2.Example.FromString(record).features.feature
        except DecodeError:
            return key, None, "not a tf.Example: the record cannot be parsed"
        if sig.EXAMPLE_KEY_FEATURE in feature and feature[sig.EXAMPLE_KEY_FEATURE].bytes_list.value:
            key = feature[sig.EXAMPLE_KEY_FEATURE].bytes_list.value[0].decode("utf-8", "replace")
            keyed = True
        else:
            keyed = False
        images = feature[sig.EXAMPLE_IMAGE_FEATURE].bytes_list.value if sig.EXAMPLE_IMAGE_FEATURE in feature else []
        labels = feature[sig.EXAMPLE_LABEL_FEATURE].int64_list.value if sig.EXAMPLE_LABEL_FEATURE in feature else None
        if len(images) != 1:
            return key, None, (f"missing feature: {sig.EXAMPLE_IMAGE_FEATURE!r} must hold one PNG or JPEG (bytes), "
                               f"found {len(images)}")
        if labels is not None and len(labels) != 1:
            return key, None, f"bad feature: {sig.EXAMPLE_LABEL_FEATURE!r} must hold one int64, found {len(labels)}"
        if not keyed:
            key = default_key(images[0])
        return key, (labels[0] if labels else None), self._images.decode([images[0]])[0]


def parquet_columns(inputs: Inputs) -> list[str]:
    """The Parquet columns a job reads for `inputs`' layout."""
    c = inputs.columns
    columns = [c.image] if inputs.layout == "image" else list(inputs.pixel_columns)
    return columns + ([c.label] if inputs.has_label else []) + ([c.key] if inputs.has_key else [])


class TableDecoder:
    """(file, pyarrow.Table of `parquet_columns`) -> events per slice of `batch_size` rows; bad rows FAILED."""

    def __init__(self, inputs: Inputs, batch_size: int = 256):
        self._layout = inputs.layout
        self._columns = inputs.columns
        self._has_label = inputs.has_label
        self._has_key = inputs.has_key
        self._batch_size = batch_size
        self._shape = inputs.image_shape
        self._images = ImageDecoder(self._shape) if self._layout == "image" else None

    def decode(self, source: str, table):
        for start in range(0, table.num_rows, self._batch_size):
            yield from self._batch(source, table.slice(start, self._batch_size))

    def _batch(self, source: str, table):
        n = table.num_rows
        yield READ, source, n
        labels = table.column(self._columns.label).to_pylist() if self._has_label else [None] * n
        keys = table.column(self._columns.key).to_pylist() if self._has_key else [None] * n
        if self._layout == "image":
            data = table.column(self._columns.image).to_pylist()
            results = self._images.decode([d or b"" for d in data])
            keys = [str(k) if k is not None else default_key(d or b"") for k, d in zip(keys, data)]
        else:
            columns = pixel_columns(self._shape)
            pixels = np.column_stack([table.column(c).to_numpy(zero_copy_only=False) for c in columns]) if n \
                else np.zeros((0, len(columns)))
            results, keys = pixel_rows(pixels, keys, self._shape)
        good = Batch()
        for key, label, result in zip(keys, labels, results):
            if isinstance(result, str):
                yield failed(key, result, source)
            elif label is not None and not 0 <= label < sig.NUM_CLASSES:
                yield failed(key, f"bad label: {label}, expected 0-{sig.NUM_CLASSES - 1}", source)
            else:
                good.add((key, label, source), result)
        yield from good.emit()


class CsvReader:
    """A CSV file (Kaggle's digit-recognizer layout) -> events; bad rows FAILED.

    Rows are parsed `chunk_rows` at a time: csv's C reader, then one numpy conversion for the chunk; only a
    chunk holding a bad row is converted row by row to find it. `start`/`stop` select data rows (0-based,
    blank lines not counted); keys keep the row's number in the whole file. The pixel columns are those of
    `shape`, the model's (784 for 28x28 grey, 3,072 for 32x32 colour)."""

    def __init__(self, columns, chunk_rows: int = 256, shape=sig.DEFAULT_IMAGE_SHAPE):
        self._columns = columns
        self._chunk_rows = chunk_rows
        self._shape = tuple(shape)

    def read(self, path: str, start: int = 0, stop: int | None = None):
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as raw:  # .gz by suffix
            fh = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
            pixels = pixel_columns(self._shape)
            index = csv_header(path, fh.readline(), self._columns, pixels)
            layout = (np.array([index[c] for c in pixels]), index.get(self._columns.label),
                      index.get(self._columns.key), len(index))
            chunk, row = [], 0
            for line in fh:
                if not line.strip():
                    continue
                row += 1
                if row <= start:
                    continue
                if stop is not None and row > stop:
                    break
                chunk.append((row, line))
                if len(chunk) >= self._chunk_rows:
                    yield from self._chunk(path, chunk, layout)
                    chunk = []
            if chunk:
                yield from self._chunk(path, chunk, layout)

    def _chunk(self, path: str, chunk: list[tuple[int, str]], layout):
        pixel_index, label_index, key_index, width = layout
        yield READ, path, len(chunk)
        name = os.path.basename(path)
        rows = list(csv.reader(line for _, line in chunk))
        keys = [(r[key_index] if key_index is not None and len(r) > key_index else f"{name}:{n}")
                for (n, _), r in zip(chunk, rows)]
        whole = all(len(r) == width for r in rows)
        pixels = None
        if whole:
            try:
                pixels = np.array(rows)[:, pixel_index].astype(np.int64)
            except ValueError:
                pixels = None
        good = Batch()
        for i, (r, key) in enumerate(zip(rows, keys)):
            try:
                if len(r) != width:
                    raise RowError(f"short row: {len(r)} fields, expected {width}" if len(r) < width
                                    else f"long row: {len(r)} fields, expected {width}")
                values = pixels[i] if pixels is not None else int_pixels(r, pixel_index)
                bad = np.flatnonzero((values < 0) | (values > 255))
                if bad.size:
                    raise RowError(f"bad pixel: pixel{bad[0]} is {values[bad[0]]}, expected 0-255")
                label = None
                if label_index is not None:
                    try:
                        label = int(r[label_index])
                    except ValueError:
                        raise RowError(f"bad label: {r[label_index][:20]!r} is not an integer") from None
                    if not 0 <= label < sig.NUM_CLASSES:
                        raise RowError(f"bad label: {label}, expected 0-{sig.NUM_CLASSES - 1}")
            except RowError as exc:
                yield failed(key, str(exc), path)
                continue
            good.add((key, label, path), values.astype(np.uint8).reshape(self._shape))
        yield from good.emit()


class ImageFileDecoder:
    """Image file paths (one batch) -> events with keys relative to the folder `root`; bad files FAILED."""

    def __init__(self, root: str, shape=sig.DEFAULT_IMAGE_SHAPE):
        self._root = root
        self._images = ImageDecoder(shape)

    def decode(self, paths: list[str]):
        yield READ, self._root, len(paths)
        data, errors = [], {}
        for i, path in enumerate(paths):
            try:
                with _open(path) as fh:
                    data.append(fh.read())
            except Exception as exc:  # a file removed or unreadable since the check
                data.append(b"")
                errors[i] = f"undecodable image: cannot open ({readable(exc)})"
        results = self._images.decode(data)
        good = Batch()
        for i, (path, result) in enumerate(zip(paths, results)):
            key = image_key(path, self._root)
            result = errors.get(i, result)
            if isinstance(result, str):
                yield failed(key, result, self._root)
            else:
                good.add((key, None, self._root), result)
        yield from good.emit()

@dataclass(frozen=True)
class Unit:
    """Rows [start, stop) of one input file (images: of the list of image files); `source` is the input the
    summary accounts them to (the file; images: the folder)."""

    source: str
    path: str | None
    start: int
    stop: int


def split_units(inputs: Inputs, rows_per_unit: int) -> list[Unit]:
    """Cut every input into units of at most `rows_per_unit` rows (the counts come from the checks)."""
    rows_per_unit = max(1, rows_per_unit)
    if inputs.format == "images":
        n = len(inputs.files)
        return [Unit(inputs.root, None, a, min(a + rows_per_unit, n)) for a in range(0, n, rows_per_unit)]
    return [Unit(path, path, a, min(a + rows_per_unit, n))
            for path, n in inputs.expected.items() for a in range(0, n, rows_per_unit)]


class Decoders:
    """The per-format decoders of one worker process, built on first use (each traces a TF graph)."""

    def __init__(self):
        self._built: dict = {}

    def get(self, kind: str, make):
        if kind not in self._built:
            self._built[kind] = make()
        return self._built[kind]


def read_unit(inputs: Inputs, unit: Unit, batch_size: int, decoders: Decoders):
    """Events (see the module docstring) for the rows of `unit`, in batches of at most `batch_size`."""
    if inputs.format == "tfrecord":
        examples = decoders.get(("tfrecord", inputs.image_shape), lambda: ExampleDecoder(inputs.image_shape))
        for records in tfrecord_chunks(unit.path, batch_size, unit.start, unit.stop):
            yield from examples.decode(unit.source, records)
    elif inputs.format == "parquet":
        import pyarrow.parquet as pq

        with _open(unit.path) as fh:
            table = pq.read_table(io.BytesIO(fh.read()) if "://" in unit.path else unit.path,
                                  columns=parquet_columns(inputs))
        tables = decoders.get(("parquet", batch_size), lambda: TableDecoder(inputs, batch_size))
        yield from tables.decode(unit.source, table.slice(unit.start, unit.stop - unit.start))
    elif inputs.format == "csv":
        yield from CsvReader(inputs.columns, batch_size, inputs.image_shape).read(unit.path, unit.start, unit.stop)
    elif inputs.format == "images":
        files = decoders.get(("images", inputs.root, inputs.image_shape),
                             lambda: ImageFileDecoder(inputs.root, inputs.image_shape))
        paths = list(inputs.files[unit.start:unit.stop])
        for a in range(0, len(paths), batch_size):
            yield from files.decode(paths[a:a + batch_size])
    else:  # checked by inputs.detect_format
        raise ValueError(inputs.format)
