"""The Keras models and their training recipes, chosen by name (`train.architecture`).

    model = build_model("default", seed=42)      # uncompiled; float32 [b,28,28,1] in [0,1] -> softmax [b,10]
    r = recipe("default")                         # Recipe(epochs=..., batch_size=..., learning_rate=..., ...)
    resolve_precision(r.precision)                # "float32" or "mixed_bfloat16" on this machine (for build_model)
    compile_model(model, r, total_steps=422 * r.epochs)  # optimizer, schedule, loss and metrics as the recipe says

- `seed`: the TensorFlow tutorial CNN, exactly (adam, 5 epochs, batch 32): the baseline.
- `default`: a small CNN (valid convolutions, batch norm, dropout; 304k parameters, about 6M multiply-adds
  per image) with random shift/rotation/zoom done by one layer inside the model (`components.augment`;
  active only in training, so the exported serving graph is a plain forward pass), trained with larger
  batches and a one-cycle learning rate (linear warmup, cosine decay).

`default` trains in mixed bfloat16 where the hardware computes it natively ("auto", `resolve_precision`), `seed`
in float32; `train.precision` overrides either. The trainer saves the model computing in float32 either way.

The input is named `serving.signatures.KERAS_INPUT_NAME`; the output is softmax probabilities.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.errors import ConfigError
from serving.signatures import IMAGE_SIZE, KERAS_INPUT_NAME, NUM_CLASSES

# Training's compute dtype (train.precision, Recipe.precision): "auto" is mixed_bfloat16 where the hardware
# computes bfloat16 natively (resolve_precision), else float32; mixed_bfloat16 is Keras's mixed precision.
PRECISIONS = ("auto", "float32", "mixed_bfloat16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"train.precision {precision!r} is unknown; choose one of {', '.join(PRECISIONS)}")


@dataclass(frozen=True)
class Recipe:
    """How an architecture is trained when the config leaves a value unset (None)."""

    epochs: int
    batch_size: int
    learning_rate: float  # the peak rate for "one_cycle", the rate for "constant"
    schedule: str = "constant"  # "constant" or "one_cycle" (linear warmup, then cosine decay)
    warmup_fraction: float = 0.0  # one_cycle: share of all steps spent warming up
    weight_decay: float = 0.0  # AdamW's decoupled weight decay (Keras scales it by the learning rate); 0: Adam
    # After training, recompute every batch norm's moving statistics from this many clean (unaugmented)
    # training images, with the final weights ("precise BN"); 0: keep the moving averages from training.
    recalibrate_bn_examples: int = 0
    label_smoothing: float = 0.0  # 0: Keras's sparse categorical cross-entropy
    # Keep an exponential moving average of the weights and use it as the final weights (Keras's use_ema).
    ema_momentum: float = 0.0  # 0: no averaging
    steps_per_execution: int = 1  # optimizer steps per call into the compiled train function
    # The compute dtype in training (PRECISIONS); the trained model is saved computing in float32.
    precision: str = "float32"


_RECIPES = {
    "seed": Recipe(epochs=5, batch_size=32, learning_rate=0.001),
    "default": Recipe(
        epochs=7, batch_size=128, learning_rate=0.004, schedule="one_cycle", warmup_fraction=0.15,
        # Keras's AdamW decays by learning_rate * weight_decay per step: 0.05 shrinks the weights noticeably
        # over the run, where 1e-4 did next to nothing. precision "auto": mixed bfloat16 where the hardware
        # computes it natively (resolve_precision), float32 elsewhere. Measured (`bench/train.py --seeds 0,1,2`,
        # one run on the 2-core VM, whose CPU has AMX-BF16, so mixed_bfloat16): test accuracy 99.64%, 99.65%,
        # 99.66% (mean 99.65%) in 155-220 s, 1.05x the seed CNN's training time measured alternately in the
        # same run (0.93-1.21x per seed). The same recipe in float32 (`--precision float32`, an earlier run):
        # 99.67%, 99.70%, 99.67% (mean 99.68%) in 249-253 s, 1.49x. Nine bfloat16 epochs gave no more (mean
        # 99.64%); dropout 0.2 instead of 0.3 gave less. A narrower version (32-64-128 channels, 3.1M
        # multiply-adds; exploratory runs outside the bench) averaged 99.62% in 7 float32 epochs.
        # Not bit-for-bit reproducible across machines, precisions or thread counts.
        weight_decay=0.05,
        label_smoothing=0.1,
        recalibrate_bn_examples=10_000,
        precision="auto",
    ),
}


def architectures() -> tuple[str, ...]:
    return tuple(_RECIPES)


def check_architecture(architecture: str) -> None:
    if architecture not in _RECIPES:
        known = ", ".join(_RECIPES)
        raise ConfigError(f"unknown architecture {architecture!r}; known architectures: {known}")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:  # not Linux
        pass
    return set()


def resolve_precision(precision: str, *, cpu_flags: set[str] | None = None, gpus=None) -> str:
    """The compute dtype policy `precision` means on this machine: "float32" or "mixed_bfloat16".

    "auto" is mixed_bfloat16 only where bfloat16 is computed natively, so it is faster and never emulated: a GPU
    of compute capability 8.0 or newer, or a CPU with AMX-BF16 (Intel Xeon 4th generation on) while TensorFlow's
    oneDNN kernels are on (TF_ENABLE_ONEDNN_OPTS not 0). `cpu_flags` and `gpus` ([(major, minor)], the compute
    capabilities) are read from the machine when None.
    """
    check_precision(precision)
    if precision != "auto":
        return precision
    if gpus is None:
        import tensorflow as tf

        gpus = [tf.config.experimental.get_device_details(d).get("compute_capability", (0, 0))
                for d in tf.config.list_physical_devices("GPU")]
    if gpus:
        return "mixed_bfloat16" if all(tuple(c) >= (8, 0) for c in gpus) else "float32"
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() not in ("0", "false")
    flags = _cpu_flags() if cpu_flags is None else cpu_flags
    return "mixed_bfloat16" if onednn and "amx_bf16" in flags else "float32"


def recipe(architecture: str) -> Recipe:
    """The training recipe of `architecture`; a ConfigError naming it if it is unknown."""
    check_architecture(architecture)
    return _RECIPES[architecture]


def _seed_cnn(keras, inputs, seed: int):
    layers = keras.layers
    x = layers.Conv2D(32, (3, 3), activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D((2, 2), name="pool1")(x)
    x = layers.Conv2D(64, (3, 3), activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D((2, 2), name="pool2")(x)
    x = layers.Conv2D(64, (3, 3), activation="relu", name="conv3")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation="relu", name="dense")(x)
    return layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities", dtype="float32")(x)


# The batch norm layers' moving statistics follow the last ~10 batches (Keras's default 0.99: ~100), so the
# validation accuracy Keras reports (and ModelCheckpoint's best epoch) is that of the current weights while
# they still move fast: 97.7-98.8% after the first epoch here, where 0.99 gave 94-97%. Training itself never
# reads these statistics, and the exported model does not depend on them: precise BN
# (Recipe.recalibrate_bn_examples) replaces them after training.
_BN_MOMENTUM = 0.9


def _default_cnn(keras, inputs, seed: int):
    from components.augment import RandomAffine

    layers = keras.layers
    # Augmentation: per-image random shift (up to 10% of the side), rotation (up to about 11 degrees) and zoom
    # (+-10%) in one fused resampling op; the identity at inference, so serving sees none of it.
    # It computes in float32 whatever the training precision: the first convolution then casts its output.
    x = RandomAffine(translate=0.1, rotate=0.03, zoom=0.1, seed=seed, name="aug_affine", dtype="float32")(inputs)

    def conv_bn(x, filters, kernel_size, name, *, pool=False):
        x = layers.Conv2D(filters, kernel_size, padding="valid", use_bias=False, name=name)(x)
        if pool:
            # Pool before batch norm and ReLU: they then run on a quarter of the values. On a 2-core CPU these
            # memory-bound ops on the largest maps cost more than the convolutions' arithmetic.
            x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
        x = layers.BatchNormalization(momentum=_BN_MOMENTUM, name=f"{name}_bn")(x)
        return layers.Activation("relu", name=f"{name}_relu")(x)

    # Valid (unpadded) convolutions shrink the maps fast, so the compute per image stays near the tutorial
    # CNN's (about 4.6M multiply-adds against its 2.8M; the previous default had 8.2M and 803k of its 898k
    # parameters in one dense layer on a 7x7x128 map): 28 -> 24 -> pool 12 -> 10 -> pool 5 -> 3.
    x = conv_bn(x, 48, 5, "conv1", pool=True)
    x = conv_bn(x, 96, 3, "conv2", pool=True)
    x = conv_bn(x, 128, 3, "conv3")
    x = layers.Flatten(name="flatten")(x)  # 3x3x128: the dense layer still sees where features fired
    x = layers.Dense(128, use_bias=False, name="dense")(x)
    x = layers.BatchNormalization(momentum=_BN_MOMENTUM, name="dense_bn")(x)
    x = layers.Activation("relu", name="dense_relu")(x)
    x = layers.Dropout(0.3, seed=seed + 3, name="dropout")(x)
    return layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities", dtype="float32")(x)


_BUILDERS: dict[str, Callable] = {"seed": _seed_cnn, "default": _default_cnn}


def build_model(architecture: str, *, seed: int, precision: str = "float32"):
    """An uncompiled `keras.Model`: float32 [b, 28, 28, 1] in [0, 1] (input named KERAS_INPUT_NAME) -> [b, 10].

    `precision` "mixed_bfloat16" builds it with Keras's mixed precision: the hidden layers compute in bfloat16
    and keep float32 weights; the input, the augmentation and the softmax output stay float32.
    """
    check_architecture(architecture)
    if precision not in ("float32", "mixed_bfloat16"):
        raise ConfigError(f"precision {precision!r} cannot build a model; resolve it first (resolve_precision)")
    import keras

    keras.utils.set_random_seed(seed)  # weight initialisation is reproducible
    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), dtype="float32", name=KERAS_INPUT_NAME)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)  # the policy of every layer built without its own dtype
    try:
        outputs = _BUILDERS[architecture](keras, inputs, seed)
    finally:
        keras.config.set_dtype_policy(previous)
    return keras.Model(inputs, outputs, name=f"mnist_{architecture}")


def with_float32_compute(model, architecture: str, *, seed: int):
    """`model` (built by build_model, any precision) as a model computing in float32, with the same weights.

    Mixed precision keeps every variable in float32, so the weights carry over exactly. The trainer saves this
    one: evaluation, export and TF Serving then run a plain float32 graph on any hardware.
    """
    twin = build_model(architecture, seed=seed, precision="float32")
    twin.set_weights(model.get_weights())
    return twin


def learning_rate_schedule(r: Recipe, *, total_steps: int, learning_rate: float | None = None):
    """The recipe's learning rate: a float, or a Keras schedule over `total_steps` optimizer steps."""
    import keras

    peak = learning_rate if learning_rate is not None else r.learning_rate
    if r.schedule == "constant":
        return peak
    if r.schedule == "one_cycle":
        warmup = max(1, int(math.ceil(total_steps * r.warmup_fraction)))
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=peak / 25.0,
            decay_steps=max(1, total_steps - warmup),
            alpha=1e-3,
            warmup_target=peak,
            warmup_steps=warmup,
        )
    raise ConfigError(f"unknown learning-rate schedule {r.schedule!r} in the recipe; use constant or one_cycle")


def compile_model(model, r: Recipe, *, total_steps: int, learning_rate: float | None = None, jit_compile="auto"):
    """Compile `model` for training as recipe `r` says (Adam or AdamW, sparse cross-entropy with or without
    label smoothing, accuracy)."""
    import keras

    lr = learning_rate_schedule(r, total_steps=total_steps, learning_rate=learning_rate)
    ema = {"use_ema": True, "ema_momentum": r.ema_momentum} if r.ema_momentum else {}
    if r.weight_decay:
        optimizer = keras.optimizers.AdamW(learning_rate=lr, weight_decay=r.weight_decay, **ema)
    else:
        optimizer = keras.optimizers.Adam(learning_rate=lr, **ema)
    if r.label_smoothing:
        from components.losses import SparseCategoricalCrossentropyWithLabelSmoothing

        loss = SparseCategoricalCrossentropyWithLabelSmoothing(label_smoothing=r.label_smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=["accuracy"],
        jit_compile=jit_compile,
        steps_per_execution=r.steps_per_execution,
    )
    return model


def recalibrate_batch_norm(model, dataset, *, max_examples: int) -> int:
    """Recompute each BatchNormalization layer's moving mean and variance from `dataset` ("precise BN").

    During training the moving statistics are averages over augmented batches taken while the weights were
    still moving; at inference the model sees clean images with its final weights. This replaces them with
    the population statistics of clean images under the final weights, layer by layer in graph order (each
    layer's inputs computed in inference mode with the layers before it already recalibrated), as PreciseBN
    does (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021). `dataset` yields (images, labels) batches;
    at most `max_examples` images are used. Returns the number of images used.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers or max_examples <= 0:
        return 0
    # Read the images once: the training dataset refills a large shuffle buffer on every pass over it.
    images = list(dataset.map(lambda x, _y: x).unbatch().take(max_examples).batch(1000))
    for layer in layers:
        features = keras.Model(model.input, layer.input)

        @tf.function(reduce_retracing=True)
        def sums(x, features=features):
            h = tf.cast(features(x, training=False), tf.float64)
            h = tf.reshape(h, [-1, h.shape[-1]])  # one row per position of every image
            return tf.reduce_sum(h, 0), tf.reduce_sum(tf.square(h), 0), tf.shape(h)[0]

        total = total_sq = 0.0
        rows = used = 0
        for batch in images:
            s, sq, n = sums(batch)
            total, total_sq, rows, used = total + s.numpy(), total_sq + sq.numpy(), rows + int(n), used + len(batch)
        mean = total / rows
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(np.maximum(total_sq / rows - mean**2, 0.0).astype(np.float32))
    return used
