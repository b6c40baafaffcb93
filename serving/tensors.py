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

# The repeated field that carries each dtype's values when `tensor_content` is empty, and how many entries
# one element takes (a complex number is two).
_VALUE_FIELDS = {
    types_pb2.DT_FLOAT: ("float_val", 1), types_pb2.DT_DOUBLE: ("double_val", 1),
    types_pb2.DT_HALF: ("half_val", 1), types_pb2.DT_BFLOAT16: ("half_val", 1),
    types_pb2.DT_INT8: ("int_val", 1), types_pb2.DT_INT16: ("int_val", 1), types_pb2.DT_INT32: ("int_val", 1),
    types_pb2.DT_UINT8: ("int_val", 1), types_pb2.DT_UINT16: ("int_val", 1),
    types_pb2.DT_INT64: ("int64_val", 1), types_pb2.DT_UINT32: ("uint32_val", 1),
    types_pb2.DT_UINT64: ("uint64_val", 1), types_pb2.DT_BOOL: ("bool_val", 1),
    types_pb2.DT_STRING: ("string_val", 1),
    types_pb2.DT_COMPLEX64: ("scomplex_val", 2), types_pb2.DT_COMPLEX128: ("dcomplex_val", 2),
}
# Bytes an element of each fixed-size dtype takes in `tensor_content` (looked up per request: no tf.as_dtype).
_ITEMSIZE = {k: tf.as_dtype(k).size for k in _VALUE_FIELDS if k != types_pb2.DT_STRING}


def check_fills_shape(proto: tensor_pb2.TensorProto, shape: list[int] | None = None) -> list[int]:
    """The proto's shape (`shape`, when the caller has read it already), once its values are known to fill it
    exactly; ValueError otherwise.

    Runs on the message as received, before anything is allocated: TensorFlow's own conversion pads values that
    fall short of the shape (with zeros or the last value), so a few bytes declaring a huge shape would cost
    gigabytes. Counts come from the repeated field's length or `tensor_content`'s byte length.
    """
    if shape is None:
        shape = [d.size for d in proto.tensor_shape.dim]
    if any(size < 0 for size in shape):
        raise ValueError(f"shape {shape} has a negative dimension")
    declared = math.prod(shape)  # a Python int: no overflow, however large the claim
    if proto.tensor_content:
        itemsize = _ITEMSIZE.get(proto.dtype, 0)
        if not itemsize:
            raise ValueError("tensor_content is only for fixed-size numeric dtypes")
        if len(proto.tensor_content) != declared * itemsize:
            raise ValueError(f"{len(proto.tensor_content)} bytes of tensor_content do not fill "
                             f"{declared} elements of {itemsize} bytes")
        return shape
    field = _VALUE_FIELDS.get(proto.dtype)
    if field is None:
        raise ValueError(f"dtype enum {proto.dtype} is not supported")
    count = len(getattr(proto, field[0]))
    if count != declared * field[1]:
        raise ValueError(f"{count // field[1]} values do not fill {declared} elements")
    return shape


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


def to_ndarray(proto: tensor_pb2.TensorProto, shape: list[int] | None = None) -> np.ndarray:
    """The array a TensorProto holds (read-only for the fast path: it views the message's bytes); `shape`, when
    the caller has read the proto's shape already."""
    dtype = _NUMERIC.get(proto.dtype)
    if dtype is not None and proto.tensor_content:
        if shape is None:
            shape = [d.size for d in proto.tensor_shape.dim]
        array = np.frombuffer(proto.tensor_content, dtype=dtype)
        if array.size == math.prod(shape):
            return array.reshape(shape)
    return tf.make_ndarray(proto)
