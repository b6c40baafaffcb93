"""The flags a command hands to Beam: each must be one of Beam's pipeline options, or come after a bare `--`.

    own, unchecked = split_at_dashes(argv)
    args, unknown = parser.parse_known_args(own)
    check_beam_args(unknown, parser._option_string_actions)   # ConfigError: "unknown flag --formt ... --format?"
    beam_args = [*unknown, *unchecked]

Beam itself only logs "Discarding unparseable args" and runs with its defaults, so a typo (`--formt csv`)
would score in the wrong format without a word. The known flags are read from Beam's own option classes
(`PipelineOptions` and its subclasses' `_add_argparse_args`) when `check_beam_args` is called, never on a
`--help` path. Used by `mnist-pipeline score` and `run` (pipeline.cli) and `python -m components.score`.
"""

from __future__ import annotations

import argparse
import difflib
import logging
from collections.abc import Iterable, Sequence

from pipeline.errors import ConfigError


def split_at_dashes(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """`argv` before its first bare `--`, and after it: arguments for Beam that nobody checks."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def _beam_parser() -> argparse.ArgumentParser:
    """Every flag Beam's pipeline options know: each `PipelineOptions` subclass's own `_add_argparse_args`,
    as `PipelineOptions.get_all_options` builds its parser (imported here, never on a `--help` path)."""
    # Importing Beam logs warnings about optional GCP libraries (apitools, BigQuery storage) that say nothing
    # about the user's flags; keep them out of a one-line flag error.
    logging.disable(logging.WARNING)
    try:
        import apache_beam  # noqa: F401 (the runners' and IOs' option classes register on import)
        from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser
    finally:
        logging.disable(logging.NOTSET)

    class Parser(_BeamArgumentParser):
        def error(self, message):  # a bad value of a known flag: refuse it as ours, not exit 2
            raise ConfigError(f"Beam pipeline option: {message}")

    # "resolve": a subclass of a subclass may declare its parent's flags again (Beam's own parser sees only the
    # direct subclasses); every flag is known once.
    parser = Parser(allow_abbrev=False, add_help=False, conflict_handler="resolve")
    todo = list(PipelineOptions.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if "_add_argparse_args" in cls.__dict__:
            cls._add_argparse_args(parser)
    return parser


def check_beam_args(args: Sequence[str], own_flags: Iterable[str] = ()) -> None:
    """Refuse the first of `args` (a command's unknown flags, bound for Beam) that no Beam pipeline option
    parses, naming it and the closest flag of the command (`own_flags`) or of Beam; a bad value of a Beam flag
    too. Beam itself would only log "Discarding unparseable args" and run with its defaults."""
    if not args:
        return
    parser = _beam_parser()
    _, unknown = parser.parse_known_args(list(args))
    if not unknown:
        return
    bad = unknown[0]
    if not bad.startswith("-"):
        raise ConfigError(f"unexpected argument {bad!r}: no flag of this command or of Beam takes it as its value")
    name = bad.split("=", 1)[0]
    known = [*own_flags, *(o for a in parser._actions for o in a.option_strings)]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ConfigError(f"unknown flag {name}: neither this command nor Beam's pipeline options know it{hint} "
                      "(arguments after a bare -- go to Beam unchecked)")
