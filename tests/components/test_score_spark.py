"""Scoring on Spark (`score --engine spark`): the same rows, failed output and summary as the Beam job for
Parquet, CSV and image folders; a real standalone cluster (a master and two workers on 127.0.0.1) scoring
the MNIST test set, with one worker killed mid-job; the pandas UDF for DataFrames; one-line errors without
pyspark or Java; live progress."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.components.test_score import _png
from tests.components.test_score_formats import _colour_png, _csv, _jpeg
from tests.conftest import IDX_FILES, synthetic_digits

pytestmark = pytest.mark.timeout(900)


def _spark_missing() -> str | None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return 'pyspark is not installed (pip install -e ".[spark]"; .ci/run installs it)'
    if shutil.which("java") is None:
        return "no Java runtime (apt-get install openjdk-17-jre-headless; .ci/run installs it)"
    return None


needs_spark = pytest.mark.skipif(_spark_missing() is not None, reason=str(_spark_missing()))


def _score(tmp_path: Path, model: Path, pattern: str, out: str, *extra: str) -> Path:
    from pipeline import cli

    out_dir = tmp_path / out
    argv = ["score", "--workdir", str(tmp_path / "w"), "--model", str(model), "--input", pattern, "--output",
            str(out_dir), "-q", "--max-batch-size", "64", *extra]
    assert cli.main(argv) == 0
    return out_dir


def _outputs(out: Path) -> tuple[dict, dict, dict]:
    """(predictions by key, failed rows by key, summary); a key seen twice fails the test."""
    predicted, failed = {}, {}
    for pattern, rows in (("predictions-*.jsonl", predicted), ("failed-*.jsonl", failed)):
        for f in sorted(out.glob(pattern)):
            for row in map(json.loads, f.read_text().splitlines()):
                assert row["key"] not in rows, f"{row['key']} written twice"
                rows[row["key"]] = row
    return predicted, failed, json.loads((out / "summary.json").read_text())


def _classes(rows: dict) -> dict:
    return {k: r["predicted_class"] for k, r in rows.items()}


def _same_as_beam(tmp_path: Path, model: Path, pattern: str, n_rows: int, *spark_flags: str, extra=()) -> tuple:
    beam = _outputs(_score(tmp_path, model, pattern, "beam", *extra))
    spark = _outputs(_score(tmp_path, model, pattern, "spark", "--engine", "spark", *spark_flags, *extra))
    (b_pred, b_failed, b_sum), (s_pred, s_failed, s_sum) = beam, spark
    assert s_sum["accounted"] is True and s_sum["read"] == n_rows == s_sum["predictions"] + s_sum["failed"]
    assert s_sum["engine"] == "spark"
    assert _classes(s_pred) == _classes(b_pred)
    assert {k: r["reason"] for k, r in s_failed.items()} == {k: r["reason"] for k, r in b_failed.items()}
    for key in ("inputs", "failed_by_reason", "confusion_matrix", "accuracy", "labeled", "correct"):
        assert s_sum[key] == b_sum[key], key
    for key, row in s_pred.items():
        assert np.allclose(row["probabilities"], b_pred[key]["probabilities"], atol=1e-6)
        assert (row["label"], row["predicted_class_name"], row["model_version"]) == (
            b_pred[key]["label"], b_pred[key]["predicted_class_name"], b_pred[key]["model_version"])
    return s_pred, s_failed, s_sum


@needs_spark
def test_spark_engine_writes_the_beam_jobs_rows_for_parquet_csv_and_image_folders(saved_model_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    images, labels = synthetic_digits(40, seed=31)
    labels = [int(y) for y in labels]
    # Parquet: PNG bytes with bad rows (bytes that are no image, another size, colour, null)
    data = [_png(x) for x in images] + [b"not an image", _png(np.zeros((32, 32), np.uint8)), _colour_png(), None]
    keys = [f"p-{i}" for i in range(40)] + ["bad-bytes", "bad-size", "bad-colour", "bad-null"]
    pq.write_table(pa.table({"key": keys, "label": labels + [1, 2, 3, 4], "image": pa.array(data, pa.binary())}),
                   tmp_path / "in.parquet", row_group_size=7)
    _, failed, _ = _same_as_beam(tmp_path, saved_model_dir, str(tmp_path / "in.parquet"), 44, "--spark-master",
                                 "local[2]")
    assert {k: r["reason"].split(":")[0] for k, r in failed.items()} == {
        "bad-bytes": "undecodable image", "bad-size": "wrong size", "bad-colour": "colour image",
        "bad-null": "undecodable image"}

    # CSV (Kaggle's layout) with a short row, a word for a pixel and a pixel above 255
    pixels = images.reshape(40, -1).tolist()
    header = ["label"] + [f"pixel{i}" for i in range(784)]
    bad = [[labels[0]] + pixels[0][:100], [labels[1]] + pixels[1][:10] + ["abc"] + pixels[1][11:],
           [labels[2]] + pixels[2][:20] + [256] + pixels[2][21:]]
    folder = tmp_path / "csv"
    folder.mkdir()
    _csv(folder / "train.csv", header, [[y] + p for y, p in zip(labels, pixels)] + bad)
    _, failed, summary = _same_as_beam(tmp_path, saved_model_dir, str(folder / "*.csv"), 43)
    assert sorted(failed) == ["train.csv:41", "train.csv:42", "train.csv:43"]
    assert summary["spark_master"].startswith("local")

    # a folder of PNG and JPEG files with an empty, a colour and a text file; CSV output written by Spark
    images_dir = tmp_path / "imgs"
    (images_dir / "sub").mkdir(parents=True)
    for i, x in enumerate(images[:30]):
        (images_dir / f"{i}.png").write_bytes(_png(x))
    for i, x in enumerate(images[30:]):
        (images_dir / "sub" / f"{i}.jpg").write_bytes(_jpeg(x))
    (images_dir / "empty.png").write_bytes(b"")
    (images_dir / "colour.png").write_bytes(_colour_png())
    (images_dir / "text.png").write_text("hello")
    pred, failed, _ = _same_as_beam(tmp_path, saved_model_dir, str(images_dir), 43, "--spark-master", "local[2]")
    assert sorted(failed) == ["colour.png", "empty.png", "text.png"] and "sub/3.jpg" in pred
    out = _score(tmp_path, saved_model_dir, str(images_dir), "csv-out", "--engine", "spark", "--format", "csv")
    parts = sorted(out.glob("predictions-*.csv"))
    assert parts and all(p.read_text().startswith("key,predicted_class,") for p in parts)
    assert sum(len(p.read_text().splitlines()) - 1 for p in parts) == 40


@needs_spark
def test_spark_parquet_output_reads_back_with_the_beam_schema(saved_model_dir, tmp_path):
    import pyarrow.parquet as pq

    images, labels = synthetic_digits(20, seed=32)
    folder = tmp_path / "csv"
    folder.mkdir()
    _csv(folder / "test.csv", ["label"] + [f"pixel{i}" for i in range(784)],
         [[int(y)] + p for y, p in zip(labels, images.reshape(20, -1).tolist())])
    out = _score(tmp_path, saved_model_dir, str(folder / "test.csv"), "pq", "--engine", "spark", "--format", "parquet")
    files = sorted(out.glob("predictions-*-of-*.parquet"))
    table = pq.ParquetDataset([str(f) for f in files]).read()
    assert table.num_rows == 20
    assert table.column_names == ["key", "predicted_class", "predicted_class_name", "probabilities", "label",
                                  "model_name", "model_version"]
    assert sorted(table.column("key").to_pylist()) == sorted(f"test.csv:{i + 1}" for i in range(20))
    assert not list(out.glob("_spark-*")), "Spark's temporary folder is left behind"


# ---------------------------------------------------------------------------------------------- the cluster


@pytest.fixture
def spark_cluster(tmp_path):
    if _spark_missing():
        pytest.skip(_spark_missing())
    from components.score.spark_cluster import LocalCluster

    cluster = LocalCluster(tmp_path / "cluster")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def test_set_parquet(tmp_path_factory) -> Path:
    """The 10,000 MNIST test images as PNG bytes in Parquet (key, label, image): the real ones where the IDX
    files are (../shared/data/mnist), else 10,000 synthetic digits."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import tensorflow as tf

    from components import idx
    from tests.conftest import REAL_MNIST_DIR

    if (REAL_MNIST_DIR / IDX_FILES["test_images"]).is_file():
        images = idx.read_images(REAL_MNIST_DIR / IDX_FILES["test_images"])
        labels = idx.read_labels(REAL_MNIST_DIR / IDX_FILES["test_labels"])
    else:
        images, labels = synthetic_digits(10_000, seed=35)

    pngs = [tf.io.encode_png(x[..., None]).numpy() for x in images]
    path = tmp_path_factory.mktemp("testset") / "test.parquet"
    pq.write_table(pa.table({"key": [f"test-{i:05d}" for i in range(len(pngs))], "label": labels.astype(np.int64),
                             "image": pa.array(pngs, pa.binary())}), path, row_group_size=1000)
    return path


def test_a_standalone_cluster_scores_the_test_set_like_beam_and_survives_a_killed_worker(
        saved_model_dir, spark_cluster, test_set_parquet, tmp_path):
    beam = _outputs(_score(tmp_path, saved_model_dir, str(test_set_parquet), "beam", "--max-batch-size", "256"))
    assert beam[2]["read"] == 10_000

    # one worker is killed (with its executor) once the first task has finished: Spark reruns its tasks
    from pyspark import SparkContext

    killed = threading.Event()

    def kill_after_first_task():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not killed.is_set():
            sc = SparkContext._active_spark_context
            if sc is not None:
                try:
                    tracker = sc.statusTracker()
                    done = sum(s.numCompletedTasks for s in map(tracker.getStageInfo, tracker.getActiveStageIds()) if s)
                except Exception:  # the context is starting or stopping
                    done = 0
                if done >= 1:
                    spark_cluster.kill_worker(0)
                    killed.set()
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_after_first_task, daemon=True)
    killer.start()
    out = _score(tmp_path, saved_model_dir, str(test_set_parquet), "cluster", "--engine", "spark", "--spark-master",
                 spark_cluster.master_url, "--max-batch-size", "256")
    killer.join(5)
    assert killed.is_set(), "the job ended before a task finished: nothing was killed"
    assert spark_cluster.alive_workers() <= 1
    predicted, failed, summary = _outputs(out)  # asserts that no key is written twice
    assert sorted(predicted) == [f"test-{i:05d}" for i in range(10_000)] and not failed
    assert summary["accounted"] is True and summary["read"] == 10_000
    assert summary["spark_master"] == spark_cluster.master_url
    assert _classes(predicted) == _classes(beam[0])
    assert summary["confusion_matrix"] == beam[2]["confusion_matrix"]


# ------------------------------------------------------------------------------------------------ the UDF


@needs_spark
def test_prediction_udf_scores_a_dataframe_column_of_png_bytes_or_pixels(saved_model_dir, tmp_path):
    from pyspark.sql import functions as F

    from components.score import spark_job
    from components.score.spark_udf import prediction_udf
    from components.score.spark_worker import predict

    images, _ = synthetic_digits(12, seed=33)
    base = tmp_path / "models" / "mnist"
    shutil.copytree(saved_model_dir, base / "3")
    expected = predict(str(saved_model_dir), images[..., None].astype(np.uint8))[1].tolist()
    spark = spark_job.session("local[2]")
    try:
        rows = [(f"k{i}", _png(x), [int(v) for v in x.reshape(-1)]) for i, x in enumerate(images)]
        rows += [("bad-png", b"not a png", [300] + [0] * 783), ("bad-size", _png(np.zeros((30, 28), np.uint8)), [1])]
        df = spark.createDataFrame(rows, "key string, image binary, pixels array<int>")
        predict_udf = prediction_udf(str(base))  # a model base path: its newest version
        scored = (df.withColumn("from_png", predict_udf("image")).withColumn("from_pixels", predict_udf(F.col("pixels")))
                  .orderBy("key").collect())
    finally:
        spark.stop()
    by_key = {r["key"]: r for r in scored}
    assert [by_key[f"k{i}"]["from_png"]["predicted_class"] for i in range(12)] == expected
    assert [by_key[f"k{i}"]["from_pixels"]["predicted_class"] for i in range(12)] == expected
    good = by_key["k0"]["from_png"]
    assert len(good["probabilities"]) == 10 and good["error"] is None
    assert good["predicted_class_name"] == str(expected[0])
    assert by_key["bad-png"]["from_png"]["error"].startswith("undecodable image")
    assert by_key["bad-png"]["from_pixels"]["error"].startswith("bad pixel: pixel0 is 300")
    assert by_key["bad-size"]["from_png"]["error"].startswith("wrong size")
    assert by_key["bad-size"]["from_pixels"]["predicted_class"] is None


# ------------------------------------------------------------------------------- errors without the extras


def _run_cli(argv: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *argv], capture_output=True, text=True, env=env,
                          timeout=300, cwd=Path(__file__).resolve().parents[2])


def test_without_java_the_spark_engine_says_so_in_one_line(saved_model_dir, tmp_path):
    csv_file = _csv(tmp_path / "t.csv", [f"pixel{i}" for i in range(784)], [[0] * 784])
    bin_dir = tmp_path / "bin"  # PATH with this Python only: no java
    bin_dir.mkdir()
    os.symlink(sys.executable, bin_dir / "python")
    env = {**os.environ, "PATH": str(bin_dir)}
    env.pop("JAVA_HOME", None)
    argv = ["score", "--workdir", str(tmp_path / "w"), "--model", str(saved_model_dir), "--input", str(csv_file),
            "--output", str(tmp_path / "out"), "--engine", "spark", "-q"]
    proc = _run_cli(argv, env)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mnist-pipeline score: error:")]
    assert len(errors) == 1, proc.stderr
    message = errors[0]
    if _spark_missing() and "pyspark" in _spark_missing():
        assert 'pip install "mnist-pipeline[spark]"' in message
    else:
        assert "openjdk-17-jre-headless" in message and "java" in message.lower()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_without_pyspark_the_spark_engine_names_the_extra(monkeypatch):
    from components.score import spark_job
    from pipeline.errors import ConfigError

    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark -> ImportError
    with pytest.raises(ConfigError, match=r'pip install "mnist-pipeline\[spark\]"'):
        spark_job.require_spark()


# ------------------------------------------------------------------------------------------------ progress


def _poll_script(total: int, steps: int):
    state = {"i": 0}

    def poll():
        state["i"] = min(state["i"] + 1, steps)
        read = total * state["i"] // steps
        return read, read - read // 10, read // 10

    return poll


def test_a_piped_run_logs_a_progress_line_every_few_seconds(caplog):
    from components.score.progress import Progress

    caplog.set_level(logging.INFO, logger="components")
    stream = io.StringIO()  # not a terminal
    with Progress(1000, _poll_script(1000, 4), stream=stream, interval=0.05):
        time.sleep(0.4)
    lines = [r.getMessage() for r in caplog.records if r.name == "components.score.progress"]
    assert len(lines) >= 3 and stream.getvalue() == ""
    assert lines[-1].startswith("score: 1,000/1,000 (100%) rows read, 900 predicted, 100 failed, ")
    assert any("ETA" in line for line in lines[:-1]) and "rows/s" in lines[0]


def test_a_terminal_run_shows_a_live_progress_bar(caplog):
    from components.score.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    caplog.set_level(logging.INFO, logger="components")
    stream = Terminal()
    with Progress(1000, _poll_script(1000, 4), stream=stream, interval=0.05):
        time.sleep(0.4)
    text = stream.getvalue()
    assert "1000/1000" in text and "predicted 900, failed 100" in text and "rows/s" in text
    assert "\r" in text  # redrawn in place
    assert not [r for r in caplog.records if r.name == "components.score.progress"]


@needs_spark
def test_a_piped_score_run_logs_progress_for_both_engines(saved_model_dir, tmp_path):
    images, labels = synthetic_digits(30, seed=34)
    csv_file = _csv(tmp_path / "t.csv", ["label"] + [f"pixel{i}" for i in range(784)],
                    [[int(y)] + p for y, p in zip(labels, images.reshape(30, -1).tolist())])
    for engine in ("beam", "spark"):
        argv = ["score", "--workdir", str(tmp_path / "w"), "--model", str(saved_model_dir), "--input", str(csv_file),
                "--output", str(tmp_path / engine), "--engine", engine]
        proc = _run_cli(argv, {**os.environ})
        assert proc.returncode == 0, proc.stderr[-2000:]
        progress = [line for line in proc.stderr.splitlines() if "rows read" in line]
        assert progress, proc.stderr[-2000:]
        assert "30/30 (100%) rows read, 30 predicted, 0 failed" in progress[-1]
