"""One loaded version of a model, as TF Serving's SavedModelBundle servable: its signatures, checked requests,
the call into the SavedModel, and the warmup replay that must pass before the version is published.

    servable = Servable("mnist", 3, Path("models/mnist/3"))
    servable.warm_up()                                   # assets.extra/tf_serving_warmup_requests
    outputs = servable.predict(predict_request)          # {"probabilities": ndarray, "classes": ndarray}

Every problem with a request raises `RequestError` with TF Serving's status code, before the model runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2

from serving import signatures as sig
from serving.errors import RequestError, ServingError, echo
from serving.session_bundle import read_warmup_requests, replay_warmup_in_session
from serving.tensors import check_fills_shape, to_ndarray

_TF_TO_GRPC = {code.value[0]: code for code in grpc.StatusCode}


try:  # the flat call of a concrete function, below tf.saved_model's per-call wrapper (see _Signature.call)
    from tensorflow.python.eager.polymorphic_function.concrete_function import ConcreteFunction as _ConcreteFunction

    _FLAT_CALL = _ConcreteFunction._call_flat
except (ImportError, AttributeError):  # another TensorFlow: every call takes the public path
    _FLAT_CALL = None


def _checks_of(inputs: Mapping[str, tf.TensorSpec]) -> dict[str, tuple[Any, tuple[int | None, ...] | None]]:
    return {k: (None if s is None or s.dtype == tf.string else np.dtype(s.dtype.as_numpy_dtype),
                None if s is None or s.shape.rank is None else tuple(s.shape.as_list())) for k, s in inputs.items()}


@dataclass(frozen=True)
class _Signature:
    fn: Any  # the concrete function; called directly with keyword tensors
    inputs: Mapping[str, tf.TensorSpec]
    method_name: str
    name: str = sig.SERVING_DEFAULT
    # Per input: the numpy dtype (None for strings) and the dims (None where any size goes), for checks that cost
    # a few microseconds instead of TensorShape's tens.
    checks: Mapping[str, tuple[Any, tuple[int | None, ...] | None]] = None
    captured: tuple | None = None  # a concrete function's captured variable handles, resolved once

    def __post_init__(self):
        if self.checks is None:
            object.__setattr__(self, "checks", _checks_of(self.inputs))
        if self.captured is None and _FLAT_CALL is not None and isinstance(self.fn, _ConcreteFunction):
            object.__setattr__(self, "captured", tuple(self.fn.captured_inputs))

    @classmethod
    def of(cls, name: str, fn, inputs: Mapping[str, tf.TensorSpec], method_name: str) -> _Signature:
        return cls(fn, dict(inputs), method_name, name)

    def call(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the signature on checked numpy inputs. A one-input signature skips the structured-signature
        binding of `fn(**kwargs)` and tf.saved_model's wrapper, which re-resolves every captured variable on each
        call (together about 0.1-0.2 ms of a batch-1 call), and feeds the flat call its resolved handles."""
        try:
            if len(self.inputs) == 1 and self.captured is not None:
                ((key, spec),) = self.inputs.items()
                outputs = _FLAT_CALL(self.fn, [tf.constant(arrays[key], spec.dtype)], list(self.captured))
            else:
                outputs = self.fn(**{k: tf.constant(arrays[k], spec.dtype) for k, spec in self.inputs.items()})
        except tf.errors.OpError as exc:
            raise RequestError(_TF_TO_GRPC.get(exc.error_code, grpc.StatusCode.INTERNAL), exc.message) from exc
        return {k: v.numpy() for k, v in outputs.items()}


class Servable:
    """One loaded version: its signature functions and its SignatureDefs, as GetModelMetadata returns them."""

    batcher = None  # a serving.batching.BatchScheduler once the version is published with batching on

    def __init__(self, name: str, version: int, path: Path):
        self.name = name
        self.version = version
        self.path = path
        self._loaded = tf.saved_model.load(os.fspath(path))
        self.signature_defs = sig.read_signature_defs(os.fspath(path))
        self.signatures: dict[str, _Signature] = {}
        for key, fn in self._loaded.signatures.items():
            _, kwargs = fn.structured_input_signature
            method = self.signature_defs[key].method_name if key in self.signature_defs else sig.PREDICT_METHOD
            self.signatures[key] = _Signature.of(key, fn, kwargs, method)

    # -- request handling -------------------------------------------------------------------------------

    def signature(self, name: str) -> _Signature:
        found = self.signatures.get(name or sig.SERVING_DEFAULT)
        if found is None:
            # TF Serving's code and message for an unknown signature key (predict_util.cc).
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f'Serving signature key "{echo(name or sig.SERVING_DEFAULT)}" not found.')
        return found

    def predict(self, request: predict_pb2.PredictRequest, *, max_batch_size: int | None = None) -> dict[str, np.ndarray]:
        """The signature's outputs; `max_batch_size` caps the first dimension of every input (the server's)."""
        signature, arrays = self.checked_inputs(request, max_batch_size=max_batch_size)
        return self.filter_outputs(self._run(signature.name, signature, arrays), request.output_filter)

    def checked_inputs(self, request: predict_pb2.PredictRequest, *,
                       max_batch_size: int | None = None) -> tuple[_Signature, dict[str, np.ndarray]]:
        """The request's signature and its inputs as numpy arrays, every check passed (the model has not run)."""
        signature = self.signature(request.model_spec.signature_name)
        _check_keys(signature, request.inputs)
        return signature, {key: _to_array(key, request.inputs[key], spec, signature.checks[key], max_batch_size)
                           for key, spec in signature.inputs.items()}

    def submit(self, signature: _Signature, arrays: Mapping[str, np.ndarray], executor: Executor) -> Future:
        """Start the model call on checked inputs without waiting for it: through the batching queue when batching
        is on, else on `executor` (the asyncio gRPC server's model calls leave its event loop free)."""
        if self.batcher is not None:
            future = self.batcher.submit(self, signature.name, signature, arrays)
            if future is not None:
                return future
        return executor.submit(signature.call, arrays)

    def predict_arrays(self, signature_name: str, arrays: Mapping[str, np.ndarray],
                       output_filter: Sequence[str] = (), *, max_batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Predict on numpy inputs (REST's JSON ends here): checked against the signature and the per-request cap,
        then run directly or through the batching queue (`self.batcher`)."""
        signature = self.signature(signature_name)
        _check_keys(signature, arrays)
        for key, spec in signature.inputs.items():
            _check_array(key, arrays[key], spec, signature.checks[key])
            _check_batch(key, arrays[key].shape, max_batch_size)
        return self.filter_outputs(self._run(signature.name, signature, arrays), output_filter)

    @staticmethod
    def filter_outputs(outputs: dict[str, np.ndarray], output_filter: Sequence[str]) -> dict[str, np.ndarray]:
        """The outputs a request's `output_filter` names (all when it names none)."""
        if output_filter:
            unknown = set(output_filter) - set(outputs)
            if unknown:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"output_filter names {echo(sorted(unknown))}, not outputs of the signature {sorted(outputs)}")
            outputs = {k: outputs[k] for k in output_filter}
        return outputs

    def _run(self, signature_name: str, signature: _Signature, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.batcher is not None:
            return self.batcher.run(self, signature_name, signature, arrays)
        return signature.call(arrays)

    def classify(self, request: classification_pb2.ClassificationRequest, *,
                 max_batch_size: int | None = None) -> classification_pb2.ClassificationResult:
        signature = self.signature(request.model_spec.signature_name)
        if signature.method_name != sig.CLASSIFY_METHOD:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Expected classification signature method_name to be {sig.CLASSIFY_METHOD}. "
                               f"Was: {signature.method_name}")
        kind = request.input.WhichOneof("kind")
        count = (len(request.input.example_list.examples) if kind == "example_list" else
                 len(request.input.example_list_with_context.examples) if kind == "example_list_with_context" else 0)
        if max_batch_size is not None and count > max_batch_size:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"{count} examples are more than this server's limit of {max_batch_size} per request; "
                               "send smaller batches")
        if kind == "example_list":
            serialized = [e.SerializeToString() for e in request.input.example_list.examples]
        elif kind == "example_list_with_context":
            ctx = request.input.example_list_with_context.context
            serialized = []
            for e in request.input.example_list_with_context.examples:
                merged = type(ctx)()
                merged.CopyFrom(ctx)
                merged.MergeFrom(e)
                serialized.append(merged.SerializeToString())
        else:
            serialized = []
        if not serialized:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")
        (key,) = signature.inputs
        outputs = self._run(signature.name, signature, {key: np.array(serialized, dtype=object)})
        classes = outputs.get(sig.CLASSIFY_CLASSES_OUTPUT)
        scores = outputs.get(sig.CLASSIFY_SCORES_OUTPUT)
        result = classification_pb2.ClassificationResult()
        for i in range(len(serialized)):
            row = result.classifications.add()
            n = scores.shape[1] if scores is not None else classes.shape[1]
            for j in range(n):
                cls = row.classes.add()
                if classes is not None:
                    cls.label = classes[i, j].decode() if isinstance(classes[i, j], bytes) else str(classes[i, j])
                if scores is not None:
                    cls.score = float(scores[i, j])
        return result

    def warm_up(self) -> int:
        """Replay `assets.extra/tf_serving_warmup_requests`; a failing record fails the load, as in TF Serving.
        The records are replayed twice: here (which warms this server's calls) and as TF Serving runs them, in a
        Session restored by the saver (serving.session_bundle), so that a version TF Serving would refuse is
        refused here too, although tf.saved_model.load could serve it."""
        requests = read_warmup_requests(self.path)
        for kind, request in requests:
            if kind == "predict":
                self.predict(request)
            else:
                self.classify(request)
        if requests:
            try:
                replay_warmup_in_session(self.path, requests)
            except ServingError as exc:
                raise ServingError(f"TF Serving would refuse this version: {exc}. Export it again with `mnist-pipeline "
                                   f"export`; other code saving a Keras 3 model must track the tf.Variable behind "
                                   f"each Keras variable (keras-team/keras#20096)") from exc
        return len(requests)


def _check_keys(signature: _Signature, given) -> None:
    wanted = set(signature.inputs)
    if wanted != set(given):
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input keys {echo(sorted(given))} do not match the signature's inputs {sorted(wanted)}; "
            f"send exactly {sorted(wanted)}",
        )


def _to_array(key: str, proto, spec: tf.TensorSpec, check, max_batch_size: int | None = None) -> np.ndarray:
    """Check a TensorProto against the signature's TensorSpec BEFORE the model sees it, and before anything is
    allocated for it: the values must fill the declared shape exactly and the batch must not exceed the cap."""
    try:
        dtype = spec.dtype if proto.dtype == spec.dtype.as_datatype_enum else tf.as_dtype(proto.dtype)
    except TypeError:
        dtype = None
    if dtype != spec.dtype:
        got = dtype.name if dtype is not None else f"enum {proto.dtype}"
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {echo(key)!r} has dtype {got}, the signature expects {spec.dtype.name}")
    if proto.tensor_shape.unknown_rank:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input {echo(key)!r} has an unknown rank; send a full shape")
    shape = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in shape) or not _compatible(check[1], shape):
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {echo(key)!r} has shape {echo(shape)}, the signature expects {spec.shape}")
    _check_batch(key, shape, max_batch_size)
    try:
        check_fills_shape(proto, shape)
        array = to_ndarray(proto, shape)
    except (ValueError, TypeError) as exc:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {echo(key)!r}: its values do not fill shape {echo(shape)}: {echo(exc)}") from exc
    if list(array.shape) != shape:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {echo(key)!r}: {array.size} values do not fill shape {echo(shape)}")
    return array


def _to_tensor(key: str, proto, spec: tf.TensorSpec, max_batch_size: int | None = None) -> tf.Tensor:
    """`_to_array`'s checks, then the tensor (for callers that want one; requests keep the numpy array)."""
    array = _to_array(key, proto, spec, _checks_of({key: spec})[key], max_batch_size)
    return tf.constant(array, dtype=spec.dtype)


def _check_batch(key: str, shape, max_batch_size: int | None) -> None:
    if max_batch_size is not None and len(shape) and shape[0] > max_batch_size:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {echo(key)!r} has a batch of {shape[0]}, more than this server's limit of "
                           f"{max_batch_size}; send smaller batches")


def _compatible(dims: tuple[int | None, ...] | None, shape) -> bool:
    return dims is None or (len(dims) == len(shape) and all(d is None or d == n for d, n in zip(dims, shape)))


def _check_array(key: str, array: np.ndarray, spec: tf.TensorSpec, check) -> None:
    """A numpy input (from either protocol) against the signature's TensorSpec, before the model sees it."""
    np_dtype, dims = check
    if np_dtype is None:
        ok = array.dtype == object or array.dtype.kind == "S"
    else:
        ok = array.dtype == np_dtype
    if not ok:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {echo(key)!r} has dtype {array.dtype}, the signature expects {spec.dtype.name}")
    if not _compatible(dims, array.shape):
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {echo(key)!r} has shape {list(array.shape)}, the signature expects {spec.shape}")
