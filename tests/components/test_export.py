"""The exported SavedModel: signatures as TF Serving and our clients expect them, agreeing with the Keras model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from components import export
from components.examples import make_example
from pipeline.errors import ModelError
from serving import signatures as sig
from serving.session_bundle import SessionBundle, replay_warmup_in_session
from tests.conftest import synthetic_digits


@pytest.fixture(scope="module")
def loaded(saved_model_dir):
    import tensorflow as tf

    return tf.saved_model.load(os.fspath(saved_model_dir))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return synthetic_digits(20, seed=3)[0][..., np.newaxis].astype(np.float32) / 255.0


def _signature_defs(saved_model_dir: Path):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((saved_model_dir / "saved_model.pb").read_bytes())
    return proto.meta_graphs[0].signature_def


def test_signatures_have_the_wire_names_shapes_and_methods(saved_model_dir):
    defs = _signature_defs(saved_model_dir)
    assert {sig.SERVING_DEFAULT, sig.PNG_SIGNATURE, sig.CLASSIFY_SIGNATURE} <= set(defs)

    default = defs[sig.SERVING_DEFAULT]
    assert default.method_name == sig.PREDICT_METHOD
    assert list(default.inputs) == [sig.IMAGE_INPUT]
    assert [d.size for d in default.inputs[sig.IMAGE_INPUT].tensor_shape.dim] == [-1, 28, 28, 1]
    assert set(default.outputs) == {sig.PROBABILITIES_OUTPUT, sig.CLASSES_OUTPUT}

    png = defs[sig.PNG_SIGNATURE]
    assert png.method_name == sig.PREDICT_METHOD
    assert list(png.inputs) == [sig.PNG_INPUT]
    assert set(png.outputs) == {sig.PROBABILITIES_OUTPUT, sig.CLASSES_OUTPUT}

    classify = defs[sig.CLASSIFY_SIGNATURE]
    assert classify.method_name == sig.CLASSIFY_METHOD
    assert list(classify.inputs) == [sig.CLASSIFY_INPUT]
    assert set(classify.outputs) == {sig.CLASSIFY_CLASSES_OUTPUT, sig.CLASSIFY_SCORES_OUTPUT}


def test_saved_model_cli_shows_the_classify_method(saved_model_dir):
    cli = Path(sys.executable).with_name("saved_model_cli")
    result = subprocess.run(
        [os.fspath(cli), "show", "--dir", os.fspath(saved_model_dir), "--tag_set", "serve", "--signature_def", "classify"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr
    assert "Method name is: tensorflow/serving/classify" in result.stdout


@pytest.mark.parametrize("architecture, precision", [("seed", "float32"), ("default", "float32"),
                                                     ("default", "mixed_bfloat16")])
def test_tf_serving_s_session_loader_restores_the_variables_and_every_signature_answers(
        architecture, precision, saved_model_dir, images, tmp_path):
    """The exported variables are restored by the saver's restore op (Keras 3 variables tracked as themselves are
    not: TF Serving then fails every request with "Could not find variable ...", keras-team/keras#20096), and
    the three signatures answer as the TF2 load does. `default` has batch norm and random (seeded) layers;
    mixed_bfloat16 is what the recipe's `auto` precision trains in on CPUs with AMX."""
    import tensorflow as tf

    if architecture == "seed":
        exported = saved_model_dir  # trained
    else:
        from components.model import build_model

        keras_path = tmp_path / "model.keras"
        build_model(architecture, seed=0, precision=precision).save(keras_path)
        exported = export.run(keras_path, tmp_path / "saved_model").saved_model_dir
    pngs = np.array([tf.io.encode_png((img * 255).astype(np.uint8)).numpy() for img in images[:5]], dtype=object)
    examples = np.array([make_example(png, 0) for png in pngs], dtype=object)
    feeds = {sig.SERVING_DEFAULT: {sig.IMAGE_INPUT: images[:5]}, sig.PNG_SIGNATURE: {sig.PNG_INPUT: pngs},
             sig.CLASSIFY_SIGNATURE: {sig.CLASSIFY_INPUT: examples}}

    with SessionBundle(exported) as bundle:
        answered = {name: bundle.run(name, inputs) for name, inputs in feeds.items()}
        assert replay_warmup_in_session(exported) == 3

    loaded = tf.saved_model.load(os.fspath(exported))
    for name, inputs in feeds.items():
        expected = loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
        assert set(answered[name]) == set(expected), name
        for key, value in expected.items():
            if value.dtype == tf.string:
                np.testing.assert_array_equal(answered[name][key], value.numpy())
            else:
                np.testing.assert_allclose(answered[name][key], value.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(answered[sig.PNG_SIGNATURE][sig.CLASSES_OUTPUT],
                                  answered[sig.SERVING_DEFAULT][sig.CLASSES_OUTPUT])


def test_a_model_tf_serving_could_not_run_is_not_exported(trained_keras_model_path, tmp_path, monkeypatch):
    """Keras 3's variables tracked as themselves (the export before this fix, and keras.export's own archive) give
    a SavedModel that tf.saved_model.load answers but TF Serving cannot: the export refuses it, saying why, and
    leaves nothing behind."""
    monkeypatch.setattr(export, "_tf_variable", lambda variable: variable)

    with pytest.raises(ModelError, match="(?s)would fail in TF Serving.*warmup record 1.*Could not find variable"):
        export.run(trained_keras_model_path, tmp_path / "saved_model")
    assert list(tmp_path.iterdir()) == []


def test_saved_model_cli_runs_the_export_as_tf_serving_would(saved_model_dir, images, tmp_path):
    """TensorFlow's own tool, independent of this project's code: `saved_model_cli run` loads the SavedModel into a
    Session and restores its variables with the saver, as TF Serving does (and failed, as TF Serving did, on
    exports that tracked Keras 3's variables as themselves)."""
    batch = tmp_path / "images.npy"
    np.save(batch, images[:3])
    cli = Path(sys.executable).with_name("saved_model_cli")
    result = subprocess.run(
        [os.fspath(cli), "run", "--dir", os.fspath(saved_model_dir), "--tag_set", "serve", "--signature_def",
         sig.SERVING_DEFAULT, "--inputs", f"{sig.IMAGE_INPUT}={batch}"],
        capture_output=True, text=True, timeout=180, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Result for output key {sig.CLASSES_OUTPUT}" in result.stdout


def test_serving_default_agrees_with_the_keras_model(loaded, trained_keras_model_path, images):
    import keras
    import tensorflow as tf

    expected = keras.models.load_model(trained_keras_model_path).predict(images, verbose=0)
    out = loaded.signatures[sig.SERVING_DEFAULT](**{sig.IMAGE_INPUT: tf.constant(images)})
    np.testing.assert_allclose(out[sig.PROBABILITIES_OUTPUT].numpy(), expected, atol=1e-5)
    assert out[sig.CLASSES_OUTPUT].dtype == tf.int64
    np.testing.assert_array_equal(out[sig.CLASSES_OUTPUT].numpy(), expected.argmax(axis=1))


def test_png_and_classify_give_the_same_classes_as_the_float_signature(loaded, images):
    import tensorflow as tf

    pngs = export.encode_pngs(images)
    floats = loaded.signatures[sig.SERVING_DEFAULT](**{sig.IMAGE_INPUT: tf.constant(images)})
    from_png = loaded.signatures[sig.PNG_SIGNATURE](**{sig.PNG_INPUT: tf.constant(pngs)})
    np.testing.assert_array_equal(from_png[sig.CLASSES_OUTPUT].numpy(), floats[sig.CLASSES_OUTPUT].numpy())
    np.testing.assert_allclose(from_png[sig.PROBABILITIES_OUTPUT].numpy(), floats[sig.PROBABILITIES_OUTPUT].numpy(), atol=1e-5)

    # `label` is optional and ignored: half the examples carry one.
    examples = [make_example(png, label=i if i % 2 else None) for i, png in enumerate(pngs)]
    classified = loaded.signatures[sig.CLASSIFY_SIGNATURE](**{sig.CLASSIFY_INPUT: tf.constant(examples)})
    scores = classified[sig.CLASSIFY_SCORES_OUTPUT].numpy()
    names = classified[sig.CLASSIFY_CLASSES_OUTPUT].numpy()
    assert scores.shape == names.shape == (len(images), sig.NUM_CLASSES)
    assert [n.decode() for n in names[0]] == [str(i) for i in range(10)]
    best = np.array([int(names[i, j]) for i, j in enumerate(scores.argmax(axis=1))])
    np.testing.assert_array_equal(best, floats[sig.CLASSES_OUTPUT].numpy())


def test_png_signature_rejects_images_of_the_wrong_size(loaded):
    import tensorflow as tf

    wrong = tf.io.encode_png(np.zeros((32, 32, 1), np.uint8)).numpy()
    with pytest.raises(tf.errors.InvalidArgumentError, match="28x28|28,28"):
        loaded.signatures[sig.PNG_SIGNATURE](**{sig.PNG_INPUT: tf.constant([wrong])})


def test_warmup_file_is_a_tfrecord_of_prediction_logs_that_the_model_answers(loaded, saved_model_dir):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = saved_model_dir / "assets.extra" / sig.WARMUP_FILE
    logs = []
    for record in tf.data.TFRecordDataset(os.fspath(path)):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        logs.append(log)
    kinds = [log.WhichOneof("log_type") for log in logs]
    assert kinds == ["predict_log", "predict_log", "classify_log"]

    default = logs[0].predict_log.request
    assert (default.model_spec.name, default.model_spec.signature_name) == (sig.MODEL_NAME, sig.SERVING_DEFAULT)
    batch = tf.make_ndarray(default.inputs[sig.IMAGE_INPUT])
    assert batch.shape == (4, 28, 28, 1) and batch.dtype == np.float32
    answered = loaded.signatures[sig.SERVING_DEFAULT](**{sig.IMAGE_INPUT: tf.constant(batch)})
    assert answered[sig.CLASSES_OUTPUT].shape == (4,)

    png = logs[1].predict_log.request
    assert png.model_spec.signature_name == sig.PNG_SIGNATURE
    loaded.signatures[sig.PNG_SIGNATURE](**{sig.PNG_INPUT: tf.constant(tf.make_ndarray(png.inputs[sig.PNG_INPUT]))})

    classify = logs[2].classify_log.request
    assert classify.model_spec.signature_name == sig.CLASSIFY_SIGNATURE
    serialized = [e.SerializeToString() for e in classify.input.example_list.examples]
    assert len(serialized) == 4
    loaded.signatures[sig.CLASSIFY_SIGNATURE](**{sig.CLASSIFY_INPUT: tf.constant(serialized)})


def test_export_replaces_an_existing_export_and_leaves_no_temporary_folders(trained_keras_model_path, tmp_path):
    target = tmp_path / "export" / "saved_model"
    target.mkdir(parents=True)
    (target / "stale.txt").write_text("from an earlier export")
    out = export.run(trained_keras_model_path, target)
    assert out.saved_model_dir == target
    assert not (target / "stale.txt").exists()
    assert (target / "saved_model.pb").is_file() and out.warmup_path.is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == ["saved_model"]


def test_missing_or_corrupt_keras_model_is_a_model_error_naming_the_path(tmp_path):
    missing = tmp_path / "nope" / "model.keras"
    with pytest.raises(ModelError, match="nope/model.keras"):
        export.run(missing, tmp_path / "out")
    corrupt = tmp_path / "model.keras"
    corrupt.write_bytes(b"not a keras zip")
    with pytest.raises(ModelError, match="model.keras"):
        export.run(corrupt, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_warmup_images_are_refused(trained_keras_model_path, tmp_path):
    with pytest.raises(ModelError, match="warmup images"):
        export.run(trained_keras_model_path, tmp_path / "out", warmup_images=np.zeros((2, 32, 32), np.float32))
    assert not (tmp_path / "out").exists()


def test_class_names_file_round_trips_and_bad_names_are_refused(saved_model_dir, trained_keras_model_path, tmp_path):
    # Exported without names (the fixture): "0".."9", MNIST's names, in the file the contract defines.
    assert Path(sig.class_names_path(saved_model_dir)).read_text() == "".join(f"{i}\n" for i in range(10))
    assert sig.read_class_names(saved_model_dir) == [str(i) for i in range(10)]
    assert sig.read_class_names(tmp_path) == [str(i) for i in range(10)]  # a model from before the file
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    (tmp_path / "assets.extra").mkdir()
    Path(sig.class_names_path(tmp_path)).write_text(sig.format_class_names(names))
    assert sig.read_class_names(tmp_path) == names
    for bad in (names[:9], [*names[:9], "two\nlines"]):
        with pytest.raises(ModelError, match="class names"):
            export.run(trained_keras_model_path, tmp_path / "x", class_names=bad)


def test_the_image_shape_is_recorded_with_the_model_and_read_without_loading_it(saved_model_dir, tmp_path):
    # MNIST's model: 28x28 grey, in the file and in serving_default's input, as the server's metadata shows it.
    assert Path(sig.image_shape_path(saved_model_dir)).read_text() == "28 28 1\n"
    assert sig.read_image_shape(saved_model_dir) == (28, 28, 1)
    assert sig.image_shape_of(sig.read_signature_defs(str(saved_model_dir))) == (28, 28, 1)
    assert sig.read_image_shape(tmp_path) == (28, 28, 1)  # a model from before the file
    (tmp_path / "assets.extra").mkdir()
    Path(sig.image_shape_path(tmp_path)).write_text(sig.format_image_shape((32, 32, 3)))
    assert sig.read_image_shape(tmp_path) == (32, 32, 3)
    Path(sig.image_shape_path(tmp_path)).write_text("32 32 5\n")  # unusable: logged, the default
    assert sig.read_image_shape(tmp_path) == (28, 28, 1)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        sig.format_image_shape((32, 32, 4))


def test_a_colour_model_exports_colour_signatures_that_refuse_grey_images(tmp_path):
    import tensorflow as tf

    from components.model import build_model

    model = build_model("seed", seed=0, input_shape=(32, 32, 3))
    model.save(tmp_path / "model.keras")
    out = export.run(tmp_path / "model.keras", tmp_path / "export")
    assert out.image_shape == (32, 32, 3) and sig.read_image_shape(out.saved_model_dir) == (32, 32, 3)
    loaded = tf.saved_model.load(str(out.saved_model_dir))
    colour = tf.io.encode_png(np.zeros((32, 32, 3), np.uint8))
    jpeg = tf.io.encode_jpeg(np.zeros((32, 32, 3), np.uint8))
    answer = loaded.signatures[sig.PNG_SIGNATURE](**{sig.PNG_INPUT: tf.stack([colour, jpeg])})
    assert answer[sig.CLASSES_OUTPUT].shape == (2,)  # PNG and JPEG both decode
    grey = tf.io.encode_png(np.zeros((32, 32, 1), np.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="takes 32x32 colour"):
        loaded.signatures[sig.PNG_SIGNATURE](**{sig.PNG_INPUT: tf.stack([grey])})
