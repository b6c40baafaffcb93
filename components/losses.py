"""Losses the training recipes use beyond Keras's own (`components.model.compile_model` picks them).

Registered with Keras, so a compiled `model.keras` reloads once this module is imported:

    import components.losses  # noqa: F401  (registers the classes)
    model = keras.models.load_model("artifacts/runs/<id>/train/model.keras")

or load it with `compile=False` to predict only. The exported SavedModel needs neither.
"""

from __future__ import annotations

import keras

from serving.signatures import NUM_CLASSES


@keras.saving.register_keras_serializable(package="mnist_pipeline")
class SparseCategoricalCrossentropyWithLabelSmoothing(keras.losses.Loss):
    """Cross-entropy on integer labels with label smoothing, which `keras.losses.SparseCategoricalCrossentropy`
    lacks: the target puts 1 - label_smoothing + label_smoothing / num_classes on the true class and
    label_smoothing / num_classes on each other one (as `keras.losses.CategoricalCrossentropy` does with
    one-hot labels). `y_pred` are probabilities."""

    def __init__(
        self,
        label_smoothing: float = 0.0,
        num_classes: int = NUM_CLASSES,
        name: str = "sparse_categorical_crossentropy_with_label_smoothing",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self.num_classes = int(num_classes)

    def call(self, y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        one_hot = keras.ops.one_hot(labels, self.num_classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(one_hot, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing, "num_classes": self.num_classes}
