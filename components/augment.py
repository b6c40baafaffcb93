"""Training-time augmentation as one Keras layer: a random affine warp per image in a single fused op.

    x = RandomAffine(translate=0.1, rotate=0.1, zoom=0.1, seed=1, name="aug_affine")(inputs)

Keras's RandomTranslation, RandomRotation and RandomZoom each build a transform and resample the whole batch;
this layer composes the three into one matrix per image and resamples once (ImageProjectiveTransformV3,
bilinear, black fill like MNIST's background). At inference (training=False) it is the identity, so the
exported serving graph is a plain forward pass. Registered with Keras, so a `model.keras` that has it
reloads once this module is imported (`components.model` imports it).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="mnist_pipeline")
class RandomAffine(keras.layers.Layer):
    """Random shift (a fraction of the side), rotation (a fraction of a full turn, as RandomRotation's factor)
    and zoom (scale 1 +- zoom) of float [b, h, w, c] images, drawn independently per image."""

    def __init__(self, translate: float = 0.1, rotate: float = 0.0, zoom: float = 0.0, seed: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        for name, value in (("translate", translate), ("rotate", rotate), ("zoom", zoom)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"RandomAffine {name} must be in [0, 1), got {value}")
        self.translate, self.rotate, self.zoom, self.seed = float(translate), float(rotate), float(zoom), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=False):
        if not training:
            return images
        shape = tf.shape(images)
        b, h, w = shape[0], tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)

        def uniform(limit):
            return keras.random.uniform((b,), -limit, limit, seed=self.seed_generator)

        angle = uniform(2.0 * math.pi * self.rotate)
        scale = 1.0 + uniform(self.zoom)
        tx, ty = uniform(self.translate) * w, uniform(self.translate) * h
        # The transform maps each output pixel to the input pixel it samples: rotate and scale about the
        # centre, then shift.
        cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
        cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
        a0, a1, b0, b1 = cos, -sin, sin, cos
        a2 = cx - a0 * cx - a1 * cy - tx
        b2 = cy - b0 * cx - b1 * cy - ty
        zeros = tf.zeros_like(a0)
        transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=shape[1:3], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="CONSTANT",
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "translate": self.translate, "rotate": self.rotate, "zoom": self.zoom,
                "seed": self.seed}
