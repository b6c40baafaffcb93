"""The local server's REST API at the HTTP level (TF Serving's JSON, codes and routes), its metrics, the REST
client's TLS, and `mnist-pipeline serve` started with the docker-compose file's flags."""

from __future__ import annotations

import base64
import http.client
import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from serving import signatures as sig
from tests.conftest import REPO_ROOT, synthetic_digits
from tests.serving.test_conformance import free_port, png_bytes, push_version
from tests.serving.test_server import _self_signed

pytestmark = pytest.mark.timeout(300)

BODY_LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def rest(saved_model_dir, tmp_path_factory):
    from serving.metrics import ServingMetrics
    from serving.model_manager import ModelManager, read_models_config
    from serving.rest import RestServer
    from serving.server import LocalServer

    base = tmp_path_factory.mktemp("models")
    push_version(saved_model_dir, base, 1)
    config = REPO_ROOT / "serving" / "deploy" / "models.config"
    metrics = ServingMetrics()
    manager = ModelManager(read_models_config(config, base), poll_interval=0.5, on_load=metrics.observe_load)
    grpc_server = LocalServer(manager, port=0, metrics=metrics)
    grpc_server.start()
    server = RestServer(manager, port=0, max_body_bytes=BODY_LIMIT, metrics=metrics,
                        metrics_path="/monitoring/prometheus/metrics")
    server.start()
    server.grpc_address = grpc_server.address
    yield server
    server.stop()
    grpc_server.stop(0.5)


def call(server, method: str, path: str, body=None, raw: bytes | None = None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        connection.request(method, path, body=payload, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return response.status, (json.loads(data) if data and response.getheader("Content-Type") == "application/json"
                                 else data)
    finally:
        connection.close()


def images(n: int = 2) -> np.ndarray:
    return synthetic_digits(n, seed=5)[0][..., np.newaxis].astype(np.float32) / 255.0


def assert_still_serves(server) -> None:
    status, body = call(server, "POST", "/v1/models/mnist:predict", {"instances": images(1).tolist()})
    assert status == 200 and len(body["predictions"]) == 1


# -- the answers ----------------------------------------------------------------------------------------


def test_row_and_columnar_formats_agree(rest):
    x = images(3)
    status, rows = call(rest, "POST", "/v1/models/mnist:predict", {"instances": x.tolist()})
    assert status == 200
    assert [sorted(r) for r in rows["predictions"]] == [[sig.CLASSES_OUTPUT, sig.PROBABILITIES_OUTPUT]] * 3
    status, cols = call(rest, "POST", "/v1/models/mnist/versions/1:predict",
                        {"signature_name": "serving_default", "inputs": {sig.IMAGE_INPUT: x.tolist()}})
    assert status == 200
    assert cols["outputs"][sig.CLASSES_OUTPUT] == [r[sig.CLASSES_OUTPUT] for r in rows["predictions"]]
    np.testing.assert_allclose(cols["outputs"][sig.PROBABILITIES_OUTPUT],
                               [r[sig.PROBABILITIES_OUTPUT] for r in rows["predictions"]], atol=1e-6)
    named = [{sig.IMAGE_INPUT: im} for im in x.tolist()]  # row format with named inputs
    status, by_name = call(rest, "POST", "/v1/models/mnist/labels/stable:predict", {"instances": named})
    assert status == 200 and by_name == rows


def test_b64_png_and_classify(rest):
    raw = synthetic_digits(2, seed=5)[0]
    b64 = [{"b64": base64.b64encode(png_bytes(im)).decode()} for im in raw]
    status, png = call(rest, "POST", "/v1/models/mnist:predict", {"signature_name": sig.PNG_SIGNATURE, "instances": b64})
    assert status == 200, png
    status, floats = call(rest, "POST", "/v1/models/mnist:predict", {"instances": images(2).tolist()})
    assert [p[sig.CLASSES_OUTPUT] for p in png["predictions"]] == [p[sig.CLASSES_OUTPUT] for p in floats["predictions"]]
    status, classified = call(rest, "POST", "/v1/models/mnist:classify",
                              {"signature_name": sig.CLASSIFY_SIGNATURE,
                               "examples": [{sig.EXAMPLE_IMAGE_FEATURE: b} for b in b64]})
    assert status == 200, classified
    assert len(classified["result"]) == 2 and len(classified["result"][0]) == sig.NUM_CLASSES
    label, score = classified["result"][0][0]
    assert isinstance(label, str) and isinstance(score, float)
    status, with_context = call(rest, "POST", "/v1/models/mnist:classify",
                                {"signature_name": sig.CLASSIFY_SIGNATURE, "context": {sig.EXAMPLE_LABEL_FEATURE: 3},
                                 "examples": [{sig.EXAMPLE_IMAGE_FEATURE: b64[0]}]})
    assert status == 200
    assert [c[0] for c in with_context["result"][0]] == [c[0] for c in classified["result"][0]]
    np.testing.assert_allclose([c[1] for c in with_context["result"][0]], [c[1] for c in classified["result"][0]],
                               atol=1e-5)  # a batch of 1 vs 2: float sums in another order


def test_status_and_metadata_are_tf_servings_json(rest):
    status, body = call(rest, "GET", "/v1/models/mnist")
    assert status == 200
    assert body == {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                              "status": {"error_code": "OK", "error_message": ""}}]}
    assert call(rest, "GET", "/v1/models/mnist/versions/1")[1] == body
    assert call(rest, "GET", "/v1/models/mnist/labels/stable")[1] == body
    status, meta = call(rest, "GET", "/v1/models/mnist/metadata")
    assert status == 200
    assert meta["model_spec"] == {"name": "mnist", "signature_name": "", "version": "1"}
    defs = meta["metadata"]["signature_def"]["signature_def"]
    assert {sig.SERVING_DEFAULT, sig.PNG_SIGNATURE, sig.CLASSIFY_SIGNATURE} <= set(defs)
    assert defs[sig.SERVING_DEFAULT]["inputs"][sig.IMAGE_INPUT]["dtype"] == "DT_FLOAT"


# -- bad requests: TF Serving's error JSON and code, and the server keeps serving -----------------------

PNG_B64 = {"signature_name": sig.PNG_SIGNATURE}


@pytest.mark.parametrize("path, body, raw, status", [
    ("/v1/models/mnist:predict", None, b"{not json", 400),
    ("/v1/models/mnist:predict", None, b"[1, 2]", 400),
    ("/v1/models/mnist:predict", None, b"\xff\xfe", 400),
    ("/v1/models/mnist:predict", {"instances": [[0.0]], "inputs": [[0.0]]}, None, 400),
    ("/v1/models/mnist:predict", {"signature_name": "serving_default"}, None, 400),
    ("/v1/models/mnist:predict", {"instances": [[[[0.0]] * 28] * 28, [[[0.0]] * 28] * 27]}, None, 400),  # ragged
    ("/v1/models/mnist:predict", {"instances": [[["a"] * 28] * 28]}, None, 400),  # strings for floats
    ("/v1/models/mnist:predict", {"instances": [[[[0.0]] * 28] * 28], "signature_name": 7}, None, 400),
    ("/v1/models/mnist:predict", {"instances": "nope"}, None, 400),
    ("/v1/models/mnist:predict", {"instances": []}, None, 400),
    ("/v1/models/mnist:predict", {"inputs": {"pixels": [[0.0]]}}, None, 400),
    ("/v1/models/mnist:predict", {**PNG_B64, "instances": [{"b64": "not base64!"}]}, None, 400),
    ("/v1/models/mnist:predict", {**PNG_B64, "instances": [{"b64": base64.b64encode(b"GIF89a").decode()}]}, None, 400),
    ("/v1/models/mnist:predict", {**PNG_B64, "instances": [{"b64": 12}]}, None, 400),
    ("/v1/models/mnist:predict", {**PNG_B64, "instances": [3.5]}, None, 400),
    ("/v1/models/mnist:predict", {"signature_name": "nope", "instances": [[0.0]]}, None, 400),
    ("/v1/models/mnist:classify", {"signature_name": "classify", "examples": [{"image": [1, "a"]}]}, None, 400),
    ("/v1/models/mnist:classify", {"examples": [{"image": "x"}]}, None, 400),  # serving_default is no classifier
    ("/v1/models/mnist:classify", {"examples": "x"}, None, 400),
    ("/v1/models/mnist:regress", {"examples": []}, None, 501),
    ("/v1/models/mnist/versions/9:predict", {"instances": [[0.0]]}, None, 404),
    ("/v1/models/mnist/labels/nolabel:predict", {"instances": [[0.0]]}, None, 400),
    ("/v1/models/mnist/labels/canary:predict", {"instances": [[0.0]]}, None, 404),  # label of an unloaded version
    ("/v1/models/mnist/versions/1/labels/stable:predict", {"instances": [[0.0]]}, None, 400),  # both
    ("/v1/models/nosuchmodel:predict", {"instances": [[0.0]]}, None, 404),
    ("/v1/models/..:predict", {"instances": [[0.0]]}, None, 404),
    ("/v1/models/%00:predict", {"instances": [[0.0]]}, None, 404),
    ("/v1/models/mnist:explode", {}, None, 400),
    ("/v1/nothing", {}, None, 400),
], ids=lambda v: v if isinstance(v, int) else None)
def test_bad_posts_get_tf_servings_error_json(rest, path, body, raw, status):
    got, answer = call(rest, "POST", path, body=body, raw=raw, headers={"Content-Type": "application/json"})
    assert got == status, answer
    assert set(answer) == {"error"} and answer["error"]
    assert_still_serves(rest)


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/v1/models/mnist:predict", 400),
    ("PUT", "/v1/models/mnist", 400),
    ("DELETE", "/v1/models/mnist", 400),
    ("GET", "/v1/models", 400),
    ("GET", "/v1/models/nosuchmodel", 404),
    ("GET", "/v1/models/mnist/versions/9", 404),
    ("GET", "/v1/models/mnist/versions/1/labels/stable", 400),
    ("GET", "/v1/models/../../etc/passwd", 400),
    ("GET", "/", 404),
    ("GET", "/etc/passwd", 404),
])
def test_unknown_routes_and_methods(rest, method, path, status):
    got, answer = call(rest, method, path)
    assert got == status, answer
    assert set(answer) == {"error"}
    assert_still_serves(rest)


def test_http_level_refusals_are_json_too(rest):
    import socket

    for raw in (b"HEAD /v1/models/mnist HTTP/1.1\r\nHost: x\r\n\r\n", b"GARBAGE\r\n\r\n",
                b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", rest.port), timeout=30) as sock:
            sock.sendall(raw)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split()[1] in (b"400", b"414", b"501"), head
        assert set(json.loads(body)) == {"error"}
    assert_still_serves(rest)


def test_a_body_over_the_limit_is_refused_unread(rest):
    connection = http.client.HTTPConnection("127.0.0.1", rest.port, timeout=30)
    try:
        connection.putrequest("POST", "/v1/models/mnist:predict")
        connection.putheader("Content-Length", str(BODY_LIMIT + 1))
        connection.endheaders()
        response = connection.getresponse()  # answered before any of the body is sent
        assert response.status == 413
        assert "limit" in json.loads(response.read())["error"]
    finally:
        connection.close()
    assert_still_serves(rest)


def test_metrics_have_tf_servings_names(rest):
    call(rest, "POST", "/v1/models/mnist:predict", {"instances": images(1).tolist()})
    call(rest, "POST", "/v1/models/nosuchmodel:predict", {"instances": [[0.0]]})
    from serving.client import ServingClient
    from serving.errors import ServingError

    with ServingClient(rest.grpc_address, timeout=30) as client:
        client.predict(images(1))
        client.get_model_metadata()  # a plain (thread) handler, timed as Predict's coroutine is
    with ServingClient(rest.grpc_address, model_name="nosuchmodel", timeout=30) as client:
        with pytest.raises(ServingError):
            client.predict(images(1))
    status, text = call(rest, "GET", "/monitoring/prometheus/metrics")
    assert status == 200
    text = text.decode()
    assert re.search(r'^:tensorflow:serving:request_count\{model_name="mnist",status="OK"\} \d', text, re.M)
    assert re.search(r'^:tensorflow:serving:request_count\{model_name="nosuchmodel",status="NOT_FOUND"\} [1-9]', text, re.M)
    assert "# TYPE :tensorflow:serving:request_count counter" in text and "request_count_total" not in text
    for entrypoint in ("REST", "GRPC"):
        pattern = ':tensorflow:serving:request_latency_count{API="predict",entrypoint="' + entrypoint + '",model_name="mnist"}'
        assert pattern in text
    assert ':tensorflow:serving:request_latency_count{API="GetModelMetadata",entrypoint="GRPC",model_name="mnist"} 1.0' in text
    assert re.search(r':tensorflow:cc:saved_model:load_attempt_count\{model_path="[^"]+/1",status="success"\} 1', text)
    assert "_created" not in text
    for entrypoint in ("REST", "GRPC"):  # by version and signature too
        labels = f'entrypoint="{entrypoint}",model_name="mnist",signature_name="serving_default",status="OK",version="1"'
        assert f":mnist_pipeline:serving:request_count{{{labels}}}" in text
    # a gRPC call that fails is counted under its status code, as REST's
    labels = 'entrypoint="GRPC",model_name="nosuchmodel",signature_name="serving_default",status="NOT_FOUND",version=""'
    assert f":mnist_pipeline:serving:request_count{{{labels}}} 1.0" in text


def test_a_call_the_client_gives_up_on_is_counted_cancelled_or_deadline_exceeded(rest):
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serving.tensors import fill_tensor_proto

    request = predict_pb2.PredictRequest()
    request.model_spec.name = sig.MODEL_NAME
    fill_tensor_proto(request.inputs[sig.IMAGE_INPUT], images(256))  # long enough to be given up on while it runs

    def counted(status: str) -> float:
        text = call(rest, "GET", "/monitoring/prometheus/metrics")[1].decode()
        found = re.search(r'^:tensorflow:serving:request_count\{model_name="mnist",status="' + status + r'"\} (\S+)', text, re.M)
        return float(found.group(1)) if found else 0.0

    # Whether the server's handler is still running when the client gives up is a race (it depends on the
    # machine's speed): try, at several delays, until it was.
    with grpc.insecure_channel(rest.grpc_address) as channel:
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
        for attempt in range(60):
            future = predict.future(request, timeout=30)
            time.sleep(0.0005 * (1 + attempt % 10))
            future.cancel()
            if counted("CANCELLED"):
                break
        for attempt in range(60):
            try:
                predict(request, timeout=0.001 * (1 + attempt % 10))
            except grpc.RpcError:
                pass
            if counted("DEADLINE_EXCEEDED"):
                break
    # A call gRPC cancelled in the server is the client's doing: not UNKNOWN, which says the server failed.
    assert counted("CANCELLED") >= 1 and counted("DEADLINE_EXCEEDED") >= 1 and counted("UNKNOWN") == 0
    assert_still_serves(rest)


def test_rest_over_tls_and_mutual_tls(saved_model_dir, tmp_path):
    from serving.errors import ServingError
    from serving.model_manager import ModelManager, ModelSettings
    from serving.rest import RestServer
    from serving.rest_client import RestClient

    base = tmp_path / "models"
    push_version(saved_model_dir, base, 1)
    server_cert, server_key = _self_signed(tmp_path, "localhost")
    client_cert, client_key = _self_signed(tmp_path, "client")
    manager = ModelManager({sig.MODEL_NAME: ModelSettings(base / sig.MODEL_NAME)}, poll_interval=0.5)
    manager.poll()
    server = RestServer(manager, port=0, tls_cert=server_cert.read_bytes(), tls_key=server_key.read_bytes(),
                        client_ca=client_cert.read_bytes())
    server.start()
    try:
        url = f"https://localhost:{server.port}"
        with RestClient(url, root_certificates=server_cert, certificate_chain=client_cert, private_key=client_key,
                        timeout=20) as mtls:
            assert mtls.predict(images(1))["probabilities"].shape == (1, 10)
        with RestClient(url, root_certificates=server_cert, timeout=5, max_attempts=2) as no_client_cert:
            with pytest.raises(ServingError) as exc:
                no_client_cert.predict(images(1))
            assert exc.value.http_status is None
        with RestClient(f"http://localhost:{server.port}", timeout=5, max_attempts=2) as plaintext:
            with pytest.raises(ServingError):
                plaintext.predict(images(1))
    finally:
        server.stop()


def test_rest_client_retries_503_then_reports_the_status():
    """A server that always answers 503: retried max_attempts times, then a ServingError with HTTP 503."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from serving.errors import ServingError
    from serving.rest_client import RestClient

    hits = []

    class Busy(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(1)
            body = b'{"error": "busy"}'
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Busy)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with RestClient(f"http://127.0.0.1:{httpd.server_address[1]}", timeout=10, max_attempts=3) as client:
            with pytest.raises(ServingError) as exc:
                client.get_model_status()
        assert exc.value.http_status == 503 and "busy" in str(exc.value) and len(hits) == 3
    finally:
        httpd.shutdown()
        httpd.server_close()


# -- `mnist-pipeline serve` as the container -------------------------------------------------------------


def _serve_refuses_before_tensorflow(tmp_path, *flags: str) -> str:
    """`mnist-pipeline serve FLAGS` as the CLI runs it: its stderr, once it has failed without importing
    TensorFlow (5-8 s to import)."""
    code = ("import sys; from pipeline.cli import main; rc = main(sys.argv[1:]); "
            "print('tensorflow' in sys.modules); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "serve", "--workdir", str(tmp_path), *flags],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stdout
    assert proc.stdout.strip() == "False", f"serve {flags} must be refused before TensorFlow is imported"
    return proc.stderr


def test_an_unsupported_tf_serving_flag_is_named_before_tensorflow_is_imported(tmp_path):
    # An abbreviation of a flag is refused too, as TF Serving refuses it (argparse would take it for the flag).
    for flag, words in [("--tensorflow_session_parallelism=2", "TF Serving flag"), ("--no_such_flag=1", "unrecognized"),
                        ("--enable_batch=true", "unrecognized")]:
        stderr = _serve_refuses_before_tensorflow(tmp_path, flag)
        assert flag.split("=")[0] in stderr and words in stderr, stderr


def test_a_bad_config_file_is_named_before_tensorflow_is_imported(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("garbage {\n")
    for flags, words in [(["--model_config_file=/no/such/models.config"], "'/no/such/models.config' does not exist"),
                         ([f"--model_config_file={bad}"], "is not a ModelServerConfig text proto"),
                         (["--enable_batching=true", f"--batching_parameters_file={bad}"],
                          "is not a BatchingParameters text proto"),
                         ([f"--monitoring_config_file={bad}"], "is not a MonitoringConfig text proto"),
                         ([f"--tls-cert={tmp_path}/no.pem", f"--tls-key={tmp_path}/no.pem"], "cannot be read")]:
        stderr = _serve_refuses_before_tensorflow(tmp_path, "--port=0", "--rest_api_port=0", *flags)
        assert words in stderr, stderr


@pytest.mark.slow
def test_serve_runs_the_docker_compose_command_line(saved_model_dir, tmp_path):
    """docker-compose.yml's flags, unchanged but for the two ports (free ones here), serve gRPC, REST and metrics."""
    from serving.client import ServingClient
    from serving.rest_client import RestClient

    base = tmp_path / "models"
    push_version(saved_model_dir, base, 1)
    compose = yaml.safe_load((REPO_ROOT / "serving" / "deploy" / "docker-compose.yml").read_text())
    (service,) = compose["services"].values()
    grpc_port, rest_port = free_port(), free_port()
    flags = [re.sub(r"^--port=8500$", f"--port={grpc_port}", f) for f in service["command"]]
    flags = [re.sub(r"^--rest_api_port=8501$", f"--rest_api_port={rest_port}", f) for f in flags]
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "serve", "--model-base-path", str(base),
                             "--workdir", str(tmp_path / "work"), *flags],
                            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        with RestClient(f"http://127.0.0.1:{rest_port}", timeout=30) as rest:
            rest.wait_until_available(timeout=120)
            assert rest.predict(images(2), version_label="stable")["classes"].shape == (2,)
        with ServingClient(f"127.0.0.1:{grpc_port}", timeout=30) as client:
            assert client.predict(images(2)).model_version == 1
        connection = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=10)
        connection.request("GET", "/monitoring/prometheus/metrics")
        text = connection.getresponse().read().decode()
        assert ":tensorflow:serving:request_count" in text and "batching_session" in text
    finally:
        proc.terminate()
        proc.wait(60)
        log.seek(0)
        output = log.read()
        log.close()
    assert "batching: up to 256 images" in output, output


def test_the_per_request_batch_cap_holds_over_rest(rest):
    from serving.rest import RestServer

    capped = RestServer(rest._http.manager, port=0, max_batch_size=2)
    capped.start()
    try:
        status, answer = call(capped, "POST", "/v1/models/mnist:predict", {"instances": images(3).tolist()})
        assert status == 400 and "limit of 2" in answer["error"]
        examples = [{sig.EXAMPLE_IMAGE_FEATURE: {"b64": ""}}] * 3
        status, answer = call(capped, "POST", "/v1/models/mnist:classify",
                              {"signature_name": sig.CLASSIFY_SIGNATURE, "examples": examples})
        assert status == 400 and "limit of 2" in answer["error"]
        assert call(capped, "POST", "/v1/models/mnist:predict", {"instances": images(2).tolist()})[0] == 200
    finally:
        capped.stop()


def test_connections_one_after_another_reuse_the_servers_threads(rest):
    """A client that opens a connection per request (curl, requests) does not start a server thread each time."""
    import threading

    def connection_threads() -> set:
        return {t for t in threading.enumerate() if t.name == "rest-connection"}

    seen = set()
    for _ in range(20):
        status, _ = call(rest, "GET", "/v1/models/mnist")
        assert status == 200
        seen |= connection_threads()
    assert seen and len(seen) < 20
    assert seen & connection_threads()  # the threads wait for the next connection instead of ending
