"""The input pipeline: a prepared TFDS split -> tf.data.Dataset of (float32 [b,28,28,1] in [0,1], int64 [b]).

    train, val = train_and_validation(data_dir, "mnist", batch_size=128, validation_fraction=0.1, seed=42)
    test = split_dataset(data_dir, "mnist", "test", batch_size=512)

The validation examples are carved from `train` by a seeded, per-example draw (stable across epochs and
runs), never from `test`. Images are cached as uint8 after TFDS decodes them and scaled per batch by
`components.preprocessing.scale_images`, the function the serving graph uses too.
"""

from __future__ import annotations

import os

import tensorflow as tf

from components.preprocessing import scale_images
from pipeline.errors import DataError

AUTOTUNE = tf.data.AUTOTUNE


def prepared_builder(data_dir: str | os.PathLike, dataset: str, split: str):
    """The TFDS builder of a prepared dataset that has `split`; a DataError saying what is missing and what to run."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(dataset, data_dir=os.fspath(data_dir))
    except Exception as exc:  # tfds raises DatasetNotFoundError and friends
        raise DataError(f"unknown dataset {dataset!r}: {exc}") from exc
    if not builder.is_prepared():
        raise DataError(
            f"dataset {dataset!r} is not prepared in {os.fspath(data_dir)!r}; "
            f"run `mnist-pipeline ingest --dataset {dataset} --source-dir DIR` (or without --source-dir online) first"
        )
    if split.partition("[")[0] not in builder.info.splits:
        known = ", ".join(builder.info.splits)
        raise DataError(f"dataset {dataset!r} has no split {split!r}; it has: {known}")
    return builder


def load_split(data_dir: str | os.PathLike, dataset: str, split: str) -> tf.data.Dataset:
    """Unbatched (uint8 [28,28,1], int64) pairs of a prepared split; a clear error if it is not prepared."""
    builder = prepared_builder(data_dir, dataset, split)
    return builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)


def num_examples(data_dir: str | os.PathLike, dataset: str, split: str) -> int:
    import tensorflow_datasets as tfds

    return tfds.builder(dataset, data_dir=os.fspath(data_dir)).info.splits[split].num_examples


def _in_validation(seed: int, fraction: float):
    def predicate(index, _example):
        draw = tf.random.stateless_uniform([], seed=tf.stack([tf.constant(seed, tf.int64), index]))
        return draw < fraction

    return predicate


def _batched(ds: tf.data.Dataset, batch_size: int, *, shuffle_buffer: int = 0, seed: int = 0,
             drop_remainder: bool = False) -> tf.data.Dataset:
    ds = ds.cache()
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE)
    ds = ds.map(lambda images, labels: (scale_images(images), labels), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def train_and_validation(
    data_dir: str | os.PathLike,
    dataset: str,
    *,
    batch_size: int,
    validation_fraction: float,
    seed: int,
    shuffle_buffer: int = 60000,
    max_examples: int | None = None,
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Seeded train/validation datasets carved from the `train` split; batches are scaled float32 images."""
    base = load_split(data_dir, dataset, "train")
    if max_examples:
        base = base.take(max_examples)
    indexed = base.enumerate()
    is_val = _in_validation(seed, validation_fraction)

    def is_train(index, example):
        return tf.logical_not(is_val(index, example))

    def drop_index(index, example):
        return example

    # Named functions, not lambdas on one line: autograph cannot tell two lambdas on a line apart.
    train = indexed.filter(is_train).map(drop_index)
    val = indexed.filter(is_val).map(drop_index)
    return (
        _batched(train, batch_size, shuffle_buffer=shuffle_buffer, seed=seed),
        _batched(val, batch_size),
    )


def split_dataset(
    data_dir: str | os.PathLike, dataset: str, split: str, *, batch_size: int, max_examples: int | None = None
) -> tf.data.Dataset:
    """A whole split in file order (evaluation, scoring): batches of scaled images and labels."""
    ds = load_split(data_dir, dataset, split)
    if max_examples:
        ds = ds.take(max_examples)
    return _batched(ds, batch_size)
