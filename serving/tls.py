"""Reading the PEM files that TLS needs, for the client and the local server alike."""

from __future__ import annotations

import os

from serving.errors import ServingError


def read_pem_file(path: str | os.PathLike | None, what: str) -> bytes | None:
    """The bytes of a PEM file, None for no path; a ServingError naming `what` and the path if unreadable."""
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ServingError(f"{what} {os.fspath(path)!r} cannot be read: {exc}; pass an existing PEM file") from exc
