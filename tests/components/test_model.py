"""The architectures: named input, softmax output, the exact tutorial CNN, recipes, unknown names."""

from __future__ import annotations

import numpy as np
import pytest

from components import model as model_lib
from pipeline.errors import ConfigError
from serving.signatures import KERAS_INPUT_NAME


@pytest.mark.parametrize("architecture", ["default", "seed"])
def test_builds_with_named_input_and_softmax_output(architecture):
    model = model_lib.build_model(architecture, seed=1)
    assert [t.name for t in model.inputs] == [KERAS_INPUT_NAME]
    assert tuple(model.inputs[0].shape) == (None, 28, 28, 1)
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (3, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_same_seed_same_weights():
    a = model_lib.build_model("default", seed=7).get_weights()
    b = model_lib.build_model("default", seed=7).get_weights()
    c = model_lib.build_model("default", seed=8).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_seed_is_exactly_the_tutorial_cnn():
    model = model_lib.build_model("seed", seed=0)
    layers = [(type(l).__name__, l.get_config()) for l in model.layers[1:]]
    kinds = [k for k, _ in layers]
    assert kinds == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Conv2D", "Flatten", "Dense", "Dense"]
    convs = [c for k, c in layers if k == "Conv2D"]
    assert [(c["filters"], tuple(c["kernel_size"]), c["activation"]) for c in convs] == [
        (32, (3, 3), "relu"), (64, (3, 3), "relu"), (64, (3, 3), "relu")]
    dense = [c for k, c in layers if k == "Dense"]
    assert [(c["units"], c["activation"]) for c in dense] == [(64, "relu"), (10, "softmax")]
    assert model.count_params() == 93322  # the tutorial's summary
    r = model_lib.recipe("seed")
    assert (r.epochs, r.batch_size, r.learning_rate, r.schedule) == (5, 32, 0.001, "constant")
    model_lib.compile_model(model, r, total_steps=10)
    assert type(model.optimizer).__name__ == "Adam"
    assert type(model.loss).__name__ == "SparseCategoricalCrossentropy"


def test_default_augments_only_in_training():
    model = model_lib.build_model("default", seed=0)
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(model(x, training=False)), np.asarray(model(x, training=False)))
    aug = [l for l in model.layers if l.name.startswith("aug_")]
    assert aug, "the default architecture augments inside the model"
    shifted = x
    for layer in aug:
        shifted = layer(shifted, training=True)
    assert not np.allclose(np.asarray(shifted), x)
    inference = x
    for layer in aug:
        inference = layer(inference, training=False)
    np.testing.assert_array_equal(np.asarray(inference), x)


def test_default_is_small_and_reloads_with_its_augmentation_layer(tmp_path):
    import keras

    model = model_lib.build_model("default", seed=0)
    # No dense layer on a large map: the previous default spent 803k of its 898k parameters in one.
    assert model.count_params() < 350_000
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(reloaded(x, training=False)), np.asarray(model(x, training=False)),
                               rtol=1e-5, atol=1e-6)


def test_random_affine_moves_each_image_differently_and_keeps_shape():
    from components.augment import RandomAffine

    x = np.zeros((8, 28, 28, 1), np.float32)
    x[:, 10:18, 10:18] = 1.0
    layer = RandomAffine(translate=0.1, rotate=0.03, zoom=0.1, seed=3)
    y = np.asarray(layer(x, training=True))
    assert y.shape == x.shape and 0.0 <= y.min() and y.max() <= 1.0 + 1e-6
    assert len({y[i].tobytes() for i in range(8)}) == 8, "one draw per image"
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    with pytest.raises(ValueError, match="1.5"):
        RandomAffine(translate=1.5)


def test_one_cycle_schedule_warms_up_then_decays():
    r = model_lib.recipe("default")
    schedule = model_lib.learning_rate_schedule(r, total_steps=1000)
    warmup = int(1000 * r.warmup_fraction)
    lr = [float(schedule(s)) for s in (0, warmup, 999)]
    assert lr[0] == pytest.approx(r.learning_rate / 25)
    assert lr[1] == pytest.approx(r.learning_rate)
    assert lr[2] < lr[0]
    assert float(model_lib.learning_rate_schedule(r, total_steps=1000, learning_rate=0.01)(warmup)) == pytest.approx(0.01)


@pytest.mark.parametrize("call", [lambda: model_lib.build_model("vgg", seed=0), lambda: model_lib.recipe("vgg")])
def test_unknown_architecture_names_it_and_the_known_ones(call):
    with pytest.raises(ConfigError) as err:
        call()
    assert "'vgg'" in str(err.value)
    assert "default" in str(err.value) and "seed" in str(err.value)


def test_label_smoothing_loss_matches_keras_categorical_cross_entropy_and_reloads(tmp_path):
    import keras

    from components.losses import SparseCategoricalCrossentropyWithLabelSmoothing

    rng = np.random.default_rng(0)
    probs = keras.ops.softmax(rng.normal(size=(6, 10)).astype(np.float32))
    labels = np.array([0, 3, 9, 3, 1, 7])
    smoothed = SparseCategoricalCrossentropyWithLabelSmoothing(label_smoothing=0.1)
    expected = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(np.eye(10)[labels], probs)
    assert float(smoothed(labels, probs)) == pytest.approx(float(expected), rel=1e-6)
    assert float(SparseCategoricalCrossentropyWithLabelSmoothing(0.0)(labels, probs)) == pytest.approx(
        float(keras.losses.SparseCategoricalCrossentropy()(labels, probs)), rel=1e-6)
    with pytest.raises(ValueError, match="1.5"):
        SparseCategoricalCrossentropyWithLabelSmoothing(label_smoothing=1.5)

    # A model compiled with it saves and reloads compiled (the class is registered with Keras).
    r = model_lib.Recipe(epochs=1, batch_size=8, learning_rate=1e-3, label_smoothing=0.1)
    model = model_lib.compile_model(model_lib.build_model("seed", seed=0), r, total_steps=1)
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(reloaded.loss).__name__ == "SparseCategoricalCrossentropyWithLabelSmoothing"
    assert reloaded.loss.label_smoothing == pytest.approx(0.1)


def test_recalibrate_batch_norm_sets_population_statistics_of_clean_images():
    import keras
    import tensorflow as tf

    model = model_lib.build_model("default", seed=0)
    rng = np.random.default_rng(1)
    images = rng.random((300, 28, 28, 1), dtype=np.float32)
    ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(300, np.int64))).batch(64)
    used = model_lib.recalibrate_batch_norm(model, ds, max_examples=250)
    assert used == 250

    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(bns) >= 2
    # The first batch norm's inputs are the first conv's outputs on the clean (unaugmented) images.
    first = np.asarray(keras.Model(model.input, bns[0].input)(images[:250], training=False))
    np.testing.assert_allclose(np.asarray(bns[0].moving_mean), first.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(bns[0].moving_variance), first.var(axis=(0, 1, 2)), rtol=1e-3, atol=1e-6)
    # A later one sees inputs computed with the earlier layers already recalibrated: in inference mode its
    # own inputs are now normalized to mean 0 and variance 1 by the new statistics.
    last = bns[-1]
    h = np.asarray(keras.Model(model.input, last.output)(images[:250], training=False))
    pre_relu = (h - np.asarray(last.beta)) / np.asarray(last.gamma)
    np.testing.assert_allclose(pre_relu.mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(pre_relu.var(axis=0), 1.0, rtol=1e-2)


def test_default_recipe_decays_smooths_and_recalibrates():
    r = model_lib.recipe("default")
    assert r.weight_decay > 0 and 0 < r.label_smoothing < 1 and r.recalibrate_bn_examples > 0
    assert model_lib.recipe("seed").recalibrate_bn_examples == 0  # the tutorial CNN has no batch norm
    # Mixed bfloat16 only where the hardware computes it natively; the tutorial baseline stays float32.
    assert (r.precision, model_lib.recipe("seed").precision) == ("auto", "float32")


@pytest.mark.parametrize("precision, flags, gpus, env, expected", [
    ("float32", {"amx_bf16"}, [], {}, "float32"),  # an explicit choice is kept
    ("mixed_bfloat16", set(), [], {}, "mixed_bfloat16"),
    ("auto", {"avx512f", "amx_bf16", "amx_tile"}, [], {}, "mixed_bfloat16"),  # AMX: native bfloat16
    ("auto", {"avx512f", "avx512_bf16"}, [], {}, "float32"),  # no AMX: bfloat16 would not be faster
    ("auto", {"amx_bf16"}, [], {"TF_ENABLE_ONEDNN_OPTS": "0"}, "float32"),  # oneDNN off: no AMX kernels
    ("auto", set(), [(8, 0)], {}, "mixed_bfloat16"),  # Ampere or newer
    ("auto", {"amx_bf16"}, [(7, 5)], {}, "float32"),  # a GPU trains; Turing has no bfloat16 units
])
def test_auto_precision_is_bfloat16_only_where_the_hardware_computes_it(monkeypatch, precision, flags, gpus, env,
                                                                         expected):
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert model_lib.resolve_precision(precision, cpu_flags=flags, gpus=gpus) == expected


def test_unknown_precision_names_it_and_the_choices():
    with pytest.raises(ConfigError, match=r"'float16'.*auto, float32, mixed_bfloat16"):
        model_lib.resolve_precision("float16", cpu_flags=set(), gpus=[])


def test_mixed_precision_model_computes_in_bfloat16_and_its_float32_twin_has_the_same_weights(tmp_path):
    import keras

    mixed = model_lib.build_model("default", seed=3, precision="mixed_bfloat16")
    assert keras.config.dtype_policy().name == "float32", "building leaves the global policy as it was"
    conv = mixed.get_layer("conv2")
    assert (conv.compute_dtype, conv.variable_dtype) == ("bfloat16", "float32")
    assert mixed.get_layer("aug_affine").compute_dtype == "float32"
    x = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    out = mixed(x, training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"

    twin = model_lib.with_float32_compute(mixed, "default", seed=3)
    assert {layer.compute_dtype for layer in twin.layers[1:]} == {"float32"}
    assert all(np.array_equal(a, b) for a, b in zip(twin.get_weights(), mixed.get_weights()))
    # The same function, up to bfloat16's 8-bit mantissa.
    np.testing.assert_allclose(np.asarray(twin(x, training=False)), np.asarray(out), atol=0.05)
    twin.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    assert {layer.compute_dtype for layer in reloaded.layers[1:]} == {"float32"}
