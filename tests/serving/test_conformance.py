"""One conformance suite for `serving.client` against a server that speaks TF Serving's gRPC and REST APIs.

By default the suite starts the local server (`serving.server` and `serving.rest`, in this process) over a model
base path holding the `saved_model_dir` fixture as version 1 of `mnist`, with serving/deploy/models.config
(newest two versions, labels stable=1 and canary=2). Every test that takes `client` runs twice: over gRPC
(`ServingClient`) and over REST (`RestClient`). With TF_SERVING_ADDRESS=host:port and/or
TF_SERVING_REST_ADDRESS=http://host:port set, the same tests run against that server (a real TF Serving
started from serving/deploy/ with version 1 of the model pushed), the half without an address is skipped, and
the tests that need the local server's files or process (the message limit) are skipped too; the local
server's own behaviours (health, roll-out, TLS, SIGTERM) are tests/serving/test_server.py's.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from serving import signatures as sig
from tests.conftest import REPO_ROOT, synthetic_digits

pytestmark = pytest.mark.timeout(300)

REMOTE = os.environ.get("TF_SERVING_ADDRESS")
REMOTE_REST = os.environ.get("TF_SERVING_REST_ADDRESS")
local_only = pytest.mark.skipif(bool(REMOTE or REMOTE_REST),
                                reason="needs the local server's files or process (TF_SERVING_ADDRESS set)")
DEPLOY_MODELS_CONFIG = REPO_ROOT / "serving" / "deploy" / "models.config"
SERVER_MAX_MESSAGE_BYTES = 2 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def push_version(saved_model_dir: Path, base: Path, version: int) -> Path:
    """Copy a SavedModel in as `<base>/mnist/<version>`, whole or not at all (copy beside, then rename)."""
    target = base / sig.MODEL_NAME / str(version)
    tmp = base / sig.MODEL_NAME / f".tmp-{version}"
    shutil.copytree(saved_model_dir, tmp)
    os.replace(tmp, target)
    return target


def start_local_server(base: Path, models_config: Path = DEPLOY_MODELS_CONFIG, batcher=None, **kwargs):
    from serving.model_manager import ModelManager, read_models_config
    from serving.server import LocalServer

    manager = ModelManager(read_models_config(models_config, base), poll_interval=0.2, models_config=models_config,
                           model_base_path=base, batcher=batcher)
    server = LocalServer(manager, host="127.0.0.1", port=0, max_message_bytes=SERVER_MAX_MESSAGE_BYTES, **kwargs)
    server.start()
    return server


@pytest.fixture(scope="module")
def servers(request, tmp_path_factory):
    """{"grpc": address or None, "rest": URL or None}: the remote server's, or the local server's two ports."""
    if REMOTE or REMOTE_REST:
        yield {"grpc": REMOTE, "rest": REMOTE_REST}
        return
    from serving.rest import RestServer

    base = tmp_path_factory.mktemp("models")
    push_version(request.getfixturevalue("saved_model_dir"), base, 1)  # not built at all against a remote server
    server = start_local_server(base)
    rest = RestServer(server.manager, host="127.0.0.1", port=0, max_body_bytes=SERVER_MAX_MESSAGE_BYTES)
    rest.start()
    yield {"grpc": server.address, "rest": rest.url}
    rest.stop()
    server.stop(1.0)


@pytest.fixture(scope="module")
def address(servers):
    if servers["grpc"] is None:
        pytest.skip("no gRPC address (TF_SERVING_ADDRESS) for this remote run")
    return servers["grpc"]


@pytest.fixture(params=["grpc", "rest"])
def protocol(request, servers):
    if servers[request.param] is None:
        pytest.skip(f"no {request.param} address for this remote run")
    return request.param


@pytest.fixture
def make_client(protocol, servers):
    """A client factory for this test's protocol (serving.client.connect: a URL gives the REST client)."""
    from serving.client import connect

    return lambda **kwargs: connect(servers[protocol], **kwargs)


@pytest.fixture
def client(make_client):
    with make_client(timeout=30.0) as c:
        c.wait_until_available(timeout=60)
        yield c


def is_rest(client) -> bool:
    from serving.rest_client import RestClient

    return isinstance(client, RestClient)


def assert_version(client, out, version: int) -> None:
    """The version that answered; TF Serving's REST answer names it only when the request did."""
    assert out.model_version == version or (is_rest(client) and out.model_version is None), out.model_version


@pytest.fixture(scope="module")
def digits():
    images, labels = synthetic_digits(8, seed=8)
    return images, labels


def floats(images: np.ndarray) -> np.ndarray:
    return images[..., np.newaxis].astype(np.float32) / 255.0


def png_bytes(image: np.ndarray) -> bytes:
    import tensorflow as tf

    return tf.io.encode_png(image[..., np.newaxis]).numpy()


def example(image: np.ndarray, label: int | None = None):
    import tensorflow as tf

    feature = {sig.EXAMPLE_IMAGE_FEATURE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[png_bytes(image)]))}
    if label is not None:
        feature[sig.EXAMPLE_LABEL_FEATURE] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def assert_serves(client, digits) -> None:
    """The proof, after each bad request, that the server still answers a good one."""
    out = client.predict(floats(digits[0][:2]))
    assert out["probabilities"].shape == (2, sig.NUM_CLASSES)


def assert_code(exc_info, *codes) -> None:
    """The gRPC code, or over REST the HTTP status TF Serving maps those codes to."""
    from serving.http_status import HTTP_STATUS

    if exc_info.value.http_status is not None:
        wanted = {HTTP_STATUS[c] for c in codes}
        assert exc_info.value.http_status in wanted, f"got HTTP {exc_info.value.http_status}, wanted {wanted}: {exc_info.value}"
        return
    assert exc_info.value.code in codes, f"got {exc_info.value.code}, wanted {codes}: {exc_info.value}"


# -- the calls agree ------------------------------------------------------------------------------------


def test_status_reports_an_available_version(client):
    statuses = client.get_model_status()
    assert any(s.state == "AVAILABLE" and s.error_code == 0 for s in statuses)
    assert client.get_model_status(version=1)[0].version == 1


def test_predict_predict_png_and_classify_agree(client, digits):
    images, labels = digits
    out = client.predict(floats(images))
    assert out["probabilities"].shape == (len(images), sig.NUM_CLASSES)
    assert out["probabilities"].dtype == np.float32 and out["classes"].dtype == np.int64
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(out["classes"], out["probabilities"].argmax(axis=1))
    assert_version(client, out, 1)

    png = client.predict_png([png_bytes(im) for im in images])
    np.testing.assert_array_equal(png["classes"], out["classes"])
    np.testing.assert_allclose(png["probabilities"], out["probabilities"], atol=1e-5)

    classified = client.classify([example(im, int(y)) for im, y in zip(images, labels)])
    assert classified["scores"].shape == (len(images), sig.NUM_CLASSES)
    best = classified["classes"][np.arange(len(images)), classified["scores"].argmax(axis=1)]
    np.testing.assert_array_equal(best.astype(np.int64), out["classes"])
    np.testing.assert_allclose(np.sort(classified["scores"], axis=1), np.sort(out["probabilities"], axis=1), atol=1e-5)


def test_metadata_is_a_signature_def_map(client):
    meta = client.get_model_metadata()
    assert meta.model_version == 1
    defs = meta.signature_defs
    assert {sig.SERVING_DEFAULT, sig.PNG_SIGNATURE, sig.CLASSIFY_SIGNATURE} <= set(defs)
    assert set(defs[sig.SERVING_DEFAULT].inputs) == {sig.IMAGE_INPUT}
    assert set(defs[sig.SERVING_DEFAULT].outputs) == {sig.PROBABILITIES_OUTPUT, sig.CLASSES_OUTPUT}
    assert [d.size for d in defs[sig.SERVING_DEFAULT].inputs[sig.IMAGE_INPUT].tensor_shape.dim][1:] == [28, 28, 1]
    assert set(defs[sig.PNG_SIGNATURE].inputs) == {sig.PNG_INPUT}
    assert defs[sig.CLASSIFY_SIGNATURE].method_name == sig.CLASSIFY_METHOD
    assert set(defs[sig.CLASSIFY_SIGNATURE].inputs) == {sig.CLASSIFY_INPUT}


def test_large_batches_are_split_under_the_message_limit(make_client, digits):
    images = np.repeat(floats(digits[0]), 100, axis=0)  # 800 images, 2.5 MB (about 14 MB as JSON)
    with make_client(timeout=60.0, max_message_bytes=1024 * 1024) as small:
        out = small.predict(images)
    assert out["classes"].shape == (800,)
    np.testing.assert_array_equal(out["classes"][:8], out["classes"][8:16])


# -- versions and labels --------------------------------------------------------------------------------


def test_version_and_label_selection(client, digits):
    from serving.errors import ServingError

    x = floats(digits[0][:2])
    assert client.predict(x, version=1).model_version == 1
    assert_version(client, client.predict(x, version_label="stable"), 1)
    assert client.get_model_metadata(version_label="stable").model_version == 1
    with pytest.raises(ServingError) as exc:
        client.predict(x, version=99)
    assert_code(exc, grpc.StatusCode.NOT_FOUND)
    with pytest.raises(ServingError) as exc:  # canary points at version 2, which is not loaded
        client.predict(x, version_label="canary")
    assert_code(exc, grpc.StatusCode.NOT_FOUND)
    with pytest.raises(ServingError) as exc:  # TF Serving: "Unrecognized servable version label"
        client.predict(x, version_label="no-such-label")
    assert_code(exc, grpc.StatusCode.INVALID_ARGUMENT)


def test_unknown_model_is_not_found(make_client, digits):
    from serving.errors import ServingError

    with make_client(model_name="no-such-model", timeout=10.0) as other:
        for call in (lambda: other.predict(floats(digits[0][:1])), other.get_model_status, other.get_model_metadata):
            with pytest.raises(ServingError) as exc:
                call()
            assert_code(exc, grpc.StatusCode.NOT_FOUND)
            assert "no-such-model" in str(exc.value)


# -- bad requests: each answered with an error, then the server still serves ----------------------------


def _raw_predict(address: str, request, timeout: float = 30.0):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=timeout)


def test_empty_request(address, client, digits):
    from tensorflow_serving.apis import predict_pb2

    with pytest.raises(grpc.RpcError) as exc:
        _raw_predict(address, predict_pb2.PredictRequest())
    assert exc.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
    assert_serves(client, digits)


def test_batch_of_zero(client, digits):
    from serving.errors import ServingError

    try:
        out = client.predict(np.zeros((0, 28, 28, 1), np.float32))
    except ServingError as exc:  # TF Serving's batching may refuse an empty batch; it must say so
        assert exc.code == grpc.StatusCode.INVALID_ARGUMENT
    else:
        assert out["probabilities"].shape == (0, sig.NUM_CLASSES)
    assert_serves(client, digits)


@pytest.mark.parametrize(
    "inputs, signature",
    [  # JSON numbers carry no dtype: over REST, TF Serving reads them as the signature's dtype (int32, float64 pass)
        ({sig.IMAGE_INPUT: np.zeros((2, 28, 28, 1), np.int32)}, sig.SERVING_DEFAULT),  # wrong dtype
        ({sig.IMAGE_INPUT: np.zeros((2, 28, 28, 1), np.float64)}, sig.SERVING_DEFAULT),  # wrong dtype
        ({sig.IMAGE_INPUT: np.zeros((2, 28, 28), np.float32)}, sig.SERVING_DEFAULT),  # wrong rank
        ({sig.IMAGE_INPUT: np.zeros((2, 32, 32, 1), np.float32)}, sig.SERVING_DEFAULT),  # wrong shape
        ({"pixels": np.zeros((2, 28, 28, 1), np.float32)}, sig.SERVING_DEFAULT),  # wrong input name
        ({sig.PNG_INPUT: np.array([b"not a png"], dtype=object)}, sig.PNG_SIGNATURE),  # undecodable bytes
    ],
    ids=["int32", "float64", "rank3", "32x32", "wrong-name", "bad-png"],
)
def test_invalid_inputs_are_invalid_argument(request, client, digits, inputs, signature):
    from serving.errors import ServingError

    if is_rest(client) and set(request.node.callspec.id.split("-")) & {"int32", "float64"}:
        pytest.skip("JSON numbers carry no dtype: TF Serving's REST API reads them as the signature's dtype")

    with pytest.raises(ServingError) as exc:
        client.predict(inputs, signature_name=signature)
    assert_code(exc, grpc.StatusCode.INVALID_ARGUMENT)
    assert_serves(client, digits)


def test_unknown_signature(client, digits):
    from serving.errors import ServingError

    with pytest.raises(ServingError) as exc:
        client.predict(floats(digits[0][:1]), signature_name="no_such_signature")
    # TF Serving answers FAILED_PRECONDITION 'Serving signature key "..." not found.' (predict_util.cc).
    assert_code(exc, grpc.StatusCode.FAILED_PRECONDITION)
    assert "no_such_signature" in str(exc.value)
    assert_serves(client, digits)


def test_nan_values_are_answered(client, digits):
    x = np.full((2, 28, 28, 1), np.nan, np.float32)
    out = client.predict(x)
    assert out["probabilities"].shape == (2, sig.NUM_CLASSES)
    assert_serves(client, digits)


@local_only
def test_request_larger_than_the_server_limit(address, client, digits):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = sig.MODEL_NAME
    request.inputs[sig.IMAGE_INPUT].CopyFrom(tf.make_tensor_proto(np.zeros((1000, 28, 28, 1), np.float32)))
    assert request.ByteSize() > SERVER_MAX_MESSAGE_BYTES
    with pytest.raises(grpc.RpcError) as exc:
        _raw_predict(address, request)
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_serves(client, digits)


def test_client_that_disconnects_mid_call(address, client, digits):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = sig.MODEL_NAME
    request.inputs[sig.IMAGE_INPUT].CopyFrom(tf.make_tensor_proto(np.zeros((256, 28, 28, 1), np.float32)))
    for _ in range(3):
        channel = grpc.insecure_channel(address)
        future = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict.future(request, timeout=30)
        time.sleep(0.005)
        future.cancel()
        channel.close()
    # A deadline that expires while the server computes is a disconnect too.
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as exc:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=0.001)
        assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert_serves(client, digits)
