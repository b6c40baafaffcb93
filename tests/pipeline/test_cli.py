"""pipeline.cli: `--help` without TensorFlow, one-line errors with exit status 1, the ingest command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import COMMAND_MODULES, main
from tests.conftest import REPO_ROOT

HEAVY_MODULES = ("tensorflow", "keras", "tensorflow_datasets", "apache_beam", "grpc")

_HELP_PROBE = """
import json, sys
from pipeline.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": sorted(m for m in sys.modules if m.split(".")[0] in %r)}))
""" % (HEAVY_MODULES,)  # noqa: UP031 (the probe is a script template with braces of its own)


def _subcommands() -> list[str]:
    import importlib

    return [importlib.import_module(name).NAME for name in COMMAND_MODULES]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("argv", [[], *([name] for name in _subcommands())], ids=lambda a: " ".join(a) or "top")
def test_help_does_not_import_tensorflow(argv: list[str]) -> None:
    # A fresh interpreter, as a user starts it: nothing heavy may be imported to print the help.
    # How fast that is, is bench/cli.py's figure (no timed assertions in tests).
    proc = subprocess.run([sys.executable, "-c", _HELP_PROBE, *argv, "--help"], cwd=REPO_ROOT, env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    probe = json.loads(proc.stdout.strip().splitlines()[-1])
    assert probe["code"] == 0
    assert probe["heavy"] == [], f"--help imported {probe['heavy']}"
    assert "usage: mnist-pipeline" in proc.stdout


def test_top_level_help_lists_every_subcommand(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in _subcommands():
        assert name in out


def test_source_dir_that_is_a_file_exits_1_with_one_line(tmp_path: Path) -> None:
    source = tmp_path / "mnist.gz"
    source.write_bytes(b"not a folder")
    proc = _cli("ingest", "--source-dir", str(source), "--workdir", str(tmp_path / "work"), cwd=tmp_path)
    assert proc.returncode == 1
    assert f"mnist-pipeline ingest: error: source dir '{source}' is a file" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "work").exists()


def test_unknown_dataset_exits_1(idx_dir: Path, tmp_path: Path) -> None:
    assert main(["ingest", "--dataset", "mnist_v2", "--source-dir", str(idx_dir),
                 "--workdir", str(tmp_path / "work"), "-q"]) == 1
    assert not (tmp_path / "work").exists()


def test_bad_config_file_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[data]\nsource = 'x'\n")
    proc = _cli("ingest", "--config", str(config), cwd=tmp_path)
    assert proc.returncode == 1
    assert "unknown configuration key 'data.source'" in proc.stderr and "Traceback" not in proc.stderr
    proc = _cli("ingest", "--config", str(tmp_path / "missing.toml"), cwd=tmp_path)
    assert proc.returncode == 1 and "missing.toml" in proc.stderr


def test_ingest_prints_where_and_statistics(idx_dir: Path, tmp_path: Path, capsys) -> None:
    workdir = tmp_path / "work"
    args = ["ingest", "--source-dir", str(idx_dir), "--workdir", str(workdir), "-q"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "mnist 3.0.1: prepared from IDX files" in out
    assert str(workdir / "data") in out and "statistics.json" in out
    assert "train: 200 examples, image [28, 28, 1] uint8" in out
    assert main(args) == 0
    assert "reused" in capsys.readouterr().out


def test_ingest_stops_on_anomalies(idx_dir: Path, tmp_path: Path, capsys) -> None:
    import numpy as np

    from tests.conftest import IDX_FILES, write_idx_labels

    write_idx_labels(idx_dir / IDX_FILES["train_labels"], np.arange(200) % 5)  # classes 5-9 missing
    assert main(["ingest", "--source-dir", str(idx_dir), "--workdir", str(tmp_path / "work"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "anomal" in err and "train: class(es) 5, 6, 7, 8, 9 missing" in err


def _captured_config(monkeypatch, command: str) -> dict:
    """Replace `command`'s run (the stage) by one that keeps the configuration it was handed."""
    import importlib

    seen: dict = {}

    def run(config, args) -> int:
        seen["config"] = config
        return 0

    monkeypatch.setattr(importlib.import_module(f"pipeline.commands.{command}"), "run", run)
    return seen


@pytest.mark.parametrize("command, typo, meant", [("score", "--formt", "--format"),
                                                  ("run", "--output-formt", "--output-format"),
                                                  ("run", "--epoch", "--epochs")])  # no abbreviations
def test_a_flag_neither_the_command_nor_beam_knows_exits_1_naming_the_closest(command, typo, meant, tmp_path,
                                                                               capsys, monkeypatch) -> None:
    seen = _captured_config(monkeypatch, command)
    assert main([command, typo, "csv", "--workdir", str(tmp_path / "w"), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mnist-pipeline {command}: error: unknown flag {typo}:") and "\n" not in err
    assert f"did you mean {meant}?" in err
    assert seen == {} and not (tmp_path / "w").exists()


def test_beam_pipeline_options_pass_through_to_the_score_section(tmp_path, capsys, monkeypatch) -> None:
    seen = _captured_config(monkeypatch, "score")
    argv = ["score", "--direct_num_workers=2", "--runner", "DirectRunner", "--format", "csv",
            "--workdir", str(tmp_path / "w"), "-q"]
    assert main(argv) == 0, capsys.readouterr().err
    assert seen["config"].score.beam_args == ("--direct_num_workers=2", "--runner", "DirectRunner")
    assert seen["config"].score.output_format == "csv"
    # After a bare --, arguments go to Beam unchecked (a runner's own option classes, unknown to plain Beam).
    assert main([*argv, "--", "--my_runner_flag=1"]) == 0
    assert seen["config"].score.beam_args[-1] == "--my_runner_flag=1"


def test_a_bad_value_of_a_beam_flag_exits_1(tmp_path, capsys, monkeypatch) -> None:
    seen = _captured_config(monkeypatch, "run")
    assert main(["run", "--direct_num_workers=many", "--workdir", str(tmp_path / "w"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "--direct_num_workers" in err and "'many'" in err and seen == {}
    assert main(["run", "--runner=DirectRunner", "--workdir", str(tmp_path / "w"), "-q"]) == 0
    assert seen["config"].score.beam_args == ("--runner=DirectRunner",)


def test_a_command_without_beam_still_refuses_unknown_flags(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["ingest", "--direct_num_workers=2", "--workdir", str(tmp_path / "w")])
    assert info.value.code == 2 and "unrecognized arguments: --direct_num_workers=2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # a prefix of --source-dir is not taken for it
        main(["ingest", "--source", str(tmp_path), "--workdir", str(tmp_path / "w")])
    assert info.value.code == 2 and "unrecognized arguments: --source" in capsys.readouterr().err
