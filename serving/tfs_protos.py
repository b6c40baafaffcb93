"""TF Serving config messages that the `tensorflow-serving-api` wheel does not ship.

The wheel has `model_server_config_pb2` but not `monitoring_config_pb2` nor `session_bundle_config_pb2`,
and compiling the .proto files would need `grpcio-tools`, whose wheels pull protobuf 7 (TensorFlow 2.21
needs 6). So the two messages the deployment files use are declared here, field for field, from
tensorflow_serving/config/monitoring_config.proto and
tensorflow_serving/servables/tensorflow/session_bundle_config.proto (`BatchingParameters`; same package,
names, numbers and types), in a private descriptor pool so they never clash with a real copy.
`google.protobuf.text_format` then parses the files exactly as the model server's text parser would
(unknown fields and wrong types are errors).
"""

from __future__ import annotations

import os
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

_F = descriptor_pb2.FieldDescriptorProto


def _field(msg, name, number, ftype, type_name=None, repeated=False):
    f = msg.field.add(name=name, number=number, type=ftype,
                      label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        f.type_name = type_name


def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb))

    monitoring = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto", package="tensorflow.serving", syntax="proto3")
    prom = monitoring.message_type.add(name="PrometheusConfig")
    _field(prom, "enable", 1, _F.TYPE_BOOL)
    _field(prom, "path", 2, _F.TYPE_STRING)
    mon = monitoring.message_type.add(name="MonitoringConfig")
    _field(mon, "prometheus_config", 1, _F.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")
    pool.Add(monitoring)

    bundle = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving", syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
    bp = bundle.message_type.add(name="BatchingParameters")
    _field(bp, "max_batch_size", 1, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value")
    _field(bp, "batch_timeout_micros", 2, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value")
    _field(bp, "max_enqueued_batches", 3, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value")
    _field(bp, "num_batch_threads", 4, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value")
    _field(bp, "thread_pool_name", 5, _F.TYPE_MESSAGE, ".google.protobuf.StringValue")
    _field(bp, "allowed_batch_sizes", 6, _F.TYPE_INT64, repeated=True)
    _field(bp, "pad_variable_length_inputs", 7, _F.TYPE_BOOL)
    pool.Add(bundle)
    return pool


def message_classes() -> dict[str, type]:
    """{"MonitoringConfig": cls, "PrometheusConfig": cls, "BatchingParameters": cls}."""
    pool = _build_pool()
    names = ("MonitoringConfig", "PrometheusConfig", "BatchingParameters")
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{n}")) for n in names}


def read_text_proto(path: str | os.PathLike, message, *, what: str, flag: str):
    """Parse the text proto file at `path` into `message` (a fresh message instance) and return it; a ServingError
    naming the file (`what`: how the error calls it) and the flag that passes it when it cannot be read or parsed."""
    from google.protobuf import text_format

    from serving.errors import ServingError

    p = Path(path)
    try:
        return text_format.Parse(p.read_text(), message)
    except OSError as exc:
        raise ServingError(f"{what} {str(p)!r} cannot be read: {exc}; pass an existing file to {flag}") from exc
    except text_format.ParseError as exc:
        name = message.DESCRIPTOR.name
        raise ServingError(f"{what} {str(p)!r} is not a {name} text proto: {exc}") from exc
