"""Files that are whole or absent: written to a temporary file in the same folder, fsynced, renamed into place.

    atomic_write(out_dir / "metrics.json", json.dumps(record))      # text or bytes
    atomic_write_json(out_dir / "blessing.json", blessing)
    with atomic_path(out_dir / "model.keras") as tmp:                # a library writes the file itself
        model.save(tmp)

A reader never sees a half-written file, and a failure (or a kill) leaves at most a hidden `.NAME.*.tmp`
file beside the target, never a truncated target. Every stage writes its files through here (it lives in
components/, so that a stage needs nothing from pipeline/ to do it).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix, so libraries that check it are satisfied); renamed to `path`
    when the block ends without an exception, removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write `data` (text as UTF-8) to `path` atomically; returns `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    log.debug("wrote %s", path)
    return path


def atomic_write_json(path: str | os.PathLike, payload: Any, **dumps: Any) -> Path:
    """`payload` as indented JSON (plus a newline), atomically."""
    dumps.setdefault("indent", 2)
    return atomic_write(path, json.dumps(payload, **dumps) + "\n")


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a folder or something special a library made: the rename still applies
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
