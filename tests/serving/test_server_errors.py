"""Hostile input and faults the local server must survive, each pinned by a small test.

The requests that cost gigabytes on the old code are sent at a size that costs megabytes: the tests assert
the refusal (and that nothing was allocated for it), not the allocation.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import tracemalloc
from pathlib import Path

import grpc
import numpy as np
import pytest

from serving import signatures as sig

pytestmark = pytest.mark.timeout(300)


def _float_proto(shape, values=None):
    from tensorflow.core.framework import tensor_pb2, types_pb2

    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    if values is not None:
        proto.float_val.extend(values)
    return proto


def _image_spec():
    import tensorflow as tf

    return tf.TensorSpec([None, 28, 28, 1], tf.float32)


# -- 1. memory amplification -----------------------------------------------------------------------------


def test_values_that_do_not_fill_the_shape_are_refused_before_allocating():
    from serving.errors import RequestError
    from serving.servable import _to_tensor

    spec = _image_spec()
    tracemalloc.start()
    try:
        with pytest.raises(RequestError) as exc:
            _to_tensor("images", _float_proto([600, 28, 28, 1]), spec)  # 42 bytes asking for 1.9 MB of zeros
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "values" in exc.value.message
    assert peak < 256 * 1024, f"refusing the request allocated {peak} bytes"
    with pytest.raises(RequestError) as exc:
        _to_tensor("images", _float_proto([2, 28, 28, 1], [0.5]), spec)  # one value, padded by TF
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_huge_declared_shape_is_invalid_argument_not_memory_error():
    from serving.errors import RequestError
    from serving.servable import _to_tensor

    for shape in ([1 << 40, 28, 28, 1], [1 << 62, 28, 28, 1]):
        with pytest.raises(RequestError) as exc:
            _to_tensor("images", _float_proto(shape), _image_spec())
        assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_tensor_content_of_the_wrong_length_is_refused():
    from tensorflow.core.framework import tensor_pb2, types_pb2

    from serving.errors import RequestError
    from serving.servable import _to_tensor

    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=np.zeros(784, np.float32).tobytes())
    for size in (3, 28, 28, 1):
        proto.tensor_shape.dim.add(size=size)
    with pytest.raises(RequestError) as exc:
        _to_tensor("images", proto, _image_spec())
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_one_png_sent_with_a_batch_shape_is_refused():
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2, types_pb2

    from serving.errors import RequestError
    from serving.servable import _to_tensor

    png = tf.io.encode_png(np.zeros((28, 28, 1), np.uint8)).numpy()
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[png])
    proto.tensor_shape.dim.add(size=5000)
    with pytest.raises(RequestError) as exc:
        _to_tensor("image_bytes", proto, tf.TensorSpec([None], tf.string))
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_the_batch_a_request_may_carry_is_capped(monkeypatch):
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2

    from serving.errors import RequestError
    from serving.servable import Servable, _Signature
    from serving.server import DEFAULT_MAX_BATCH_SIZE
    from serving.tensors import fill_tensor_proto

    calls = []

    def fn(**inputs):
        images = inputs[sig.IMAGE_INPUT]
        calls.append(tuple(images.shape))
        return {"probabilities": tf.zeros([images.shape[0], 10])}

    servable = Servable.__new__(Servable)
    servable.signatures = {sig.SERVING_DEFAULT: _Signature(fn, {sig.IMAGE_INPUT: _image_spec()}, sig.PREDICT_METHOD)}
    request = predict_pb2.PredictRequest()
    fill_tensor_proto(request.inputs[sig.IMAGE_INPUT], np.zeros((5, 28, 28, 1), np.float32))
    assert servable.predict(request, max_batch_size=5)["probabilities"].shape == (5, 10)
    with pytest.raises(RequestError) as exc:
        servable.predict(request, max_batch_size=4)
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "4" in exc.value.message
    assert calls == [(5, 28, 28, 1)]
    # a string batch is capped the same way, before anything is decoded
    strings = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"x"] * 5)
    strings.tensor_shape.dim.add(size=5)
    from serving.servable import _to_tensor

    with pytest.raises(RequestError):
        _to_tensor("image_bytes", strings, tf.TensorSpec([None], tf.string), max_batch_size=4)
    assert 256 <= DEFAULT_MAX_BATCH_SIZE <= 4096


def test_classify_examples_are_capped():
    from tensorflow_serving.apis import classification_pb2

    from serving.errors import RequestError
    from serving.servable import Servable, _Signature

    servable = Servable.__new__(Servable)
    servable.signatures = {"classify": _Signature(None, {"inputs": None}, sig.CLASSIFY_METHOD)}
    request = classification_pb2.ClassificationRequest()
    request.model_spec.signature_name = "classify"
    for _ in range(3):
        request.input.example_list.examples.add()
    with pytest.raises(RequestError) as exc:
        servable.classify(request, max_batch_size=2)
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT


# -- 3. version folder names ---------------------------------------------------------------------------


def _version_folder(base: Path, name: str, complete: bool = True) -> Path:
    path = base / "mnist" / name
    path.mkdir(parents=True)
    if complete:
        (path / "saved_model.pb").write_bytes(b"")
    return path


def test_only_ascii_decimal_int64_folder_names_are_versions(tmp_path):
    from serving import model_registry

    for name in ("7", "99999999999999999999", "9223372036854775808", "²", "１００", "-3", "+4", " 5", "1e3"):
        _version_folder(tmp_path, name)
    assert [v.version for v in model_registry.list_versions(tmp_path, "mnist")] == [7]
    _version_folder(tmp_path, "9223372036854775807")  # int64's largest still counts
    assert model_registry.newest_version(tmp_path, "mnist").version == 2**63 - 1


def test_an_odd_folder_does_not_stop_the_poll(tmp_path, monkeypatch):
    from serving import servable
    from serving.model_manager import ModelManager, ModelSettings

    loaded = []

    class FakeServable:
        def __init__(self, name, version, path):
            loaded.append(version)
            self.name, self.version, self.path = name, version, path

        def warm_up(self):
            return 0

    monkeypatch.setattr(servable, "Servable", FakeServable)  # what a load builds
    for name in ("²", "１００", "99999999999999999999", "3"):
        _version_folder(tmp_path, name)
    manager = ModelManager({"mnist": ModelSettings(tmp_path / "mnist")})
    manager.poll()
    assert loaded == [3]
    assert manager.resolve("mnist").version == 3


# -- 4. a failed load is retried when its files change -----------------------------------------------


def test_a_failed_load_is_retried_after_an_in_place_copy(tmp_path, monkeypatch):
    from serving import servable
    from serving.model_manager import ModelManager, ModelSettings

    attempts = []

    class FakeServable:
        def __init__(self, name, version, path):
            attempts.append(version)
            if (path / "variables" / "variables.data").read_bytes() != b"good":
                raise ValueError("truncated variables")
            self.name, self.version, self.path = name, version, path

        def warm_up(self):
            return 0

    monkeypatch.setattr(servable, "Servable", FakeServable)  # what a load builds
    folder = _version_folder(tmp_path, "1")
    (folder / "variables").mkdir()
    data = folder / "variables" / "variables.data"
    data.write_bytes(b"bad")
    manager = ModelManager({"mnist": ModelSettings(tmp_path / "mnist")})
    manager.poll()
    manager.poll()
    assert attempts == [1], "an unchanged failed version is not retried"
    assert manager.statuses("mnist")[0].state == "END"
    stamp = folder.stat().st_mtime_ns
    data.write_bytes(b"good")  # copied in place: the version folder's own mtime does not move
    os.utime(folder, ns=(stamp, stamp))
    manager.poll()
    assert attempts == [1, 1]
    assert manager.resolve("mnist").version == 1


# -- 5. serve's start-up errors ------------------------------------------------------------------------


def _empty_manager(tmp_path):
    from serving.model_manager import ModelManager, ModelSettings

    return ModelManager({"mnist": ModelSettings(tmp_path / "mnist")})


def test_a_version_tf_serving_would_refuse_is_refused_here_too(trained_keras_model_path, tmp_path, monkeypatch):
    """A Keras 3 SavedModel whose Keras variables were tracked as themselves answers through tf.saved_model.load but
    fails every request in TF Serving (its Session restores copies: keras-team/keras#20096); the local server
    replays the warmup as TF Serving runs it, so the version fails to load here too, saying why."""
    from components import export
    from serving.model_manager import ModelManager, ModelSettings

    monkeypatch.setattr(export, "_tf_variable", lambda variable: variable)  # the tracking before the fix
    monkeypatch.setattr(export, "_check_as_tf_serving_runs_it", lambda *a: None)  # ... and no check at export
    export.run(trained_keras_model_path, tmp_path / "mnist" / "1")
    manager = ModelManager({"mnist": ModelSettings(tmp_path / "mnist")})
    manager.poll()

    (status,) = manager.statuses("mnist")
    assert status.state == "END"
    assert "TF Serving would refuse this version" in status.error_message
    assert "Could not find variable" in status.error_message


def test_a_port_in_use_is_a_serving_error(tmp_path):
    from serving.errors import ServingError
    from serving.server import LocalServer

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServingError) as exc:
            LocalServer(_empty_manager(tmp_path), host="127.0.0.1", port=port)
    assert str(port) in str(exc.value) and "--port" in str(exc.value)


def test_a_host_that_is_not_local_is_a_serving_error(tmp_path):
    from serving.errors import ServingError
    from serving.server import LocalServer

    with pytest.raises(ServingError) as exc:
        LocalServer(_empty_manager(tmp_path), host="192.0.2.1", port=0)  # TEST-NET-1: never this machine's
    assert "192.0.2.1" in str(exc.value) and "--host" in str(exc.value)


def test_bad_tls_files_are_named_before_binding(tmp_path):
    from serving.errors import ServingError
    from serving.server import LocalServer
    from tests.serving.test_server import _self_signed

    cert, key = _self_signed(tmp_path, "localhost")
    other_cert, other_key = _self_signed(tmp_path, "other")
    cases = {
        "certificate": (b"not a certificate", key.read_bytes(), None),
        "private key": (cert.read_bytes(), b"not a key", None),
        "does not match": (cert.read_bytes(), other_key.read_bytes(), None),
        "client CA": (cert.read_bytes(), key.read_bytes(), b"junk"),
    }
    for words, (tls_cert, tls_key, client_ca) in cases.items():
        with pytest.raises(ServingError) as exc:
            LocalServer(_empty_manager(tmp_path), port=0, tls_cert=tls_cert, tls_key=tls_key, client_ca=client_ca)
        assert words in str(exc.value), str(exc.value)
        assert "bind" not in str(exc.value)
    server = LocalServer(_empty_manager(tmp_path), port=0, tls_cert=cert.read_bytes(), tls_key=key.read_bytes(),
                         client_ca=other_cert.read_bytes())
    server.stop(0)


def test_serve_command_prints_the_error_without_a_traceback(tmp_path):
    from pipeline.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--workdir", str(tmp_path / "work"), "--port", str(port)]) == 1
    not_pem = tmp_path / "cert.pem"
    not_pem.write_text("hello")
    assert main(["serve", "--workdir", str(tmp_path / "work"), "--port", "0",
                 "--tls-cert", str(not_pem), "--tls-key", str(not_pem)]) == 1


# -- 9. echoed client input is bounded; client errors are not logged as tracebacks ------------------


def test_long_names_and_shapes_are_truncated_in_errors(tmp_path, caplog):
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serving.errors import RequestError
    from serving.servable import _to_tensor
    from serving.server import LocalServer

    with pytest.raises(RequestError) as exc:
        _to_tensor("images", _float_proto([1] * 100_000), _image_spec())
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT and len(exc.value.message) < 1000
    manager = _empty_manager(tmp_path)
    with pytest.raises(RequestError) as exc:
        manager.resolve("m" * 100_000)
    assert exc.value.code == grpc.StatusCode.NOT_FOUND and len(exc.value.message) < 1000
    with pytest.raises(RequestError) as exc:
        manager.statuses("m" * 100_000)
    assert len(exc.value.message) < 1000

    server = LocalServer(manager, port=0)
    server.start()
    try:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "m" * 100_000
        with caplog.at_level(logging.DEBUG), grpc.insecure_channel(server.address) as channel:
            with pytest.raises(grpc.RpcError) as rpc:
                prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        assert rpc.value.code() == grpc.StatusCode.NOT_FOUND, rpc.value.details()
        assert "mmm" in rpc.value.details()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    finally:
        server.stop(0)


def test_an_unforeseen_error_message_is_truncated_too():
    from serving.server import _errors_as_status

    class Context:
        def abort(self, code, details):
            self.code, self.details = code, details
            raise RuntimeError("aborted")

    context = Context()
    with pytest.raises(RuntimeError):
        with _errors_as_status(context):
            raise KeyError("k" * 100_000)
    assert context.code == grpc.StatusCode.INTERNAL and len(context.details) < 2000


# -- 10. serve's numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize("flag, value", [
    ("--poll-interval", "nan"), ("--poll-interval", "inf"), ("--poll-interval", "-1"), ("--poll-interval", "0"),
    ("--max-message-bytes", "0"), ("--max-message-bytes", "-5"), ("--max-batch-size", "0"),
])
def test_serve_refuses_bad_numbers(tmp_path, capsys, flag, value):
    from pipeline.cli import main

    started = time.monotonic()
    assert main(["serve", "--workdir", str(tmp_path / "work"), "--port", "0", flag, value]) == 1
    assert flag.lstrip("-").replace("-", "_") in capsys.readouterr().err
    assert time.monotonic() - started < 60


def test_serve_numbers_are_checked_in_the_config_file_too(tmp_path):
    from pipeline.config import load_config
    from pipeline.errors import ConfigError

    toml = tmp_path / "c.toml"
    for line in ("poll_interval = nan", "poll_interval = inf", "max_message_bytes = 0", "max_batch_size = -1"):
        toml.write_text(f"[serve]\n{line}\n")
        with pytest.raises(ConfigError):
            load_config(toml)


def test_the_servers_memory_stays_flat_under_amplification_requests(saved_model_dir, tmp_path):
    """End to end: tiny requests declaring big shapes are refused with INVALID_ARGUMENT, allocating nothing."""
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from tests.serving.test_conformance import push_version, start_local_server

    push_version(saved_model_dir, tmp_path / "models", 1)
    server = start_local_server(tmp_path / "models")
    requests = []
    for shape in ([6000, 28, 28, 1], [1 << 40, 28, 28, 1]):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = sig.MODEL_NAME
        request.inputs[sig.IMAGE_INPUT].CopyFrom(_float_proto(shape))
        requests.append(request)
    png = predict_pb2.PredictRequest()
    png.model_spec.name = sig.MODEL_NAME
    png.model_spec.signature_name = sig.PNG_SIGNATURE
    proto = png.inputs[sig.PNG_INPUT]
    proto.dtype = types_pb2.DT_STRING
    proto.string_val.append(b"\x89PNG")
    proto.tensor_shape.dim.add(size=5000)
    requests.append(png)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            stub.GetModelMetadata  # noqa: B018 - the channel is up before measuring
            tracemalloc.start()
            try:
                for request in requests:
                    assert request.ByteSize() < 100
                    with pytest.raises(grpc.RpcError) as exc:
                        stub.Predict(request, timeout=60)
                    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        assert peak < 4 << 20, f"refusing three tiny requests allocated {peak} bytes"
    finally:
        server.stop(0)
