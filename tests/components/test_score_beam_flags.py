"""components.score.beam_flags: the flags a command hands to Beam are Beam's own, or come after a bare --."""

from __future__ import annotations

import pytest

from components.score.beam_flags import check_beam_args, split_at_dashes
from pipeline.errors import ConfigError


@pytest.mark.parametrize("args", [
    ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode", "multi_processing"],
    ["--runner", "PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
     "--environment_config=localhost:50000"],
    ["--runner=FlinkRunner", "--flink_master=localhost:8081", "--save_main_session"],
    [],
])
def test_beam_pipeline_options_pass(args) -> None:
    check_beam_args(args, ["--format"])


@pytest.mark.parametrize("args, message", [
    (["--formt", "csv"], r"unknown flag --formt: .*did you mean --format\?"),
    (["--runner=DirectRunner", "--direct_num_worker=2"], r"unknown flag --direct_num_worker: .*--direct_num_workers"),
    (["--direct_num_workers=two"], r"--direct_num_workers: invalid int value: 'two'"),
    (["stray"], r"unexpected argument 'stray'"),
    (["-x"], r"unknown flag -x"),
])
def test_anything_else_is_refused_naming_it(args, message) -> None:
    with pytest.raises(ConfigError, match=message):
        check_beam_args(args, ["--format", "--input"])


def test_what_follows_a_bare_double_dash_is_set_apart() -> None:
    assert split_at_dashes(["--format", "csv", "--", "--my_flag", "--", "x"]) == (["--format", "csv"],
                                                                                 ["--my_flag", "--", "x"])
    assert split_at_dashes(["--format", "csv"]) == (["--format", "csv"], [])
