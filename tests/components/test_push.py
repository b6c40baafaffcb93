"""Push like TFX's Pusher: blessed only, new integer versions, atomic, never overwriting; versions; rollback."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from components import push
from components.params import PushConfig
from pipeline import cli, paths
from pipeline.errors import ConfigError, ModelError
from serving import model_registry
from serving import signatures as sig

MNIST = PushConfig(model_name="mnist")  # resolved, as pipeline.config.resolve_defaults gives it for mnist
BLESSED = {"blessed": True, "reason": "accuracy 0.99 >= threshold"}
NOT_BLESSED = {"blessed": False, "reason": "accuracy 0.5 is below the threshold 0.99"}


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(os.fspath(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _entries(base: Path) -> list[str]:
    return sorted(p.name for p in (base / sig.MODEL_NAME).iterdir())


def test_blessed_model_is_pushed_as_version_1_with_its_record(saved_model_dir, tmp_path):
    base = tmp_path / "models"
    record = tmp_path / "run" / "push" / "pushed.json"
    out = push.run(MNIST, saved_model_dir, base, blessing=BLESSED, metadata={"run_id": "r1", "accuracy": 0.99},
                   record_path=record)
    assert out.pushed and out.version == 1
    assert out.version_dir == model_registry.version_dir(base, sig.MODEL_NAME, 1)
    assert _entries(base) == ["1"]  # no temporary folder left
    push.check_signatures(out.version_dir)
    assert (out.version_dir / "assets.extra" / sig.WARMUP_FILE).is_file()
    meta = model_registry.read_metadata(out.version_dir)
    assert meta["version"] == 1 and meta["run_id"] == "r1" and meta["accuracy"] == 0.99
    assert meta["blessed"] is True and meta["forced"] is False and meta["pushed_at"]
    assert meta["source"] == os.fspath(saved_model_dir.resolve())
    written = json.loads(record.read_text())
    assert written["pushed"] is True and written["version"] == 1


def test_versions_increase_and_never_reuse_an_existing_folder(saved_model_dir, tmp_path):
    base = tmp_path / "models"
    assert push.run(MNIST, saved_model_dir, base, blessing=BLESSED).version == 1
    (base / sig.MODEL_NAME / "7").mkdir()  # a folder put there by hand (even an empty one) is never replaced
    (base / sig.MODEL_NAME / "7" / "mine.txt").write_text("keep me")
    out = push.run(MNIST, saved_model_dir, base, blessing=BLESSED)
    assert out.version == 8
    assert (base / sig.MODEL_NAME / "7" / "mine.txt").read_text() == "keep me"
    assert [v.version for v in model_registry.list_versions(base, sig.MODEL_NAME)] == [1, 7, 8]
    assert model_registry.newest_version(base, sig.MODEL_NAME).version == 8


def test_not_blessed_is_a_recorded_outcome_and_nothing_is_pushed(saved_model_dir, tmp_path):
    base = tmp_path / "models"
    record = tmp_path / "pushed.json"
    out = push.run(MNIST, saved_model_dir, base, blessing=NOT_BLESSED, record_path=record)
    assert not out.pushed and out.version is None
    assert "not blessed" in out.reason and "below the threshold" in out.reason
    assert not base.exists()
    assert json.loads(record.read_text())["pushed"] is False
    assert push.run(MNIST, saved_model_dir, base, blessing=None).pushed is False

    forced = push.run(PushConfig(model_name="mnist", force=True), saved_model_dir, base, blessing=NOT_BLESSED)
    assert forced.pushed and forced.version == 1
    assert model_registry.read_metadata(forced.version_dir)["forced"] is True


def test_a_failure_mid_push_leaves_no_version_and_the_existing_one_untouched(saved_model_dir, tmp_path, monkeypatch):
    base = tmp_path / "models"
    first = push.run(MNIST, saved_model_dir, base, blessing=BLESSED)
    before = _tree_digest(first.version_dir)

    real_copytree = shutil.copytree

    def copy_then_fail(src, dst, *args, **kwargs):
        real_copytree(src, dst, *args, **kwargs)
        if not Path(dst).name.startswith(".tmp-push-"):  # copytree recurses through the patched name
            return dst
        shutil.rmtree(Path(dst) / "variables")  # as if the disk filled up half way
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(push.shutil, "copytree", copy_then_fail)
    with pytest.raises(OSError, match="No space"):
        push.run(MNIST, saved_model_dir, base, blessing=BLESSED)
    assert _entries(base) == ["1"]
    assert _tree_digest(first.version_dir) == before


def test_a_copy_that_predicts_differently_is_not_pushed(saved_model_dir, tmp_path, monkeypatch):
    """The check in the temporary folder compares predictions with the source's, not just that it loads."""
    from components import export
    from components.model import build_model

    other_model = tmp_path / "other.keras"
    build_model("seed", seed=123).save(other_model)
    other = export.run(other_model, tmp_path / "other" / "saved_model").saved_model_dir
    real_copytree = shutil.copytree

    def copy_with_other_weights(src, dst, *args, **kwargs):
        real_copytree(src, dst, *args, **kwargs)
        if not Path(dst).name.startswith(".tmp-push-"):  # copytree recurses through the patched name
            return dst
        shutil.rmtree(Path(dst) / "variables")
        real_copytree(other / "variables", Path(dst) / "variables")
        return dst

    monkeypatch.setattr(push.shutil, "copytree", copy_with_other_weights)
    base = tmp_path / "models"
    with pytest.raises(ModelError, match="predicts differently"):
        push.run(MNIST, saved_model_dir, base, blessing=BLESSED)
    assert _entries(base) == []


def _export_tf_serving_cannot_run(trained_keras_model_path, out: Path, monkeypatch) -> Path:
    """An export as the exporter wrote them before it checked them: Keras 3 variables tracked as themselves, which
    tf.saved_model.load answers but TF Serving's Session cannot restore (keras-team/keras#20096)."""
    from components import export

    with monkeypatch.context() as patch:
        patch.setattr(export, "_tf_variable", lambda variable: variable)
        patch.setattr(export, "_check_as_tf_serving_runs_it", lambda *a: None)
        return export.run(trained_keras_model_path, out).saved_model_dir


def test_a_model_tf_serving_could_not_run_is_not_pushed(trained_keras_model_path, tmp_path, monkeypatch):
    """push is what puts a version where TF Serving serves it: an export TF Serving would fail on every request is
    refused, naming it and what to do, though tf.saved_model.load answers it, and nothing is left behind."""
    broken = _export_tf_serving_cannot_run(trained_keras_model_path, tmp_path / "old" / "saved_model", monkeypatch)
    base = tmp_path / "models"

    with pytest.raises(ModelError, match="(?s)would fail in TF Serving, so nothing was pushed.*Could not find "
                                         "variable.*mnist-pipeline export"):
        push.run(MNIST, broken, base, blessing=BLESSED)
    assert _entries(base) == []


def test_a_model_whose_warmup_tf_serving_would_refuse_is_not_pushed(saved_model_dir, tmp_path, monkeypatch):
    """TF Serving replays a version's warmup requests before serving it and refuses the version if one fails: push
    replays them too, and a failing record (here a Predict of 5x5 images to a 28x28 signature) stops it."""
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = sig.MODEL_NAME, sig.SERVING_DEFAULT
    request.inputs[sig.IMAGE_INPUT].CopyFrom(tf.make_tensor_proto(np.zeros((1, 5, 5, 1), np.float32)))
    record = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    real_copytree = shutil.copytree

    def copy_with_a_bad_warmup(src, dst, *args, **kwargs):
        real_copytree(src, dst, *args, **kwargs)
        if Path(dst).name.startswith(".tmp-push-"):
            with tf.io.TFRecordWriter(os.fspath(Path(dst) / "assets.extra" / sig.WARMUP_FILE)) as writer:
                writer.write(record.SerializeToString())
        return dst

    monkeypatch.setattr(push.shutil, "copytree", copy_with_a_bad_warmup)
    base = tmp_path / "models"
    with pytest.raises(ModelError, match="(?s)would fail in TF Serving, so nothing was pushed: warmup record 1 .*"
                                         "serving_default.*shape"):
        push.run(MNIST, saved_model_dir, base, blessing=BLESSED)
    assert _entries(base) == []


def test_rollback_to_a_version_tf_serving_could_not_run_is_refused(saved_model_dir, trained_keras_model_path,
                                                                   tmp_path, monkeypatch, capsys):
    """A version copied into the base path by hand (or pushed before push checked this) is not rolled back to:
    the served version stays the newest."""
    workdir = tmp_path / "w"
    base = paths.model_base_path(workdir)
    _export_tf_serving_cannot_run(trained_keras_model_path, model_registry.model_dir(base, sig.MODEL_NAME) / "1",
                                  monkeypatch)
    push.run(MNIST, saved_model_dir, base, blessing=BLESSED)

    assert cli.main(["rollback", "--workdir", os.fspath(workdir), "--to", "1", "-q"]) == 1
    assert "would fail in TF Serving" in capsys.readouterr().err
    assert [v.version for v in model_registry.list_versions(base, sig.MODEL_NAME)] == [1, 2]


def test_keep_only_the_newest_n_versions(saved_model_dir, tmp_path):
    base = tmp_path / "models"
    config = PushConfig(model_name="mnist", keep_versions=2)
    removed = [push.run(config, saved_model_dir, base, blessing=BLESSED).removed_versions for _ in range(4)]
    assert removed == [(), (), (1,), (2,)]
    assert _entries(base) == ["3", "4"]


@pytest.mark.parametrize("damage", ["no_saved_model_pb", "garbage_pb", "no_variables", "no_classify"])
def test_corrupt_or_partial_saved_model_is_refused_naming_the_path(damage, saved_model_dir, tmp_path):
    broken = tmp_path / "broken_model"
    shutil.copytree(saved_model_dir, broken)
    if damage == "no_saved_model_pb":
        (broken / "saved_model.pb").unlink()
    elif damage == "garbage_pb":
        (broken / "saved_model.pb").write_bytes(b"\x00garbage" * 10)
    elif damage == "no_variables":
        shutil.rmtree(broken / "variables")
    else:
        from tensorflow.core.protobuf import saved_model_pb2

        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((broken / "saved_model.pb").read_bytes())
        del proto.meta_graphs[0].signature_def[sig.CLASSIFY_SIGNATURE]
        (broken / "saved_model.pb").write_bytes(proto.SerializeToString())
    base = tmp_path / "models"
    with pytest.raises(ModelError, match="broken_model"):
        push.run(MNIST, broken, base, blessing=BLESSED)
    assert not (base / sig.MODEL_NAME).exists() or _entries(base) == []


def test_base_path_that_is_a_file_is_a_clear_error(saved_model_dir, tmp_path):
    base = tmp_path / "models"
    base.write_text("not a folder")
    with pytest.raises(ConfigError, match="is a file"):
        push.run(MNIST, saved_model_dir, base, blessing=BLESSED)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_base_path_that_is_not_writable_is_a_clear_error(saved_model_dir, tmp_path):
    base = tmp_path / "models"
    base.mkdir()
    base.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="writable|cannot create"):
            push.run(MNIST, saved_model_dir, base, blessing=BLESSED)
    finally:
        base.chmod(0o700)


def test_base_path_reported_not_writable_is_a_clear_error(saved_model_dir, tmp_path, monkeypatch):
    """The same check as above where the tests run as root (who may write anywhere): the OS says no."""
    real_access = os.access
    monkeypatch.setattr(push.os, "access", lambda p, mode: False if "models" in os.fspath(p) else real_access(p, mode))
    with pytest.raises(ConfigError, match="not writable"):
        push.run(MNIST, saved_model_dir, tmp_path / "models", blessing=BLESSED)
    assert _entries(tmp_path / "models") == []


def _write_run(workdir: Path, run_id: str, saved_model_dir: Path, *, blessed: bool | None, accuracy: float) -> None:
    """A run that exported `saved_model_dir` and (unless `blessed` is None) evaluated it, as the store records it."""
    from pipeline.stage_api import artifact
    from pipeline.store import RunStore

    exported = paths.stage_dir(workdir, run_id, "export") / "saved_model"
    shutil.copytree(saved_model_dir, exported)
    with RunStore(paths.store_path(workdir)) as store:
        store.start_run(run_id, {}, "test")
        ex = store.start_execution(run_id, "export", config_fingerprint="", code_version="test", inputs={},
                                   cache_key=None)
        model = store.finish_execution(ex, "succeeded", outputs={"saved_model": artifact(exported, "SavedModel")})
        if blessed is not None:
            blessing = paths.stage_dir(workdir, run_id, "evaluate") / "blessing.json"
            blessing.parent.mkdir(parents=True)
            blessing.write_text(json.dumps({"blessed": blessed, "reason": "test", "accuracy": accuracy}))
            ev = store.start_execution(run_id, "evaluate", config_fingerprint="", code_version="test",
                                       inputs={"model": model["saved_model"]}, cache_key=None)
            store.finish_execution(ev, "succeeded", outputs={"blessing": artifact(blessing, "ModelBlessing")},
                                   properties={"accuracy": accuracy, "blessed": blessed})
        store.finish_run(run_id, "succeeded")


def test_push_versions_and_rollback_commands(saved_model_dir, tmp_path, capsys):
    workdir = tmp_path / "w"
    base = paths.model_base_path(workdir)
    _write_run(workdir, "20261123T000001Z-aaaaaa", saved_model_dir, blessed=True, accuracy=0.991)
    assert cli.main(["push", "--workdir", os.fspath(workdir), "--run-id", "20261123T000001Z-aaaaaa", "-q"]) == 0
    _write_run(workdir, "20261123T000002Z-bbbbbb", saved_model_dir, blessed=False, accuracy=0.95)
    assert cli.main(["push", "--workdir", os.fspath(workdir), "-q"]) == 0  # newest run: not blessed, exit 0
    assert "not blessed" in capsys.readouterr().out
    assert cli.main(["push", "--workdir", os.fspath(workdir), "--force", "-q"]) == 0
    assert [v.version for v in model_registry.list_versions(base, sig.MODEL_NAME)] == [1, 2]

    capsys.readouterr()
    assert cli.main(["versions", "--workdir", os.fspath(workdir)]) == 0
    table = capsys.readouterr().out
    row1, row2 = [line for line in table.splitlines() if line.strip()[:1].isdigit()]
    assert "0.9910" in row1 and "served" not in row1
    assert "0.9500" in row2 and "served" in row2 and "forced" in row2

    assert cli.main(["rollback", "--workdir", os.fspath(workdir), "-q"]) == 0
    versions = model_registry.list_versions(base, sig.MODEL_NAME)
    assert [v.version for v in versions] == [1, 2, 3]  # history kept; the newest (served) is a copy of 1
    served = versions[-1].metadata
    assert served["rolled_back_from"] == 2 and served["copy_of_version"] == 1
    assert served["accuracy"] == 0.991 and served["blessed"] is True
    push.check_signatures(versions[-1].path)

    capsys.readouterr()
    assert cli.main(["versions", "--workdir", os.fspath(workdir), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["served"] for r in rows] == [False, False, True]

    assert cli.main(["rollback", "--workdir", os.fspath(workdir), "--to", "3"]) == 1  # already served
    assert cli.main(["rollback", "--workdir", os.fspath(workdir), "--to", "9"]) == 1
    assert "version 9 is not in" in capsys.readouterr().err


def test_push_without_evaluation_asks_for_it(saved_model_dir, tmp_path, capsys):
    workdir = tmp_path / "w"
    _write_run(workdir, "20261123T000001Z-aaaaaa", saved_model_dir, blessed=None, accuracy=0.0)
    assert cli.main(["push", "--workdir", os.fspath(workdir)]) == 1
    assert "mnist-pipeline evaluate" in capsys.readouterr().err
    assert not paths.model_base_path(workdir).exists()


def test_rollback_with_one_version_is_refused(saved_model_dir, tmp_path, capsys):
    workdir = tmp_path / "w"
    push.run(dataclasses.replace(MNIST), saved_model_dir, paths.model_base_path(workdir), blessing=BLESSED)
    assert cli.main(["rollback", "--workdir", os.fspath(workdir)]) == 1
    assert "nothing to roll back" in capsys.readouterr().err


def test_records_name_files_in_the_workdir_relative_to_it_and_keep_absolute_paths_outside_it(saved_model_dir, tmp_path):
    workdir = tmp_path / "w"
    export = Path(shutil.copytree(saved_model_dir, workdir / "runs" / "r1" / "export" / "saved_model"))
    record = workdir / "runs" / "r1" / "push" / "pushed.json"
    inside = push.run(MNIST, export, workdir / "serving" / "models", blessing=BLESSED, record_path=record,
                      record_root=workdir)
    assert model_registry.read_metadata(inside.version_dir)["source"] == "runs/r1/export/saved_model"
    written = json.loads(record.read_text())
    assert written["version_dir"] == "serving/models/mnist/1" and written["source"] == "runs/r1/export/saved_model"
    # A model base path elsewhere: its version's record cannot name the workdir relatively, nor pushed.json it.
    elsewhere = push.run(MNIST, export, tmp_path / "models", blessing=BLESSED, record_path=record, record_root=workdir)
    assert model_registry.read_metadata(elsewhere.version_dir)["source"] == os.fspath(export.resolve())
    assert json.loads(record.read_text())["version_dir"] == os.fspath(elsewhere.version_dir)
