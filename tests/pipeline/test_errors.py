"""Faults the pipeline's commands meet and must answer with one line (serving/'s are in
tests/serving/test_server_errors.py): workdir errors, unchecked numbers and names, leftovers after kills, consistency,
and the report's final status."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli import main
from tests.conftest import IDX_FILES, REPO_ROOT, write_idx_dir

pytestmark = pytest.mark.timeout(300)


# -- 6. workdir errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["ingest", "--source-dir", "SRC"], ["train"], ["run", "--source-dir", "SRC"],
                                     ["runs"], ["versions"], ["serve", "--port", "0"]])
def test_a_workdir_that_is_a_file_is_one_line_error(tmp_path, capsys, command):
    workdir = tmp_path / "file"
    workdir.write_text("not a folder")
    argv = [a.replace("SRC", str(tmp_path / "idx")) for a in command]
    assert main([*argv, "--workdir", str(workdir)]) == 1
    err = capsys.readouterr().err
    assert "not a folder" in err and str(workdir) in err
    assert "Traceback" not in err


@pytest.fixture
def shared_tmp():
    """A folder every user can read (pytest's tmp_path is private to its owner), for a run as `nobody`."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="mnist-pipeline-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("command", [["ingest", "--source-dir", "SRC"], ["train"], ["run", "--source-dir", "SRC"]])
def test_a_read_only_workdir_is_one_line_error(shared_tmp, command):
    from tests.conftest import REPO_ROOT

    write_idx_dir(shared_tmp / "idx")
    workdir = shared_tmp / "ro"
    workdir.mkdir()
    workdir.chmod(0o555)
    argv = [a.replace("SRC", str(shared_tmp / "idx")) for a in command]
    prefix = []
    if os.geteuid() == 0:  # root writes anywhere: run the command as nobody
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv to drop privileges")
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "HOME": str(shared_tmp)}
    proc = subprocess.run([*prefix, sys.executable, "-m", "pipeline", *argv, "--workdir", str(workdir), "-q"],
                          cwd=shared_tmp, env=env, capture_output=True, text=True, timeout=240)
    workdir.chmod(0o755)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "cannot be written" in proc.stderr and str(workdir) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_permission_error_under_the_workdir_is_one_line_error(tmp_path, capsys, monkeypatch):
    """As root the read-only case cannot be staged; the same path: an OSError from a stage becomes one line."""
    from pipeline.commands import runs

    def denied(config, args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "w" / "data"))

    monkeypatch.setattr(runs, "run", denied)
    assert main(["runs", "--workdir", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err
    assert "cannot be written" in err and str(tmp_path / "w" / "data") in err and len(err.splitlines()) == 1


# -- 10. numbers and names --------------------------------------------------------------------------------


@pytest.mark.parametrize("key, value", [
    ("train.learning_rate", float("inf")), ("train.learning_rate", float("nan")),
    ("evaluate.max_test_examples", 0), ("evaluate.tolerance", float("nan")), ("evaluate.tolerance", -1.0),
    ("push.model_name", "../../escape"), ("push.model_name", "a/b"), ("push.model_name", ".."),
    ("push.model_name", ""), ("data.dataset", "../x"), ("serve.poll_interval", float("nan")),
])
def test_config_refuses_bad_values(key, value):
    from pipeline.config import load_config
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        load_config(None, {key: value})
    assert key in str(exc.value)


def test_the_same_checks_apply_to_the_config_file(tmp_path):
    from pipeline.config import load_config
    from pipeline.errors import ConfigError

    toml = tmp_path / "c.toml"
    for text in ("[train]\nlearning_rate = inf\n", '[push]\nmodel_name = "../../escape"\n',
                 "[evaluate]\nmax_test_examples = 0\n"):
        toml.write_text(text)
        with pytest.raises(ConfigError):
            load_config(toml)


def test_score_run_id_must_be_a_name(tmp_path, capsys):
    assert main(["score", "--workdir", str(tmp_path / "w"), "--run-id", "../../x"]) == 1
    assert "run id" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_nan_loss_stops_training_with_an_error(tmp_path):
    from components import train
    from pipeline import paths
    from pipeline.config import DataConfig, TrainConfig
    from pipeline.errors import ModelError

    workdir = tmp_path / "w"
    assert main(["ingest", "--source-dir", str(write_idx_dir(tmp_path / "idx")), "--workdir", str(workdir), "-q"]) == 0
    with pytest.raises(ModelError) as exc:
        train.run(TrainConfig(architecture="seed", epochs=2, batch_size=32, learning_rate=1e30), DataConfig(),
                  paths.data_dir(workdir), tmp_path / "train", verbose=0)
    assert "learning rate" in str(exc.value)
    assert not (tmp_path / "train" / "model.keras").exists()
    assert not (tmp_path / "train" / "backup").exists(), "a later run must not resume the NaN weights"


# -- 11. leftovers after kills -----------------------------------------------------------------------------


def test_runs_marks_a_killed_run_interrupted(tmp_path, capsys):
    from pipeline import paths
    from pipeline.store import RunStore

    workdir = tmp_path / "w"
    workdir.mkdir()
    code = (f"from pipeline.lock import WorkdirLock; from pipeline.store import RunStore\n"
            f"lock = WorkdirLock({str(workdir)!r}, owner='run r1').acquire()\n"
            f"RunStore({str(paths.store_path(workdir))!r}).start_run('r1', {{}}, 'git:x')\n"
            "import os; os.kill(os.getpid(), 9)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, timeout=60)
    assert proc.returncode == -9
    with RunStore(paths.store_path(workdir)) as store:
        assert store.get_run("r1").status == "running"
    assert main(["runs", "--workdir", str(workdir)]) == 0
    out = capsys.readouterr().out
    assert "interrupted" in out and "running" not in out


def test_runs_leaves_a_live_run_running(tmp_path, capsys):
    from pipeline import paths
    from pipeline.lock import WorkdirLock
    from pipeline.store import RunStore

    workdir = tmp_path / "w"
    with WorkdirLock(workdir, owner="run r1"):
        with RunStore(paths.store_path(workdir)) as store:
            store.start_run("r1", {}, "git:x")
        assert main(["runs", "--workdir", str(workdir)]) == 0
        assert "running" in capsys.readouterr().out


def test_stale_ingest_folders_are_removed_at_the_next_ingest(tmp_path):
    from pipeline import paths

    workdir = tmp_path / "w"
    data = paths.data_dir(workdir)
    stale = data / ".ingest-mnist-abc123"  # left by a killed ingest (no live pid in its name)
    stale.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale_pid = data / f".ingest-mnist-{dead.stdout.strip()}-xyz"
    stale_pid.mkdir()
    live = data / f".ingest-mnist-{os.getpid()}-live"  # an ingest in progress in a live process: kept
    live.mkdir()
    assert main(["ingest", "--source-dir", str(write_idx_dir(tmp_path / "idx")), "--workdir", str(workdir), "-q"]) == 0
    assert not stale.exists() and not stale_pid.exists()
    assert live.exists()


def test_stale_beam_temp_folders_are_removed_at_the_next_score(tmp_path):
    from pipeline import paths
    from pipeline.workdir import remove_stale_temp_dirs

    workdir = tmp_path / "w"
    old = paths.stage_dir(workdir, "20260101T000000Z-aaaaaa", "score") / "beam-temp-predictions-0123abcd"
    old.mkdir(parents=True)
    fresh = paths.stage_dir(workdir, "20260101T000000Z-bbbbbb", "score") / "beam-temp-predictions-4567ef01"
    fresh.mkdir(parents=True)
    long_ago = time.time() - 2 * 86400
    os.utime(old, (long_ago, long_ago))
    assert remove_stale_temp_dirs(workdir) == [old]
    assert not old.exists() and fresh.exists()


# -- 12. consistency ---------------------------------------------------------------------------------------


def test_an_incomplete_newest_version_is_not_the_served_one(tmp_path, capsys):
    from serving import model_registry

    base = tmp_path / "models"
    for version, complete in ((1, True), (2, False)):
        folder = base / "mnist" / str(version)
        folder.mkdir(parents=True)
        if complete:
            (folder / "saved_model.pb").write_bytes(b"")
    assert model_registry.newest_version(base, "mnist").version == 1
    assert model_registry.newest_version(base, "mnist", complete=False).version == 2
    assert main(["versions", "--model-base-path", str(base), "--workdir", str(tmp_path / "w")]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert "served" in lines["1"] and "served" not in lines["2"]


def test_swapped_train_and_test_files_are_refused(tmp_path, monkeypatch):
    from components import idx, ingest
    from pipeline import paths
    from pipeline.config import DataConfig
    from pipeline.errors import DataError

    # MNIST declares 60,000 / 10,000; the synthetic files are 200 / 50, so declare that (the check is the same).
    monkeypatch.setitem(idx.DECLARED_SPLIT_SIZES, "mnist", {"train": 200, "test": 50})
    source = write_idx_dir(tmp_path / "idx")
    ingest.run(DataConfig(source_dir=str(source)), paths.data_dir(tmp_path / "ok"))  # the right way round
    for a, b in (("train_images", "test_images"), ("train_labels", "test_labels")):
        tmp = source / "swap.gz"
        os.rename(source / IDX_FILES[a], tmp)
        os.rename(source / IDX_FILES[b], source / IDX_FILES[a])
        os.rename(tmp, source / IDX_FILES[b])
    with pytest.raises(DataError) as exc:
        ingest.run(DataConfig(source_dir=str(source)), paths.data_dir(tmp_path / "w"))
    assert "swapped" in str(exc.value)


def test_error_messages_are_one_line(tmp_path, capsys):
    """Every CLI error is one line, whatever the exception's text holds."""
    from pipeline.commands import runs
    from pipeline.errors import PipelineError

    def two_lines(config, args):
        raise PipelineError("first line\nsecond line")

    runs_run = runs.run
    try:
        runs.run = two_lines
        assert main(["runs", "--workdir", str(tmp_path / "w")]) == 1
    finally:
        runs.run = runs_run
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# -- 13. the report's status --------------------------------------------------------------------------------


def test_the_report_shows_the_runs_final_status(tmp_path):
    from components import report
    from tests.components.test_report import _inputs

    out = report.run(_inputs(tmp_path), tmp_path / "out")
    page = out.report_path.read_text()
    assert ">succeeded<" in page and ">running<" not in page
    (tmp_path / "f").mkdir()
    failed = _inputs(tmp_path / "f", stages=[{"name": "train", "status": "failed", "duration": 1.0, "reason": "x"}])
    page = report.run(failed, tmp_path / "out2").report_path.read_text()
    assert ">failed<" in page and ">running<" not in page
