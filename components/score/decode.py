"""Turning encoded images and pixel rows into uint8 images of the model's shape ([28, 28, 1] for MNIST,
[32, 32, 3] for CIFAR-10), or the reason a row cannot be one; shared by both engines' readers (`readers.py`).

Readers emit events, engine-neutral tuples that Beam's DoFns (`read.py`) and Spark's tasks (`spark_job.py`)
translate into their own outputs:
    (IMAGES, [(key, label, input)], uint8 [n, h, w, c])     a batch of good rows
    (FAILED, {"key", "reason", "input"})                  a row that cannot become an image
    (READ, input, n)                                      n rows read (once per batch)
Encoded images are decoded a batch at a time in one TF graph call; only a batch holding a bad image is
diagnosed image by image. Pixel rows are converted with vectorised numpy per batch. No image is resized or
converted: another size, or a colour image for a grey model or the reverse, is a failure with that reason.
"""

from __future__ import annotations

import hashlib

import numpy as np

from serving import signatures as sig

IMAGES = "images"
FAILED = "failed"
READ = "read"


def default_key(data: bytes) -> str:
    """The key of a row without one: the SHA-1 of its image (encoded bytes, or the pixel bytes)."""
    return hashlib.sha1(data).hexdigest()[:16]


def readable(exc: BaseException) -> str:
    """The first line of an exception's message, as text (TF's messages can quote raw, non-UTF-8 bytes)."""
    if isinstance(exc, UnicodeDecodeError):
        return "TensorFlow's error message is not text (it quotes the bad bytes)"
    text = (getattr(exc, "message", None) or str(exc)).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line[:200]}" if line else type(exc).__name__


class Batch:
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
            yield IMAGES, self.metas, np.stack(self.images)


def failed(key: str, reason: str, source: str) -> tuple:
    return FAILED, {"key": key, "reason": reason, "input": source}


def _magic(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    return None


class ImageDecoder:
    """Encoded PNG or JPEG -> uint8 `shape` (the model's: height, width, channels) or the reason it is not one.
    Build once per worker (it traces a TF graph)."""

    def __init__(self, shape=sig.DEFAULT_IMAGE_SHAPE):
        import tensorflow as tf

        self.shape = tuple(shape)
        spec = tf.TensorSpec(list(self.shape), tf.uint8)

        def decode(data):
            image = tf.io.decode_image(data, channels=0, dtype=tf.uint8, expand_animations=False)
            return tf.ensure_shape(image, list(self.shape))  # fails the batch for another size, or grey/colour

        # No AutoGraph here or in the readers' graphs: no Python control flow to convert, and converting them
        # cost ~0.1 s of every job's start-up.
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
        def decode_batch(data):
            return tf.map_fn(decode, data, fn_output_signature=spec)

        self._tf = tf
        self._decode_batch = decode_batch
        self.graph = decode_batch  # for callers that decode inside their own tf.function

    def decode_all(self, encoded: list[bytes]) -> np.ndarray | None:
        """uint8 [n, *shape] when every image decodes to one of the model's shape, else None (then `decode`)."""
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
        return check_image(image, self.shape)


def check_image(image: np.ndarray, shape) -> np.ndarray | str:
    """`image` (uint8 [h, w, c]) when it is of `shape`, else the reason: its size, or grey where the model takes
    colour or the reverse (an alpha channel counts with its colours: grey+alpha is grey, RGBA colour)."""
    height, width, channels = image.shape
    want_height, want_width, want_channels = shape
    if (height, width) != (want_height, want_width):
        return (f"wrong size: {width}x{height} pixels, expected {want_width}x{want_height} "
                f"(images are not resized)")
    if channels != want_channels:
        kind = "colour image" if channels > 2 else "grey image"
        return (f"{kind}: {channels} channel{'s' if channels > 1 else ''}; the model takes "
                f"{sig.describe_image(shape)} images (images are not converted)")
    return image


def pixel_rows(pixels: np.ndarray, keys: list, shape=sig.DEFAULT_IMAGE_SHAPE) -> tuple[list, list]:
    """float or int [n, h*w*c] (NaN for a null; row, column, channel order) -> per row a uint8 `shape` image or
    a reason; keys filled in by SHA-1."""
    pixels = np.asarray(pixels)
    finite = np.isfinite(pixels) if pixels.dtype.kind == "f" else np.ones(pixels.shape, bool)
    ok = finite & (np.where(finite, pixels, 0) >= 0) & (np.where(finite, pixels, 0) <= 255)
    if pixels.dtype.kind == "f":
        ok &= np.where(finite, pixels, 0) == np.floor(np.where(finite, pixels, 0))
    images = np.where(ok, pixels, 0).astype(np.uint8).reshape(-1, *shape)
    good = ok.all(axis=1)
    results, out_keys = [], []
    for i, key in enumerate(keys):
        if good[i]:
            results.append(images[i])
        else:
            j = int(np.argmin(ok[i]))
            value = pixels[i, j].item()
            value = int(value) if finite[i, j] and float(value).is_integer() else value
            results.append(f"bad pixel: pixel{j} is {'missing' if not finite[i, j] else value}, "
                           f"expected an integer 0-255")
        out_keys.append(str(key) if key is not None else default_key(images[i].tobytes() if good[i] else
                                                                       pixels[i].tobytes()))
    return results, out_keys


class RowError(Exception):
    pass



def int_pixels(row: list[str], pixel_index: np.ndarray) -> np.ndarray:
    values = []
    for j in pixel_index:
        try:
            values.append(int(row[j]))
        except ValueError:
            raise RowError(f"bad pixel: pixel{len(values)} is {row[j][:20]!r}, not an integer") from None
    return np.array(values, np.int64)
