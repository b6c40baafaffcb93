"""The one preprocessing function: uint8 HxWxC images -> float32 HxWxC in [0, 1].

Training, evaluation, batch scoring and the exported serving graph all call `scale_images` (and
`decode_png` where images arrive encoded), so the four can never disagree. The shape (height, width,
channels) is the dataset's (TFDS info), recorded with the model: 28x28x1 for MNIST, 32x32x3 for CIFAR-10.
"""

from __future__ import annotations

import tensorflow as tf

from serving.signatures import DEFAULT_IMAGE_SHAPE, IMAGE_SIZE, describe_image


def scale_images(images: tf.Tensor) -> tf.Tensor:
    """uint8 [..., h, w, c] (or MNIST's [..., 28, 28]) -> float32 [..., h, w, c] in [0, 1]."""
    images = tf.convert_to_tensor(images)
    if images.shape.rank is not None and images.shape.rank >= 1 and images.shape[-1] == IMAGE_SIZE:
        images = images[..., tf.newaxis]
    return tf.cast(images, tf.float32) / 255.0


def decode_png(png_bytes: tf.Tensor, shape=DEFAULT_IMAGE_SHAPE) -> tf.Tensor:
    """One encoded PNG or JPEG (string scalar) -> uint8 `shape` (height, width, channels).

    Fails for another size, and for a grey image given to a colour model or the reverse: images are not
    converted, so a wrong input is refused rather than silently classified. An alpha channel is dropped
    (grey+alpha counts as grey, RGBA as colour)."""
    height, width, channels = shape
    image = tf.io.decode_image(png_bytes, channels=0, dtype=tf.uint8, expand_animations=False)
    checks = [
        tf.debugging.assert_equal(
            tf.shape(image)[2] <= 2, channels == 1,
            message=f"image channels do not match the model, which takes {describe_image(shape)} images "
                    f"({channels} channel{'s' if channels > 1 else ''}); grey and colour images are not converted",
        ),
        tf.debugging.assert_equal(
            tf.shape(image)[:2], [height, width], message=f"image must be {width}x{height} pixels"
        ),
    ]
    # The checks run before the shape is asserted, so a wrong image fails with their message, not EnsureShape's.
    with tf.control_dependencies([c for c in checks if c is not None]):  # None: run eagerly, already checked
        image = tf.identity(image[..., :channels])
    return tf.ensure_shape(image, [height, width, channels])


def decode_and_scale_pngs(png_batch: tf.Tensor, shape=DEFAULT_IMAGE_SHAPE) -> tf.Tensor:
    """string [batch] of PNGs (or JPEGs) -> float32 [batch, *shape] in [0, 1]."""
    images = tf.map_fn(lambda png: decode_png(png, shape), png_batch,
                       fn_output_signature=tf.TensorSpec(list(shape), tf.uint8))
    return scale_images(images)
