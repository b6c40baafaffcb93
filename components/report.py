"""Report stage: one self-contained `report.html` per run, and the PNG plots beside it.

    out = report.run(ReportInputs(run=..., stages=..., statistics_path=..., ...), paths.stage_dir(w, run, "report"))

Sections: the run and its stages; data statistics; training curves; evaluation metrics and blessing; the
confusion matrix; sample and misclassified test images; the Beam scoring summary; the serving check; the
lineage of the pushed version. Every image is a PNG beside the page (the stages' own plots, drawn by
`components.plots`, copied here; the training curves drawn here if train left none) and embedded in it as a
base64 data URI, so the one file can be mailed or archived and still shows everything.
A section whose input is absent (a stage skipped or not run) says so instead of failing. The page is
written to a temp file and renamed into place.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.atomic import atomic_path, atomic_write
from components.portable import portable_value

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"


@dataclass(frozen=True)
class ReportInputs:
    """What the report shows; every path is optional (None: that stage did not run or was skipped)."""

    run: Mapping[str, Any]  # id, status, code_version, started, config
    stages: Sequence[Mapping[str, Any]]  # name, status, duration, reason, outputs {name: uri}
    statistics_path: Path | None = None  # validate: statistics.json
    history_path: Path | None = None  # train: history.json (Keras History.history)
    metrics_path: Path | None = None  # evaluate: metrics.json
    blessing: Mapping[str, Any] | None = None  # evaluate: blessed, reasons
    score_summary_path: Path | None = None  # score: summary.json
    serving_check_path: Path | None = None  # serving_check: serving_check.json
    push: Mapping[str, Any] | None = None  # push: pushed, version, uri, reason
    lineage: Mapping[str, Any] | None = None  # pipeline.stages.lineage_record of the pushed version
    figures: Mapping[str, Path] = field(default_factory=dict)  # PNGs stages drew: training_curves,
    # confusion_matrix, test_samples, misclassified (copied beside the page and embedded)


@dataclass(frozen=True)
class ReportOutput:
    report_path: Path
    plot_paths: tuple[Path, ...]


def run(inputs: ReportInputs, out_dir: str | os.PathLike, *, record_root: str | os.PathLike | None = None) -> ReportOutput:
    """Draw the plots into `out_dir`, then write `out_dir/report.html` embedding them. `record_root` (the
    workdir): the page shows paths inside it relative to it, so a moved workdir's report is still true of it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = _draw(inputs, out_dir)
    page = _page(inputs, figures, record_root)
    target = atomic_write(out_dir / REPORT_FILE, page)
    plots = tuple(p for p in figures.values() if p is not None)
    log.info("wrote report %s", target)
    return ReportOutput(target, plots)


# -- plots ---------------------------------------------------------------------------------------------------


def _load(path: Path | None) -> Any:
    if path is None or not Path(path).is_file():
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s for the report: %s", path, exc)
        return None


def _draw(inputs: ReportInputs, out_dir: Path) -> dict[str, Path | None]:
    """The stages' PNGs copied beside the page; the training curves drawn here when train left none."""
    figures: dict[str, Path | None] = {}
    for name, src in inputs.figures.items():
        src = Path(src)
        if not src.is_file():
            log.warning("plot %s (%s) is missing; the report goes without it", name, src)
            continue
        target = out_dir / f"{name}.png"
        with atomic_path(target) as tmp:
            shutil.copyfile(src, tmp)
        log.info("wrote plot %s (from %s)", target, src)
        figures[name] = target
    history = _load(inputs.history_path)
    if history and "training_curves" not in figures:
        from components import plots

        figures["training_curves"] = plots.training_curves(history, out_dir / "training_curves.png")
    return figures


# -- html ----------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .92em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #0a7d28; font-weight: 600; } .bad { color: #b00020; font-weight: 600; } .muted { color: #777; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f6f6f6; padding: 0 .2em; word-break: break-all; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    if isinstance(value, (dict, list)):
        return f"<code>{_e(json.dumps(value, sort_keys=True, default=str))}</code>"
    return _e(value)


def _kv_table(data: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in data.items())
    return f"<table>{rows}</table>"


def _img(path: Path | None, alt: str) -> str:
    if path is None or not Path(path).is_file():
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}"><figcaption class="muted">{_e(alt)} ' \
           f"({_e(Path(path).name)})</figcaption></figure>"


def _absent(what: str) -> str:
    return f'<p class="muted">{_e(what)}</p>'


def _status(status: str) -> str:
    cls = "ok" if status in ("succeeded", "cached", "resumed") else "bad" if status == "failed" else "muted"
    return f'<span class="{cls}">{_e(status)}</span>'


def final_status(run: Mapping[str, Any], stages: Sequence[Mapping[str, Any]]) -> str:
    """The run's status as the page should show it. The report is the run's last stage, written while the run
    store still says 'running': the outcome then is its stages' (failed if one failed, else succeeded)."""
    status = run.get("status") or "running"
    if status != "running":
        return status
    return "failed" if any(s.get("status") == "failed" for s in stages) else "succeeded"


def _page(inputs: ReportInputs, figures: Mapping[str, Path | None], root: str | os.PathLike | None) -> str:
    def load(path: Path | None) -> Any:
        return portable_value(_load(path), root)

    def rel(value: Any) -> Any:
        return portable_value(value, root)

    run = rel({**inputs.run, "status": final_status(inputs.run, inputs.stages)})
    parts: list[str] = []
    parts.append(f"<h1>mnist-pipeline run {_e(run.get('id'))}</h1>")
    parts.append(_kv_table({k: run.get(k) for k in ("status", "started", "code_version", "workdir") if run.get(k)}))
    if root is not None:
        parts.append("<p class='muted'>Paths inside the workdir are shown relative to it.</p>")

    rows = []
    for s in rel(inputs.stages):
        dur = s.get("duration")
        outs = "<br>".join(f"{_e(k)}: <code>{_e(v)}</code>" for k, v in (s.get("outputs") or {}).items())
        note = _e(s.get("reason") or "")
        rows.append(f"<tr><td>{_e(s['name'])}</td><td>{_status(s['status'])}</td>"
                    f"<td class='num'>{'' if dur is None else f'{dur:.1f}s'}</td><td>{outs}{note}</td></tr>")
    parts.append("<h2>Stages</h2><table><tr><th>stage</th><th>status</th><th>time</th><th>outputs</th></tr>"
                 + "".join(rows) + "</table>")

    parts.append("<h2>Data statistics</h2>")
    stats = load(inputs.statistics_path)
    if stats:
        splits = stats.get("splits", {})
        keys = ["num_examples", "image_shape", "image_dtype", "pixel_min", "pixel_max", "pixel_mean", "pixel_std"]
        head = "".join(f"<th>{_e(k)}</th>" for k in ["split", *keys, "labels 0-9"])
        body = "".join(
            "<tr><td>" + _e(name) + "</td>" + "".join(f"<td class='num'>{_fmt(v.get(k))}</td>" for k in keys)
            + f"<td>{_e(' '.join(str(c) for c in v.get('label_histogram', [])))}</td></tr>"
            for name, v in sorted(splits.items())
        )
        parts.append(f"<table><tr>{head}</tr>{body}</table>")
        anomalies = stats.get("anomalies") or []
        parts.append(f"<p>Anomalies: {'<span class=ok>none</span>' if not anomalies else _e('; '.join(anomalies))}</p>")
        parts.append(f"<p class='muted'>{_e(rel(os.fspath(inputs.statistics_path)))}</p>")
    else:
        parts.append(_absent("No statistics: the validate stage did not run."))

    parts.append("<h2>Training</h2>")
    history = load(inputs.history_path)
    if history:
        last = {k: v[-1] for k, v in history.items() if isinstance(v, list) and v and isinstance(v[-1], (int, float))}
        epochs = max((len(v) for v in history.values() if isinstance(v, list)), default=0)
        parts.append(f"<p>{epochs} epoch(s); last epoch:</p>" + _kv_table(last))
        parts.append(_img(figures.get("training_curves"), "training curves"))
    else:
        parts.append(_absent("No training history: the train stage did not run."))

    parts.append("<h2>Evaluation and blessing</h2>")
    metrics = load(inputs.metrics_path)
    if metrics:
        flat = {k: v for k, v in metrics.items() if k != "confusion_matrix" and not isinstance(v, (dict, list))}
        parts.append(_kv_table(flat))
        names = metrics.get("class_names")
        if names:
            parts.append("<p>Classes: " + ", ".join(f"{i} <b>{_e(n)}</b>" for i, n in enumerate(names)) + "</p>")
        for k, v in metrics.items():
            if isinstance(v, dict) and v and all(isinstance(row, dict) for row in v.values()):
                cols = sorted({c for row in v.values() for c in row}, key=lambda c: (c != "name", c))  # name first
                head = "".join(f"<th>{_e(c)}</th>" for c in ["", *cols])
                body = "".join(f"<tr><th>{_e(name)}</th>" + "".join(f"<td class='num'>{_fmt(row.get(c))}</td>" for c in cols)
                               + "</tr>" for name, row in v.items())
                parts.append(f"<h3>{_e(k)}</h3><table><tr>{head}</tr>{body}</table>")
            elif isinstance(v, dict) and k != "confusion_matrix":
                parts.append(f"<h3>{_e(k)}</h3>" + _kv_table(v))
    else:
        parts.append(_absent("No metrics: the evaluate stage did not run."))
    if inputs.blessing is not None:
        blessing = rel(inputs.blessing)
        blessed = blessing.get("blessed")
        parts.append(f"<p>Blessing: <span class='{'ok' if blessed else 'bad'}'>{'blessed' if blessed else 'not blessed'}"
                     f"</span></p>" + _kv_table({k: v for k, v in blessing.items() if k != "blessed"}))
    parts.append("<h3>Confusion matrix</h3>")
    parts.append(_img(figures.get("confusion_matrix"), "confusion matrix (rows: true label, columns: predicted)")
                 or _absent("No confusion matrix."))

    parts.append("<h2>Sample and misclassified test images</h2>")
    parts.append(_img(figures.get("test_samples"), "sample test images: predicted (true)") or _absent("No sample images."))
    parts.append(_img(figures.get("misclassified"), "misclassified test images: predicted (true)")
                 or _absent("No misclassified images (none found, or no predictions)."))

    parts.append("<h2>Push</h2>")
    parts.append(_kv_table(rel(inputs.push)) if inputs.push else _absent("The push stage did not run."))

    parts.append("<h2>Batch scoring (Beam RunInference)</h2>")
    summary = load(inputs.score_summary_path)
    if summary:
        shown = {k: v for k, v in summary.items() if k != "confusion_matrix"}
        parts.append(_kv_table(shown) + f"<p class='muted'>{_e(rel(os.fspath(inputs.score_summary_path)))}</p>")
    else:
        parts.append(_absent("No scoring summary: the score stage did not run or was skipped."))

    parts.append("<h2>Serving check (local server, gRPC client)</h2>")
    check = load(inputs.serving_check_path)
    if check:
        ok = check.get("passed")
        parts.append(f"<p>Result: <span class='{'ok' if ok else 'bad'}'>{'passed' if ok else 'FAILED'}</span></p>")
        parts.append(_kv_table(check))
    else:
        parts.append(_absent("No serving check: the stage did not run or was skipped."))

    parts.append("<h2>Lineage of the pushed version</h2>")
    if inputs.lineage:
        lin = rel(inputs.lineage)
        parts.append(_kv_table({"model": lin.get("model"), "run": lin.get("run"), "data": lin.get("data"),
                                "metrics": lin.get("metrics")}))
        rows = "".join(
            f"<tr><td>{_e(x['stage'])}</td><td>{_e(x['run_id'])}</td><td>{_status(x['status'])}</td>"
            f"<td>{_e(x['code_version'])}</td><td>{_e(x['config_fingerprint'] or '')}</td></tr>"
            for x in lin.get("executions", [])
        )
        parts.append("<table><tr><th>stage</th><th>run</th><th>status</th><th>code</th><th>config fingerprint</th></tr>"
                     + rows + "</table>")
    else:
        parts.append(_absent("No pushed version to trace."))

    config = run.get("config")
    if config:
        parts.append("<h2>Configuration</h2><pre>" + _e(json.dumps(config, indent=2, sort_keys=True)) + "</pre>")
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts.append(f"<p class='muted'>Written {stamp} by mnist-pipeline.</p>")
    title = f"mnist-pipeline run {run.get('id')}"
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
