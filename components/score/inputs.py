"""Scoring inputs: the four formats, their layouts and keys, and the file-level checks run before the job.

    inputs = check_inputs("samples/test-*.parquet")          # format from --input-format or the extension
    inputs.format, inputs.layout, inputs.expected             # "parquet", "image", {file: rows}

Formats (every row: a key, an optional label, an image of the model's shape: 28x28 grey for MNIST, 32x32
colour for CIFAR-10; pixel columns then number h*w*c, 784 or 3,072, in row, column, channel order):
  tfrecord  tf.Example records: `image` PNG/JPEG bytes, optional `label` int64 and `key` bytes (TFDS's names);
            key: `key`, else the SHA-1 of the image bytes. `.gz` files are read as gzip.
  parquet   an image column of encoded bytes (PNG, JPEG), or 784 integer columns pixel0..pixel783 (0-255,
            row-major); optional label and key columns; key: the key column, else the SHA-1 of the image
            (encoded bytes, or the 784 pixel bytes).
  csv       Kaggle's digit-recognizer layout: a header, then label,pixel0,...,pixel783 (train) or
            pixel0,...,pixel783 (test); optional key column anywhere; key: the key column, else
            `<file name>:<row>` (row 1-based, header excluded: Kaggle's ImageId for its test.csv).
  images    a folder (searched recursively for .png, .jpg, .jpeg) or a glob of image files; key: the path
            relative to the folder (for a glob: to its folder part); no label.
Column names (image, label, key) are configurable (`Columns`).

File-level problems raise `DataError` naming the file, before any output is written: a pattern matching
nothing, a folder without images, a folder given where files are expected, a TFRecord file that is truncated,
has a bad length or CRC, or is another format (a PNG, a gzip without `.gz`); a Parquet file that cannot be
read or lacks the columns; a CSV file that is empty or whose header lacks the pixel columns. The checks also
count each file's rows, so the job can prove that every input was either predicted or failed.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
from dataclasses import dataclass, field

from apache_beam.io.filesystems import FileSystems

from components.score.options import INPUT_FORMATS, Columns
from pipeline.errors import ConfigError, DataError
from serving import signatures as sig

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def pixel_columns(shape=sig.DEFAULT_IMAGE_SHAPE) -> tuple[str, ...]:
    """pixel0..pixel{h*w*c - 1}: the pixel columns of an image of `shape` (row, column, channel order)."""
    height, width, channels = shape
    return tuple(f"pixel{i}" for i in range(height * width * channels))


PIXEL_COLUMNS = pixel_columns()  # MNIST's 784
NUM_PIXELS = len(PIXEL_COLUMNS)


@dataclass(frozen=True)
class Inputs:
    """Checked inputs: the files to read and how many rows each holds (the unit of account)."""

    format: str
    pattern: str
    files: tuple[str, ...]  # for images: every image file
    expected: dict[str, int] = field(default_factory=dict)  # accounting unit -> rows counted before the job
    layout: str | None = None  # parquet: "image" or "pixels"
    columns: Columns = Columns()
    has_label: bool = False  # parquet
    has_key: bool = False  # parquet
    root: str | None = None  # images: keys are paths relative to this folder; it is also the unit of account
    image_shape: tuple[int, int, int] = sig.DEFAULT_IMAGE_SHAPE  # the model's (height, width, channels)

    @property
    def pixel_columns(self) -> tuple[str, ...]:
        return pixel_columns(self.image_shape)


def detect_format(pattern: str, input_format: str | None = None) -> str:
    """`input_format` when given, else from the pattern: a folder or .png/.jpg/.jpeg -> images, .parquet,
    .csv[.gz], anything else (.tfrecord, TFDS's `*.tfrecord-00000-of-00001`) -> tfrecord."""
    if input_format:
        if input_format not in INPUT_FORMATS:
            raise ConfigError(f"unknown input format {input_format!r}; choose one of {', '.join(INPUT_FORMATS)}")
        return input_format
    name = pattern.rstrip("/").lower()
    name = name[:-3] if name.endswith(".gz") else name
    if pattern.endswith("/") or ("://" not in pattern and os.path.isdir(pattern)):
        return "images"
    if name.endswith(IMAGE_SUFFIXES):
        return "images"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".csv"):
        return "csv"
    return "tfrecord"


def _match(pattern: str, what: str) -> list[str]:
    try:
        matched = FileSystems.match([pattern])[0].metadata_list
    except Exception as exc:  # BeamIOError for a bad scheme or folder
        raise DataError(f"input pattern {pattern!r} cannot be matched: {exc}") from exc
    files = sorted(m.path for m in matched)
    if not files:
        raise DataError(f"input pattern {pattern!r} matches no file; give {what}")
    for path in files:
        if "://" not in path and os.path.isdir(path):
            raise DataError(f"input {path!r} is a folder, not a file of {what}; give a file pattern "
                            f"(or --input-format images for a folder of images)")
    return files


def check_inputs(pattern: str, input_format: str | None = None, columns: Columns | None = None,
                 image_shape=sig.DEFAULT_IMAGE_SHAPE) -> Inputs:
    """Detect the format, list the files, check each one and count its rows (see the module docstring);
    `image_shape` is the model's (pixel columns and decoded images must have it)."""
    columns = columns or Columns()
    fmt = detect_format(pattern, input_format)
    image_shape = tuple(image_shape)
    inputs = {"tfrecord": _check_tfrecord, "parquet": _check_parquet, "csv": _check_csv,
              "images": _check_images}[fmt](pattern, columns, pixel_columns(image_shape))
    return dataclasses.replace(inputs, image_shape=image_shape)


def _first_line(exc: BaseException) -> str:
    text = (getattr(exc, "message", None) or str(exc) or type(exc).__name__).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def record_iterator(path: str, options):
    """TF's C++ TFRecord reader (tf.compat.v1.io.tf_record_iterator, without its deprecation notice: the
    tf.data replacement costs seconds of start-up per process, this one microseconds)."""
    import tensorflow as tf
    from tensorflow.python.util import deprecation

    with deprecation.silence():
        yield from tf.compat.v1.io.tf_record_iterator(path, options=options)


def _check_tfrecord(pattern: str, columns: Columns, pixels: tuple[str, ...]) -> Inputs:
    import tensorflow as tf

    files = _match(pattern, "TFRecord files of tf.Example")
    expected = {}
    for path in files:
        options = tf.io.TFRecordOptions("GZIP" if path.endswith(".gz") else "")
        try:  # TF's C++ record reader checks every length and CRC (about 2 ms per 1,000 records)
            n = sum(1 for _ in record_iterator(path, options))
        except Exception as exc:  # DataLossError, OutOfRangeError, a UnicodeDecodeError of TF's message
            raise DataError(
                f"input file {path!r} is not a readable TFRecord file ({_first_line(exc)}): it is truncated, "
                f"corrupt (bad length or CRC), compressed without a .gz suffix, or another format "
                f"(give --input-format for Parquet, CSV or images)") from exc
        expected[path] = n
    return Inputs("tfrecord", pattern, tuple(files), expected, columns=columns)


def _parquet_layout(path: str, schema, columns: Columns, pixels: tuple[str, ...]) -> tuple[str, bool, bool]:
    import pyarrow as pa

    names = set(schema.names)
    if columns.image in names:
        if not (pa.types.is_binary(schema.field(columns.image).type)
                or pa.types.is_large_binary(schema.field(columns.image).type)):
            raise DataError(f"input file {path!r}: column {columns.image!r} is {schema.field(columns.image).type}, "
                            f"expected binary (encoded PNG or JPEG)")
        layout = "image"
    else:
        missing = [c for c in pixels if c not in names]
        if missing:
            raise DataError(
                f"input file {path!r} has neither an image column {columns.image!r} (encoded bytes) nor the "
                f"{len(pixels)} pixel columns pixel0..{pixels[-1]} of the model's images (missing {len(missing)}, "
                f"e.g. {missing[0]!r}); "
                f"its columns: {', '.join(schema.names[:8])}{' ...' if len(schema.names) > 8 else ''} "
                f"(name the image column with --image-column)")
        bad = [c for c in pixels if not pa.types.is_integer(schema.field(c).type)]
        if bad:
            raise DataError(f"input file {path!r}: pixel column {bad[0]!r} is {schema.field(bad[0]).type}, "
                            f"expected integers 0-255")
        layout = "pixels"
    has_label = columns.label in names
    if has_label and not pa.types.is_integer(schema.field(columns.label).type):
        raise DataError(f"input file {path!r}: label column {columns.label!r} is "
                        f"{schema.field(columns.label).type}, expected integers")
    return layout, has_label, columns.key in names


def _check_parquet(pattern: str, columns: Columns, pixels: tuple[str, ...]) -> Inputs:
    import pyarrow.parquet as pq

    files = _match(pattern, "Parquet files")
    expected, layouts = {}, set()
    for path in files:
        try:
            with FileSystems.open(path, compression_type="uncompressed") as fh:
                meta = pq.ParquetFile(io.BytesIO(fh.read()) if "://" in path else path).metadata
                schema = meta.schema.to_arrow_schema()
        except Exception as exc:  # ArrowInvalid, OSError
            raise DataError(f"input file {path!r} is not a readable Parquet file ({_first_line(exc)})") from exc
        layouts.add(_parquet_layout(path, schema, columns, pixels))
        expected[path] = meta.num_rows
    if len(layouts) > 1:
        raise DataError(f"input files of {pattern!r} differ in layout (image or pixel columns, label, key): "
                        f"{sorted(layouts)}; score them separately")
    layout, has_label, has_key = layouts.pop()
    return Inputs("parquet", pattern, tuple(files), expected, layout=layout, columns=columns,
                  has_label=has_label, has_key=has_key)


def csv_header(path: str, header_line: str, columns: Columns, pixels: tuple[str, ...] = PIXEL_COLUMNS) -> dict[str, int]:
    """Column name -> index; a DataError naming the file when pixel columns (`pixels`, the model's) are missing."""
    names = next(csv.reader([header_line]), [])
    index = {name.strip(): i for i, name in enumerate(names)}
    missing = [c for c in pixels if c not in index]
    if missing:
        raise DataError(
            f"input file {path!r}: its header lacks {len(missing)} of the pixel columns pixel0..{pixels[-1]} "
            f"of the model's images (e.g. {missing[0]!r}); expected Kaggle's digit-recognizer layout: "
            f"[label,]pixel0,...,{pixels[-1]} with an optional {columns.key!r} column")
    return index


def _check_csv(pattern: str, columns: Columns, pixels: tuple[str, ...]) -> Inputs:
    files = _match(pattern, "CSV files (Kaggle's digit-recognizer layout)")
    expected = {}
    for path in files:
        try:
            with FileSystems.open(path) as raw:  # .gz by suffix
                fh = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
                header = fh.readline()
                if not header.strip():
                    raise DataError(f"input file {path!r} is empty: a CSV file needs a header line "
                                    f"([label,]pixel0,...,pixel783)")
                csv_header(path, header, columns, pixels)
                expected[path] = sum(1 for line in fh if line.strip())
        except DataError:
            raise
        except Exception as exc:  # OSError, a bad gzip
            raise DataError(f"input file {path!r} cannot be read as CSV ({_first_line(exc)})") from exc
    return Inputs("csv", pattern, tuple(files), expected, columns=columns)


def _check_images(pattern: str, columns: Columns, pixels: tuple[str, ...]) -> Inputs:
    if "://" not in pattern and os.path.isdir(pattern):
        root = pattern.rstrip("/") or "/"
        files = sorted(
            os.path.join(d, f) for d, _, names in os.walk(root) for f in names if f.lower().endswith(IMAGE_SUFFIXES))
        if not files:
            raise DataError(f"input folder {pattern!r} holds no image files ({', '.join(IMAGE_SUFFIXES)}); "
                            f"give a folder of PNG or JPEG files, or a file pattern")
    else:
        files = _match(pattern, "image files (PNG or JPEG)")
        cut = min((pattern.find(c) for c in "*?[" if c in pattern), default=len(pattern))
        root = pattern[:cut].rsplit("/", 1)[0] if "/" in pattern[:cut] else "."
    return Inputs("images", pattern, tuple(files), {root: len(files)}, columns=columns, root=root)


def image_key(path: str, root: str) -> str:
    """The key of an image file: its path relative to the input folder."""
    if "://" in path or "://" in root:
        return path[len(root.rstrip("/")) + 1:] if path.startswith(root.rstrip("/") + "/") else path
    return os.path.relpath(path, root)
