"""The local server's own behaviours beside TF Serving's API: health, roll-out of a new version under load (with
batching off and on), an edited models.config, TLS and mutual TLS, SIGTERM. The servers, fixtures and helpers
are tests/serving/test_conformance.py's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from serving import signatures as sig
from tests.conftest import REPO_ROOT, synthetic_digits
from tests.serving import test_conformance as conformance
from tests.serving.test_conformance import (
    DEPLOY_MODELS_CONFIG,
    assert_serves,
    floats,
    free_port,
    local_only,
    push_version,
    start_local_server,
)

pytestmark = pytest.mark.timeout(300)

DEPLOY = REPO_ROOT / "serving" / "deploy"
servers, address = conformance.servers, conformance.address  # the conformance suite's servers, as fixtures here


@pytest.fixture(scope="module")
def digits():
    return synthetic_digits(8, seed=8)


# -- local server only: health, roll-out, TLS, SIGTERM --------------------------------------------------


@local_only
def test_health_is_serving_once_a_model_is_loaded(address, tmp_path):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", sig.MODEL_NAME):
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING

    empty = start_local_server(tmp_path / "empty")  # no version yet: NOT_SERVING, then SERVING once pushed
    try:
        with grpc.insecure_channel(empty.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        empty.stop(0.5)


def test_a_server_process_keeps_its_models_out_of_full_collections(saved_model_dir, tmp_path):
    """As `serve` runs it (freeze_gc): the loaded versions are frozen out of the cyclic collector's reach, so a full
    collection under load does not walk them; a retired version's reference cycles are still collected; stop()
    gives the process's objects back to the collector."""
    import gc
    import weakref

    from serving.model_manager import ModelManager, ModelSettings

    push_version(saved_model_dir, tmp_path, 1)
    manager = ModelManager({sig.MODEL_NAME: ModelSettings(tmp_path / sig.MODEL_NAME)}, poll_interval=0, freeze_gc=True)
    try:
        manager.poll()
        loaded = manager.resolve(sig.MODEL_NAME)._loaded
        assert id(loaded) not in {id(o) for o in gc.get_objects()}, "the loaded model is walked by every full collection"
        # The SavedModel loader makes a class for each object it loads; a class always sits in a reference cycle,
        # so only a collection after unfreezing frees it.
        loaded_class = weakref.ref(type(loaded))
        del loaded
        assert gc.get_freeze_count() > len(gc.get_objects())

        push_version(saved_model_dir, tmp_path, 2)
        assert manager.poll()
        assert manager.resolve(sig.MODEL_NAME).version == 2
        assert loaded_class() is None, "version 1 was retired but its frozen objects were kept"
    finally:
        manager.stop()
    assert gc.get_freeze_count() == 0


@local_only
@pytest.mark.parametrize("batching", [False, True], ids=["batching off", "batching on"])
def test_new_version_rolls_out_without_failed_requests(saved_model_dir, tmp_path, digits, batching):
    from serving.batching import BatchScheduler, read_batching_parameters
    from serving.client import ServingClient

    base = tmp_path / "models"
    push_version(saved_model_dir, base, 1)
    batcher = BatchScheduler(read_batching_parameters(DEPLOY / "batching_parameters.txt")) if batching else None
    if batcher is not None:
        batcher.start()
    server = start_local_server(base, batcher=batcher)
    x = floats(digits[0][:4])
    seen: list[int] = []
    failures: list[Exception] = []
    stop = threading.Event()

    def hammer():
        with ServingClient(server.address, timeout=30.0) as c:
            for _ in range(100000):  # bounded; stopped by the event
                if stop.is_set():
                    return
                try:
                    seen.append(c.predict(x).model_version)
                except Exception as exc:  # every failure is counted, none expected
                    failures.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
        push_version(saved_model_dir, base, 2)
        with ServingClient(server.address, timeout=30.0) as c:
            deadline = time.monotonic() + 120
            while c.predict(x).model_version != 2:
                assert time.monotonic() < deadline, "version 2 was not made the default within 120 s"
                time.sleep(0.1)
            time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join(60)
            assert failures == []
            assert seen[0] == 1 and seen[-1] == 2
            assert c.predict(x, version_label="canary").model_version == 2  # labels follow models.config
            assert {s.version: s.state for s in c.get_model_status()} == {1: "AVAILABLE", 2: "AVAILABLE"}
            push_version(saved_model_dir, base, 3)  # policy keeps the newest two: version 1 is unloaded
            deadline = time.monotonic() + 120
            while {s.version: s.state for s in c.get_model_status()}.get(1) != "END":
                assert time.monotonic() < deadline, "version 1 was not unloaded within 120 s"
                time.sleep(0.1)
            assert c.predict(x).model_version == 3
            with pytest.raises(Exception) as exc:
                c.predict(x, version=1)
            assert exc.value.code == grpc.StatusCode.NOT_FOUND
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        server.stop(0.5)
        if batcher is not None:
            batcher.stop()


@local_only
def test_edited_models_config_moves_labels(saved_model_dir, tmp_path, digits):
    from serving.client import ServingClient
    from serving.errors import ServingError

    base = tmp_path / "models"
    push_version(saved_model_dir, base, 1)
    config = tmp_path / "models.config"
    config.write_text(DEPLOY_MODELS_CONFIG.read_text())
    server = start_local_server(base, models_config=config)
    try:
        with ServingClient(server.address, timeout=20.0) as c:
            with pytest.raises(ServingError) as exc:
                c.predict(floats(digits[0][:1]), version_label="blue")
            assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT
            text = config.read_text().replace('key: "stable"', 'key: "blue"')
            config.write_text(text)
            os.utime(config, (time.time() + 5, time.time() + 5))  # a new mtime even within the clock's tick
            deadline = time.monotonic() + 30
            while True:  # the server re-reads the file at its next poll, as TF Serving does
                try:
                    assert c.predict(floats(digits[0][:1]), version_label="blue").model_version == 1
                    break
                except ServingError:
                    assert time.monotonic() < deadline, "the edited models.config was not picked up in 30 s"
                    time.sleep(0.1)
    finally:
        server.stop(0.5)


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@local_only
def test_tls_and_mutual_tls(saved_model_dir, tmp_path, digits):
    from serving.client import ServingClient
    from serving.errors import ServingError

    base = tmp_path / "models"
    push_version(saved_model_dir, base, 1)
    server_cert, server_key = _self_signed(tmp_path, "localhost")
    client_cert, client_key = _self_signed(tmp_path, "client")
    server = start_local_server(base, tls_cert=server_cert.read_bytes(), tls_key=server_key.read_bytes(),
                                client_ca=client_cert.read_bytes())
    address = f"localhost:{server.port}"
    try:
        with ServingClient(address, timeout=20.0, root_certificates=server_cert, certificate_chain=client_cert,
                           private_key=client_key) as mtls:
            assert_serves(mtls, digits)
        with ServingClient(address, timeout=5.0, root_certificates=server_cert, max_attempts=2) as no_client_cert:
            with pytest.raises(ServingError) as exc:
                no_client_cert.predict(floats(digits[0][:1]))
            assert exc.value.code == grpc.StatusCode.UNAVAILABLE
        with ServingClient(address, timeout=5.0, max_attempts=2) as plaintext:
            with pytest.raises(ServingError):
                plaintext.predict(floats(digits[0][:1]))
    finally:
        server.stop(0.5)

    tls_only = start_local_server(base, tls_cert=server_cert.read_bytes(), tls_key=server_key.read_bytes())
    try:
        with ServingClient(f"localhost:{tls_only.port}", timeout=20.0, root_certificates=server_cert) as tls:
            assert_serves(tls, digits)
    finally:
        tls_only.stop(0.5)


@local_only
@pytest.mark.slow
def test_sigterm_stops_the_serve_command_gracefully(saved_model_dir, tmp_path, digits):
    from serving.client import ServingClient

    base = tmp_path / "models"
    push_version(saved_model_dir, base, 1)
    port = free_port()
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "serve", "--model-base-path", str(base), "--port", str(port),
         "--rest_api_port", str(free_port()), "--poll-interval", "0.5", "--workdir", str(tmp_path / "work")],
        cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        with ServingClient(f"127.0.0.1:{port}", timeout=30.0) as c:
            c.wait_until_available(timeout=120)
            assert_serves(c, digits)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        log.seek(0)
        output = log.read()
        assert f"serving on 127.0.0.1:{port}" in output and "stopped" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
