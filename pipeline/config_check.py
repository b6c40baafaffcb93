"""Checking configuration values: a value's type against its field's annotation (`coerce`), then every section's
values (`validate`), the same way whether a flag or the TOML file gave them (`pipeline.config.apply_overrides`
calls both).

Each section checks its own values (`check()` of `components.params` and `components.score.options` types,
beside the fields they check; `[serve]` is `serving.options.ServerOptions`, which checks itself when built).
Nothing here needs TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from pipeline.errors import ConfigError


def coerce(where: str, annotation: Any, value: Any) -> Any:
    """Check `value` against a field's resolved annotation (str, int, float, bool, tuple[str, ...], or X | None)."""
    if typing.get_origin(annotation) is tuple:
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None:
        if type(None) in allowed:
            return None
        raise ConfigError(f"{where}: a value is required, got none")
    for kind in allowed:
        if kind is type(None):
            continue
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
    names = " or ".join("none" if k is type(None) else k.__name__ for k in allowed)
    raise ConfigError(f"{where}: expected {names}, got {value!r}")


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def validate(config) -> None:
    """Value checks of a `pipeline.config.Config` that do not need TensorFlow; stages check what only they can.
    Flags and the TOML file both come through here (apply_overrides), so a value is checked the same way
    wherever it was given."""
    for section in (f.name for f in dataclasses.fields(config) if f.name != "workdir"):
        value = getattr(config, section)
        check = getattr(value, "check", None)
        if check is not None:
            check()
        else:
            for name, item in dataclasses.asdict(value).items():
                if isinstance(item, float) and not math.isfinite(item):
                    raise ConfigError(f"{section}.{name} must be a finite number, got {item}")
