"""The trainer: Keras `fit` on the tf.data pipeline, resumable, with checkpoints, TensorBoard and a history.

    out = run(TrainConfig(architecture="default"), DataConfig(), data_dir, out_dir)
    out.model_path  # <out_dir>/model.keras, written atomically once training has finished

What it writes under `out_dir` (see `pipeline.paths`):

    model.keras               the trained model (temp file, then rename: never half-written)
    history.json              Keras's History.history: {"epoch": [1, 2, ...], "loss": [...], "accuracy",
                              "val_loss", "val_accuracy", "learning_rate", "seconds"}, rewritten atomically
                              every epoch ("seconds": wall time since fit began at the end of that epoch)
    checkpoints/best.keras    the epoch with the best validation accuracy so far (ModelCheckpoint)
    backup/                   BackupAndRestore's state while training runs; removed once model.keras is written
    tensorboard/              TensorBoard event files

A run killed at any point (even SIGKILL) and started again on the same `out_dir` resumes after its last
finished epoch: `BackupAndRestore` restores weights, optimizer state (so the learning-rate schedule
continues) and the epoch counter.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from components.atomic import atomic_path, atomic_write_json
from components.params import DataConfig, TrainConfig
from pipeline.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
HISTORY_FILE = "history.json"
CHECKPOINT_FILE = "best.keras"


@dataclass(frozen=True)
class TrainOutput:
    model_path: Path
    history_path: Path
    tensorboard_dir: Path
    checkpoint_path: Path  # best validation accuracy
    architecture: str
    epochs: int  # the planned total
    initial_epoch: int  # 0, or the epoch this invocation resumed from
    epochs_run: int  # epochs run by this invocation
    batch_size: int
    learning_rate: float
    precision: str  # the compute dtype training used: "float32" or "mixed_bfloat16" (model.keras: float32)
    train_examples: int
    validation_examples: int
    val_accuracy: float
    val_loss: float
    train_seconds: float  # wall time of this invocation's `fit`


def _save_model_atomically(model, path: Path) -> None:
    with atomic_path(path) as tmp:  # keeps the .keras suffix Keras insists on
        model.save(tmp)


def _count(ds) -> int:
    """Examples in a batched (images, labels) dataset; the pass also fills its in-memory cache."""
    import tensorflow as tf

    return int(ds.reduce(tf.constant(0, tf.int64), lambda n, batch: n + tf.shape(batch[1], out_type=tf.int64)[0]))


def _resolve(config: TrainConfig):
    from components import model as model_lib

    r = model_lib.recipe(config.architecture)  # ConfigError for an unknown name
    epochs = config.epochs if config.epochs is not None else r.epochs
    batch_size = config.batch_size if config.batch_size is not None else r.batch_size
    learning_rate = config.learning_rate if config.learning_rate is not None else r.learning_rate
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"train.{name} must be a positive integer, got {value!r}")
    if not learning_rate > 0:
        raise ConfigError(f"train.learning_rate must be positive, got {learning_rate!r}")
    precision = model_lib.resolve_precision(config.precision if config.precision is not None else r.precision)
    return r, epochs, batch_size, float(learning_rate), precision


def _columns(epochs: list[dict]) -> dict[str, list]:
    """Per-epoch entries -> Keras's `History.history` shape ({"loss": [...], ...}) plus an "epoch" column."""
    keys = sorted({k for e in epochs for k in e} - {"epoch"})
    return {"epoch": [e["epoch"] for e in epochs], **{k: [e.get(k) for e in epochs] for k in keys}}


def _rows(history: dict) -> list[dict]:
    epochs = history.get("epoch", [])
    return [{"epoch": n, **{k: v[i] for k, v in history.items() if k != "epoch" and i < len(v)}}
            for i, n in enumerate(epochs)]


def _history_callback(keras, path: Path):
    class HistoryWriter(keras.callbacks.Callback):
        """history.json (Keras's History.history shape), rewritten atomically after every epoch. Entries are
        keyed by epoch number, so a resumed run replaces the epochs it repeats and never duplicates them."""

        def __init__(self):
            super().__init__()
            self._epochs: list[dict] | None = None
            self._started = time.perf_counter()
            self._offset = 0.0  # seconds of the epochs a resumed run kept from before

        def on_train_begin(self, logs=None):
            self._started = time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            if self._epochs is None:
                previous = []
                if path.is_file():
                    try:
                        previous = _rows(json.loads(path.read_text()))
                    except (ValueError, TypeError, AttributeError):
                        log.warning("ignoring unreadable %s", path)
                self._epochs = [e for e in previous if e["epoch"] <= epoch]
                self._offset = float(self._epochs[-1].get("seconds", 0.0)) if self._epochs else 0.0

        def on_epoch_end(self, epoch, logs=None):
            entry = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
            # Training seconds since fit began (validation included), so a reader can tell when the model
            # first reached an accuracy; a resumed run continues from the epochs it kept.
            entry["seconds"] = self._offset + time.perf_counter() - self._started
            if "learning_rate" not in entry:
                lr = self.model.optimizer.learning_rate
                entry["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
            self._epochs = [e for e in self._epochs if e["epoch"] != epoch + 1] + [entry]
            atomic_write_json(path, _columns(self._epochs))

    return HistoryWriter()


def run(
    config: TrainConfig,
    data: DataConfig,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    verbose: int = 2,
) -> TrainOutput:
    """Train `config.architecture` on the prepared dataset in `data_dir`; outputs go to `out_dir`.

    `verbose` is Keras's: 1 for the progress bar (a terminal), 2 for one line per epoch (logs, CI).
    A missing dataset is a DataError naming the command that prepares it.
    """
    import keras
    import tensorflow as tf

    from components import data as data_lib
    from components import model as model_lib

    r, epochs, batch_size, learning_rate, precision = _resolve(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / MODEL_FILE
    history_path = out / HISTORY_FILE
    tensorboard_dir = out / "tensorboard"
    checkpoint_path = out / "checkpoints" / CHECKPOINT_FILE
    backup_dir = out / "backup"

    keras.utils.set_random_seed(config.seed)
    train_ds, val_ds = data_lib.train_and_validation(
        data_dir,
        data.dataset,
        batch_size=batch_size,
        validation_fraction=data.validation_fraction,
        seed=data.seed,
        shuffle_buffer=data.shuffle_buffer,
        max_examples=config.max_train_examples,
    )
    train_examples, validation_examples = _count(train_ds), _count(val_ds)
    if train_examples == 0 or validation_examples == 0:
        raise ConfigError(
            f"too few training examples to train ({train_examples} train, {validation_examples} validation); "
            f"raise train.max_train_examples (now {config.max_train_examples})"
        )
    steps_per_epoch = math.ceil(train_examples / batch_size)
    # The validation carve-out (a filter) hides the cardinality; telling tf.data gives Keras a progress bar
    # with a total from the first epoch on and no "input ran out of data" warning.
    train_ds = train_ds.apply(tf.data.experimental.assert_cardinality(steps_per_epoch))
    val_ds = val_ds.apply(tf.data.experimental.assert_cardinality(math.ceil(validation_examples / batch_size)))
    log.info(
        "training %r: %d epochs, batch %d, learning rate %g, %s, %d train / %d validation examples",
        config.architecture, epochs, batch_size, learning_rate, precision, train_examples, validation_examples,
    )

    model = model_lib.build_model(config.architecture, seed=config.seed, precision=precision)
    model_lib.compile_model(model, r, total_steps=steps_per_epoch * epochs, learning_rate=learning_rate)

    resuming = (backup_dir / "training_metadata.json").is_file()
    if resuming:
        log.info("resuming from the backup in %s", backup_dir)
    elif model_path.exists():
        log.warning("%s exists from an earlier run; training again from scratch and replacing it", model_path)
    checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
    callbacks = [
        # A NaN or infinite loss stops training at once (checked after fit: an error, never a NaN model).
        keras.callbacks.TerminateOnNaN(),
        # Order matters at the end of an epoch: history and checkpoint are written before the backup, so a
        # backup of epoch k always has a history of at least k epochs to resume with.
        _history_callback(keras, history_path),
        keras.callbacks.ModelCheckpoint(
            os.fspath(checkpoint_path), monitor="val_accuracy", mode="max", save_best_only=True
        ),
        keras.callbacks.TensorBoard(log_dir=os.fspath(tensorboard_dir), profile_batch=0),
        # The backup is removed only once model.keras is in place, so a kill in between still resumes.
        # double_checkpoint: a kill during a save falls back to the epoch before.
        keras.callbacks.BackupAndRestore(
            os.fspath(backup_dir), save_freq="epoch", double_checkpoint=True, delete_checkpoint=False
        ),
    ]
    started = time.perf_counter()
    # shuffle=False: tf.data already reshuffles every epoch (data.train_and_validation); Keras ignores the flag for
    # a tf.data.Dataset, but its default True makes it warn that it does.
    history = model.fit(
        train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=verbose, shuffle=False
    )
    losses = history.history.get("loss", [])
    if model.stop_training or not all(math.isfinite(x) for x in losses):  # only TerminateOnNaN stops it
        # The backup holds the diverged weights: a rerun must start afresh, not resume them.
        shutil.rmtree(backup_dir, ignore_errors=True)
        raise ModelError(f"training diverged: the loss became {losses[-1] if losses else 'NaN'} in epoch "
                         f"{len(losses)} with learning "
                         f"rate {learning_rate:g}; lower the learning rate (--learning-rate) and train again")
    if precision != "float32":
        # Same weights, float32 compute: what evaluation, export and serving run (and precise BN measures).
        model = model_lib.with_float32_compute(model, config.architecture, seed=config.seed)
    if r.recalibrate_bn_examples:
        recalibrating = time.perf_counter()
        used = model_lib.recalibrate_batch_norm(model, train_ds, max_examples=r.recalibrate_bn_examples)
        log.info(
            "recalibrated the batch norm statistics on %d clean training images in %.1f s",
            used, time.perf_counter() - recalibrating,
        )
    train_seconds = time.perf_counter() - started  # recalibration included: it is part of training
    initial_epoch = epochs - len(history.epoch)

    _save_model_atomically(model, model_path)
    log.info("wrote %s", model_path)
    shutil.rmtree(backup_dir, ignore_errors=True)
    log.info("wrote %s", history_path)
    log.info("wrote %s and %s", checkpoint_path, tensorboard_dir)

    final = _rows(json.loads(history_path.read_text()))[-1]
    return TrainOutput(
        model_path=model_path,
        history_path=history_path,
        tensorboard_dir=tensorboard_dir,
        checkpoint_path=checkpoint_path,
        architecture=config.architecture,
        epochs=epochs,
        initial_epoch=initial_epoch,
        epochs_run=len(history.epoch),
        batch_size=batch_size,
        learning_rate=learning_rate,
        precision=precision,
        train_examples=train_examples,
        validation_examples=validation_examples,
        val_accuracy=float(final.get("val_accuracy", float("nan"))),
        val_loss=float(final.get("val_loss", float("nan"))),
        train_seconds=train_seconds,
    )
