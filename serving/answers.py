"""What a serving call answers, for both clients (gRPC `serving.client`, REST `serving.rest_client`): the
answer types and the hint each status code gets in an error message."""

from __future__ import annotations

from collections.abc import Mapping
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
