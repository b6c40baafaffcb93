"""`mnist-pipeline <subcommand>`: one console script, one module per subcommand in `pipeline.commands`.

Nothing on the `--help` path imports TensorFlow: command modules import their stage lazily in `run`.
Flags that change configuration write dotted keys (`train.epochs`) that override the `--config` TOML file.
A `PipelineError` is printed as one line, without a traceback, and the exit status is 1.

A command with `BEAM_OPTIONS = True` (score, run) hands its unknown flags to Beam, once Beam's own option
classes know each of them (`components.score.beam_flags`; Beam is imported only then):
`score --formt csv` is refused, naming `--format`, where Beam would log "Unparseable argument" and go on.
What follows a bare `--` goes to Beam unchecked (options of a runner's own classes).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

from components import datasets
from pipeline.config import Config, load_config
from pipeline.errors import PipelineError
from pipeline.paths import DEFAULT_WORKDIR
from pipeline.workdir import check_workdir

# The order is the order of `--help`. Each module has NAME, HELP, add_arguments(parser), run(config, args).
COMMAND_MODULES = (
    "pipeline.commands.ingest",
    "pipeline.commands.train",
    "pipeline.commands.export",
    "pipeline.commands.evaluate",
    "pipeline.commands.push",
    "pipeline.commands.versions",
    "pipeline.commands.rollback",
    "pipeline.commands.serve",
    "pipeline.commands.predict",
    "pipeline.commands.score",
    "pipeline.commands.export_examples",
    "pipeline.commands.run",
    "pipeline.commands.runs",
    "pipeline.commands.lineage",
    "pipeline.commands.orchestrate",
)

log = logging.getLogger(__name__)


def config_flag(parser: argparse.ArgumentParser, *flags: str, key: str, **kwargs: Any) -> None:
    """A flag that overrides configuration key `key` only when given (its default stays in the config). `choices`
    are shown, not checked by argparse: the config's section checks the value as it checks the TOML key (one
    line naming the choices, exit 1)."""
    kwargs.setdefault("default", argparse.SUPPRESS)
    choices = kwargs.pop("choices", None)
    if choices:
        kwargs["metavar"] = "{" + ",".join(choices) + "}"
    parser.add_argument(*flags, dest=key, **kwargs)


def per_dataset(attribute: str) -> str:
    """`attribute` of every dataset, for help texts: "mnist 0.99, fashion_mnist 0.9" (a value that is the
    dataset's name alone: "mnist, fashion_mnist")."""
    values = [(d.name, str(getattr(d, attribute))) for d in datasets.DATASETS.values()]
    return ", ".join(value if value == name else f"{name} {value}" for name, value in values)


def dataset_flag(parser, help: str = "sets the default model name and blessing threshold") -> None:
    """`--dataset` (data.dataset): one of components.datasets, checked as the TOML key is (one line, exit 1)."""
    names = datasets.names()
    config_flag(parser, "--dataset", key="data.dataset", metavar="NAME",
                help=f"{names[0]} (default) or {' or '.join(names[1:])}: {help}")


def model_name_flag(parser, *, dataset: bool = True) -> None:
    """`--model-name` (push.model_name) and, unless the command has its own, `--dataset` (data.dataset), whose
    default model name and blessing threshold apply where those are not given (components.datasets)."""
    if dataset:
        dataset_flag(parser)
    config_flag(parser, "--model-name", key="push.model_name", metavar="NAME",
                help=f"the model's name under the base path (default: the dataset's: {per_dataset('model_name')})")


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("common options")
    group.add_argument("--config", metavar="FILE", help="TOML configuration file; flags override it")
    config_flag(group, "--workdir", key="workdir", metavar="DIR", help=f"where all outputs go (default: ./{DEFAULT_WORKDIR})")
    group.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    group.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Any]]:
    """The parser, and each command's module by name (its own parser as `module_parsers[name]` of the first)."""
    # No abbreviated flags (argparse's default takes `--enable_batch` for `--enable_batching`): TF Serving's flags and
    # Beam's refuse them, and a prefix that names one flag today would name another once a flag is added.
    parser = argparse.ArgumentParser(
        prog="mnist-pipeline",
        description="MNIST from raw data to a model served over TF Serving's gRPC API.",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    modules: dict[str, Any] = {}
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        p = sub.add_parser(
            module.NAME,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )
        module.add_arguments(p)
        _common_arguments(p)
        p.set_defaults(command_parser=p)
        modules[module.NAME] = module
    return parser, modules


def _beam_args(args: argparse.Namespace, unknown: list[str], unchecked: list[str]) -> tuple[str, ...]:
    """The command's unknown flags, each one Beam knows, then those after `--`; a ConfigError naming the first
    that neither the command nor Beam knows, and the closest known flag."""
    from components.score.beam_flags import check_beam_args

    check_beam_args(unknown, args.command_parser._option_string_actions)
    return (*unknown, *unchecked)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k == "workdir" or "." in k}


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # TensorFlow's C++ logs and absl's warnings drown ours; keep them to errors unless debugging.
    if not args.verbose:
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _print_error(command: str, message: str) -> None:
    """One line, whatever the message holds (a wrapped TensorFlow or gRPC error may carry newlines)."""
    print(f"mnist-pipeline {command}: error: {' '.join(message.split())}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    from components.score.beam_flags import split_at_dashes

    parser, modules = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    own, unchecked = split_at_dashes(argv)  # for a Beam command, what follows `--` is Beam's, unchecked
    args, unknown = parser.parse_known_args(own)
    beam = getattr(modules[args.command], "BEAM_OPTIONS", False)
    if not beam:
        args, unknown = parser.parse_known_args(argv)  # `--` means what argparse makes of it
        if getattr(modules[args.command], "PASSTHROUGH_UNKNOWN_ARGS", False):
            args.beam_args = unknown  # handed to the command unchecked (serve checks them itself)
        elif unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    _setup_logging(args)
    try:
        if beam and (unknown or unchecked):
            setattr(args, "score.beam_args", _beam_args(args, unknown, unchecked))  # overrides the TOML list
        config: Config = load_config(args.config, _overrides(args))
        check_workdir(config.workdir)
        return int(modules[args.command].run(config, args) or 0)
    except PipelineError as exc:
        _print_error(args.command, str(exc))
        return 1
    except PermissionError as exc:  # a read-only workdir or base path: the user's to fix, not a bug
        where = exc.filename if exc.filename is not None else "a file"
        _print_error(args.command, f"{str(where)!r} cannot be written ({exc.strerror}); fix its permissions or "
                                   "pass a writable --workdir")
        return 1
    except KeyboardInterrupt:
        print(f"mnist-pipeline {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
