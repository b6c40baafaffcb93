"""pipeline.config: defaults, TOML file, flag overrides, and the errors that name the bad key or file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Config, DataConfig, load_config, resolve_defaults
from pipeline.errors import ConfigError


def test_every_default_works() -> None:
    config = load_config()
    assert config == resolve_defaults(Config())
    assert config.workdir == "artifacts" and config.data == DataConfig()
    assert config.data.dataset == "mnist" and config.data.source_dir is None
    assert config.push.model_name == "mnist" and config.evaluate.accuracy_threshold == 0.99


def test_the_dataset_sets_the_model_name_and_threshold_unless_given(tmp_path: Path) -> None:
    """None means "the dataset's default", resolved once, after the TOML file and the flags."""
    assert Config().push.model_name is None and Config().evaluate.accuracy_threshold is None
    fashion = load_config(None, {"data.dataset": "fashion_mnist"})
    assert fashion.push.model_name == "fashion_mnist" and fashion.evaluate.accuracy_threshold == 0.90
    path = tmp_path / "c.toml"
    path.write_text('[data]\ndataset = "mnist"\n[evaluate]\naccuracy_threshold = 0.5\n')
    # The flag's dataset changes the defaults the file left alone, not the threshold it set.
    mixed = load_config(path, {"data.dataset": "fashion_mnist"})
    assert mixed.push.model_name == "fashion_mnist" and mixed.evaluate.accuracy_threshold == 0.5
    named = load_config(None, {"data.dataset": "fashion_mnist", "push.model_name": "clothes"})
    assert named.push.model_name == "clothes" and resolve_defaults(named) == named
    with pytest.raises(ConfigError, match=r"unknown dataset 'cifar10'.*mnist, fashion_mnist"):
        load_config(None, {"data.dataset": "cifar10"})
    with pytest.raises(ConfigError, match=r"push.model_name '../x' is not a usable name"):
        load_config(None, {"push.model_name": "../x"})


def test_file_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('workdir = "w"\n[data]\ndataset = "fashion_mnist"\nseed = 7\n[train]\nepochs = 2\n')
    config = load_config(path, {"data.seed": 9, "train.learning_rate": 1})
    assert config.workdir == "w" and config.data.dataset == "fashion_mnist"
    assert config.data.seed == 9 and config.train.epochs == 2
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Config().data.dataset = "x"  # type: ignore[misc]


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="nope.toml.*does not exist"):
        load_config(path)


def test_config_file_that_is_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[data\ndataset = ")
    with pytest.raises(ConfigError, match="bad.toml.*not valid TOML"):
        load_config(path)


def test_unreadable_config_file(tmp_path: Path) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="binary.toml"):
        load_config(path)


def test_unknown_key_in_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[data]\ndatset = 'mnist'\n")
    with pytest.raises(ConfigError, match=r"unknown configuration key 'data.datset'.*c.toml.*dataset"):
        load_config(path)


def test_unknown_section(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[dat]\ndataset = 'mnist'\n")
    with pytest.raises(ConfigError, match=r"unknown configuration key 'dat.dataset'.*known sections"):
        load_config(path)


def test_wrong_type(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[train]\nepochs = 'three'\n")
    with pytest.raises(ConfigError, match=r"train.epochs: expected int or none, got 'three'"):
        load_config(path)


def test_bad_values() -> None:
    with pytest.raises(ConfigError, match="validation_fraction"):
        load_config(None, {"data.validation_fraction": 1.5})
    with pytest.raises(ConfigError, match="train.epochs must be a positive integer"):
        load_config(None, {"train.epochs": 0})
    with pytest.raises(ConfigError, match=r"train.precision 'fp16' is unknown; choose one of auto, float32"):
        load_config(None, {"train.precision": "fp16"})
