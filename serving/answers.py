"""What both clients (gRPC `serving.client`, REST `serving.rest_client`) share: the answer types, the hint
each status code gets in an error message, and how a batch is split (serving.client_core runs the calls)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc
import numpy as np

HINTS = {
    grpc.StatusCode.UNAVAILABLE: "is a server running at {address}? Start one (`mnist-pipeline serve`, or the "
    "TF Serving container) or fix the address; with TLS, check the certificates and the server name",
    grpc.StatusCode.DEADLINE_EXCEEDED: "no answer within {timeout:g} s; check the server is up and not overloaded, "
    "or raise the timeout",
    grpc.StatusCode.NOT_FOUND: "check the model name, version and label against `mnist-pipeline predict --status` "
    "(GetModelStatus); a new version is served once loaded",
    grpc.StatusCode.INVALID_ARGUMENT: "check the input names, dtypes and shapes against the signature "
    "(GetModelMetadata)",
    grpc.StatusCode.FAILED_PRECONDITION: "check the signature name against the model's signatures (GetModelMetadata)",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "the message is larger than a limit; send smaller batches or raise "
    "max_message_bytes on both sides",
    grpc.StatusCode.UNAUTHENTICATED: "the server wants client certificates; pass certificate_chain and private_key",
    grpc.StatusCode.UNIMPLEMENTED: "the server does not offer this call",
}


class Prediction(dict):
    """A Predict answer: output name -> numpy array, plus the model version that answered."""

    def __init__(self, outputs: Mapping[str, np.ndarray], model_version: int | None):
        super().__init__(outputs)
        self.model_version = model_version


@dataclass(frozen=True)
class ModelMetadata:
    model_version: int
    signature_defs: Mapping[str, object]  # name -> tensorflow.core.protobuf.meta_graph_pb2.SignatureDef


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str  # UNKNOWN, START, LOADING, AVAILABLE, UNLOADING, END
    error_code: int
    error_message: str


def as_inputs(inputs, input_name: str) -> dict[str, np.ndarray]:
    """A Predict call's inputs by name: an array alone goes to `input_name`."""
    if isinstance(inputs, np.ndarray) or not isinstance(inputs, Mapping):
        inputs = {input_name: inputs}
    return {k: np.asarray(v) for k, v in inputs.items()}


def batch_slices(inputs: Mapping[str, np.ndarray], *, max_message_bytes: int, max_batch_size: int, envelope: int,
                 nbytes: Callable[[np.ndarray], float], unit: str = "bytes") -> list[slice]:
    """Slices of the batch such that no request exceeds `max_message_bytes` (each example's size by `nbytes`,
    plus `envelope` for the rest of the request) nor `max_batch_size` examples."""
    from serving.errors import ServingError

    sizes = {a.shape[0] if a.ndim else 1 for a in inputs.values()}
    if len(sizes) != 1:
        raise ServingError(f"inputs have different batch sizes {sorted(sizes)}; give every input the same first dimension")
    (n,) = sizes
    per_example = sum(nbytes(a) for a in inputs.values()) / max(n, 1)
    by_bytes = int((max_message_bytes - envelope) // max(per_example, 1))
    if by_bytes < 1:
        raise ServingError(f"one example is about {per_example:.0f} {unit}, more than max_message_bytes "
                           f"({max_message_bytes}); raise max_message_bytes")
    step = max(1, min(by_bytes, max_batch_size))
    if n == 0:
        return [slice(0, 0)]
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def joined(parts: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The outputs of a split batch's requests, concatenated in order."""
    if len(parts) == 1:
        return dict(parts[0])
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
