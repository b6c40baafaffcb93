"""The serving package's errors: `ServingError` (a `PipelineError` that keeps the gRPC status code) for the
client and the serving set-up, `RequestError` for a request the local server refuses.

Every `grpc.RpcError` the client sees is turned into a `ServingError` whose message names the call, the
server and the status, and says what to do; `.code` keeps the `grpc.StatusCode` (None for errors found
before anything was sent, such as an unreadable certificate file).
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import PipelineError

ECHO_LIMIT = 200  # characters of a client's value that an error message repeats
MESSAGE_LIMIT = 1024  # characters of a status message: gRPC refuses trailing metadata past a few KB


def echo(value: Any, limit: int = ECHO_LIMIT) -> str:
    """`value` as an error message quotes it, cut to `limit` characters: a 100 KB model name or a
    100,000-dimension shape must not turn the answer into RESOURCE_EXHAUSTED (metadata size limit)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


class ServingError(PipelineError):
    """A failed serving call or a bad serving setup; `code` is the `grpc.StatusCode`, or None; `http_status` is
    the HTTP status of a failed REST call (None for gRPC)."""

    def __init__(self, message: str, code: Any = None, http_status: int | None = None):
        super().__init__(message)
        self.code = code
        self.http_status = http_status


class RequestError(Exception):
    """A request the local server answers with a gRPC status (never a crash); `code` is a `grpc.StatusCode`."""

    def __init__(self, code: Any, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
