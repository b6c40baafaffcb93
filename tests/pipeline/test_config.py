"""pipeline.config: defaults, TOML file, flag overrides, and the errors that name the bad key or file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from components import datasets
from components.params import DataConfig
from components.score.options import ScoreConfig
from pipeline.config import Config, load_config, resolve_defaults
from pipeline.errors import ConfigError


def test_every_default_works() -> None:
    config = load_config()
    assert config == resolve_defaults(Config())
    assert config.workdir == "artifacts" and config.data == DataConfig()
    assert config.data.dataset == "mnist" and config.data.source_dir is None
    assert config.push.model_name == "mnist" and config.evaluate.accuracy_threshold == 0.99
    assert config.score.server_model == "mnist"


def test_the_dataset_sets_the_model_name_and_threshold_unless_given(tmp_path: Path) -> None:
    """None means "the dataset's default", resolved once, after the TOML file and the flags."""
    assert Config().push.model_name is None and Config().evaluate.accuracy_threshold is None
    fashion = load_config(None, {"data.dataset": "fashion_mnist"})
    assert fashion.push.model_name == "fashion_mnist" and fashion.evaluate.accuracy_threshold == 0.90
    assert fashion.score.server_model == "fashion_mnist"  # score --server asks for the dataset's model, as push names it
    assert load_config(None, {"data.dataset": "fashion_mnist", "score.server_model": "m"}).score.server_model == "m"
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


def test_the_dataset_defaults_come_from_the_dataset_table() -> None:
    for entry in datasets.DATASETS.values():
        config = load_config(None, {"data.dataset": entry.name})
        assert (config.push.model_name, config.score.server_model) == (entry.model_name, entry.model_name)
        assert config.evaluate.accuracy_threshold == entry.accuracy_threshold


def test_a_bad_value_is_refused_by_its_section_from_the_file_as_from_a_flag(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[score]\noutput_format = "xml"\n')
    with pytest.raises(ConfigError, match=r"score.output_format 'xml' is unknown; choose one of jsonl, csv, parquet"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"score.output_format 'xml' is unknown"):
        load_config(None, {"score.output_format": "xml"})
    with pytest.raises(ConfigError, match=r"score.output_format 'xml' is unknown"):
        ScoreConfig(output_format="xml").check()
    path.write_text('[train]\narchitecture = "resnet"\n')
    with pytest.raises(ConfigError, match=r"unknown architecture 'resnet'; known architectures: seed, default"):
        load_config(path)
    path.write_text("[score]\nserver_timeout = nan\n")
    with pytest.raises(ConfigError, match=r"score.server_timeout must be a finite number, got nan"):
        load_config(path)


def test_every_score_option_is_a_toml_key_and_each_flag_one_of_them() -> None:
    """One definition (ScoreConfig): `mnist-pipeline score` and `python -m components.score` generate their flags
    from it, and a flag sets the TOML key of the same field."""
    import argparse

    from components.score import options
    from pipeline.cli import build_parser

    parser, _ = build_parser()
    flags = {f.metadata["flag"]: f.name for f in options.flag_fields()}
    assert set(flags.values()) <= {f.name for f in dataclasses.fields(ScoreConfig)}
    argv = ["score", "--format", "csv", "--server", "h:1", "--server-model", "m", "--server-timeout", "2",
            "--input", "x.csv", "--output", "o", "--job-timeout", "5", "--image-column", "img"]
    args, unknown = parser.parse_known_args(argv)
    given = {k: v for k, v in vars(args).items() if k.startswith("score.")}
    assert unknown == [] and given == {"score.output_format": "csv", "score.server": "h:1", "score.server_model": "m",
                                       "score.server_timeout": 2.0, "score.input_pattern": "x.csv",
                                       "score.output": "o", "score.job_timeout": 5.0, "score.image_column": "img"}
    standalone = argparse.ArgumentParser()
    options.add_arguments(standalone, skip=("split",), required=("input_pattern", "output"))
    config = options.from_args(standalone.parse_args(argv[1:]))
    assert config == ScoreConfig(**{k.removeprefix("score."): v for k, v in given.items()})
    assert set(standalone._option_string_actions) - {"-h", "--help"} == set(flags) - {"--split"}
