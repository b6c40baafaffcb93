"""The datasets the pipeline knows: one table that the config, ingest, the CLI's flags and their help read.

    entry = dataset("cifar10")   # Dataset(name, tfds_class, source_reader, model_name, accuracy_threshold, architecture)
    names()                      # ("mnist", "fashion_mnist", "cifar10"): the order of help texts

A dataset is one entry: its TFDS name (the builder ingest subclasses, so prepared data is what a TFDS
download gives), the module that reads the offline files `--source-dir` holds, and what it changes when the
user does not: the served model's name, the blessing threshold and the architecture whose recipe it trains
with (`pipeline.config.resolve_defaults` fills them). The image shape is not here: it is TFDS's
(`info.features["image"].shape`), read from the prepared data and recorded with the exported model.

A source reader module (`components.idx`, `components.cifar`) has:
    SOURCE_KIND                     ingest.json's "source" ("idx", "cifar10-binary")
    SOURCE_LABEL                    how `mnist-pipeline ingest` names them ("IDX files")
    EXPECTED                        what --source-dir must hold, for error messages
    check_source_path(path)         refuse what is wrong before a run is recorded (a file where a folder is needed)
    fingerprint(path)               sha256 of the files, or None: the same files reuse the prepared data
    read_source(path)               every check; an object with .header_counts {split: examples}
    check_split_sizes(dataset, counts, source)
    split_generators(base, builder, source, dl_manager)   TFDS's split generators over the checked files
    download_url(base)              the host the online path checks before TFDS downloads
Light on purpose: the CLI reads it on the `--help` path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ConfigError


@dataclass(frozen=True)
class Dataset:
    name: str  # the TFDS name: tfds.load(name, data_dir=...)
    tfds_class: str  # module.Class of TFDS's builder, which ingest subclasses to read the offline files
    source_reader: str  # the module reading `--source-dir` (read_source_dir, check_split_sizes, SPLIT_FILES)
    model_name: str  # push.model_name and score.server_model unless given
    accuracy_threshold: float  # evaluate.accuracy_threshold unless given
    architecture: str = "default"  # train.architecture unless given: a model and recipe of components.model


# mnist: the default recipe reaches ~99.6%, so 0.99 blesses a normal run and stops a broken one. fashion_mnist:
# the default recipe reaches about 91% mean over seeds 0-2 (bench/README.md, "Fashion-MNIST"); 0.90 blesses such a
# run and still refuses a model that learned only the easy classes (shirts, T-shirts, coats and pullovers are the hard
# ones: 73-88% recall). cifar10: the target for the resnet recipe (at least 90% test accuracy, aim 94%);
# not yet measured here (no archive on these machines; `bench/train.py --dataset cifar10` measures it).
DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("mnist", "tensorflow_datasets.image_classification.mnist.MNIST", "components.idx",
            model_name="mnist", accuracy_threshold=0.99),
    Dataset("fashion_mnist", "tensorflow_datasets.image_classification.mnist.FashionMNIST", "components.idx",
            model_name="fashion_mnist", accuracy_threshold=0.90),
    Dataset("cifar10", "tensorflow_datasets.image_classification.cifar.Cifar10", "components.cifar",
            model_name="cifar10", accuracy_threshold=0.90, architecture="resnet"),
)}


# --source-dir's help, beside the entries whose readers it describes.
SOURCE_DIR_HELP = ("the dataset's offline files: the folder of the four IDX .gz files (mnist, fashion_mnist), "
                   "cifar-10-binary.tar.gz or its folder (cifar10); default: the TFDS download")


def names() -> tuple[str, ...]:
    return tuple(DATASETS)


def dataset(name: str) -> Dataset:
    """The entry of `name`; a ConfigError naming it and the known ones when there is none."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r} (data.dataset, --dataset); supported: {', '.join(DATASETS)}") from None


def files_fingerprint(paths: Iterable[Path]) -> str:
    """sha256 over each file's name and bytes (a missing one counts by its name): a reader's `fingerprint`."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        if path.is_file():
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()
