"""What the gRPC client (`serving.client.ServingClient`) and the REST client (`serving.rest_client.RestClient`)
share above their transports: option checks, the retry and deadline policy, the splitting of large batches,
the calls' loops and answers, and the wording of errors. A transport supplies five requests (`_predict_once`,
`_classify_once`, `_metadata_once`, `_status_once`, `close`) and how many bytes an example takes on its wire.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from serving import DEFAULT_MAX_MESSAGE_BYTES
from serving import signatures as sig
from serving.answers import HINTS, ModelMetadata, Prediction, VersionStatus, as_inputs, batch_slices, joined
from serving.errors import ServingError

log = logging.getLogger(__name__)

# While waiting for a model, these answers mean "not yet": no server up, or no version loaded.
_NOT_YET = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of UNAVAILABLE, as gRPC's retryPolicy states them: `max_attempts` in all, exponential backoff.
    gRPC applies it from the channel's service config; the REST client runs it itself, within the deadline."""

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0

    def backoffs(self) -> list[float]:
        """The wait before each attempt (0 before the first)."""
        waits, wait = [0.0], self.initial_backoff
        for _ in range(self.max_attempts - 1):
            waits.append(wait)
            wait = min(wait * self.multiplier, self.max_backoff)
        return waits

    def grpc_method_config(self, services: Sequence[str]) -> dict:
        return {
            "name": [{"service": s} for s in services],
            "retryPolicy": {
                "maxAttempts": self.max_attempts,
                "initialBackoff": f"{self.initial_backoff:g}s",
                "maxBackoff": f"{self.max_backoff:g}s",
                "backoffMultiplier": self.multiplier,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }


class ClientCore:
    """Predict, Classify, GetModelMetadata and GetModelStatus for one model; the transport is the subclass's."""

    envelope = 64 * 1024  # room for a request's names and shapes beside its tensors, in wire bytes
    unit = "bytes"

    def __init__(
        self,
        address: str,
        *,
        model_name: str = sig.MODEL_NAME,
        timeout: float = 10.0,
        root_certificates: str | os.PathLike | None = None,
        certificate_chain: str | os.PathLike | None = None,
        private_key: str | os.PathLike | None = None,
        tls_server_name: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_batch_size: int = 256,
        max_attempts: int = 5,
    ):
        if timeout <= 0:
            raise ServingError(f"timeout must be positive, got {timeout}")
        if (certificate_chain is None) != (private_key is None):
            raise ServingError("mutual TLS needs both a client certificate and its private key; pass both or neither")
        self.address = address
        self.model_name = model_name
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self.max_batch_size = max_batch_size
        self.retry = RetryPolicy(max_attempts=max(1, max_attempts))
        self._connect(root_certificates, certificate_chain, private_key, tls_server_name)

    # -- the transport's part ---------------------------------------------------------------------------

    def _connect(self, root_certificates, certificate_chain, private_key, tls_server_name: str | None) -> None:
        """Open the transport to self.address (TLS when given certificates); called once by __init__."""
        raise NotImplementedError

    def _predict_once(self, arrays: Mapping[str, np.ndarray], version, version_label, signature_name: str):
        """One Predict request: (outputs by name, the version that answered or None)."""
        raise NotImplementedError

    def _classify_once(self, examples: list, version, version_label, signature_name: str):
        """One Classify request: (classes rows, scores rows, the version that answered or None)."""
        raise NotImplementedError

    def _metadata_once(self, version, version_label) -> ModelMetadata:
        raise NotImplementedError

    def _status_once(self, version, version_label, *, timeout: float, wait_for_ready: bool) -> list[VersionStatus]:
        raise NotImplementedError

    @staticmethod
    def _nbytes(array: np.ndarray) -> float:
        if array.dtype == object:
            return sum(len(x) + 8 for x in array.ravel())
        return array.nbytes

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- shared -----------------------------------------------------------------------------------------

    @staticmethod
    def _check_version_choice(version, version_label) -> None:
        if version is not None and version_label is not None:
            raise ServingError(f"name a version ({version}) or a version label ({version_label!r}), not both")

    def _failure(self, what: str, code: grpc.StatusCode, detail: str, http_status: int | None = None) -> ServingError:
        """A failed call as a ServingError that names the call, the model, the server and what to do."""
        hint = HINTS.get(code, "see the server's log").format(address=self.address, timeout=self.timeout)
        status = f"HTTP {http_status} ({code.name})" if http_status is not None else code.name
        return ServingError(f"{what} of model {self.model_name!r} at {self.address} failed with {status}: {detail}; "
                            f"{hint}", code, http_status=http_status)

    def _chunks(self, inputs: Mapping[str, np.ndarray]) -> list[slice]:
        return batch_slices(inputs, max_message_bytes=self.max_message_bytes, max_batch_size=self.max_batch_size,
                            envelope=self.envelope, nbytes=self._nbytes, unit=self.unit)

    # -- the calls --------------------------------------------------------------------------------------

    def predict(self, inputs: np.ndarray | Mapping[str, np.ndarray], *, version: int | None = None,
                version_label: str | None = None, signature_name: str = sig.SERVING_DEFAULT,
                input_name: str = sig.IMAGE_INPUT) -> Prediction:
        """Predict on a batch; an array goes to `input_name`. Large batches go as several requests."""
        self._check_version_choice(version, version_label)
        arrays = as_inputs(inputs, input_name)
        parts, model_version = [], None
        for part in self._chunks(arrays):
            outputs, model_version = self._predict_once({k: a[part] for k, a in arrays.items()}, version,
                                                        version_label, signature_name)
            parts.append(outputs)
        return Prediction(joined(parts), model_version)

    def predict_png(self, pngs: Sequence[bytes], **kwargs) -> Prediction:
        """Predict on encoded PNG files (bytes); the model decodes and scales them."""
        kwargs.setdefault("signature_name", sig.PNG_SIGNATURE)
        return self.predict(np.array(list(pngs), dtype=object), input_name=sig.PNG_INPUT, **kwargs)

    def classify(self, examples: Iterable, *, version: int | None = None, version_label: str | None = None,
                 signature_name: str = sig.CLASSIFY_SIGNATURE) -> Prediction:
        """Classify tf.Examples (or their serialized bytes): {"classes": str [b, k], "scores": float32 [b, k]},
        with the version that answered. The classes are the model's class names in index order ("0".."9" for
        MNIST, "T-shirt/top".."Ankle boot" for Fashion-MNIST), so scores[i].argmax() indexes both."""
        from tensorflow.core.example import example_pb2

        self._check_version_choice(version, version_label)
        parsed = [e if isinstance(e, example_pb2.Example) else example_pb2.Example.FromString(e) for e in examples]
        classes, scores, model_version = [], [], None
        step = self.max_batch_size
        for start in range(0, max(len(parsed), 1), step):
            rows, row_scores, answered = self._classify_once(parsed[start:start + step], version, version_label,
                                                             signature_name)
            classes += rows
            scores += row_scores
            model_version = answered if answered is not None else model_version
        return Prediction({
            sig.CLASSIFY_CLASSES_OUTPUT: np.array(classes, dtype=str),
            sig.CLASSIFY_SCORES_OUTPUT: np.array(scores, dtype=np.float32),
        }, model_version)

    def get_model_metadata(self, *, version: int | None = None, version_label: str | None = None) -> ModelMetadata:
        self._check_version_choice(version, version_label)
        return self._metadata_once(version, version_label)

    def get_model_status(self, *, version: int | None = None, version_label: str | None = None,
                         wait_for_ready: bool = False) -> list[VersionStatus]:
        self._check_version_choice(version, version_label)
        return self._status_once(version, version_label, timeout=self.timeout, wait_for_ready=wait_for_ready)

    def wait_until_available(self, timeout: float = 60.0) -> list[VersionStatus]:
        """Block until the model has an AVAILABLE version, riding out a server not up yet or a model not loaded."""
        deadline = time.monotonic() + timeout
        last: ServingError | None = None
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                statuses = self._status_once(None, None, timeout=min(remaining, self.timeout), wait_for_ready=True)
                if any(s.state == "AVAILABLE" for s in statuses):
                    return statuses
                last = None
            except ServingError as exc:
                if exc.code not in _NOT_YET:
                    raise
                last = exc
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))
        why = f" (last answer: {last})" if last else ""
        raise ServingError(
            f"model {self.model_name!r} at {self.address} has no available version after {timeout:g} s{why}; "
            "check the server is running and its model base path holds a version", grpc.StatusCode.DEADLINE_EXCEEDED)
