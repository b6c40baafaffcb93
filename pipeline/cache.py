"""The cache's identities: of the code (`code_version`), of an execution (`cache_key`), and whether a cached
execution's outputs are still what it wrote (`outputs_intact`), as the runner uses them:

    key = cache_key("train", config.section_fingerprint("data", "train"), inputs, code_version())
    hit = store.find_cached(key); outputs_intact(store.output_artifacts(hit.id)) is None  -> reuse

Input URIs in a key are the run store's (relative to the workdir when inside it), so a moved or copied
workdir keeps its cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from pipeline.stage_api import fingerprint_path, hash_file
from pipeline.store import Artifact

PACKAGES = ("pipeline", "components", "serving")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """`src:<hash of the project's Python sources> git:<commit>` (or the package version without git).

    The source hash is what the cache keys use: a commit that touches only tests or docs, or another
    engineer's unrelated commit, does not invalidate cached stages, while any edit to the code does. The
    commit (or package version) is there for people reading the record.
    """
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for package in PACKAGES:
        for f in sorted((root / package).rglob("*.py")):
            h.update(f.relative_to(root).as_posix().encode() + b"\0")
            hash_file(h, f)
    source = f"src:{h.hexdigest()[:12]}"
    try:
        out = subprocess.run(
            ["git", "-C", os.fspath(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
        commit = out.stdout.strip()
        if commit:
            return f"{source} git:{commit[:12]}"
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{source} mnist-pipeline=={version('mnist-pipeline')}"
    except PackageNotFoundError:
        return source


def _code_identity(code: str) -> str:
    """The part of a code version that keys the cache: the source hash when there is one."""
    first = code.split()[0] if code.split() else code
    return first if first.startswith("src:") else code


def cache_key(stage: str, config_fingerprint: str, inputs: Mapping[str, Artifact], code: str) -> str:
    payload = {
        "stage": stage,
        "config": config_fingerprint,
        "inputs": {name: [a.uri, a.fingerprint] for name, a in sorted(inputs.items())},
        "code": _code_identity(code),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def outputs_intact(outputs: Mapping[str, Artifact]) -> str | None:
    """None if every output still exists with its recorded fingerprint, else what changed."""
    for name, art in outputs.items():
        if not Path(art.uri).exists():
            return f"{name} {art.uri} no longer exists"
        if art.fingerprint and fingerprint_path(art.uri) != art.fingerprint:
            return f"{name} {art.uri} changed since it was written"
    return None
