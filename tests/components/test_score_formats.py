"""Scoring each input format (TFRecord, Parquet, CSV, image files) with bad rows mixed in: every row is
predicted or failed (read = predicted + failed per input); file-level problems fail before the job, naming
the file, and leave the output folder empty."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.components.test_score import _bad_records, _good_records, _png, _write_records
from tests.conftest import synthetic_digits

pytestmark = pytest.mark.timeout(300)

N_GOOD = 12


def _colour_png(size: int = 28) -> bytes:
    import tensorflow as tf

    return tf.io.encode_png(np.full((size, size, 3), 128, np.uint8)).numpy()


def _jpeg(image: np.ndarray) -> bytes:
    import tensorflow as tf

    return tf.io.encode_jpeg(image[..., None].astype(np.uint8), quality=100).numpy()


def _digits(seed: int = 21):
    images, labels = synthetic_digits(N_GOOD, seed=seed)
    return images, labels.astype(int)


def _score(tmp_path: Path, model: Path, pattern: str, *extra: str) -> tuple[int, Path, str]:
    from pipeline import cli

    out = tmp_path / "out"
    argv = ["score", "--workdir", str(tmp_path / "w"), "--model", str(model), "--input", pattern, "--output",
            str(out), "-q", "--max-batch-size", "8", *extra]
    return cli.main(argv), out, ""


def _read_outputs(out: Path) -> tuple[dict, dict, dict]:
    predicted = {r["key"]: r for f in out.glob("predictions-*.jsonl") for r in map(json.loads, f.read_text().splitlines())}
    failed = {r["key"]: r for f in out.glob("failed-*.jsonl") for r in map(json.loads, f.read_text().splitlines())}
    return predicted, failed, json.loads((out / "summary.json").read_text())


def _assert_accounted(summary: dict, predicted: dict, failed: dict, n_rows: int) -> None:
    assert summary["read"] == n_rows == summary["predictions"] + summary["failed"]
    assert summary["accounted"] is True
    for source, counts in summary["inputs"].items():
        assert counts["read"] == counts["predicted"] + counts["failed"], source
    assert len(predicted) == summary["predictions"] and len(failed) == summary["failed"]


def _reasons(failed: dict) -> dict:
    return {k: r["reason"].split(":")[0] for k, r in failed.items()}


def test_tfrecord_with_bad_records(saved_model_dir, tmp_path, capsys):
    good, _ = _good_records(N_GOOD)
    garbage = b"\xff\xfe\x80garbage\xc3"
    a = _write_records(tmp_path / "a.tfrecord", good[:6] + _bad_records())
    _write_records(tmp_path / "b.tfrecord", [garbage] + good[6:])
    rc, out, _ = _score(tmp_path, saved_model_dir, str(tmp_path / "*.tfrecord"))
    assert rc == 0, capsys.readouterr().err
    predicted, failed, summary = _read_outputs(out)
    _assert_accounted(summary, predicted, failed, N_GOOD + 4)
    assert summary["input_format"] == "tfrecord"
    assert summary["inputs"][a] == {"read": 9, "predicted": 6, "failed": 3}
    assert sorted(predicted) == sorted(f"good-{i}" for i in range(N_GOOD))


def test_parquet_image_column_with_bad_rows(saved_model_dir, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    images, labels = _digits()
    data = [_png(x) for x in images] + [b"not an image", _png(np.zeros((32, 32), np.uint8)), _colour_png(), None]
    keys = [f"p-{i}" for i in range(N_GOOD)] + ["bad-bytes", "bad-size", "bad-colour", "bad-null"]
    table = pa.table({"id": keys, "digit": [int(y) for y in labels] + [1, 2, 3, 4],
                      "png": pa.array(data, pa.binary())})
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=5)
    rc, out, _ = _score(tmp_path, saved_model_dir, str(tmp_path / "in.parquet"),
                        "--image-column", "png", "--label-column", "digit", "--key-column", "id")
    assert rc == 0, capsys.readouterr().err
    predicted, failed, summary = _read_outputs(out)
    _assert_accounted(summary, predicted, failed, N_GOOD + 4)
    assert _reasons(failed) == {"bad-bytes": "undecodable image", "bad-size": "wrong size",
                                "bad-colour": "colour image", "bad-null": "undecodable image"}
    assert [predicted[f"p-{i}"]["label"] for i in range(N_GOOD)] == [int(y) for y in labels]


def test_parquet_pixel_columns_without_key(saved_model_dir, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    images, labels = _digits(seed=22)
    pixels = images.reshape(N_GOOD, -1).astype(np.int64)
    bad = np.vstack([pixels[:1], pixels[:1]])
    bad[0, 5] = 300
    columns = {f"pixel{i}": pa.array(np.concatenate([pixels[:, i], bad[:, i]]).tolist(), pa.int64())
               for i in range(784)}
    nulls = columns["pixel7"].to_pylist()
    nulls[-1] = None
    columns["pixel7"] = pa.array(nulls, pa.int64())
    pq.write_table(pa.table({"label": [int(y) for y in labels] + [0, 0], **columns}), tmp_path / "px.parquet")
    rc, out, _ = _score(tmp_path, saved_model_dir, str(tmp_path / "px.parquet"))
    assert rc == 0, capsys.readouterr().err
    predicted, failed, summary = _read_outputs(out)
    _assert_accounted(summary, predicted, failed, N_GOOD + 2)
    assert sorted(r["reason"] for r in failed.values()) == [
        "bad pixel: pixel5 is 300, expected an integer 0-255", "bad pixel: pixel7 is missing, expected an integer 0-255"]


def _csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n")
    return path


def test_csv_kaggle_layouts_with_bad_rows(saved_model_dir, tmp_path, capsys):
    images, labels = _digits(seed=23)
    pixels = images.reshape(N_GOOD, -1).tolist()
    header = ["label"] + [f"pixel{i}" for i in range(784)]
    short = [labels[0]] + pixels[0][:100]
    word = [labels[1]] + pixels[1][:10] + ["abc"] + pixels[1][11:]
    big = [labels[2]] + pixels[2][:20] + [256] + pixels[2][21:]
    train = _csv(tmp_path / "train.csv", header,
                 [[int(y)] + p for y, p in zip(labels[:6], pixels[:6])] + [short, word, big])
    _csv(tmp_path / "test.csv", [f"pixel{i}" for i in range(784)] + ["key"],
         [p + [f"k-{i}"] for i, p in enumerate(pixels[6:])])
    rc, out, _ = _score(tmp_path, saved_model_dir, str(tmp_path / "*.csv"))
    assert rc == 0, capsys.readouterr().err
    predicted, failed, summary = _read_outputs(out)
    _assert_accounted(summary, predicted, failed, N_GOOD + 3)
    assert _reasons(failed) == {"train.csv:7": "short row", "train.csv:8": "bad pixel", "train.csv:9": "bad pixel"}
    assert [predicted[f"train.csv:{i + 1}"]["label"] for i in range(6)] == [int(y) for y in labels[:6]]
    assert sorted(k for k in predicted if k.startswith("k-")) == [f"k-{i}" for i in range(6)]
    assert summary["inputs"][str(train)] == {"read": 9, "predicted": 6, "failed": 3}


def test_folder_of_images_with_bad_files(saved_model_dir, tmp_path, capsys):
    images, _ = _digits(seed=24)
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i, x in enumerate(images[:8]):
        (folder / f"{i}.png").write_bytes(_png(x))
    for i, x in enumerate(images[8:]):
        (folder / "sub" / f"{i}.jpg").write_bytes(_jpeg(x))
    (folder / "empty.png").write_bytes(b"")
    (folder / "colour.png").write_bytes(_colour_png())
    (folder / "big.png").write_bytes(_png(np.zeros((30, 28), np.uint8)))
    (folder / "text.png").write_text("hello")
    (folder / "notes.txt").write_text("not an image: ignored in a folder")
    rc, out, _ = _score(tmp_path, saved_model_dir, str(folder))
    assert rc == 0, capsys.readouterr().err
    predicted, failed, summary = _read_outputs(out)
    _assert_accounted(summary, predicted, failed, N_GOOD + 4)
    assert sorted(predicted) == sorted([f"{i}.png" for i in range(8)] + [f"sub/{i}.jpg" for i in range(4)])
    assert _reasons(failed) == {"empty.png": "undecodable image", "colour.png": "colour image",
                                "big.png": "wrong size", "text.png": "undecodable image"}


def test_file_level_problems_of_each_format_fail_before_the_job(saved_model_dir, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline import cli

    pq.write_table(pa.table({"image": pa.array([_png(np.zeros((28, 28), np.uint8))] * 50, pa.binary())}),
                   tmp_path / "ok.parquet")
    raw = (tmp_path / "ok.parquet").read_bytes()
    (tmp_path / "truncated.parquet").write_bytes(raw[: len(raw) // 2])
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), tmp_path / "schema.parquet")
    (tmp_path / "zero.parquet").write_bytes(b"")
    (tmp_path / "zero.csv").write_bytes(b"")
    (tmp_path / "header.csv").write_text("label,a,b\n1,2,3\n")
    (tmp_path / "noimages").mkdir()
    (tmp_path / "noimages" / "readme.txt").write_text("x")
    good = _write_records(tmp_path / "good.tfrecord", _good_records(3)[0])
    cases = {
        str(tmp_path / "truncated.parquet"): [],
        str(tmp_path / "schema.parquet"): [],
        str(tmp_path / "zero.parquet"): [],
        str(tmp_path / "zero.csv"): [],
        str(tmp_path / "header.csv"): [],
        str(tmp_path / "nothing-*.png"): [],
        str(tmp_path / "noimages"): [],
        str(tmp_path / "ok.parquet"): ["--input-format", "csv"],
        good: ["--input-format", "parquet"],
    }
    for bad, flags in cases.items():
        out_dir = tmp_path / "never"
        argv = ["score", "--workdir", str(tmp_path / "w"), "--model", str(saved_model_dir), "--input", bad,
                "--output", str(out_dir), *flags, "-q"]
        assert cli.main(argv) == 1, bad
        err = capsys.readouterr().err
        assert bad in err and "error" in err and "Traceback" not in err, (bad, err)
        assert not out_dir.exists() or not any(out_dir.iterdir()), bad


@pytest.mark.parametrize("fmt", ["parquet", "csv", "images"])
def test_export_examples_writes_each_format_that_score_reads(fmt, tmp_path, capsys):
    from components import examples, ingest, score
    from components.params import DataConfig
    from pipeline import paths
    from tests.conftest import write_idx_dir

    data_dir = paths.data_dir(tmp_path / "w")
    ingest.run(DataConfig(source_dir=str(write_idx_dir(tmp_path / "idx", n_train=10, n_test=30, seed=5))), data_dir)
    out = examples.write_sample(data_dir, "mnist", "test", tmp_path / "s" / "test", output_format=fmt,
                                num_shards=2, limit=25)
    assert out.num_examples == 25
    inputs = score.check_inputs(out.file_pattern)
    assert inputs.format == fmt and sum(inputs.expected.values()) == 25
