"""The architectures: named input, softmax output, the exact tutorial CNN, recipes, unknown names."""

from __future__ import annotations

import numpy as np
import pytest

from components import model as model_lib
from components.signatures import KERAS_INPUT_NAME
from pipeline.errors import ConfigError


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


def test_one_cycle_schedule_warms_up_then_decays():
    r = model_lib.recipe("default")
    schedule = model_lib.learning_rate_schedule(r, total_steps=1000)
    warmup = int(1000 * r.warmup_fraction)
    lr = [float(schedule(s)) for s in (0, warmup, 999)]
    assert lr[0] == pytest.approx(r.learning_rate / 25)
    assert lr[1] == pytest.approx(r.learning_rate)
    assert lr[2] < lr[0]
    assert float(model_lib.learning_rate_schedule(r, total_steps=1000, learning_rate=0.01)(warmup)) == pytest.approx(0.01)


@pytest.mark.parametrize("call", [lambda: model_lib.build_model("resnet", seed=0), lambda: model_lib.recipe("resnet")])
def test_unknown_architecture_names_it_and_the_known_ones(call):
    with pytest.raises(ConfigError) as err:
        call()
    assert "'resnet'" in str(err.value)
    assert "default" in str(err.value) and "seed" in str(err.value)
