"""Serving check stage: serve the pushed version with the local server, query it with the gRPC client.

    out = serving_check.run(model_registry.version_at(base_path / "mnist" / "3"), data_dir, "mnist", run_dir / "serving_check",
                            expected_accuracy=0.9951, expected_examples=10000)

Starts `serving.server.LocalServer` on a free loopback port over `<base_path>/<model_name>` pinned to the
version under test, waits until it reports the version AVAILABLE, then through `serving.client.ServingClient`:
Predict (`serving_default`) on the test split (the first `max_examples`, or all of it), and Predict on PNG
bytes (`predict_png`) and Classify (tf.Example) on the first few, which must agree with `serving_default`.
Passes when the server answers with the version asked for, every signature agrees, and the accuracy over
the wire equals the one the evaluator (or the Beam scorer) measured on the same examples, within
`tolerance`. The result goes to serving_check.json whatever it is; a check that does not pass raises
`ServingCheckError` after writing it, so the run stops there. The server is stopped in every case.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.atomic import atomic_write_json
from components.portable import portable
from pipeline.errors import PipelineError
from serving import signatures as sig
from serving.model_registry import ModelVersion

log = logging.getLogger(__name__)

RESULT_FILE = "serving_check.json"
_SIGNATURE_SAMPLES = 16  # examples also sent as PNG bytes and as tf.Example


class ServingCheckError(PipelineError):
    """The served model did not answer as the evaluated model does."""


@dataclass(frozen=True)
class ServingCheckOutput:
    result_path: Path
    passed: bool
    model_version: int
    num_examples: int
    accuracy: float
    expected_accuracy: float | None
    seconds: float


def run(
    model: ModelVersion,
    data_dir: str | os.PathLike,
    dataset: str,
    out_dir: str | os.PathLike,
    *,
    max_examples: int | None = None,
    expected_accuracy: float | None = None,
    expected_examples: int | None = None,
    tolerance: float = 1e-3,
    timeout: float = 60.0,
    record_root: str | os.PathLike | None = None,
) -> ServingCheckOutput:
    """Check pushed version `model` over gRPC; see the module docstring.

    `record_root`: the result names the model base path relative to it when inside it (None: absolute).

    `expected_accuracy` applies only when the check sees `expected_examples` examples (the same set)."""
    from components import data
    from components.examples import make_example
    from components.export import encode_pngs
    from serving.client import ServingClient
    from serving.model_manager import ModelManager, ModelSettings
    from serving.server import LocalServer

    out_dir = Path(out_dir)
    model_name, version = model.name, model.version
    class_names = sig.read_class_names(model.path)
    images, labels = [], []
    for batch_images, batch_labels in data.split_dataset(data_dir, dataset, "test", batch_size=1000,
                                                         max_examples=max_examples):
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
    if not images:
        raise ServingCheckError(f"the test split of {dataset!r} in {os.fspath(data_dir)!r} is empty; nothing to check")
    x = np.concatenate(images).astype(np.float32)
    y = np.concatenate(labels).astype(np.int64)

    settings = ModelSettings(model.path.parent, policy="specific", specific_versions=(int(version),))
    manager = ModelManager({model_name: settings}, poll_interval=1.0)
    server = LocalServer(manager, host="127.0.0.1", port=0)
    problems: list[str] = []
    started = time.perf_counter()
    server.start()
    try:
        with ServingClient(server.address, model_name=model_name, timeout=timeout) as client:
            client.wait_until_available(timeout=timeout)
            answer = client.predict(x, version=int(version))
            classes = np.asarray(answer["classes"]).astype(np.int64).reshape(-1)
            if answer.model_version != int(version):
                problems.append(f"asked for version {version}, answered by version {answer.model_version}")
            k = min(_SIGNATURE_SAMPLES, len(x))
            pngs = encode_pngs(x[:k])
            png_classes = np.asarray(client.predict_png(pngs, version=int(version))["classes"]).astype(np.int64).reshape(-1)
            classified = client.classify([make_example(p) for p in pngs], version=int(version))
            scores = classified["scores"]
            # Classify answers the class names (the model's assets.extra/class_names.txt), index order.
            answered_names = [list(row) for row in classified["classes"]]
            top_names = np.array([row[i] for row, i in zip(answered_names, scores.argmax(axis=1))], dtype=object)
            expected_names = np.array([class_names[int(c)] for c in classes[:k]], dtype=object)
            if not np.array_equal(png_classes, classes[:k]):
                problems.append(f"predict_png disagrees with serving_default on {int((png_classes != classes[:k]).sum())} of {k}")
            if any(row != class_names for row in answered_names):
                problems.append(f"classify answers the classes {answered_names[0]!r}, not the model's names {class_names!r}")
            elif not np.array_equal(top_names, expected_names):
                problems.append(f"classify disagrees with serving_default on {int((top_names != expected_names).sum())} of {k}")
        address = server.address
    finally:
        server.stop(grace=1.0)
    seconds = time.perf_counter() - started
    accuracy = float((classes == y).mean())
    compared = expected_accuracy is not None and (expected_examples is None or expected_examples == len(y))
    if compared and abs(accuracy - float(expected_accuracy)) > tolerance:
        problems.append(f"accuracy over gRPC {accuracy:.4f} differs from the evaluated {expected_accuracy:.4f} "
                        f"by more than {tolerance}")
    passed = not problems
    record: dict[str, Any] = {
        "passed": passed,
        "problems": problems,
        "model_name": model_name,
        "model_version": int(version),
        "model_base_path": portable(model.path.parent.parent, record_root),
        "server": address,
        "num_examples": int(len(y)),
        "accuracy": accuracy,
        "expected_accuracy": expected_accuracy if compared else None,
        "signatures_checked": ["serving_default", "predict_png", "classify"],
        "class_names": class_names,
        "classify_top_classes": [str(n) for n in top_names[:5]],
        "signature_samples": int(k),
        "seconds": round(seconds, 3),
        "checked_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    path = atomic_write_json(out_dir / RESULT_FILE, record)
    log.info("wrote %s", path)
    log.info("serving check of %s version %d on %d examples over gRPC: accuracy %.4f, %s", model_name, version,
             len(y), accuracy, "passed" if passed else "FAILED: " + "; ".join(problems))
    if not passed:
        raise ServingCheckError(f"serving check of {model_name} version {version} failed: {'; '.join(problems)} "
                                f"(details in {path})")
    return ServingCheckOutput(path, passed, int(version), int(len(y)), accuracy,
                              expected_accuracy if compared else None, seconds)
