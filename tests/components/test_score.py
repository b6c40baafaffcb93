"""Batch scoring with Beam: the composed pipeline on a few records (fake model), agreement with the evaluator,
the dead-letter output, each output format read back, and the CLI's errors before a job starts."""

from __future__ import annotations

import csv
import glob
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import synthetic_digits, write_idx_dir

pytestmark = pytest.mark.timeout(300)


def _png(image: np.ndarray) -> bytes:
    import tensorflow as tf

    return tf.io.encode_png(image.reshape(image.shape[0], image.shape[1], 1).astype(np.uint8)).numpy()


def _write_records(path: Path, records: list[bytes]) -> str:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return str(path)


def _good_records(n: int, seed: int = 3) -> tuple[list[bytes], np.ndarray]:
    from components.examples import make_example

    images, labels = synthetic_digits(n, seed=seed)
    return [make_example(_png(x), int(y), f"good-{i}") for i, (x, y) in enumerate(zip(images, labels))], labels


def _bad_records() -> list[bytes]:
    from tensorflow.core.example import example_pb2

    from components.examples import make_example

    no_image = example_pb2.Example()
    no_image.features.feature["label"].int64_list.value.append(3)
    no_image.features.feature["key"].bytes_list.value.append(b"bad-missing")
    big = np.zeros((32, 32), np.uint8)
    return [
        make_example(b"\x89PNG\r\n\x1a\nthis is not a png", 1, "bad-png"),
        make_example(_png(big), 2, "bad-size"),
        no_image.SerializeToString(),
    ]


class _BarModel:
    """A fake model for synthetic digits: the class is where the bright bar is (row 3 + 2 * label)."""


def _fake_handler():
    from apache_beam.ml.inference.base import ModelHandler, PredictionResult

    class BarHandler(ModelHandler):
        def load_model(self):
            return _BarModel()

        def run_inference(self, batch, model, inference_args=None):
            out = []
            for image in batch:
                row = int(np.argmax(image[..., 0].mean(axis=1)))
                predicted = min(max((row - 3) // 2, 0), 9)
                probabilities = np.eye(10, dtype=np.float32)[predicted]
                out.append(PredictionResult(image, (probabilities, predicted), "bar"))
            return out

        def batch_elements_kwargs(self):
            return {"min_batch_size": 1, "max_batch_size": 4}

    return BarHandler()


def test_pipeline_keys_predictions_and_dead_letter_with_fake_model(tmp_path):
    import hashlib

    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from components import score

    good, labels = _good_records(6)
    records = good[:3] + _bad_records() + good[3:] + [b"not a tf.Example at all"]
    pattern = _write_records(tmp_path / "mixed.tfrecord", records)
    ref = score.ModelRef("unused", "mnist", 7)
    with TestPipeline(runner=FnApiRunner()) as p:
        out = score.build_pipeline(p, input_pattern=pattern, output_dir=str(tmp_path / "out"), model=ref,
                                   output_format="jsonl", min_batch_size=2, max_batch_size=4,
                                   model_handler=_fake_handler())
        rows = out["rows"] | "Parse" >> beam.FlatMap(
            lambda chunk: [(r["key"], r["predicted_class"], r["label"], r["model_name"], r["model_version"])
                           for r in map(json.loads, chunk.split("\n"))])
        assert_that(rows, equal_to([(f"good-{i}", int(y), int(y), "mnist", 7) for i, y in enumerate(labels)]),
                    label="CheckPredictions")
        reasons = out["failed"] | "Reason" >> beam.Map(
            lambda row: (row["key"], row["reason"].split(":")[0]))
        garbage_key = hashlib.sha1(b"not a tf.Example at all").hexdigest()[:16]
        assert_that(reasons, equal_to([("bad-png", "undecodable image"), ("bad-size", "wrong size"),
                                       ("bad-missing", "missing feature"), (garbage_key, "not a tf.Example")]),
                    label="CheckFailed")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["predictions"] == 6 and summary["failed"] == 4
    assert summary["accuracy"] == 1.0
    assert summary["failed_by_reason"] == {"missing feature": 1, "not a tf.Example": 1, "undecodable image": 1,
                                           "wrong size": 1}
    assert np.trace(np.array(summary["confusion_matrix"])) == 6


@pytest.fixture(scope="module")
def synthetic_workdir(tmp_path_factory) -> Path:
    """A workdir whose TFDS mnist has 300 synthetic test digits, ingested (and recorded) by the CLI."""
    from pipeline import cli

    root = tmp_path_factory.mktemp("score_wd")
    idx = write_idx_dir(root / "idx", n_train=20, n_test=300, seed=11)
    assert cli.main(["ingest", "--source-dir", str(idx), "--workdir", str(root / "w"), "-q"]) == 0
    return root / "w"


def _rows(pattern: str) -> list[dict]:
    return [json.loads(line) for f in sorted(glob.glob(pattern)) for line in Path(f).read_text().splitlines()]


def test_predictions_equal_the_evaluators(synthetic_workdir, saved_model_dir, tmp_path):
    from components import data, evaluate, examples, score
    from components.score.options import ScoreConfig
    from pipeline import paths

    data_dir = paths.data_dir(synthetic_workdir)
    sample = examples.write_examples(data_dir, "mnist", "test", tmp_path / "ex" / "test", num_shards=3)
    out = score.run(ScoreConfig(min_batch_size=16, max_batch_size=64), model=saved_model_dir,
                    input_pattern=sample.file_pattern, output_dir=tmp_path / "out")
    by_key = {r["key"]: r for r in _rows(out.predictions_pattern)}
    assert out.num_predictions == len(by_key) == 300 and out.num_failed == 0

    predict = evaluate.load_serving_function(Path(saved_model_dir))
    probabilities, labels = [], []
    for images, y in data.split_dataset(data_dir, "mnist", "test", batch_size=64):
        probabilities.append(predict(images))
        labels.append(y.numpy())
    probabilities, labels = np.concatenate(probabilities), np.concatenate(labels).astype(np.int64)
    expected = evaluate.classification_metrics(probabilities, labels)

    beam_classes = np.array([by_key[f"test-{i:05d}"]["predicted_class"] for i in range(300)])
    np.testing.assert_array_equal(beam_classes, probabilities.argmax(axis=1))
    np.testing.assert_array_equal([by_key[f"test-{i:05d}"]["label"] for i in range(300)], labels)
    np.testing.assert_allclose([by_key[f"test-{i:05d}"]["probabilities"] for i in range(300)], probabilities,
                               atol=1e-5)
    assert out.accuracy == expected["accuracy"]
    summary = json.loads(Path(out.summary_path).read_text())
    assert summary["confusion_matrix"] == expected["confusion_matrix"]
    assert summary["model"]["saved_model_dir"] == str(saved_model_dir)
    assert summary["metrics"]["mnist_score/predictions"] == 300
    assert summary["metrics"]["mnist_score/examples_read"] == 300


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_each_format_reads_back_through_the_cli(fmt, synthetic_workdir, saved_model_dir, tmp_path, capsys):
    from pipeline import cli

    base = tmp_path / "models" / "mnist"
    shutil.copytree(saved_model_dir, base / "3")
    good, labels = _good_records(5, seed=5)
    pattern = _write_records(tmp_path / "in.tfrecord", good + _bad_records())
    out_dir = tmp_path / "out"
    rc = cli.main(["score", "--workdir", str(synthetic_workdir), "--model", str(base), "--input", pattern,
                   "--output", str(out_dir), "--format", fmt, "-q",
                   "--direct_num_workers=2", "--direct_running_mode=multi_threading"])
    assert rc == 0, capsys.readouterr().err
    files = sorted(out_dir.glob(f"predictions-*.{fmt}"))
    assert files
    if fmt == "jsonl":
        rows = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    elif fmt == "csv":
        rows = []
        for f in files:
            for r in csv.DictReader(f.read_text().splitlines()):
                rows.append({"key": r["key"], "predicted_class": int(r["predicted_class"]), "label": int(r["label"]),
                             "model_name": r["model_name"], "model_version": int(r["model_version"]),
                             "probabilities": [float(r[f"probability_{i}"]) for i in range(10)]})
    else:
        import pyarrow.parquet as pq

        rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    assert sorted(r["key"] for r in rows) == [f"good-{i}" for i in range(5)]
    for r in rows:
        assert r["model_name"] == "mnist" and r["model_version"] == 3
        assert r["label"] == int(labels[int(r["key"].split("-")[1])])
        assert r["predicted_class"] == int(np.argmax(r["probabilities"]))
        assert abs(sum(r["probabilities"]) - 1.0) < 1e-4
    failed = [json.loads(line) for f in out_dir.glob("failed-*.jsonl") for line in f.read_text().splitlines()]
    assert sorted(r["key"] for r in failed) == ["bad-missing", "bad-png", "bad-size"]
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["predictions"] == 5 and summary["failed"] == 3
    assert "scored 5 examples with mnist version 3" in capsys.readouterr().out


def test_scores_the_tfds_split_by_default(synthetic_workdir, saved_model_dir, capsys):
    from pipeline import cli, paths

    rc = cli.main(["score", "--workdir", str(synthetic_workdir), "--model", str(saved_model_dir), "--run-id", "r1",
                   "-q"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((paths.stage_dir(synthetic_workdir, "r1", "score") / "summary.json").read_text())
    assert summary["predictions"] == 300 and summary["labeled"] == 300 and summary["failed"] == 0


def _model_without_signature(path: Path) -> Path:
    import tensorflow as tf

    module = tf.Module()
    module.f = tf.function(lambda x: {"y": x * 2.0}, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(path), signatures={"other": module.f})
    return path


def test_cli_rejects_bad_inputs_before_the_job_starts(saved_model_dir, tmp_path, capsys):
    from pipeline import cli

    pattern = _write_records(tmp_path / "in.tfrecord", _good_records(2)[0])
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    wrong = _model_without_signature(tmp_path / "wrong_model")
    cases = {
        "/no/such/model": ["--model", "/no/such/model", "--input", pattern],
        str(wrong): ["--model", str(wrong), "--input", pattern],
        str(tmp_path / "none-*.tfrecord"): ["--model", str(saved_model_dir), "--input", str(tmp_path / "none-*.tfrecord")],
        "xml": ["--model", str(saved_model_dir), "--input", pattern, "--format", "xml"],
        str(not_a_dir / "out"): ["--model", str(saved_model_dir), "--input", pattern, "--output", str(not_a_dir / "out")],
    }
    for bad, flags in cases.items():
        out_dir = tmp_path / "never"
        argv = ["score", "--workdir", str(tmp_path / "w"), "--output", str(out_dir), *flags, "-q"]
        assert cli.main(argv) == 1, bad
        err = capsys.readouterr().err
        assert bad in err and "error" in err, (bad, err)
        assert not out_dir.exists() or not any(out_dir.iterdir()), bad


def test_model_base_path_means_its_newest_version(saved_model_dir, tmp_path):
    from components import score

    base = tmp_path / "mnist"
    for v in (2, 10):
        shutil.copytree(saved_model_dir, base / str(v))
    (base / "11").mkdir()  # a version without a SavedModel is skipped: the newest complete one is served
    assert score.resolve_model(base) == score.ModelRef(str(base / "10"), "mnist", 10)
    (base / "11").rmdir()
    assert score.resolve_model(base) == score.ModelRef(str(base / "10"), "mnist", 10)
    assert score.resolve_model(base / "2").version == 2


def test_a_record_whose_tensorflow_error_is_not_utf8_goes_to_failed(tmp_path):
    """TF's message for this record holds raw bytes; decoding it must not kill the job."""
    import hashlib

    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from components import score

    garbage = b"\xff\xfe\x80garbage\xc3"
    good, labels = _good_records(4)
    pattern = _write_records(tmp_path / "mixed.tfrecord", good[:2] + [garbage] + good[2:])
    with TestPipeline(runner=FnApiRunner()) as p:
        out = score.build_pipeline(p, input_pattern=pattern, output_dir=str(tmp_path / "out"),
                                   model=score.ModelRef("unused", "mnist", 7), min_batch_size=8, max_batch_size=8,
                                   model_handler=_fake_handler())
        keys = out["failed"] | beam.Map(lambda row: (row["key"], row["reason"].split(":")[0]))
        assert_that(keys, equal_to([(hashlib.sha1(garbage).hexdigest()[:16], "not a tf.Example")]))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["predictions"] == 4 and summary["failed"] == 1


def _truncated_model(saved_model_dir: Path, path: Path) -> Path:
    shutil.copytree(saved_model_dir, path)
    data = next(path.glob("variables/variables.data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    return path


def test_file_level_problems_fail_before_the_job_naming_the_file(saved_model_dir, tmp_path, capsys):
    """A bad input file or a truncated model is reported before the job, naming it."""
    import gzip

    from pipeline import cli

    records = _good_records(20)[0]
    good = _write_records(tmp_path / "good.tfrecord", records)
    raw = Path(good).read_bytes()
    truncated = tmp_path / "truncated.tfrecord"
    truncated.write_bytes(raw[: len(raw) - 7])
    bad_crc = tmp_path / "badcrc.tfrecord"
    bad_crc.write_bytes(raw[:30] + bytes([raw[30] ^ 0xFF]) + raw[31:])
    bad_length = tmp_path / "badlength.tfrecord"
    bad_length.write_bytes(b"\xff" * 8 + raw[8:])
    png = tmp_path / "digit.tfrecord"
    png.write_bytes(_png(np.zeros((28, 28), np.uint8)))
    gz = tmp_path / "compressed.tfrecord"
    gz.write_bytes(gzip.compress(raw))
    folder = tmp_path / "folder.tfrecord"
    folder.mkdir()
    model = _truncated_model(saved_model_dir, tmp_path / "truncated_model")
    cases = [(str(p), ["--input", str(p)]) for p in (truncated, bad_crc, bad_length, png, gz, folder)]
    cases.append((str(model), ["--input", good, "--model", str(model)]))
    for bad, flags in cases:
        out_dir = tmp_path / "never"
        argv = ["score", "--workdir", str(tmp_path / "w"), "--model", str(saved_model_dir), "--output",
                str(out_dir), *flags, "-q"]
        assert cli.main(argv) == 1, bad
        err = capsys.readouterr().err
        assert bad in err and "error" in err and "Traceback" not in err, (bad, err)
        assert not out_dir.exists() or not any(out_dir.iterdir()), bad


def test_a_batch_the_model_fails_on_goes_to_failed_with_every_key(tmp_path):
    import apache_beam as beam
    from apache_beam.ml.inference.base import ModelHandler
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from components import score

    class Broken(ModelHandler):
        def load_model(self):
            return None

        def run_inference(self, batch, model, inference_args=None):
            raise RuntimeError("out of memory")

    good, _ = _good_records(5)
    pattern = _write_records(tmp_path / "in.tfrecord", good)
    with TestPipeline(runner=FnApiRunner()) as p:
        out = score.build_pipeline(p, input_pattern=pattern, output_dir=str(tmp_path / "out"),
                                   model=score.ModelRef("unused", "mnist", 1), model_handler=Broken())
        assert_that(out["failed"] | beam.Map(lambda r: (r["key"], r["reason"])),
                    equal_to([(f"good-{i}", "inference failed: RuntimeError: RuntimeError('out of memory')")
                              for i in range(5)]))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["read"] == 5 and summary["failed"] == 5 and summary["accounted"]


def test_python_m_components_score_refuses_a_flag_beam_does_not_know_and_passes_beam_flags(saved_model_dir, tmp_path,
                                                                                           capsys):
    from components.score.job import main

    pattern = _write_records(tmp_path / "in.tfrecord", _good_records(3)[0])
    common = ["--model", str(saved_model_dir), "--input", pattern, "--output", str(tmp_path / "out")]
    assert main([*common, "--formt", "csv"]) == 1
    err = capsys.readouterr().err
    assert "unknown flag --formt" in err and "did you mean --format?" in err
    assert not (tmp_path / "out").exists()
    assert main([*common, "--format", "csv", "--direct_num_workers=1", "--runner=DirectRunner"]) == 0
    assert "predictions" in capsys.readouterr().out and list((tmp_path / "out").glob("predictions-*.csv"))
