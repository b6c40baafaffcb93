"""The local server's options: every `serve` flag is a `[serve]` key of the config file, checked alike."""

from __future__ import annotations

import dataclasses

import pytest


def _serve_flags() -> dict[str, str]:
    """serve's flags that fill ServerOptions: field name -> the first flag spelling."""
    from pipeline.cli import build_parser

    parser, _ = build_parser()
    serve = parser._subparsers._group_actions[0].choices["serve"]  # argparse keeps subparsers there
    return {a.dest.split(".", 1)[1]: a.option_strings[0] for a in serve._actions if a.dest.startswith("serve.")}


def test_every_serve_option_has_a_flag_and_a_toml_key():
    from serving.options import ServerOptions

    assert set(_serve_flags()) == {f.name for f in dataclasses.fields(ServerOptions)}


def _error(capsys, argv) -> str:
    from pipeline.cli import main

    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    return err.split("serve.", 1)[1]  # without where it came from (flag or file)


# (field, value as the flag takes it, value as TOML writes it); each is refused before anything binds.
_BAD = [
    ("port", "70000", "70000"), ("rest_api_port", "-1", "-1"), ("poll_interval", "0", "0.0"),
    ("poll_interval", "nan", "nan"), ("file_system_poll_wait_seconds", "-1", "-1.0"),
    ("model_config_file_poll_wait_seconds", "-2", "-2.0"), ("grpc_max_threads", "0", "0"),
    ("tensorflow_intra_op_parallelism", "-1", "-1"), ("tensorflow_inter_op_parallelism", "-3", "-3"),
    ("max_message_bytes", "0", "0"), ("max_batch_size", "-1", "-1"), ("grace", "inf", "inf"),
    ("enable_batching", "maybe", '"maybe"'), ("allow_version_labels_for_unavailable_models", "perhaps", '"perhaps"'),
    ("batching_parameters_file", "b.txt", '"b.txt"'), ("tls_cert", "c.pem", '"c.pem"'),
    ("tls_key", "k.pem", '"k.pem"'), ("tls_client_ca", "ca.pem", '"ca.pem"'),
]


@pytest.mark.parametrize("field, flag_value, toml_value", _BAD, ids=[f"{b[0]}={b[1]}" for b in _BAD])
def test_a_bad_serve_option_gets_the_same_error_from_a_flag_and_from_toml(tmp_path, capsys, field, flag_value,
                                                                          toml_value):
    flag = _serve_flags()[field]
    workdir = ["--workdir", str(tmp_path / "work")]
    from_flag = _error(capsys, ["serve", *workdir, f"{flag}={flag_value}"])
    toml = tmp_path / "c.toml"
    toml.write_text(f"[serve]\n{field} = {toml_value}\n")
    from_toml = _error(capsys, ["serve", *workdir, "--config", str(toml)])
    assert from_flag == from_toml
    assert from_flag.startswith(field) or field in from_flag


def test_the_model_base_path_and_a_models_config_exclude_each_other_in_toml_too(tmp_path, capsys):
    toml = tmp_path / "c.toml"
    toml.write_text('[serve]\nmodel_base_path = "/models/mnist"\nmodels_config = "models.config"\n')
    assert "not both" in _error(capsys, ["serve", "--workdir", str(tmp_path / "w"), "--config", str(toml)])


def test_a_flag_overrides_the_toml_value(tmp_path):
    from pipeline.cli import _overrides, build_parser
    from pipeline.config import load_config

    toml = tmp_path / "c.toml"
    toml.write_text("[serve]\nenable_batching = true\nrest_api_port = 0\ngrpc_max_threads = 8\n")
    parser, _ = build_parser()
    args, _ = parser.parse_known_args(["serve", "--config", str(toml), "--enable_batching=false", "--grpc_max_threads", "4"])
    options = load_config(args.config, _overrides(args)).serve
    assert (options.enable_batching, options.rest_api_port, options.grpc_max_threads) == (False, 0, 4)
    args, _ = parser.parse_known_args(["serve", "--enable_batching"])  # TF Serving's bare boolean flag
    assert load_config(None, _overrides(args)).serve.enable_batching is True


def test_the_serve_section_is_the_servers_options():
    from pipeline.config import Config
    from serving.options import ServerOptions

    assert isinstance(Config().serve, ServerOptions)
