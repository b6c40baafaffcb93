"""numpy <-> TensorProto for the client and the local server, with a fast path for numeric arrays.

For numeric arrays the wire form is dtype + shape + raw bytes (`tensor_content`), exactly what
`tf.make_tensor_proto` writes; building it directly, and reading it back with `np.frombuffer`, takes a few
microseconds instead of tens to hundreds, which is most of what a batch-1 request costs besides the model.
Everything else (strings, protos with values in the typed fields such as `float_val`) goes through
`tf.make_tensor_proto` / `tf.make_ndarray`.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

_NUMERIC = {
    types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64, types_pb2.DT_HALF: np.float16,
    types_pb2.DT_INT8: np.int8, types_pb2.DT_INT16: np.int16, types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT64: np.int64, types_pb2.DT_UINT8: np.uint8, types_pb2.DT_UINT16: np.uint16,
    types_pb2.DT_UINT32: np.uint32, types_pb2.DT_UINT64: np.uint64, types_pb2.DT_BOOL: np.bool_,
}
_ENUM = {np.dtype(v): k for k, v in _NUMERIC.items()}


def fill_tensor_proto(proto: tensor_pb2.TensorProto, array) -> tensor_pb2.TensorProto:
    """Write `array` into `proto` (a field of a request or response) as tf.make_tensor_proto would."""
    array = np.asarray(array)
    enum = _ENUM.get(array.dtype)
    if enum is not None and array.dtype.byteorder in "=|":
        proto.dtype = enum
        for size in array.shape:
            proto.tensor_shape.dim.add(size=size)
        proto.tensor_content = np.ascontiguousarray(array).tobytes()
    else:
        proto.CopyFrom(tf.make_tensor_proto(array))
    return proto


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """The array a TensorProto holds (read-only for the fast path: it views the message's bytes)."""
    dtype = _NUMERIC.get(proto.dtype)
    if dtype is not None and proto.tensor_content:
        shape = [d.size for d in proto.tensor_shape.dim]
        array = np.frombuffer(proto.tensor_content, dtype=dtype)
        if array.size == math.prod(shape):
            return array.reshape(shape)
    return tf.make_ndarray(proto)
