"""Configuration: the stages' parameter types composed into one frozen `Config`, read from an optional TOML file
and overridden by flags.

Precedence, lowest first: the defaults of the section types, the TOML file given with `--config`, then flags.
The TOML file has one table per section, plus `workdir` at the top:

    workdir = "artifacts"
    [data]
    dataset = "mnist"
    [train]
    epochs = 3

The sections are the components' own types (`components.params`: data, train, evaluate, push;
`components.score.options.ScoreConfig`), so a stage never reaches up here for its parameters; `[serve]` is
below. Some defaults depend on the dataset (`components.datasets`): `push.model_name`, `score.server_model`
and `evaluate.accuracy_threshold` are None until `resolve_defaults` fills them from `data.dataset`, after the
TOML file and the flags, so `--dataset fashion_mnist` alone changes them and a value given by flag or TOML
wins. `load_config` and the runner resolve; a component is always handed resolved sections.

Every key is checked (`pipeline.config_check`): an unknown section or key, or a value of the wrong type, is a
`ConfigError` that names it. This module and `pipeline.cli` are the only places that read files of
configuration or flags.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components import datasets
from components.params import DataConfig, EvaluateConfig, PushConfig, TrainConfig
from components.score.options import ScoreConfig
from pipeline.config_check import coerce, field_types, validate
from pipeline.errors import ConfigError
from pipeline.paths import DEFAULT_WORKDIR
from serving.options import ServerOptions

__all__ = ["Config", "DataConfig", "EvaluateConfig", "PushConfig", "ScoreConfig", "ServeConfig", "TrainConfig",
           "apply_overrides", "load_config", "load_toml", "model_base_path", "resolve_defaults", "validate"]


# [serve]: the local server's options are serving's own type, so that its flags (TF Serving's names) and these
# keys are one list, checked in one place (ServerOptions.__post_init__).
ServeConfig = ServerOptions


@dataclass(frozen=True)
class Config:
    workdir: str = DEFAULT_WORKDIR
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    push: PushConfig = field(default_factory=PushConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def section_fingerprint(self, *sections: str) -> str:
        """A short stable hash of the named sections, for caching and run records."""
        payload = {name: dataclasses.asdict(getattr(self, name)) for name in sections}
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def sections() -> dict[str, type]:
    """Section name -> its type, in the order of `Config`."""
    hints = typing.get_type_hints(Config)  # f.type is a string under `from __future__ import annotations`
    return {f.name: hints[f.name] for f in dataclasses.fields(Config) if f.name != "workdir"}


def apply_overrides(config: Config, overrides: Mapping[str, Any], *, origin: str = "flag") -> Config:
    """Return `config` with dotted keys (`train.epochs`, `workdir`) replaced; unknown keys are errors."""
    top: dict[str, Any] = {}
    per_section: dict[str, dict[str, Any]] = {}
    known_sections = sections()
    for key, value in overrides.items():
        if key == "workdir":
            top["workdir"] = coerce(f"{origin} workdir", str, value)
            continue
        section, _, name = key.partition(".")
        if section not in known_sections or not name:
            known = ", ".join(["workdir", *known_sections])
            raise ConfigError(f"unknown configuration key {key!r} ({origin}); known sections: {known}")
        types_ = field_types(known_sections[section])
        if name not in types_:
            known = ", ".join(types_)
            raise ConfigError(f"unknown configuration key {key!r} ({origin}); [{section}] has: {known}")
        per_section.setdefault(section, {})[name] = coerce(f"{origin} {key}", types_[name], value)
    replaced = {s: dataclasses.replace(getattr(config, s), **vals) for s, vals in per_section.items()}
    config = dataclasses.replace(config, **top, **replaced)
    validate(config)
    return config


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Flatten a TOML config file into dotted keys; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist or is not a file; pass an existing TOML file to --config")
    try:
        with p.open("rb") as fh:
            raw = tomllib.load(fh)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from exc
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                flat[f"{key}.{sub}"] = subvalue
        else:
            flat[key] = value
    return flat


def load_config(path: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Defaults, then the TOML file (if any), then flag overrides."""
    config = Config()
    if path is not None:
        config = apply_overrides(config, load_toml(path), origin=f"config file {str(path)!r}:")
    if overrides:
        config = apply_overrides(config, overrides)
    config = resolve_defaults(config)
    validate(config)
    return config


def resolve_defaults(config: Config) -> Config:
    """`config` with every per-dataset default that is still None filled from `data.dataset` (idempotent).

    The one place where a dataset's defaults (`components.datasets`) enter the configuration."""
    push, evaluate, score = config.push, config.evaluate, config.score
    if push.model_name is not None and evaluate.accuracy_threshold is not None and score.server_model is not None:
        return config
    entry = datasets.dataset(config.data.dataset)
    if push.model_name is None:
        push = dataclasses.replace(push, model_name=entry.model_name)
    if evaluate.accuracy_threshold is None:
        evaluate = dataclasses.replace(evaluate, accuracy_threshold=entry.accuracy_threshold)
    if score.server_model is None:
        score = dataclasses.replace(score, server_model=entry.model_name)
    return dataclasses.replace(config, push=push, evaluate=evaluate, score=score)


def model_base_path(config: Config) -> Path:
    """The push target: the configured base path, or the workdir's own."""
    from pipeline import paths

    return Path(config.push.model_base_path) if config.push.model_base_path else paths.model_base_path(config.workdir)
