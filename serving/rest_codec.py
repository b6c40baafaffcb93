"""TF Serving's REST JSON (tensorflow_serving/g3doc/api/api_rest.md) and tensors, both ways, for the local REST
server (`serving.rest`) and the REST client (`serving.rest_client`) alike, so that the two cannot disagree.

Predict: the row format `{"instances": [...]}` answers `{"predictions": [...]}`, the columnar format
`{"inputs": ...}` answers `{"outputs": ...}`; a tensor's dtype comes from the signature (JSON numbers carry
none). Binary values travel as `{"b64": "..."}`; outputs whose name ends in `_bytes` are answered so (TF
Serving's rule). Classify: `{"examples": [{feature: value(s)}], "context": {...}}` answers
`{"result": [[[label, score], ...], ...]}`. A malformed body is a RequestError INVALID_ARGUMENT naming the part.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np

from serving.errors import RequestError


def b64_json(value: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(value).decode()}


def invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


# -- server side: JSON -> tensors, outputs -> JSON ---------------------------------------------------------


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _b64decode(value: dict, where: str) -> bytes:
    text = value["b64"]
    if not isinstance(text, str):
        raise invalid(f"{where}: the 'b64' value must be a string of base64")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid(f"{where}: the 'b64' value is not valid base64: {exc}") from exc


def _shape_of(value: Any, where: str) -> list[int]:
    """The shape of nested lists; ragged lists are an error (TF Serving: each level must be the same length)."""
    if not isinstance(value, list):
        return []
    if not value:
        return [0]
    inner = _shape_of(value[0], where)
    for item in value[1:]:
        if _shape_of(item, where) != inner:
            raise invalid(f"{where}: the lists are ragged (not all of one length at each level); send a "
                           f"rectangular tensor")
    return [len(value), *inner]


def _strings(value: Any, where: str) -> Any:
    if isinstance(value, list):
        return [_strings(v, where) for v in value]
    if isinstance(value, str):
        return value.encode()
    if _is_b64(value):
        return _b64decode(value, where)
    raise invalid(f"{where}: expected a string or {{\"b64\": ...}} for a DT_STRING input, got {type(value).__name__}")


def _to_numpy(value: Any, spec, where: str) -> np.ndarray:
    """A JSON value as a numpy array of the signature's dtype (the dtype comes from the signature, as in TF Serving)."""
    import tensorflow as tf

    if spec.dtype == tf.string:
        shape = _shape_of(value, where)
        flat = np.empty(int(np.prod(shape)) if shape else 1, dtype=object)
        leaves = _strings(value, where)
        if shape:
            flat[:] = _flatten(leaves, len(shape))
        else:
            flat[0] = leaves
        return flat.reshape(shape)
    try:
        array = np.array(value)
    except ValueError as exc:
        raise invalid(f"{where}: the lists are ragged (not all of one length at each level); send a rectangular "
                       f"tensor ({exc})") from exc
    want = spec.dtype.as_numpy_dtype
    kind = array.dtype.kind
    if spec.dtype.is_floating:
        ok = kind in "fiu"
    elif spec.dtype.is_integer:
        ok = kind in "iu"
    elif spec.dtype == tf.bool:
        ok = kind == "b"
    else:
        ok = False
    if array.size and not ok:
        raise invalid(f"{where}: values of type {array.dtype.name if kind not in 'OUS' else 'string/object'} "
                       f"cannot be a {spec.dtype.name} tensor; send numbers")
    return array.astype(want, copy=False)


def _flatten(nested: list, depth: int) -> list:
    out = nested
    for _ in range(depth - 1):
        out = [x for sub in out for x in sub]
    return out


def _json_value(array: np.ndarray, name: str) -> Any:
    if array.dtype == object or array.dtype.kind == "S":
        as_b64 = name.endswith("_bytes")  # TF Serving's rule for binary outputs
        def conv(x):
            x = x if isinstance(x, bytes) else bytes(x)
            return b64_json(x) if as_b64 else x.decode("utf-8", "replace")
        return np.vectorize(conv, otypes=[object])(array).tolist() if array.ndim else conv(array.item())
    return array.tolist()


def parse_predict(body: Mapping[str, Any], signature) -> tuple[dict[str, np.ndarray], bool]:
    """The inputs of a predict body, by the signature, and whether it was the row ("instances") format."""
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances and has_inputs:
        raise invalid("Not both 'instances' and 'inputs' can be specified in the request; use one of them")
    if not has_instances and not has_inputs:
        raise invalid("Missing 'inputs' or 'instances' key")
    specs = signature.inputs
    names = sorted(specs)
    if has_instances:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise invalid("Expecting 'instances' to be a list/array")
        if not instances:
            raise invalid("'instances' is empty; send at least one instance")
        named = isinstance(instances[0], dict) and not _is_b64(instances[0])
        if len(names) > 1 and not named:
            raise invalid(f"the signature has several inputs {names}: each instance must be an object naming them")
        if named:
            for i, inst in enumerate(instances):
                if not isinstance(inst, dict) or _is_b64(inst) or set(inst) != set(names):
                    got = sorted(inst) if isinstance(inst, dict) else type(inst).__name__
                    raise invalid(f"instance {i} has inputs {got}; every instance must name exactly {names}")
            arrays = {k: _to_numpy([inst[k] for inst in instances], specs[k], f"'instances' input {k!r}") for k in names}
        else:
            (key,) = names
            arrays = {key: _to_numpy(instances, specs[key], "'instances'")}
        return arrays, True
    inputs = body["inputs"]
    if isinstance(inputs, dict) and not _is_b64(inputs):
        if set(inputs) != set(names):
            raise invalid(f"'inputs' names {sorted(inputs)}; the signature's inputs are {names}")
        return {k: _to_numpy(inputs[k], specs[k], f"'inputs' input {k!r}") for k in names}, False
    if len(names) > 1:
        raise invalid(f"the signature has several inputs {names}: 'inputs' must be an object naming them")
    (key,) = names
    return {key: _to_numpy(inputs, specs[key], "'inputs'")}, False


def predict_response(outputs: Mapping[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    if not row_format:
        if len(outputs) == 1:
            ((name, value),) = outputs.items()
            return {"outputs": _json_value(value, name)}
        return {"outputs": {k: _json_value(v, k) for k, v in outputs.items()}}
    sizes = {v.shape[0] if v.ndim else None for v in outputs.values()}
    if len(sizes) != 1 or None in sizes:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           "the outputs do not share a batch size, so they cannot be answered in the row format; "
                           "send the columnar format ('inputs')")
    columns = {k: _json_value(v, k) for k, v in outputs.items()}
    if len(columns) == 1:
        return {"predictions": next(iter(columns.values()))}
    (n,) = sizes
    return {"predictions": [{k: col[i] for k, col in columns.items()} for i in range(n)]}


def _feature(feature, value: Any, where: str) -> None:
    values = value if isinstance(value, list) else [value]
    if all(isinstance(v, bool) for v in values) or all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        feature.int64_list.value.extend(int(v) for v in values)
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        feature.float_list.value.extend(float(v) for v in values)
    elif all(isinstance(v, str) or _is_b64(v) for v in values):
        feature.bytes_list.value.extend(v.encode() if isinstance(v, str) else _b64decode(v, where) for v in values)
    else:
        raise invalid(f"{where}: a feature's values must be all numbers, all strings or {{\"b64\": ...}}; got {value!r:.80}")


def _example(obj: Any, where: str):
    from tensorflow.core.example import example_pb2

    if not isinstance(obj, dict):
        raise invalid(f"{where} must be an object of feature name -> value(s), got {type(obj).__name__}")
    example = example_pb2.Example()
    for name, value in obj.items():
        _feature(example.features.feature[name], value, f"{where} feature {name!r}")
    return example


def parse_classify(body: Mapping[str, Any], model_spec) -> Any:
    from tensorflow_serving.apis import classification_pb2

    request = classification_pb2.ClassificationRequest()
    request.model_spec.CopyFrom(model_spec)
    examples = body.get("examples")
    if not isinstance(examples, list):
        raise invalid("Expecting 'examples' to be a list/array of objects")
    if "context" in body:
        target = request.input.example_list_with_context
        target.context.CopyFrom(_example(body["context"], "'context'"))
    else:
        target = request.input.example_list
    for i, obj in enumerate(examples):
        target.examples.add().CopyFrom(_example(obj, f"example {i}"))
    return request


def classify_response(result) -> dict[str, Any]:
    return {"result": [[[c.label, c.score] for c in row.classes] for row in result.classifications]}


# -- client side: tensors -> JSON, answers -> numpy ---------------------------------------------------------


def to_json(array: np.ndarray) -> Any:
    """A request tensor as JSON; binary values (object or bytes arrays) as {"b64": ...}."""
    if array.dtype == object or array.dtype.kind == "S":
        encode = np.vectorize(lambda b: b64_json(b if isinstance(b, bytes) else str(b).encode()), otypes=[object])
        return encode(array).tolist() if array.size else array.tolist()
    return array.tolist()


def from_json(value: Any) -> np.ndarray:
    """An answered tensor: floats as float32, integers as int64, strings as str (JSON carries no dtypes)."""
    array = np.asarray(value)
    if array.dtype.kind == "f":
        return array.astype(np.float32)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    return array


def json_bytes(array: np.ndarray) -> float:
    """About how many bytes of JSON a tensor takes, for splitting batches under a body size limit."""
    if array.dtype == object or array.dtype.kind == "S":
        return sum(len(x) * 4 / 3 + 16 for x in array.ravel())
    return array.size * 24.0  # a float written in full takes up to ~22 characters


def example_json(example) -> dict[str, Any]:
    """A tf.Example as a classify example object (the inverse of the server's parsing)."""
    out: dict[str, Any] = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        if kind == "bytes_list":
            out[name] = [b64_json(v) for v in feature.bytes_list.value]
        elif kind == "int64_list":
            out[name] = list(feature.int64_list.value)
        elif kind == "float_list":
            out[name] = list(feature.float_list.value)
    return out


def classify_answer(answer: Mapping[str, Any]) -> tuple[list[list[str]], list[list[float]]]:
    """A classify answer's class labels and scores, row by row."""
    rows = answer["result"]
    return [[c[0] for c in row] for row in rows], [[c[1] for c in row] for row in rows]


def error_text(data: bytes) -> str:
    """The message of an error answer ({"error": ...}), or the start of whatever else came back."""
    try:
        return str(json.loads(data)["error"])
    except (ValueError, KeyError, TypeError):
        return data[:500].decode("utf-8", "replace") or "(empty answer)"
