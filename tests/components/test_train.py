"""The trainer and `mnist-pipeline train`: outputs, resume after SIGKILL, bad input, one real-MNIST run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components import train
from components.params import DataConfig, TrainConfig
from pipeline import cli, paths
from pipeline.errors import ConfigError, DataError
from tests.conftest import REPO_ROOT, write_idx_dir


def _ingest(workdir: Path, source: Path) -> Path:
    assert cli.main(["ingest", "--source-dir", str(source), "--workdir", str(workdir), "-q"]) == 0
    return workdir


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A workdir with 200 synthetic train / 50 test digits ingested."""
    root = tmp_path_factory.mktemp("train")
    return _ingest(root / "w", write_idx_dir(root / "idx"))


def _run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=REPO_ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)


def test_training_writes_model_history_checkpoint_and_tensorboard(workdir, tmp_path):
    import keras

    out = train.run(TrainConfig(architecture="seed", epochs=2, batch_size=32), DataConfig(),
                    paths.data_dir(workdir), tmp_path / "train", verbose=0)
    assert out.model_path == tmp_path / "train" / "model.keras"
    assert (out.epochs, out.initial_epoch, out.epochs_run, out.batch_size) == (2, 0, 2, 32)
    assert out.train_examples + out.validation_examples == 200
    model = keras.models.load_model(out.model_path)
    assert [t.name for t in model.inputs] == ["image"]
    history = json.loads(out.history_path.read_text())
    assert history["epoch"] == [1, 2]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"):
        assert len(history[key]) == 2, key
    assert 0 < history["seconds"][0] < history["seconds"][1], "wall time since fit began, per epoch"
    assert out.val_accuracy == history["val_accuracy"][-1]
    assert out.checkpoint_path.is_file()
    assert list(out.tensorboard_dir.glob("train/events.out.tfevents.*"))
    assert not (tmp_path / "train" / "backup").exists(), "the backup is removed once the model is saved"
    assert not [p for p in (tmp_path / "train").iterdir() if p.name.startswith(".")], "no temp files left"


def test_mixed_precision_training_saves_a_float32_model(workdir, tmp_path):
    import keras
    import numpy as np

    out = train.run(TrainConfig(architecture="default", epochs=1, batch_size=32, precision="mixed_bfloat16"),
                    DataConfig(), paths.data_dir(workdir), tmp_path / "train", verbose=0)
    assert out.precision == "mixed_bfloat16"
    model = keras.models.load_model(out.model_path, compile=False)
    # What export, evaluation and TF Serving run: float32 throughout, on any hardware.
    assert {layer.compute_dtype for layer in model.layers[1:]} == {"float32"}
    checkpoint = keras.models.load_model(out.checkpoint_path, compile=False)  # the epoch's weights, as trained
    assert checkpoint.get_layer("conv1").compute_dtype == "bfloat16"
    np.testing.assert_array_equal(model.get_layer("conv1").get_weights()[0],
                                  checkpoint.get_layer("conv1").get_weights()[0])


def test_missing_data_says_which_command_to_run(tmp_path):
    with pytest.raises(DataError, match="mnist-pipeline ingest"):
        train.run(TrainConfig(architecture="seed", epochs=1), DataConfig(), tmp_path / "data", tmp_path / "out")


def test_unknown_architecture(workdir, tmp_path):
    with pytest.raises(ConfigError, match="'vgg'.*seed, default"):
        train.run(TrainConfig(architecture="vgg"), DataConfig(), paths.data_dir(workdir), tmp_path / "out")


@pytest.mark.parametrize("flags, named", [
    (["--epochs", "0"], "train.epochs"),
    (["--epochs", "-3"], "train.epochs"),
    (["--batch-size", "0"], "train.batch_size"),
    (["--architecture", "vgg"], "'vgg'"),
])
def test_cli_rejects_bad_values(workdir, capsys, flags, named):
    assert cli.main(["train", "--workdir", str(workdir), "--run-id", "bad", *flags]) == 1
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not (paths.stage_dir(workdir, "bad", "train") / "model.keras").exists()


@pytest.mark.timeout(600)
def test_sigkilled_training_resumes_from_its_last_epoch(workdir):
    run_id = "killed"
    train_dir = paths.stage_dir(workdir, run_id, "train")
    metadata = train_dir / "backup" / "training_metadata.json"
    args = ["train", "--workdir", str(workdir), "--run-id", run_id, "--architecture", "default",
            "--epochs", "8", "--batch-size", "16"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                backed_up = json.loads(metadata.read_text())["epoch"]
                if backed_up >= 2:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        assert proc.poll() is None, "training ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not (train_dir / "model.keras").exists()
    done_before_kill = len(json.loads((train_dir / "history.json").read_text())["epoch"])
    assert done_before_kill >= 2

    result = _run_cli(*args)
    assert result.returncode == 0, result.stderr
    resumed_at = int(result.stdout.split("resumed at epoch ")[1].split(")")[0])
    # The last backup, or the one before it if the kill hit a save; never epoch 0.
    assert resumed_at >= max(1, backed_up - 1)
    history = json.loads((train_dir / "history.json").read_text())
    assert history["epoch"] == list(range(1, 9)), "every epoch once, none repeated from scratch"
    assert history["seconds"] == sorted(history["seconds"]), "the resumed run continues the elapsed time"
    assert (train_dir / "model.keras").is_file()
    assert not (train_dir / "backup").exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_seed_cnn_one_epoch_on_real_mnist_beats_97_percent(real_mnist_dir, tmp_path):
    import keras

    from components import data

    workdir = _ingest(tmp_path / "w", real_mnist_dir)
    out = train.run(TrainConfig(architecture="seed", epochs=1), DataConfig(), paths.data_dir(workdir),
                    tmp_path / "train", verbose=0)
    model = keras.models.load_model(out.model_path)
    _, accuracy = model.evaluate(data.split_dataset(paths.data_dir(workdir), "mnist", "test", batch_size=1000),
                                 verbose=0)
    assert accuracy > 0.97
