"""Client behaviour that needs no model: deadlines against nothing, retry config, TLS arguments, PNG checks."""

from __future__ import annotations

import json
import socket
import struct
import time
import zlib

import grpc
import numpy as np
import pytest

from pipeline.errors import DataError

pytestmark = pytest.mark.timeout(120)


def closed_port_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket is closed


def test_unreachable_server_fails_within_the_deadline():
    from serving.client import ServingClient
    from serving.errors import ServingError

    address = closed_port_address()
    with ServingClient(address, timeout=2.0) as client:
        started = time.monotonic()
        with pytest.raises(ServingError) as exc:
            client.predict(np.zeros((1, 28, 28, 1), np.float32))
        assert time.monotonic() - started < 5.0
    assert exc.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert address in str(exc.value) and "mnist-pipeline serve" in str(exc.value)


def test_wait_until_available_gives_up_at_its_timeout():
    from serving.client import ServingClient
    from serving.errors import ServingError

    with ServingClient(closed_port_address(), timeout=1.0) as client:
        started = time.monotonic()
        with pytest.raises(ServingError, match="no available version after 1.5 s"):
            client.wait_until_available(timeout=1.5)
        assert time.monotonic() - started < 4.0


def test_retries_unavailable_through_the_service_config():
    from serving.client import service_config

    (method,) = json.loads(service_config(4))["methodConfig"]
    assert {n["service"] for n in method["name"]} == {"tensorflow.serving.PredictionService",
                                                      "tensorflow.serving.ModelService"}
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert method["retryPolicy"]["maxAttempts"] == 4


def test_batches_are_split_by_bytes_and_by_max_batch_size():
    from serving.client import ServingClient

    with ServingClient("127.0.0.1:1", max_message_bytes=1024 * 1024, max_batch_size=256) as client:
        images = {"image": np.zeros((1000, 28, 28, 1), np.float32)}  # 3136 bytes each
        parts = client._chunks(images)
        assert sum(p.stop - p.start for p in parts) == 1000
        assert all(p.stop - p.start <= 256 for p in parts)
        assert all((p.stop - p.start) * 3136 < 1024 * 1024 for p in parts)
    with ServingClient("127.0.0.1:1", max_message_bytes=128 * 1024, max_batch_size=256) as client:
        assert max(p.stop - p.start for p in client._chunks(images)) < 256


def test_tls_arguments_are_checked(tmp_path):
    from serving.client import ServingClient
    from serving.errors import ServingError

    with pytest.raises(ServingError, match="both a client certificate and its private key"):
        ServingClient("localhost:8500", certificate_chain=tmp_path / "c.pem")
    with pytest.raises(ServingError, match="missing.pem"):
        ServingClient("localhost:8500", root_certificates=tmp_path / "missing.pem")


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(width) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_predict_command_names_a_file_that_is_not_a_28x28_png(tmp_path):
    from pipeline.commands.predict import read_png

    good, big, text = tmp_path / "good.png", tmp_path / "big.png", tmp_path / "notes.png"
    good.write_bytes(png(28, 28))
    big.write_bytes(png(32, 30))
    text.write_text("hello")
    assert read_png(good) == good.read_bytes()
    with pytest.raises(DataError, match=r"big\.png.*32x30 pixels"):
        read_png(big)
    with pytest.raises(DataError, match=r"notes\.png.*not a PNG"):
        read_png(text)
    with pytest.raises(DataError, match=r"absent\.png"):
        read_png(tmp_path / "absent.png")


def test_predict_command_checks_every_file_before_calling(tmp_path, capsys):
    from pipeline.cli import main

    good, bad = tmp_path / "a.png", tmp_path / "b.png"
    good.write_bytes(png(28, 28))
    bad.write_bytes(b"GIF89a")
    # The server address is never reached: the bad file stops the command first.
    assert main(["predict", "--server", closed_port_address(), str(good), str(bad)]) == 1
    assert "b.png" in capsys.readouterr().err


@pytest.mark.parametrize("array", [
    np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32),
    np.arange(5, dtype=np.int64),
    np.zeros((0, 10), np.float32),
    np.array([True, False]),
    np.array([b"png", b""], dtype=object),
    np.arange(6, dtype=np.float64).reshape(2, 3)[:, ::2],  # not contiguous
], ids=["float32", "int64", "empty", "bool", "bytes", "strided"])
def test_tensor_protos_match_tensorflows(array):
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    from serving.tensors import fill_tensor_proto, to_ndarray

    ours = fill_tensor_proto(tensor_pb2.TensorProto(), array)
    for proto in (ours, tf.make_tensor_proto(array)):
        back = to_ndarray(proto)
        assert back.dtype == array.dtype and back.shape == array.shape
        np.testing.assert_array_equal(back, array)
    np.testing.assert_array_equal(tf.make_ndarray(ours), array)
    # values in the typed fields (as other clients send them) are read too
    typed = tf.make_tensor_proto([1.5, 2.5])
    typed.ClearField("tensor_content")
    typed.float_val.extend([1.5, 2.5])
    np.testing.assert_array_equal(to_ndarray(typed), np.array([1.5, 2.5], np.float32))


def test_rest_client_against_nothing_fails_within_the_deadline():
    from serving.client import ServingClient, connect
    from serving.errors import ServingError
    from serving.rest_client import RestClient

    url = f"http://{closed_port_address()}"
    with connect(url, timeout=2.0) as client:
        assert isinstance(client, RestClient)
        started = time.monotonic()
        with pytest.raises(ServingError) as exc:
            client.predict(np.zeros((1, 28, 28, 1), np.float32))
        assert time.monotonic() - started < 5.0
    assert exc.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert exc.value.http_status is None and url in str(exc.value) and "mnist-pipeline serve" in str(exc.value)
    with connect(closed_port_address()) as grpc_client:
        assert isinstance(grpc_client, ServingClient)


def test_rest_client_refuses_bad_arguments(tmp_path):
    from serving.errors import ServingError
    from serving.rest_client import RestClient

    with pytest.raises(ServingError, match="http:// or https://"):
        RestClient("ftp://localhost:8501")
    with pytest.raises(ServingError, match="both"):
        RestClient("http://localhost:8501", certificate_chain=tmp_path / "c.pem")
    with pytest.raises(ServingError, match="TLS files"):
        RestClient("https://localhost:8501", root_certificates=tmp_path / "missing.pem")
    with RestClient("http://localhost:8501") as client, pytest.raises(ServingError, match="not both"):
        client.predict(np.zeros((1, 28, 28, 1), np.float32), version=1, version_label="stable")
