"""The report: one self-contained HTML page with embedded images, rendered in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from components import plots, report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _inputs(tmp_path: Path, **changes) -> report.ReportInputs:
    src = tmp_path / "stages"
    src.mkdir()
    statistics = src / "statistics.json"
    statistics.write_text(json.dumps({"splits": {"train": {
        "num_examples": 200, "label_histogram": [20] * 10, "pixel_min": 0, "pixel_max": 255, "pixel_mean": 30.5,
        "pixel_std": 60.1, "image_shape": [28, 28, 1], "image_dtype": "uint8"}}, "anomalies": []}))
    history = src / "history.json"
    history.write_text(json.dumps({"loss": [1.0, 0.5], "accuracy": [0.6, 0.9], "val_loss": [0.8, 0.6],
                                   "val_accuracy": [0.7, 0.85]}))
    matrix = np.eye(10, dtype=int) * 5
    metrics = src / "metrics.json"
    metrics.write_text(json.dumps({"accuracy": 0.98, "loss": 0.07, "num_examples": 50,
                                   "confusion_matrix": matrix.tolist()}))
    rng = np.random.default_rng(0)
    images = rng.random((6, 28, 28, 1))
    figures = {
        "confusion_matrix": plots.confusion_matrix(matrix, src / "cm.png"),
        "test_samples": plots.image_grid(images, [1] * 6, [1] * 6, src / "samples.png", title="samples"),
        "misclassified": plots.image_grid(images[:2], [1, 2], [3, 4], src / "wrong.png", title="wrong"),
    }
    summary = src / "summary.json"
    summary.write_text(json.dumps({"num_scored": 50, "num_failed": 0, "accuracy": 0.98}))
    check = src / "serving_check.json"
    check.write_text(json.dumps({"passed": True, "num_examples": 50, "accuracy": 0.98}))
    fields = dict(
        run={"id": "20261123T000000Z-abcdef", "status": "running", "code_version": "git:abc", "config": {"train": {}}},
        stages=[{"name": "train", "status": "succeeded", "duration": 3.2, "outputs": {"model": "/x/model.keras"}},
                {"name": "push", "status": "skipped", "duration": 0.0, "reason": "not <blessed>"}],
        statistics_path=statistics, history_path=history, metrics_path=metrics,
        blessing={"blessed": True, "reason": "accuracy 0.98 >= threshold 0.0"},
        score_summary_path=summary, serving_check_path=check,
        push={"pushed": True, "version": 1, "uri": "/x/serving/models/mnist/1"},
        lineage={"model": {"name": "mnist", "version": 1}, "run": {"id": "r"}, "data": {"dataset": "mnist"},
                 "metrics": {"accuracy": 0.98},
                 "executions": [{"stage": "push", "run_id": "r", "status": "succeeded", "code_version": "git:abc",
                                 "config_fingerprint": "f"}]},
        figures=figures,
    )
    fields.update(changes)
    return report.ReportInputs(**fields)


def test_report_is_self_contained_with_every_section(tmp_path):
    out = report.run(_inputs(tmp_path), tmp_path / "report")
    page = out.report_path.read_text()
    assert out.report_path.name == "report.html"
    for heading in ("Data statistics", "Training", "Evaluation and blessing", "Confusion matrix",
                    "Sample and misclassified", "Batch scoring", "Serving check", "Lineage"):
        assert heading in page
    # Every image is embedded (no file or network reference), and the PNGs are written beside the page.
    sources = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert {p.name for p in out.plot_paths} == {"confusion_matrix.png", "test_samples.png", "misclassified.png",
                                                "training_curves.png"}
    assert all(p.parent == out.report_path.parent and p.stat().st_size > 0 for p in out.plot_paths)
    assert "not &lt;blessed&gt;" in page  # text is escaped


def test_missing_sections_say_so(tmp_path):
    inputs = report.ReportInputs(run={"id": "r1", "status": "failed"}, stages=[])
    page = report.run(inputs, tmp_path / "report").report_path.read_text()
    assert "the train stage did not run" in page and "No pushed version to trace" in page
    assert "<img" not in page


@pytest.mark.timeout(120)
def test_report_renders_in_headless_chromium_with_its_images(tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); .ci/run installs it")
    out = report.run(_inputs(tmp_path), tmp_path / "report")
    # A copy of the page with a script that writes, once loaded, each image's decoded width into the DOM.
    probe = tmp_path / "probe.html"
    probe.write_text(out.report_path.read_text().replace(
        "</body>",
        "<script>window.addEventListener('load', () => { const r = document.createElement('pre');"
        " r.id = 'imgcheck'; r.textContent = JSON.stringify([...document.images].map(i => i.naturalWidth));"
        " document.body.appendChild(r); });</script></body>"))
    profile = tmp_path / "profile"
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
              "--virtual-time-budget=5000"]
    dom = subprocess.run([*common, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=90)
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<pre id="imgcheck">([^<]*)</pre>', dom.stdout)
    assert found, "the page did not finish loading in Chromium"
    widths = json.loads(found.group(1))
    assert len(widths) == 4 and all(w > 0 for w in widths), widths

    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,2400", out.report_path.as_uri()],
                   capture_output=True, text=True, timeout=90, check=True)
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[0] > 100 and pixels.std() > 0.01  # not a blank page
