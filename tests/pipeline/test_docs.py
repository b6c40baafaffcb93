"""The docs' lists are checked against their one home: docs/operations.md's table of configuration keys against
the config's sections and fields (`pipeline.config`), README.md's table of commands against the CLI's
subcommands (`pipeline.cli`), docs/serving.md's list of TF Serving's flags against those `serve` takes
(`pipeline.commands.serve`). Both sides are read, never listed here, so a new field or command fails the test
until the docs name it, and a documented one that is gone fails it too."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from pipeline import cli, config

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "docs" / "operations.md"
README = ROOT / "README.md"
_CODE = re.compile(r"`([^`]+)`")


def _table_first_cells(text: str, header: str) -> list[str]:
    """The first cell of every row of the Markdown table whose header row starts with `| <header> |`."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(rf"\|\s*{re.escape(header)}\s*\|", line)), None)
    assert start is not None, f"no table with a {header!r} column"
    cells = []
    for line in lines[start + 2:]:  # after the header and its |---| line
        if not line.startswith("|"):
            break
        cells.append(line.split("|")[1])
    return cells


def _section_paragraph_keys(text: str, section: str) -> set[str]:
    """The keys a paragraph "The `<section>` keys are `a`, `b` ..." names (flags like `--input` left out)."""
    found = re.search(rf"The `{re.escape(section)}` keys are (.*?)(?:\n\n|\Z)", text, re.S)
    assert found, f"the table says `{section}.*`, but no paragraph \"The `{section}` keys are ...\" lists them"
    return {k for k in _CODE.findall(found.group(1)) if not k.startswith("-")}


def documented_keys(text: str) -> set[str]:
    """Every key the configuration table names; a `section.*` row stands for the keys its paragraph lists."""
    keys: set[str] = set()
    for cell in _table_first_cells(text, "key"):
        for key in _CODE.findall(cell):
            section, _, name = key.partition(".")
            keys |= {f"{section}.{k}" for k in _section_paragraph_keys(text, section)} if name == "*" else {key}
    return keys


def config_keys() -> set[str]:
    """`workdir` and `<section>.<field>` for every section of `pipeline.config.Config`, read from the types."""
    return {"workdir"} | {f"{name}.{f.name}" for name, section in config.sections().items()
                          for f in dataclasses.fields(section)}


def documented_commands(text: str) -> list[str]:
    return [name for cell in _table_first_cells(text, "command") for name in _CODE.findall(cell)]


def cli_commands() -> set[str]:
    return set(cli.build_parser()[1])


def _difference(documented: set[str], known: set[str], what: str, where: str) -> str:
    problems = []
    if known - documented:
        problems.append(f"{what} missing from {where}: {', '.join(sorted(known - documented))}")
    if documented - known:
        problems.append(f"{where} names {what} that do not exist: {', '.join(sorted(documented - known))}")
    return "; ".join(problems)


def test_the_configuration_table_names_every_key_of_every_section_and_no_other() -> None:
    problem = _difference(documented_keys(OPERATIONS.read_text()), config_keys(), "configuration keys",
                          "docs/operations.md")
    assert not problem, problem


def test_the_readme_lists_every_command_once_and_no_other() -> None:
    documented = documented_commands(README.read_text())
    assert len(documented) == len(set(documented)), f"a command is listed twice in README.md: {documented}"
    problem = _difference(set(documented), cli_commands(), "commands", "README.md")
    assert not problem, problem


@pytest.mark.parametrize("row", ["| `workdir` |", "| `push.force` |", "| `score.*` |"])
def test_the_key_check_notices_a_key_the_table_lost(row: str) -> None:
    text = "\n".join(line for line in OPERATIONS.read_text().splitlines() if not line.startswith(row))
    assert text != OPERATIONS.read_text(), f"no row {row!r} to remove"
    assert _difference(documented_keys(text), config_keys(), "configuration keys", "docs/operations.md")


def test_the_key_check_notices_a_key_the_config_lost_or_the_section_paragraph_lacks() -> None:
    text = OPERATIONS.read_text()
    keys = config_keys()
    assert "do not exist: push.force" in _difference(documented_keys(text), keys - {"push.force"}, "configuration keys", "x")
    assert "score.job_timeout" in _difference(documented_keys(text.replace("`job_timeout`", "")), keys,
                                              "configuration keys", "x")


def test_the_command_check_notices_a_command_the_readme_lost() -> None:
    text = "\n".join(line for line in README.read_text().splitlines() if not line.startswith("| `lineage` |"))
    assert "commands missing from README.md: lineage" in _difference(set(documented_commands(text)), cli_commands(),
                                                                      "commands", "README.md")


SERVING = ROOT / "docs" / "serving.md"


def documented_tf_serving_flags(text: str) -> set[str]:
    """The flags the paragraph under docs/serving.md's "### TF Serving's flags" names, up to its first period."""
    found = re.search(r"### TF Serving's flags\n\n(.*?)\.\n", text, re.S)
    assert found, "docs/serving.md has no \"### TF Serving's flags\" paragraph"
    return {flag for flag in _CODE.findall(found.group(1)) if flag.startswith("--")}


def serve_tf_serving_flags() -> set[str]:
    """The TF Serving flags `serve` takes, read from its parser: every shown flag in TF Serving's spelling
    (underscores), and `--port`, which the project's spelling shares with TF Serving."""
    import argparse

    from pipeline.commands import serve

    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    return {"--port"} | {flag for action in parser._actions if action.help != argparse.SUPPRESS
                         for flag in action.option_strings if "_" in flag}


def test_the_serving_page_lists_every_tf_serving_flag_serve_takes_and_no_other() -> None:
    problem = _difference(documented_tf_serving_flags(SERVING.read_text()), serve_tf_serving_flags(),
                          "TF Serving flags", "docs/serving.md")
    assert not problem, problem


def test_the_flag_check_notices_a_flag_the_page_lost() -> None:
    text = SERVING.read_text().replace("`--monitoring_config_file`, ", "")
    assert "TF Serving flags missing from docs/serving.md: --monitoring_config_file" in _difference(
        documented_tf_serving_flags(text), serve_tf_serving_flags(), "TF Serving flags", "docs/serving.md")
