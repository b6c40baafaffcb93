"""Server-side batching (serving.batching): merged calls, answers back to their own callers, queue limits,
padding, splitting; and through the local server with the real model."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import grpc
import numpy as np
import pytest

from serving import signatures as sig
from tests.conftest import REPO_ROOT, synthetic_digits

pytestmark = pytest.mark.timeout(300)


@dataclass
class FakeSignature:
    """y = 10 * x + row index within the merged batch is NOT used: the answer depends on the row alone."""

    delay: float = 0.0
    calls: list[int] = field(default_factory=list)

    @property
    def inputs(self):
        import tensorflow as tf

        return {"x": tf.TensorSpec([None, 2], tf.float32)}

    def call(self, arrays):
        self.calls.append(len(arrays["x"]))
        time.sleep(self.delay)
        return {"y": arrays["x"] * 10.0, "n": np.full(len(arrays["x"]), len(arrays["x"]))}


SERVABLE = SimpleNamespace(name="m", version=1)


def scheduler(**params):
    from serving.batching import BatchingParameters, BatchScheduler

    s = BatchScheduler(BatchingParameters(**{"num_batch_threads": 2, **params}))
    s.start()
    return s


def test_concurrent_requests_are_merged_and_answered_to_their_callers():
    s = scheduler(max_batch_size=64, batch_timeout_micros=50_000)
    fake = FakeSignature()
    answers: dict[int, dict] = {}

    def one(i: int) -> None:
        x = np.full((1 + i % 3, 2), i, np.float32)
        answers[i] = (x, s.run(SERVABLE, "sig", fake, {"x": x}))

    try:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        s.stop()
    assert len(answers) == 16
    for x, out in answers.values():
        np.testing.assert_array_equal(out["y"], x * 10.0)  # its own rows, in its own order
    assert len(fake.calls) < 16 and max(fake.calls) > 3  # requests were merged


def test_padding_to_allowed_batch_sizes_and_splitting_large_requests():
    s = scheduler(max_batch_size=8, batch_timeout_micros=0, allowed_batch_sizes=(4, 8))
    fake = FakeSignature()
    try:
        x = np.arange(2 * 19, dtype=np.float32).reshape(19, 2)
        out = s.run(SERVABLE, "sig", fake, {"x": x})
    finally:
        s.stop()
    np.testing.assert_array_equal(out["y"], x * 10.0)
    assert sorted(fake.calls) == [4, 8, 8]  # 19 rows: 8 + 8 + 3 padded to 4
    assert list(out["n"]) == [8] * 16 + [4] * 3


def test_requests_of_other_shapes_or_signatures_are_never_mixed():
    s = scheduler(max_batch_size=64, batch_timeout_micros=30_000)
    fake = FakeSignature()
    other = FakeSignature()
    results = {}

    def run(name, sigobj, x, key):
        results[key] = s.run(SERVABLE, name, sigobj, {"x": x})

    try:
        threads = [threading.Thread(target=run, args=("a", fake, np.ones((2, 2), np.float32), "a")),
                   threading.Thread(target=run, args=("b", other, np.ones((3, 2), np.float32) * 2, "b")),
                   threading.Thread(target=run, args=("a", fake, np.ones((1, 3), np.float32) * 3, "c"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        s.stop()
    np.testing.assert_array_equal(results["a"]["y"], np.full((2, 2), 10.0))
    np.testing.assert_array_equal(results["b"]["y"], np.full((3, 2), 20.0))
    np.testing.assert_array_equal(results["c"]["y"], np.full((1, 3), 30.0))
    assert other.calls == [3] and sorted(fake.calls) == [1, 2]


def test_a_full_queue_answers_unavailable():
    from serving.errors import RequestError

    s = scheduler(max_batch_size=1, batch_timeout_micros=0, max_enqueued_batches=2, num_batch_threads=1)
    slow = FakeSignature(delay=0.5)
    errors: list[RequestError] = []
    done: list[int] = []

    def one():
        try:
            s.run(SERVABLE, "sig", slow, {"x": np.ones((1, 2), np.float32)})
            done.append(1)
        except RequestError as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
            time.sleep(0.02)
        for t in threads:
            t.join(30)
    finally:
        s.stop()
    assert errors and all(e.code == grpc.StatusCode.UNAVAILABLE for e in errors)
    assert "queue" in errors[0].message and done


def test_an_error_reaches_every_caller_of_the_batch():
    from serving.errors import RequestError

    class Failing(FakeSignature):
        def call(self, arrays):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "bad batch")

    s = scheduler(max_batch_size=8, batch_timeout_micros=0)
    try:
        with pytest.raises(RequestError, match="bad batch"):
            s.run(SERVABLE, "sig", Failing(), {"x": np.ones((2, 2), np.float32)})
        out = s.run(SERVABLE, "sig", FakeSignature(), {"x": np.ones((2, 2), np.float32)})  # still serving
        assert out["y"].shape == (2, 2)
    finally:
        s.stop()


def test_batching_parameters_file_is_read_with_tf_servings_proto(tmp_path):
    from serving.batching import read_batching_parameters
    from serving.errors import ServingError

    params = read_batching_parameters(REPO_ROOT / "serving" / "deploy" / "batching_parameters.txt")
    assert params.max_batch_size == 256 and params.allowed_batch_sizes[-1] == 256
    assert params.padded_size(9) == 16 and params.padded_size(1) == 1 and params.padded_size(256) == 256
    bad = tmp_path / "b.txt"
    bad.write_text("max_batch_size { value: 8 }\nallowed_batch_sizes: 4\n")
    with pytest.raises(ServingError, match="allowed_batch_sizes"):
        read_batching_parameters(bad)
    bad.write_text("max_batch_sise { value: 8 }\n")
    with pytest.raises(ServingError, match="not a BatchingParameters"):
        read_batching_parameters(bad)


def test_batched_server_answers_each_caller_with_its_own_images(saved_model_dir, tmp_path):
    """Through the local server and the real model: 12 concurrent callers, each with its own images, get the
    same probabilities as an unbatched call of the same images, over gRPC and REST at once."""
    from serving.batching import BatchingParameters, BatchScheduler
    from serving.client import ServingClient
    from serving.model_manager import ModelManager, ModelSettings
    from serving.rest import RestServer
    from serving.rest_client import RestClient
    from serving.server import LocalServer
    from tests.serving.test_conformance import push_version

    base = tmp_path / "models"
    push_version(saved_model_dir, base, 1)
    merged: list[int] = []
    batcher = BatchScheduler(BatchingParameters(max_batch_size=32, batch_timeout_micros=100_000, num_batch_threads=2,
                                                allowed_batch_sizes=(8, 16, 32)),
                             on_batch=lambda model, rows, padded, waited: merged.append(rows))
    batcher.start()
    manager = ModelManager({sig.MODEL_NAME: ModelSettings(base / sig.MODEL_NAME)}, poll_interval=0.5, batcher=batcher)
    server = LocalServer(manager, port=0)
    server.start()
    rest = RestServer(manager, port=0)
    rest.start()
    images = synthetic_digits(24, seed=3)[0][..., np.newaxis].astype(np.float32) / 255.0
    expected = manager.resolve(sig.MODEL_NAME).signatures[sig.SERVING_DEFAULT].call({sig.IMAGE_INPUT: images})
    answers: dict[int, np.ndarray] = {}
    failures: list[Exception] = []

    def caller(i: int) -> None:
        rows = slice(2 * i, 2 * i + 1 + i % 2)  # 1 or 2 images of its own
        try:
            client = ServingClient(server.address, timeout=30) if i % 2 else RestClient(rest.url, timeout=30)
            with client:
                answers[i] = (rows, client.predict(images[rows])["probabilities"])
        except Exception as exc:  # collected, asserted below
            failures.append(exc)

    try:
        threads = [threading.Thread(target=caller, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        rest.stop()
        server.stop(0.5)
        batcher.stop()
    assert failures == []
    assert len(answers) == 12
    for rows, probabilities in answers.values():
        np.testing.assert_allclose(probabilities, expected[sig.PROBABILITIES_OUTPUT][rows], atol=1e-5)
    assert max(merged) > 2, f"no two requests were merged: batches of {merged}"


def test_a_caller_that_gives_up_on_its_batch_leaves_the_others_answered(saved_model_dir, tmp_path):
    """A gRPC call whose deadline passes while it waits for its batch answers DEADLINE_EXCEEDED; the batch still
    runs for the callers that wait, and the server answers the next call."""
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serving.batching import BatchingParameters, BatchScheduler
    from serving.model_manager import ModelManager, ModelSettings
    from serving.server import LocalServer
    from serving.tensors import fill_tensor_proto
    from tests.serving.test_conformance import push_version

    base = tmp_path / "models"
    push_version(saved_model_dir, base, 1)
    batcher = BatchScheduler(BatchingParameters(max_batch_size=8, batch_timeout_micros=1_000_000, num_batch_threads=1))
    batcher.start()
    manager = ModelManager({sig.MODEL_NAME: ModelSettings(base / sig.MODEL_NAME)}, poll_interval=0.5, batcher=batcher)
    server = LocalServer(manager, port=0)
    server.start()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = sig.MODEL_NAME
    fill_tensor_proto(request.inputs[sig.IMAGE_INPUT], np.zeros((1, 28, 28, 1), np.float32))
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            patient = stub.Predict.future(request, timeout=30)  # waits the batch's second for company
            with pytest.raises(grpc.RpcError) as impatient:
                stub.Predict(request, timeout=0.2)
            assert impatient.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert patient.result().outputs[sig.PROBABILITIES_OUTPUT].tensor_shape.dim[0].size == 1
            assert stub.Predict(request, timeout=30).model_spec.version.value == 1
    finally:
        server.stop(0.5)
        batcher.stop()
