"""The parameter types stages take: the config file's `[data]`, `[train]`, `[evaluate]` and `[push]` sections.

    DataConfig(dataset="fashion_mnist").check()       # a ConfigError naming the bad key and value, or nothing

Each section is a frozen dataclass whose fields are the section's keys, and whose `check()` holds every check
of its values that needs neither TensorFlow nor the workdir; a stage checks what only it can. The pipeline
composes them into its configuration (`pipeline.config.Config`) and calls `check()` on what a flag or the
TOML file gave, so both are checked by this code. They live here, not beside their stages, because the
stage modules import TensorFlow and the configuration is read on every command. The `[score]` section is
`components.score.options.ScoreConfig`, beside the score package's other options.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import ClassVar

from components import datasets
from components.model import check_architecture, check_precision
from pipeline.errors import ConfigError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(what: str, value: str) -> str:
    """A name that becomes one path component (model name, dataset, run id): letters, digits, '.', '_', '-',
    not starting with '.', at most 128 characters, so that it can never climb out of its folder."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigError(f"{what} {value!r} is not a usable name: use letters, digits, '.', '_' or '-' "
                          "(not first), at most 128 characters, no '/' or '..'")
    return value


def check_finite(section: str, params) -> None:
    """Every float field of the dataclass `params` is a finite number (TOML has inf and nan)."""
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{section}.{f.name} must be a finite number, got {value}")


def _check_positive(section: str, params, *names: str) -> None:
    for name in names:
        value = getattr(params, name)
        if value is not None and value <= 0:
            raise ConfigError(f"{section}.{name} must be a positive integer, got {value}")


@dataclass(frozen=True)
class DataConfig:
    SECTION: ClassVar[str] = "data"

    dataset: str = "mnist"  # an entry of components.datasets: mnist or fashion_mnist
    source_dir: str | None = None  # folder of the four IDX .gz files; None: the normal TFDS download
    validation_fraction: float = 0.1  # carved from train, seeded, never from test
    seed: int = 42
    shuffle_buffer: int = 60000

    def check(self) -> None:
        check_finite(self.SECTION, self)
        check_name("data.dataset", self.dataset)
        datasets.dataset(self.dataset)
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(f"data.validation_fraction must be between 0 and 1, got {self.validation_fraction}")


@dataclass(frozen=True)
class TrainConfig:
    SECTION: ClassVar[str] = "train"

    architecture: str = "default"  # a recipe of components.model: default (batch norm + augmentation) or seed
    epochs: int | None = None  # None: the architecture's recipe
    batch_size: int | None = None  # None: the architecture's recipe
    learning_rate: float | None = None  # None: the architecture's recipe
    seed: int = 42
    max_train_examples: int | None = None  # use only the first N training examples (tests, smoke runs)
    # Training's compute dtype: "auto" (mixed_bfloat16 where the hardware computes it natively, else float32),
    # "float32" or "mixed_bfloat16"; None: the architecture's recipe. The saved model computes in float32.
    precision: str | None = None

    def check(self) -> None:
        check_finite(self.SECTION, self)
        check_architecture(self.architecture)
        _check_positive(self.SECTION, self, "epochs", "batch_size", "max_train_examples")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ConfigError(f"train.learning_rate must be positive, got {self.learning_rate}")
        if self.precision is not None:
            check_precision(self.precision)


@dataclass(frozen=True)
class EvaluateConfig:
    SECTION: ClassVar[str] = "evaluate"

    accuracy_threshold: float | None = None  # blessing: test accuracy at least this; None: the dataset's default
    tolerance: float = 0.001  # blessing: and not worse than the pushed version by more than this
    max_test_examples: int | None = None

    def check(self) -> None:
        check_finite(self.SECTION, self)
        _check_positive(self.SECTION, self, "max_test_examples")
        if not 0.0 <= self.tolerance <= 1.0:
            raise ConfigError(f"evaluate.tolerance must be in [0, 1], got {self.tolerance}")
        if self.accuracy_threshold is not None and not 0.0 <= self.accuracy_threshold <= 1.0:
            raise ConfigError(f"evaluate.accuracy_threshold must be in [0, 1], got {self.accuracy_threshold}")


@dataclass(frozen=True)
class PushConfig:
    SECTION: ClassVar[str] = "push"

    model_base_path: str | None = None  # None: <workdir>/serving/models
    model_name: str | None = None  # None: the dataset's default (components.datasets: mnist, fashion_mnist)
    keep_versions: int = 5  # newest N versions kept in the base path
    force: bool = False  # push even when not blessed

    def check(self) -> None:
        check_finite(self.SECTION, self)
        if self.model_name is not None:  # None until resolve_defaults gives the dataset's
            check_name("push.model_name", self.model_name)
        if self.keep_versions < 1:
            raise ConfigError(f"push.keep_versions must be at least 1, got {self.keep_versions}")
