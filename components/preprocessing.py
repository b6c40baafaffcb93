"""The one preprocessing function: uint8 28x28 (or 28x28x1) images -> float32 28x28x1 in [0, 1].

Training, evaluation, batch scoring and the exported serving graph all call `scale_images` (and
`decode_png` where images arrive encoded), so the four can never disagree.
"""

from __future__ import annotations

import tensorflow as tf

from serving.signatures import IMAGE_SIZE


def scale_images(images: tf.Tensor) -> tf.Tensor:
    """uint8 [..., 28, 28] or [..., 28, 28, 1] -> float32 [..., 28, 28, 1] in [0, 1]."""
    images = tf.convert_to_tensor(images)
    if images.shape.rank is not None and images.shape.rank >= 1 and images.shape[-1] == IMAGE_SIZE:
        images = images[..., tf.newaxis]
    return tf.cast(images, tf.float32) / 255.0


def decode_png(png_bytes: tf.Tensor) -> tf.Tensor:
    """One encoded PNG (string scalar) -> uint8 [28, 28, 1]; fails for other sizes."""
    image = tf.io.decode_png(png_bytes, channels=1)
    tf.debugging.assert_equal(
        tf.shape(image)[:2], [IMAGE_SIZE, IMAGE_SIZE], message="image must be 28x28 pixels"
    )
    return tf.ensure_shape(image, [IMAGE_SIZE, IMAGE_SIZE, 1])


def decode_and_scale_pngs(png_batch: tf.Tensor) -> tf.Tensor:
    """string [batch] of PNGs -> float32 [batch, 28, 28, 1] in [0, 1]."""
    images = tf.map_fn(decode_png, png_batch, fn_output_signature=tf.TensorSpec([IMAGE_SIZE, IMAGE_SIZE, 1], tf.uint8))
    return scale_images(images)
