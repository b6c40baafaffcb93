"""components.atomic: a file is whole or absent, whatever happens while it is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.atomic import atomic_path, atomic_write, atomic_write_json


def test_a_written_file_is_whole_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "metrics.json"
    assert atomic_write_json(target, {"accuracy": 0.99}) == target
    assert json.loads(target.read_text()) == {"accuracy": 0.99}
    atomic_write(target, b"replaced")
    assert target.read_bytes() == b"replaced"
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "model.keras"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="writer died"):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".keras" and tmp.name.startswith(".model.")
            tmp.write_text("half")
            raise RuntimeError("writer died")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]
