"""A SavedModel run the way TF Serving runs it: TF Serving's SavedModelBundle is the MetaGraph tagged `serve`
loaded into a TF1 Session, its variables set by the saver's restore op from `variables/`, and every request a
Session::Run on the SignatureDef's tensor names. tf.saved_model.load (the local server's loader) restores
variables through the object graph instead, so a SavedModel can answer there and fail in TF Serving on every
call ("Could not find variable ...", keras-team/keras#20096). Before it serves a version, TF Serving replays
its warmup requests; a failing one fails the load. This module does the same, for the exporter to check what it
wrote, for the local server to refuse what TF Serving would refuse, and for the tests:

    replayed = replay_warmup_in_session(Path("saved_model"))   # the number of records; ServingError if one fails
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serving import signatures as sig
from serving.errors import ServingError


class SessionBundle:
    """A SavedModel loaded as TF Serving loads it (see above); `run` calls a signature as TF Serving does.

        with SessionBundle(Path("saved_model")) as bundle:
            outputs = bundle.run("serving_default", {"image": images})   # {"probabilities": ..., "classes": ...}
    """

    def __init__(self, saved_model_dir: Path):
        import tensorflow as tf
        from tensorflow.python.util import deprecation

        self.path = Path(saved_model_dir)
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph)
        try:
            with self._graph.as_default(), deprecation.silence():  # TF1's loader: deprecated for TF2 code, TF Serving's
                self._meta_graph = tf.compat.v1.saved_model.load(self._session, ["serve"], os.fspath(self.path))
        except (tf.errors.OpError, RuntimeError, ValueError, OSError) as exc:
            self._session.close()
            raise ServingError(f"SavedModel {os.fspath(self.path)!r} does not load into a Session as TF Serving "
                               f"loads it: {exc}") from exc

    def run(self, signature_name: str, feeds: Mapping[str, Any], outputs: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """Session.run on the SignatureDef's tensor names: `feeds` by input key, all outputs or those named."""
        import tensorflow as tf

        signature = self._meta_graph.signature_def.get(signature_name)
        if signature is None or set(feeds) != set(signature.inputs):
            raise ServingError(f"the SavedModel has no signature {signature_name!r} with inputs {sorted(feeds)}")
        keys = list(outputs or signature.outputs)
        tensor = self._graph.get_tensor_by_name
        try:
            values = self._session.run([tensor(signature.outputs[k].name) for k in keys],
                                       {tensor(signature.inputs[k].name): v for k, v in feeds.items()})
        except (tf.errors.OpError, ValueError, TypeError) as exc:  # ValueError, TypeError: a feed's shape or dtype
            raise ServingError(f"signature {signature_name!r} fails when run as TF Serving runs it, in a Session "
                               f"restored from variables/: {getattr(exc, 'message', exc)}") from exc
        return dict(zip(keys, values))

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> SessionBundle:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


MAX_WARMUP_RECORDS = 1000  # TF Serving replays at most this many (saved_model_warmup_util.cc)


def read_warmup_requests(saved_model_dir: Path) -> list[tuple[str, Any]]:
    """The SavedModel's warmup requests, `assets.extra/tf_serving_warmup_requests`, as ("predict",
    PredictRequest) or ("classify", ClassificationRequest), at most MAX_WARMUP_RECORDS; [] without the file.
    ServingError for a record of another kind (the exporter writes these two only)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(saved_model_dir) / "assets.extra" / sig.WARMUP_FILE
    if not path.is_file():
        return []
    requests = []
    for number, record in enumerate(tf.data.TFRecordDataset(os.fspath(path)).take(MAX_WARMUP_RECORDS)
                                    .as_numpy_iterator(), start=1):
        entry = prediction_log_pb2.PredictionLog.FromString(record)
        kind = entry.WhichOneof("log_type")
        if kind == "predict_log":
            requests.append(("predict", entry.predict_log.request))
        elif kind == "classify_log":
            requests.append(("classify", entry.classify_log.request))
        else:
            raise ServingError(f"warmup record {number} of assets.extra/{sig.WARMUP_FILE} is a {kind}; only "
                               f"Predict and Classify records are replayed")
    return requests


def replay_warmup_in_session(saved_model_dir: Path, requests: list[tuple[str, Any]] | None = None) -> int:
    """Load `saved_model_dir` as TF Serving does and replay its warmup requests (`requests`, as
    read_warmup_requests returns them, or read here) through Session.run (`replay_warmup`). Returns the number
    replayed; ServingError names the failing one."""
    if requests is None:
        requests = read_warmup_requests(saved_model_dir)
    with SessionBundle(saved_model_dir) as bundle:
        return replay_warmup(bundle, requests)


def replay_warmup(bundle: SessionBundle, requests: list[tuple[str, Any]]) -> int:
    """Replay warmup requests (as read_warmup_requests returns them) through `bundle`: Predict requests with their
    inputs and output filter, Classify requests' examples on the signature's `inputs` tensor. Returns the number
    replayed; ServingError names the failing one."""
    import tensorflow as tf

    for number, (kind, request) in enumerate(requests, start=1):
        if kind == "predict":
            feeds = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
            outputs = list(request.output_filter)
        else:
            feeds = {sig.CLASSIFY_INPUT: [e.SerializeToString() for e in request.input.example_list.examples]}
            outputs = []
        try:
            bundle.run(request.model_spec.signature_name or sig.SERVING_DEFAULT, feeds, outputs)
        except ServingError as exc:
            raise ServingError(f"warmup record {number} of assets.extra/{sig.WARMUP_FILE}: {exc}") from exc
    return len(requests)
