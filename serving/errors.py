"""The serving package's error: a `PipelineError` that keeps the gRPC status code.

Every `grpc.RpcError` the client sees is turned into a `ServingError` whose message names the call, the
server and the status, and says what to do; `.code` keeps the `grpc.StatusCode` (None for errors found
before anything was sent, such as an unreadable certificate file).
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import PipelineError


class ServingError(PipelineError):
    """A failed serving call or a bad serving setup; `code` is the `grpc.StatusCode`, or None."""

    def __init__(self, message: str, code: Any = None):
        super().__init__(message)
        self.code = code
