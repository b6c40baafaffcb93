"""CIFAR-10 end to end, beside MNIST and Fashion-MNIST in one workdir, on a tiny archive in the official binary
format: `run --dataset cifar10` pushes cifar10/1 with a 32x32x3 signature and the names from batches.meta.txt;
one server serves the three models; `predict` names "airplane" ... "truck" over gRPC and REST; grey images sent
to the colour model, and colour ones to MNIST's, are refused per image with a reason, and the server keeps
serving; `score` accounts for every row of colour PNGs and CSV."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import cli, paths
from pipeline.store import RunStore
from serving import model_registry
from serving import signatures as sig
from tests.conftest import CIFAR_NAMES, synthetic_colour, synthetic_digits, write_cifar_archive, write_idx_dir


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _executions(workdir: Path) -> tuple[dict, str]:
    with RunStore(paths.store_path(workdir)) as store:
        run = store.list_runs()[0]
        return {e.stage: e for e in store.executions(run.id)}, run.id


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory) -> dict:
    """One workdir where `run` went through every stage for MNIST and Fashion-MNIST (seed CNN), then for
    CIFAR-10 with its own recipe (resnet), each for 1 epoch on a few dozen images, the blessing threshold at 0:
    the wiring is tested."""
    root = tmp_path_factory.mktemp("cifar")
    workdir = root / "w"
    common = ["--workdir", str(workdir), "--epochs", "1", "--accuracy-threshold", "0", "-q"]
    mnist = write_idx_dir(root / "mnist", n_train=100, n_test=30)
    archive = write_cifar_archive(root / "src" / "cifar-10-binary.tar.gz", n_train=60, n_test=30)
    assert cli.main(["run", "--source-dir", str(mnist), "--architecture", "seed", *common]) == 0
    _, mnist_run = _executions(workdir)
    fashion = write_idx_dir(root / "fashion", n_train=100, n_test=30, seed=3)
    assert cli.main(["run", "--dataset", "fashion_mnist", "--source-dir", str(fashion), "--architecture", "seed",
                     *common]) == 0
    assert cli.main(["run", "--dataset", "cifar10", "--source-dir", str(archive.parent), *common]) == 0
    executions, cifar_run = _executions(workdir)
    return {"workdir": workdir, "mnist_run": mnist_run, "cifar_run": cifar_run, "executions": executions,
            "mnist_version": model_registry.list_versions(paths.model_base_path(workdir), "mnist")}


def test_cifar10_run_pushes_cifar10_1_with_a_colour_signature_and_its_names(two_datasets):
    workdir, ex = two_datasets["workdir"], two_datasets["executions"]
    assert all(e.status == "succeeded" for e in ex.values()), {s: e.status for s, e in ex.items()}
    assert ex["train"].properties["architecture"] == "resnet"  # the dataset's recipe, not MNIST's
    base = paths.model_base_path(workdir)
    assert model_registry.model_names(base) == ["cifar10", "fashion_mnist", "mnist"]
    [cifar] = model_registry.list_versions(base, "cifar10")
    assert cifar.version == 1 and cifar.metadata["dataset"] == "cifar10"
    assert sig.read_class_names(cifar.path) == CIFAR_NAMES
    assert sig.read_image_shape(cifar.path) == (32, 32, 3)
    image_input = sig.read_signature_defs(str(cifar.path))[sig.SERVING_DEFAULT].inputs[sig.IMAGE_INPUT]
    assert [d.size for d in image_input.tensor_shape.dim] == [-1, 32, 32, 3]
    # MNIST's model beside it is untouched: its one version, 28x28 grey, "0".."9".
    [mnist] = model_registry.list_versions(base, "mnist")
    assert [v.version for v in two_datasets["mnist_version"]] == [1] and mnist.path == two_datasets["mnist_version"][0].path
    assert sig.read_image_shape(mnist.path) == (28, 28, 1) and sig.read_class_names(mnist.path) == [str(i) for i in range(10)]

    run_dir = paths.run_dir(workdir, two_datasets["cifar_run"])
    statistics = json.loads((paths.statistics_path(workdir, "cifar10")).read_text())
    assert statistics["schema"]["image_shape"] == [32, 32, 3] and statistics["splits"]["test"]["num_examples"] == 30
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    assert metrics["class_names"] == CIFAR_NAMES
    check = json.loads((run_dir / "serving_check" / "serving_check.json").read_text())
    assert check["passed"] and check["model_name"] == "cifar10" and set(check["classify_top_classes"]) <= set(CIFAR_NAMES)
    assert "truck" in (run_dir / "report" / "report.html").read_text()
    # The run's score stage read the colour test split with the model's shape: every row predicted, with names.
    assert (ex["score"].properties["num_predictions"], ex["score"].properties["num_failed"]) == (30, 0)
    rows = [json.loads(line) for f in sorted((run_dir / "score").glob("predictions-*.jsonl"))
            for line in f.read_text().splitlines()]
    assert len(rows) == 30 and all(r["predicted_class_name"] == CIFAR_NAMES[r["predicted_class"]] for r in rows)


def _score_outputs(out: Path) -> tuple[dict, dict, dict]:
    predicted = {r["key"]: r for f in out.glob("predictions-*.jsonl") for r in map(json.loads, f.read_text().splitlines())}
    failed = {r["key"]: r for f in out.glob("failed-*.jsonl") for r in map(json.loads, f.read_text().splitlines())}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accounted"] and summary["read"] == summary["predictions"] + summary["failed"] == \
        len(predicted) + len(failed)
    return predicted, failed, summary


def test_score_reads_colour_images_and_csv_and_fails_grey_rows_alone(two_datasets, capsys, tmp_path):
    workdir = two_datasets["workdir"]
    common = ["--workdir", str(workdir), "--dataset", "cifar10", "-q"]
    for fmt in ("images", "csv"):
        code, _, err = _run(capsys, "export-examples", *common, "--format", fmt, "--limit", "12",
                            "--output", str(tmp_path / fmt / "test"))
        assert code == 0, err
    folder = tmp_path / "images" / "test"
    (folder / "grey.png").write_bytes(_pngs(synthetic_digits(1, seed=3)[0][..., None])[0])  # an MNIST image
    (folder / "grey32.png").write_bytes(_pngs(np.zeros((1, 32, 32, 1), np.uint8))[0])  # the right size, grey
    model = str(paths.model_base_path(workdir) / "cifar10")
    for name, pattern, n_good in (("images", str(folder), 12), ("csv", str(tmp_path / "csv" / "test-*.csv"), 12)):
        out = tmp_path / f"out-{name}"
        code, _, err = _run(capsys, "score", *common, "--model", model, "--input", pattern, "--output", str(out))
        assert code == 0, err
        predicted, failed, summary = _score_outputs(out)
        assert len(predicted) == n_good and all(r["predicted_class_name"] in CIFAR_NAMES for r in predicted.values())
        if name == "images":
            assert failed["grey.png"]["reason"].startswith("wrong size: 28x28 pixels, expected 32x32")
            assert failed["grey32.png"]["reason"] == (
                "grey image: 1 channel; the model takes 32x32 colour (RGB) images (images are not converted)")
    # MNIST's model refuses the colour images row by row, and scores nothing else wrongly.
    out = tmp_path / "out-mnist"
    code, _, err = _run(capsys, "score", "--workdir", str(workdir), "-q", "--model",
                        str(paths.model_base_path(workdir) / "mnist"), "--input", str(folder), "--output", str(out))
    assert code == 0, err
    predicted, failed, _ = _score_outputs(out)
    assert list(predicted) == ["grey.png"] and len(failed) == 13
    assert failed["grey32.png"]["reason"].startswith("wrong size")
    assert all(r["reason"].startswith("wrong size: 32x32") for k, r in failed.items() if k != "grey32.png")


def _pngs(images: np.ndarray) -> list[bytes]:
    import tensorflow as tf

    return [tf.io.encode_png(image).numpy() for image in images]


def test_one_server_serves_all_three_and_refuses_grey_for_colour_per_image(two_datasets, capsys, tmp_path):
    from components.examples import make_example
    from pipeline.commands.serve import served_models
    from pipeline.config import load_config
    from serving.client import ServingClient
    from serving.errors import ServingError
    from serving.model_manager import ModelManager
    from serving.rest import RestServer
    from serving.rest_client import RestClient
    from serving.server import LocalServer

    models = served_models(load_config(None, {"workdir": str(two_datasets["workdir"])}))
    assert sorted(models) == ["cifar10", "fashion_mnist", "mnist"]  # one server, the three models at once
    server = LocalServer(ModelManager(models, poll_interval=1.0), host="127.0.0.1", port=0)
    server.start()
    rest = RestServer(server.manager, host="127.0.0.1", port=0)
    rest.start()
    try:
        colour = _pngs(synthetic_colour(3, seed=11)[0])
        grey = _pngs(synthetic_digits(2, seed=12)[0][..., None])
        with ServingClient(server.address, model_name="cifar10", timeout=30.0) as client:
            client.wait_until_available(timeout=30.0)
            answer = client.classify([make_example(p) for p in colour])
            assert [list(row) for row in answer["classes"]] == [CIFAR_NAMES] * 3
            with pytest.raises(ServingError, match="32x32 colour"):  # the graph refuses, the server stays up
                client.classify([make_example(grey[0])])
            assert client.predict_png(colour)["classes"].shape == (3,)
        with ServingClient(server.address, model_name="mnist", timeout=30.0) as client:
            with pytest.raises(ServingError, match="28x28 grey"):
                client.predict_png([colour[0]])
            assert client.predict_png(grey)["classes"].shape == (2,)
        # REST: the PNGs travel as {"b64": ...}; a grey one for the colour model is that request's 400, with why.
        with RestClient(rest.url, model_name="cifar10", timeout=30.0) as client:
            assert client.predict_png(colour)["classes"].shape == (3,)
            with pytest.raises(ServingError, match="32x32 colour"):
                client.predict_png([grey[0]])
            assert [list(row) for row in client.classify([make_example(colour[0])])["classes"]] == [CIFAR_NAMES]

        files = []
        for i, png in enumerate(colour + grey):
            files.append(tmp_path / f"img{i}.png")
            files[-1].write_bytes(png)
        code, out, err = _run(capsys, "predict", "--server", server.address, "--model-name", "cifar10",
                              *map(str, files))
        assert code == 1, err  # two grey files refused, the three colour ones classified
        lines = out.splitlines()
        for line in lines[:3]:
            index, name = line.split(": ", 1)[1].split(" (p=")[0].split(" ", 1)
            assert CIFAR_NAMES[int(index)] == name  # e.g. "img0.png: 8 ship (p=0.212)"
        assert all("refused" in line and "is 28x28 pixels, grey; the model takes 32x32 colour" in line for line in lines[3:5])
        assert "model cifar10 version 1" in lines[5]
        code, rest_out, err = _run(capsys, "predict", "--rest", rest.url, "--model-name", "cifar10", *map(str, files))
        assert code == 1, err
        assert rest_out.splitlines()[:5] == lines[:5]  # REST answers the same names and refusals
        code, out, err = _run(capsys, "predict", "--rest", rest.url, *map(str, files[3:]))  # mnist: the grey ones
        assert code == 0, err
        # score through the server: the served model's shape comes from its metadata; grey rows fail alone.
        out_dir = tmp_path / "served"
        code, _, err = _run(capsys, "score", "--workdir", str(two_datasets["workdir"]), "--dataset", "cifar10",
                            "--server", server.address, "--input", str(tmp_path), "--output", str(out_dir), "-q")
        assert code == 0, err
        predicted, failed, summary = _score_outputs(out_dir)
        assert sorted(predicted) == ["img0.png", "img1.png", "img2.png"] and sorted(failed) == ["img3.png", "img4.png"]
        assert summary["model"]["name"] == "cifar10"
        assert all(r["predicted_class_name"] == CIFAR_NAMES[r["predicted_class"]] for r in predicted.values())
    finally:
        rest.stop()
        server.stop(grace=1.0)


@pytest.mark.slow
def test_real_cifar10_archive_through_the_pipeline(real_cifar_archive, tmp_path, capsys):
    """The real cifar-10-binary.tar.gz (path in $CIFAR10_ARCHIVE): 50,000 / 10,000 images with TFDS's names,
    one short epoch of the resnet recipe on 5,000 images, well above chance (the recipe's figure: bench/train.py)."""
    workdir = tmp_path / "w"
    toml = tmp_path / "small.toml"
    toml.write_text("[train]\nepochs = 2\nmax_train_examples = 5000\n"
                    "[evaluate]\nmax_test_examples = 2000\naccuracy_threshold = 0.3\n")
    code, out, err = _run(capsys, "run", "--dataset", "cifar10", "--source-dir", str(real_cifar_archive),
                          "--workdir", str(workdir), "--config", str(toml), "--skip", "score", "-q")
    assert code == 0, err
    ex, _ = _executions(workdir)
    assert ex["validate"].properties["num_examples"] == {"train": 50000, "test": 10000}
    assert ex["evaluate"].properties["accuracy"] > 0.3 and ex["push"].properties["pushed"]
    [version] = model_registry.list_versions(paths.model_base_path(workdir), "cifar10")
    assert sig.read_class_names(version.path) == CIFAR_NAMES
