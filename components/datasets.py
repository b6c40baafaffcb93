"""The datasets the pipeline knows: one table that the config, ingest, the CLI's flags and their help read.

    entry = dataset("fashion_mnist")   # Dataset(name, tfds_class, source_reader, model_name, accuracy_threshold)
    names()                            # ("mnist", "fashion_mnist"): the order of help texts

A dataset is one entry: its TFDS name (the builder ingest subclasses, so prepared data is what a TFDS
download gives), the module that reads the offline files `--source-dir` holds, and what it changes when the
user does not: the served model's name and the blessing threshold (`pipeline.config.resolve_defaults` fills
them). No recipe differs per dataset: both train with the architecture's recipe (`components.model`).
Light on purpose: the CLI reads it on the `--help` path.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import ConfigError


@dataclass(frozen=True)
class Dataset:
    name: str  # the TFDS name: tfds.load(name, data_dir=...)
    tfds_class: str  # module.Class of TFDS's builder, which ingest subclasses to read the offline files
    source_reader: str  # the module reading `--source-dir` (read_source_dir, check_split_sizes, SPLIT_FILES)
    model_name: str  # push.model_name and score.server_model unless given
    accuracy_threshold: float  # evaluate.accuracy_threshold unless given


# mnist: the default recipe reaches ~99.6%, so 0.99 blesses a normal run and stops a broken one. fashion_mnist:
# the default recipe reached 90.95% mean over seeds 0-2 (README, "Fashion-MNIST"); 0.90 blesses such a run and
# still refuses a model that learned only the easy classes (shirts, T-shirts, coats and pullovers are the hard
# ones: 73-88% recall).
DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("mnist", "tensorflow_datasets.image_classification.mnist.MNIST", "components.idx",
            model_name="mnist", accuracy_threshold=0.99),
    Dataset("fashion_mnist", "tensorflow_datasets.image_classification.mnist.FashionMNIST", "components.idx",
            model_name="fashion_mnist", accuracy_threshold=0.90),
)}


def names() -> tuple[str, ...]:
    return tuple(DATASETS)


def dataset(name: str) -> Dataset:
    """The entry of `name`; a ConfigError naming it and the known ones when there is none."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r} (data.dataset, --dataset); supported: {', '.join(DATASETS)}") from None
