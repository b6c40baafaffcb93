"""Fashion-MNIST end to end, beside MNIST in one workdir: class names from TFDS's metadata in the classify
answer, the scoring rows, the plots' metrics and the report; the dataset's model name; the refusal to mix two
datasets under one model name; both models served by one server, and `predict` printing "4 Coat"."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import cli, paths
from pipeline.store import RunStore
from serving import model_registry
from serving import signatures as sig
from tests.conftest import IDX_FILES, synthetic_digits, write_idx_dir

FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]
REAL_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _executions(workdir: Path) -> dict:
    with RunStore(paths.store_path(workdir)) as store:
        run = store.list_runs()[0]
        return {e.stage: e for e in store.executions(run.id)}, run.id


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory) -> dict:
    """One workdir where `run` went through every stage for MNIST, then for Fashion-MNIST (tiny synthetic IDX
    files, the seed CNN for 1 epoch, the blessing threshold at 0: these tests are about the wiring)."""
    root = tmp_path_factory.mktemp("fashion")
    workdir = root / "w"
    common = ["--workdir", str(workdir), "--architecture", "seed", "--epochs", "1", "--accuracy-threshold", "0", "-q"]
    mnist = write_idx_dir(root / "mnist", n_train=200, n_test=50)
    fashion = write_idx_dir(root / "fashion", n_train=200, n_test=50, seed=3)
    assert cli.main(["run", "--source-dir", str(mnist), *common]) == 0
    _, mnist_run = _executions(workdir)
    assert cli.main(["run", "--dataset", "fashion_mnist", "--source-dir", str(fashion), *common]) == 0
    executions, fashion_run = _executions(workdir)
    return {"workdir": workdir, "mnist_run": mnist_run, "fashion_run": fashion_run, "executions": executions}


def test_fashion_run_pushes_its_own_model_with_its_class_names(two_datasets, capsys):
    workdir, ex = two_datasets["workdir"], two_datasets["executions"]
    assert {s: e.status for s, e in ex.items()} == {
        s: "succeeded" for s in ("ingest", "validate", "train", "export", "evaluate", "push", "score",
                                 "serving_check", "report")}  # nothing reused from the MNIST run
    base = paths.model_base_path(workdir)
    assert model_registry.model_names(base) == ["fashion_mnist", "mnist"]
    [fashion] = model_registry.list_versions(base, "fashion_mnist")
    [mnist] = model_registry.list_versions(base, "mnist")
    assert fashion.metadata["dataset"] == "fashion_mnist" and fashion.metadata["model_name"] == "fashion_mnist"
    assert mnist.metadata["dataset"] == "mnist"
    assert sig.read_class_names(fashion.path) == FASHION_NAMES
    assert sig.read_class_names(mnist.path) == [str(i) for i in range(10)]  # MNIST keeps "0".."9"
    # The MNIST version was no baseline for the Fashion-MNIST model: another name, another dataset.
    assert ex["evaluate"].properties["baseline"] is None
    assert ex["score"].properties["model_name"] == "fashion_mnist"

    run_dir = paths.run_dir(workdir, two_datasets["fashion_run"])
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    assert metrics["class_names"] == FASHION_NAMES and metrics["per_class"]["4"]["name"] == "Coat"
    check = json.loads((run_dir / "serving_check" / "serving_check.json").read_text())
    assert check["passed"] and check["class_names"] == FASHION_NAMES
    assert set(check["classify_top_classes"]) <= set(FASHION_NAMES)

    rows = [json.loads(line) for f in sorted((run_dir / "score").glob("predictions-*.jsonl"))
            for line in f.read_text().splitlines()]
    assert len(rows) == 50
    assert all(r["predicted_class_name"] == FASHION_NAMES[r["predicted_class"]] for r in rows)
    assert all(r["model_name"] == "fashion_mnist" for r in rows)
    summary = json.loads((run_dir / "score" / "summary.json").read_text())
    assert summary["class_names"] == FASHION_NAMES

    page = (run_dir / "report" / "report.html").read_text()
    assert "Ankle boot" in page and "T-shirt/top" in page and "fashion_mnist" in page

    code, out, _ = _run(capsys, "runs", "--workdir", str(workdir))
    rows = {line.split()[0]: line.split()[3] for line in out.splitlines()[1:]}
    assert code == 0 and rows == {two_datasets["mnist_run"]: "mnist", two_datasets["fashion_run"]: "fashion_mnist"}


def test_a_model_of_another_dataset_is_refused_under_a_taken_name(two_datasets, capsys):
    workdir = two_datasets["workdir"]
    base = paths.model_base_path(workdir)
    before = [v.version for v in model_registry.list_versions(base, "mnist")]
    # The newest export is the Fashion-MNIST one; pushing it as "mnist" would replace the digit model.
    for extra in ([], ["--force"]):
        code, out, err = _run(capsys, "push", "--workdir", str(workdir), "--dataset", "fashion_mnist",
                              "--model-name", "mnist", *extra, "-q")
        assert code == 1
        assert "refusing to push a fashion_mnist model as 'mnist'" in err and "mnist (version 1)" in err
    assert [v.version for v in model_registry.list_versions(base, "mnist")] == before


def test_one_server_serves_both_models_and_predict_prints_class_names(two_datasets, capsys, tmp_path):
    from components.examples import make_example
    from components.export import encode_pngs
    from pipeline.commands.serve import served_models
    from pipeline.config import load_config
    from serving.client import ServingClient
    from serving.model_manager import ModelManager
    from serving.rest import RestServer
    from serving.server import LocalServer

    workdir = two_datasets["workdir"]
    models = served_models(load_config(None, {"workdir": str(workdir)}))
    assert sorted(models) == ["fashion_mnist", "mnist"]
    manager = ModelManager(models, poll_interval=1.0)
    server = LocalServer(manager, host="127.0.0.1", port=0)
    server.start()
    rest = RestServer(server.manager, host="127.0.0.1", port=0)
    rest.start()
    try:
        images = synthetic_digits(3, seed=11)[0][..., np.newaxis].astype(np.float32) / 255.0
        pngs = encode_pngs(images)
        for name, names in (("fashion_mnist", FASHION_NAMES), ("mnist", [str(i) for i in range(10)])):
            with ServingClient(server.address, model_name=name, timeout=30.0) as client:
                client.wait_until_available(timeout=30.0)
                answer = client.classify([make_example(p) for p in pngs])
            assert answer.model_version == 1
            assert [list(row) for row in answer["classes"]] == [names] * 3  # Classify answers the names

        files = []
        for i, png in enumerate(pngs):
            files.append(tmp_path / f"img{i}.png")
            files[-1].write_bytes(png)
        code, out, err = _run(capsys, "predict", "--server", server.address, "--model-name", "fashion_mnist",
                              *map(str, files))
        assert code == 0, err
        lines = out.splitlines()
        for path, line in zip(files, lines):
            index, name = line.removeprefix(f"{path}: ").split(" (p=")[0].split(" ", 1)
            assert FASHION_NAMES[int(index)] == name  # e.g. "img0.png: 4 Coat (p=0.912)"
        assert "model fashion_mnist version 1" in out
        code, rest_out, err = _run(capsys, "predict", "--rest", rest.url, "--model-name", "fashion_mnist", *map(str, files))
        assert code == 0, err
        assert rest_out.splitlines()[:3] == lines[:3]  # REST's classify answers the same names
        code, out, err = _run(capsys, "predict", "--server", server.address, *map(str, files))  # mnist by default
        assert code == 0, err
        assert all(line.split(": ")[1].split(" ")[0].isdigit() and line.count(" ") == 2 for line in out.splitlines()[:3])
    finally:
        rest.stop()
        server.stop(grace=1.0)


@pytest.mark.slow
def test_real_fashion_mnist_through_the_pipeline(tmp_path, capsys):
    """Real Fashion-MNIST (Debian's dataset-fashion-mnist), the seed CNN for 2 epochs on 10,000 images: well
    above chance (the default recipe's figure is in bench/README.md), and the names of real classes everywhere."""
    if not all((REAL_FASHION_DIR / name).is_file() for name in IDX_FILES.values()):
        pytest.skip(f"real Fashion-MNIST IDX files not found in {REAL_FASHION_DIR} (apt-get install dataset-fashion-mnist)")
    workdir = tmp_path / "w"
    toml = tmp_path / "small.toml"
    toml.write_text("[train]\narchitecture = 'seed'\nepochs = 2\nmax_train_examples = 10000\n"
                    "[evaluate]\nmax_test_examples = 2000\naccuracy_threshold = 0.75\n")
    code, out, err = _run(capsys, "run", "--dataset", "fashion_mnist", "--source-dir", str(REAL_FASHION_DIR),
                          "--workdir", str(workdir), "--config", str(toml), "--skip", "score", "-q")
    assert code == 0, err
    ex, run_id = _executions(workdir)
    assert ex["validate"].properties["num_examples"] == {"train": 60000, "test": 10000}
    assert ex["evaluate"].properties["accuracy"] > 0.8 and ex["push"].properties["pushed"]
    [version] = model_registry.list_versions(paths.model_base_path(workdir), "fashion_mnist")
    assert sig.read_class_names(version.path) == FASHION_NAMES
    check = json.loads((paths.run_dir(workdir, run_id) / "serving_check" / "serving_check.json").read_text())
    assert check["passed"] and check["accuracy"] > 0.8
    assert "Ankle boot" in (paths.run_dir(workdir, run_id) / "report" / "report.html").read_text()
