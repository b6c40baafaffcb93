"""Beam steps that read each input format into batches of keyed images: ([(key, label, input)], uint8 [n, 28, 28, 1]).

    images, failed, read = read_inputs(p, check_inputs(pattern), min_batch_size=1, max_batch_size=256)

Every step also emits, on the `read` output, (input, number of rows read) once per batch, so the summary can
prove read = predicted + failed per input; rows it cannot turn into an image go to `failed` as
{"key", "reason", "input"}, whatever exception their decoding raised (a failure never escapes a row).
Encoded images (tf.Example `image`, a Parquet image column, image files) are decoded a batch at a time in
one TF graph call; only a batch holding a bad image is diagnosed image by image. Pixel rows (CSV, Parquet
pixel columns) are converted with vectorised numpy per batch. No image is resized or converted: another
size or more than one channel (colour) is a failure with that reason.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from components.score.inputs import PIXEL_COLUMNS, Inputs, csv_header, image_key, record_iterator
from serving import signatures as sig

METRICS_NAMESPACE = "mnist_score"
FAILED_TAG = "failed"
READ_TAG = "read"
SIZE = sig.IMAGE_SIZE


def default_key(data: bytes) -> str:
    """The key of a row without one: the SHA-1 of its image (encoded bytes, or the 784 pixel bytes)."""
    return hashlib.sha1(data).hexdigest()[:16]


def readable(exc: BaseException) -> str:
    """The first line of an exception's message, as text (TF's messages can quote raw, non-UTF-8 bytes)."""
    if isinstance(exc, UnicodeDecodeError):
        return "TensorFlow's error message is not text (it quotes the bad bytes)"
    text = (getattr(exc, "message", None) or str(exc)).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line[:200]}" if line else type(exc).__name__


class _Batch:
    """The good rows of one input batch, emitted as one element: ([(key, label, input)], uint8 [n, 28, 28, 1]).

    Batches, not rows, travel through RunInference and formatting: Beam's per-element cost is paid once per
    batch (tens of microseconds per element and step add up to seconds at 10,000 rows)."""

    def __init__(self):
        self.metas: list = []
        self.images: list = []

    def add(self, meta: tuple, image: np.ndarray) -> None:
        self.metas.append(meta)
        self.images.append(image)

    def emit(self):
        if self.metas:
            yield self.metas, np.stack(self.images)


def _failed(key: str, reason: str, source: str):
    return beam.pvalue.TaggedOutput(FAILED_TAG, {"key": key, "reason": reason, "input": source})


def _magic(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    return None


class ImageDecoder:
    """Encoded PNG or JPEG -> uint8 [28, 28, 1] or the reason it is not one. Build in `DoFn.setup`."""

    def __init__(self):
        import tensorflow as tf

        spec = tf.TensorSpec([SIZE, SIZE, 1], tf.uint8)

        def decode(data):
            image = tf.io.decode_image(data, channels=0, dtype=tf.uint8, expand_animations=False)
            return tf.ensure_shape(image, [SIZE, SIZE, 1])  # fails the batch for another size or colour

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def decode_batch(data):
            return tf.map_fn(decode, data, fn_output_signature=spec)

        self._tf = tf
        self._decode_batch = decode_batch

    def decode_all(self, encoded: list[bytes]) -> np.ndarray | None:
        """uint8 [n, 28, 28, 1] when every image decodes to a grey 28x28 one, else None (then `decode`)."""
        try:
            return self._decode_batch(encoded).numpy() if encoded else None
        except Exception:  # InvalidArgumentError, or UnicodeDecodeError of its message
            return None

    def decode(self, encoded: list[bytes]) -> list:
        """One entry per input: an image array, or a reason (str)."""
        images = self.decode_all(encoded)
        if images is not None:
            return list(images)
        return self.diagnose(encoded)

    def diagnose(self, encoded: list[bytes]) -> list:
        """`decode` image by image: for a batch known to hold a bad one."""
        return [self._one(data) for data in encoded]

    def _one(self, data: bytes):
        if not data:
            return "undecodable image: empty (0 bytes)"
        kind = _magic(data)
        if kind is None:
            return f"undecodable image: not a PNG or JPEG (starts with {data[:8]!r})"
        try:
            image = self._tf.io.decode_image(data, channels=0, dtype=self._tf.uint8, expand_animations=False).numpy()
        except Exception as exc:
            return f"undecodable image: a damaged {kind.upper()} ({readable(exc)})"
        height, width, channels = image.shape
        if (height, width) != (SIZE, SIZE):
            return f"wrong size: {height}x{width} pixels, expected {SIZE}x{SIZE} (images are not resized)"
        if channels != 1:
            return f"colour image: {channels} channels, expected 1 (grey; images are not converted)"
        return image


class ReadTFRecordFiles(beam.DoFn):
    """A TFRecord file -> (file, [serialized record, ...]) in lists of `batch_size`, read by TF's C++ record
    reader (lengths and CRCs checked; `.gz` as gzip): a few microseconds per record where a Python reader
    costs tens, which shows at 100,000 records."""

    def __init__(self, batch_size: int):
        self._batch_size = batch_size

    def process(self, path: str):
        import tensorflow as tf

        options = tf.io.TFRecordOptions("GZIP" if path.endswith(".gz") else "")
        batch = []
        for record in record_iterator(path, options):
            batch.append(record)
            if len(batch) >= self._batch_size:
                yield path, batch
                batch = []
        if batch:
            yield path, batch


class DecodeExamples(beam.DoFn):
    """(file, [serialized tf.Example]) -> ([(key, label, file)], images); bad records to `failed`."""

    def __init__(self):
        self._failed_counter = Metrics.counter(METRICS_NAMESPACE, "examples_failed")
        self._read_counter = Metrics.counter(METRICS_NAMESPACE, "examples_read")

    def setup(self):
        import tensorflow as tf

        spec = {
            sig.EXAMPLE_IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string),
            sig.EXAMPLE_LABEL_FEATURE: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
            sig.EXAMPLE_KEY_FEATURE: tf.io.FixedLenFeature([], tf.string, default_value=""),
        }
        self._images = ImageDecoder()

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def parse(records):
            f = tf.io.parse_example(records, spec)
            return f[sig.EXAMPLE_KEY_FEATURE], f[sig.EXAMPLE_LABEL_FEATURE], f[sig.EXAMPLE_IMAGE_FEATURE]

        self._parse = parse

    def process(self, element: tuple[str, list[bytes]]):
        source, records = element
        self._read_counter.inc(len(records))
        yield beam.pvalue.TaggedOutput(READ_TAG, (source, len(records)))
        try:
            keys, labels, pngs = (t.numpy().tolist() for t in self._parse(records))
        except Exception:  # a record that is not a tf.Example (its error message may not even be text)
            yield from self._one_by_one(source, records)
            return
        metas = [(key.decode("utf-8", "replace") if key else default_key(png), label if label >= 0 else None, source)
                 for key, label, png in zip(keys, labels, pngs)]
        images = self._images.decode_all(pngs)
        if images is not None:  # the common case: the whole batch as it came out of the graph
            yield metas, images
            return
        good = _Batch()
        for meta, image in zip(metas, self._images.diagnose(pngs)):
            if isinstance(image, str):
                self._failed_counter.inc()
                yield _failed(meta[0], image, source)
            else:
                good.add(meta, image)
        yield from good.emit()

    def _one_by_one(self, source: str, records: list[bytes]):
        good = _Batch()
        for record in records:
            key = default_key(record)
            try:
                key, label, result = self._diagnose(record)
            except Exception as exc:  # whatever a record raises, it fails alone, with a reason
                label, result = None, f"unexpected error: {readable(exc)}"
            if isinstance(result, str):
                self._failed_counter.inc()
                yield _failed(key, result, source)
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


class DecodeTables(beam.DoFn):
    """(file, pyarrow.Table) from Beam's Parquet reader -> ([(key, label, file)], images); bad rows to `failed`."""

    def __init__(self, inputs: Inputs, batch_size: int = 256):
        self._layout = inputs.layout
        self._columns = inputs.columns
        self._has_label = inputs.has_label
        self._has_key = inputs.has_key
        self._batch_size = batch_size
        self._failed_counter = Metrics.counter(METRICS_NAMESPACE, "examples_failed")
        self._read_counter = Metrics.counter(METRICS_NAMESPACE, "examples_read")

    def setup(self):
        self._images = ImageDecoder() if self._layout == "image" else None

    def process(self, element):
        source, table = element
        for start in range(0, table.num_rows, self._batch_size):
            yield from self._batch(source, table.slice(start, self._batch_size))

    def _batch(self, source: str, table):
        n = table.num_rows
        self._read_counter.inc(n)
        yield beam.pvalue.TaggedOutput(READ_TAG, (source, n))
        labels = table.column(self._columns.label).to_pylist() if self._has_label else [None] * n
        keys = table.column(self._columns.key).to_pylist() if self._has_key else [None] * n
        if self._layout == "image":
            data = table.column(self._columns.image).to_pylist()
            results = self._images.decode([d or b"" for d in data])
            keys = [str(k) if k is not None else default_key(d or b"") for k, d in zip(keys, data)]
        else:
            pixels = np.column_stack(
                [table.column(c).to_numpy(zero_copy_only=False) for c in PIXEL_COLUMNS]) if n else np.zeros((0, 784))
            results, keys = _pixel_rows(pixels, keys)
        good = _Batch()
        for key, label, result in zip(keys, labels, results):
            if isinstance(result, str):
                self._failed_counter.inc()
                yield _failed(key, result, source)
            elif label is not None and not 0 <= label < sig.NUM_CLASSES:
                self._failed_counter.inc()
                yield _failed(key, f"bad label: {label}, expected 0-{sig.NUM_CLASSES - 1}", source)
            else:
                good.add((key, label, source), result)
        yield from good.emit()


def _pixel_rows(pixels: np.ndarray, keys: list) -> tuple[list, list]:
    """float or int [n, 784] (NaN for a null) -> per row an image or a reason; keys filled in by SHA-1."""
    pixels = np.asarray(pixels)
    finite = np.isfinite(pixels) if pixels.dtype.kind == "f" else np.ones(pixels.shape, bool)
    ok = finite & (np.where(finite, pixels, 0) >= 0) & (np.where(finite, pixels, 0) <= 255)
    if pixels.dtype.kind == "f":
        ok &= np.where(finite, pixels, 0) == np.floor(np.where(finite, pixels, 0))
    images = np.where(ok, pixels, 0).astype(np.uint8).reshape(-1, SIZE, SIZE, 1)
    good = ok.all(axis=1)
    results, out_keys = [], []
    for i, key in enumerate(keys):
        if good[i]:
            results.append(images[i])
        else:
            j = int(np.argmin(ok[i]))
            value = pixels[i, j].item()
            value = int(value) if finite[i, j] and float(value).is_integer() else value
            results.append(f"bad pixel: {PIXEL_COLUMNS[j]} is {'missing' if not finite[i, j] else value}, "
                           f"expected an integer 0-255")
        out_keys.append(str(key) if key is not None else default_key(images[i].tobytes() if good[i] else
                                                                       pixels[i].tobytes()))
    return results, out_keys


class ReadCsvFiles(beam.DoFn):
    """A CSV file (Kaggle's digit-recognizer layout) -> ([(key, label, file)], images); bad rows to `failed`.

    Rows are parsed `chunk_rows` at a time: csv's C reader, then one numpy conversion for the chunk; only a
    chunk holding a bad row is converted row by row to find it."""

    def __init__(self, columns, chunk_rows: int = 256):
        self._columns = columns
        self._chunk_rows = chunk_rows
        self._failed_counter = Metrics.counter(METRICS_NAMESPACE, "examples_failed")
        self._read_counter = Metrics.counter(METRICS_NAMESPACE, "examples_read")

    def process(self, path: str):
        with FileSystems.open(path) as raw:
            fh = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
            index = csv_header(path, fh.readline(), self._columns)
            layout = (np.array([index[c] for c in PIXEL_COLUMNS]), index.get(self._columns.label),
                      index.get(self._columns.key), len(index))
            chunk, row = [], 0
            for line in fh:
                if not line.strip():
                    continue
                row += 1
                chunk.append((row, line))
                if len(chunk) >= self._chunk_rows:
                    yield from self._chunk(path, chunk, layout)
                    chunk = []
            if chunk:
                yield from self._chunk(path, chunk, layout)

    def _chunk(self, path: str, chunk: list[tuple[int, str]], layout):
        pixel_index, label_index, key_index, width = layout
        self._read_counter.inc(len(chunk))
        yield beam.pvalue.TaggedOutput(READ_TAG, (path, len(chunk)))
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
        good = _Batch()
        for i, (r, key) in enumerate(zip(rows, keys)):
            try:
                if len(r) != width:
                    raise _RowError(f"short row: {len(r)} fields, expected {width}" if len(r) < width
                                    else f"long row: {len(r)} fields, expected {width}")
                values = pixels[i] if pixels is not None else _int_pixels(r, pixel_index)
                bad = np.flatnonzero((values < 0) | (values > 255))
                if bad.size:
                    raise _RowError(f"bad pixel: {PIXEL_COLUMNS[bad[0]]} is {values[bad[0]]}, expected 0-255")
                label = None
                if label_index is not None:
                    try:
                        label = int(r[label_index])
                    except ValueError:
                        raise _RowError(f"bad label: {r[label_index][:20]!r} is not an integer") from None
                    if not 0 <= label < sig.NUM_CLASSES:
                        raise _RowError(f"bad label: {label}, expected 0-{sig.NUM_CLASSES - 1}")
            except _RowError as exc:
                self._failed_counter.inc()
                yield _failed(key, str(exc), path)
                continue
            good.add((key, label, path), values.astype(np.uint8).reshape(SIZE, SIZE, 1))
        yield from good.emit()


class _RowError(Exception):
    pass


def _int_pixels(row: list[str], pixel_index: np.ndarray) -> np.ndarray:
    values = []
    for j in pixel_index:
        try:
            values.append(int(row[j]))
        except ValueError:
            raise _RowError(f"bad pixel: {PIXEL_COLUMNS[len(values)]} is {row[j][:20]!r}, not an integer") from None
    return np.array(values, np.int64)


class DecodeImageFiles(beam.DoFn):
    """A batch of image file paths -> ([(path relative to the folder, None, folder)], images); bad ones to `failed`."""

    def __init__(self, root: str):
        self._root = root
        self._failed_counter = Metrics.counter(METRICS_NAMESPACE, "examples_failed")
        self._read_counter = Metrics.counter(METRICS_NAMESPACE, "examples_read")

    def setup(self):
        self._images = ImageDecoder()

    def process(self, paths: list[str]):
        self._read_counter.inc(len(paths))
        yield beam.pvalue.TaggedOutput(READ_TAG, (self._root, len(paths)))
        data, errors = [], {}
        for i, path in enumerate(paths):
            try:
                with FileSystems.open(path, compression_type="uncompressed") as fh:
                    data.append(fh.read())
            except Exception as exc:  # a file removed or unreadable since the check
                data.append(b"")
                errors[i] = f"undecodable image: cannot open ({readable(exc)})"
        results = self._images.decode(data)
        good = _Batch()
        for i, (path, result) in enumerate(zip(paths, results)):
            key = image_key(path, self._root)
            result = errors.get(i, result)
            if isinstance(result, str):
                self._failed_counter.inc()
                yield _failed(key, result, self._root)
            else:
                good.add((key, None, self._root), result)
        yield from good.emit()


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
            | "Decode" >> beam.ParDo(DecodeExamples()).with_outputs(*outputs, main="images")
        )
    elif inputs.format == "parquet":
        c = inputs.columns
        columns = [c.image] if inputs.layout == "image" else list(PIXEL_COLUMNS)
        columns += [c.label] if inputs.has_label else []
        columns += [c.key] if inputs.has_key else []
        decoded = (
            files
            | "ReadParquet" >> beam.io.ReadAllFromParquetBatched(columns=columns, with_filename=True)
            | "Decode" >> beam.ParDo(DecodeTables(inputs, max_batch_size)).with_outputs(*outputs, main="images")
        )
    elif inputs.format == "csv":
        decoded = (
            files
            | "Spread" >> beam.Reshuffle()
            | "ReadCsv" >> beam.ParDo(ReadCsvFiles(inputs.columns, max_batch_size)).with_outputs(*outputs, main="images")
        )
    elif inputs.format == "images":
        decoded = (
            files
            | "Spread" >> beam.Reshuffle()
            | "BatchFiles" >> beam.BatchElements(**batch)
            | "Decode" >> beam.ParDo(DecodeImageFiles(inputs.root)).with_outputs(*outputs, main="images")
        )
    else:  # checked by inputs.detect_format
        raise ValueError(inputs.format)
    return decoded.images, decoded[FAILED_TAG], decoded[READ_TAG]
