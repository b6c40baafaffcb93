"""Scoring through a served model (`score --server`): the local server (`serving.server.LocalServer`, what
`mnist-pipeline serve` runs) answers Beam's RemoteModelHandler; classes equal local scoring of the same
version, rows carry the version that answered, and a server that stops mid-job loses no input."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.components.test_score import _png, _write_records
from tests.conftest import IDX_FILES, synthetic_digits

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def served(saved_model_dir, tmp_path):
    """(LocalServer on a free port serving version 3 of `mnist`, the model base path)."""
    from serving.model_manager import ModelManager, ModelSettings
    from serving.server import LocalServer

    base = tmp_path / "models" / "mnist"
    shutil.copytree(saved_model_dir, base / "3")
    server = LocalServer(ModelManager({"mnist": ModelSettings(base)}, poll_interval=1.0), host="127.0.0.1", port=0)
    server.start()
    yield server, base
    server.stop(grace=0)


def _examples(path: Path, images: np.ndarray, labels: np.ndarray) -> str:
    from components.examples import make_example

    return _write_records(path, [make_example(_png(x), int(y), f"r-{i:05d}") for i, (x, y) in
                                 enumerate(zip(images, labels))])


def _rows(out: Path) -> dict:
    return {r["key"]: r for f in out.glob("predictions-*.jsonl") for r in map(json.loads, f.read_text().splitlines())}


def _failed(out: Path) -> dict:
    return {r["key"]: r for f in out.glob("failed-*.jsonl") for r in map(json.loads, f.read_text().splitlines())}


def _score(tmp_path, name, pattern, *flags, batch=256):
    from pipeline import cli

    out = tmp_path / name
    rc = cli.main(["score", "--workdir", str(tmp_path / "w"), "--input", pattern, "--output", str(out), "-q",
                   "--max-batch-size", str(batch), *flags])
    return rc, out


def _compare_remote_with_local(served, tmp_path, capsys, images, labels):
    server, base = served
    pattern = _examples(tmp_path / "in.tfrecord", images, labels)
    rc, local = _score(tmp_path, "local", pattern, "--model", str(base / "3"))
    assert rc == 0, capsys.readouterr().err
    rc, remote = _score(tmp_path, "remote", pattern, "--server", server.address, "--server-model", "mnist")
    assert rc == 0, capsys.readouterr().err
    local_rows, remote_rows = _rows(local), _rows(remote)
    assert len(remote_rows) == len(images) and remote_rows.keys() == local_rows.keys()
    assert all(remote_rows[k]["predicted_class"] == local_rows[k]["predicted_class"] for k in local_rows)
    np.testing.assert_allclose([remote_rows[k]["probabilities"] for k in sorted(local_rows)],
                               [local_rows[k]["probabilities"] for k in sorted(local_rows)], atol=1e-5)
    assert {r["model_version"] for r in remote_rows.values()} == {3}
    summary = json.loads((remote / "summary.json").read_text())
    assert summary["accounted"] and summary["model"]["server"] == server.address


def test_served_model_scores_like_the_local_one(served, tmp_path, capsys):
    images, labels = synthetic_digits(300, seed=31)
    _compare_remote_with_local(served, tmp_path, capsys, images, labels)


def test_served_model_scores_the_10000_test_images_like_the_local_one(served, real_mnist_dir, tmp_path, capsys):
    """About 30 s on 2 shared cores (not marked slow: under a minute)."""
    from components import idx

    images = idx.read_images(real_mnist_dir / IDX_FILES["test_images"])
    labels = idx.read_labels(real_mnist_dir / IDX_FILES["test_labels"])
    _compare_remote_with_local(served, tmp_path, capsys, images, labels)


def test_server_stopped_mid_job_loses_no_input(served, tmp_path, capsys, monkeypatch):
    from serving import server as server_module

    server, _ = served
    images, labels = synthetic_digits(400, seed=32)
    pattern = _examples(tmp_path / "in.tfrecord", images, labels)
    original, calls = server_module._resolve, []

    def resolve(*args, **kwargs):  # each Predict resolves its model: stop the server after the 5th
        calls.append(1)
        if len(calls) == 5:
            threading.Thread(target=server.stop, kwargs={"grace": 0}, daemon=True).start()
        return original(*args, **kwargs)

    monkeypatch.setattr(server_module, "_resolve", resolve)
    rc, out = _score(tmp_path, "out", pattern, "--server", server.address, "--server-retries", "0",
                     "--server-throttle-delay", "0.05", "--server-timeout", "5", batch=8)
    assert rc == 0, capsys.readouterr().err
    predicted, failed = _rows(out), _failed(out)
    assert len(predicted) >= 8 and failed, (len(predicted), len(failed))
    assert predicted.keys() | failed.keys() == {f"r-{i:05d}" for i in range(400)}
    assert not predicted.keys() & failed.keys()
    codes = {r["reason"].split(":")[0] for r in failed.values()}
    assert codes <= {"inference failed (UNAVAILABLE)", "inference failed (CANCELLED)"}, codes
    summary = json.loads((out / "summary.json").read_text())
    assert summary["read"] == 400 == summary["predictions"] + summary["failed"] and summary["accounted"]


def test_unreachable_server_fails_before_the_job(tmp_path, capsys):
    from tests.serving.test_client import closed_port_address

    pattern = _examples(tmp_path / "in.tfrecord", *synthetic_digits(3, seed=1))
    address = closed_port_address()
    rc, out = _score(tmp_path, "never", pattern, "--server", address, "--server-timeout", "2")
    assert rc == 1
    err = capsys.readouterr().err
    assert address in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_scoring_over_rest_equals_local_scoring(served, tmp_path, capsys):
    """`--server http://HOST:PORT`: the same job through TF Serving's REST API (serving.rest_client)."""
    from serving.rest import RestServer

    server, base = served
    rest = RestServer(server.manager, port=0)
    rest.start()
    try:
        images, labels = synthetic_digits(120, seed=32)
        pattern = _examples(tmp_path / "in.tfrecord", images, labels)
        rc, local = _score(tmp_path, "local", pattern, "--model", str(base / "3"))
        assert rc == 0, capsys.readouterr().err
        # TF Serving's REST answers do not name the version that answered: ask for one to have it in the rows.
        rc, remote = _score(tmp_path, "remote", pattern, "--server", rest.url, "--server-model", "mnist",
                            "--server-version", "3")
        assert rc == 0, capsys.readouterr().err
    finally:
        rest.stop()
    local_rows, remote_rows = _rows(local), _rows(remote)
    assert remote_rows.keys() == local_rows.keys() and len(remote_rows) == 120
    assert all(remote_rows[k]["predicted_class"] == local_rows[k]["predicted_class"] for k in local_rows)
    assert {r["model_version"] for r in remote_rows.values()} == {3}


def test_the_server_model_follows_the_dataset_as_push_names_it(saved_model_dir, tmp_path, capsys):
    """`score --dataset fashion_mnist --server HOST:PORT` asks the server for `fashion_mnist`, the name push gives
    that dataset's models; `--server-model` still wins."""
    from serving.model_manager import ModelManager, ModelSettings
    from serving.server import LocalServer

    base = tmp_path / "models" / "fashion_mnist"
    shutil.copytree(saved_model_dir, base / "1")
    server = LocalServer(ModelManager({"fashion_mnist": ModelSettings(base)}, poll_interval=1.0), host="127.0.0.1",
                         port=0)
    server.start()
    try:
        pattern = _examples(tmp_path / "in.tfrecord", *synthetic_digits(5, seed=3))
        rc, out = _score(tmp_path, "fashion", pattern, "--dataset", "fashion_mnist", "--server", server.address)
        assert rc == 0, capsys.readouterr().err
        assert {r["model_name"] for r in _rows(out).values()} == {"fashion_mnist"}
        rc, _ = _score(tmp_path, "digits", pattern, "--server", server.address)  # mnist: not served here
        assert rc == 1 and "'mnist'" in capsys.readouterr().err
        rc, out = _score(tmp_path, "named", pattern, "--server", server.address, "--server-model", "fashion_mnist")
        assert rc == 0 and len(_rows(out)) == 5
    finally:
        server.stop(grace=0)
