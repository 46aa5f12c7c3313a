import re

import pytest
from click.testing import CliRunner

from edgemm.cli import main


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,)
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, prefix + (name,))


@pytest.mark.parametrize("path", [()] + list(_commands(main)), ids=lambda p: " ".join(p) or "edgemm")
def test_help_of_every_command(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_top_level_help_lists_the_commands():
    out = CliRunner().invoke(main, ["--help"]).output
    for name in ("spec", "convert", "run", "bench", "profiles"):
        assert name in out
    assert set(main.commands) == {"spec", "convert", "run", "bench", "profiles"}  # no task-specific commands



# -- quiet by default ------------------------------------------------------------------------------------

_LIBRARY_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d|^WARNING|Warning|warnings\.warn|oneDNN|absl|fully_quantize|"
                           r"XNNPACK|tf\.lite|cuInit|TensorFlow binary")


@pytest.mark.convert
def test_convert_prints_only_edgemm_lines(teacher_convert_run):
    """TensorFlow/absl C++ logs, LiteRT's INFO lines, ORT's quantizer warnings and NumPy/TF deprecation
    warnings stay in the child's log unless -v: stderr is empty, stdout holds edgemm's lines only."""
    _, _, stdout, stderr = teacher_convert_run
    assert stderr == ""
    assert [line for line in stdout.splitlines() if _LIBRARY_LINE.search(line)] == []
    assert stdout.startswith("loading ") and "int8_tflite" in stdout


def test_verbose_sends_library_output_to_the_terminal(tmp_path, monkeypatch):
    from edgemm import logs

    monkeypatch.setenv(logs.VERBOSE_ENV, "")  # recorded, so the "1" that -v sets is undone after the test
    monkeypatch.setenv("EDGEMM_DEBUG", "")
    quiet = logs.library_output(tmp_path / "libraries.log")
    assert quiet is not None and quiet.name == str(tmp_path / "libraries.log")
    quiet.close()
    assert logs.quiet_env({})["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert CliRunner().invoke(main, ["-v", "profiles", "--help"]).exit_code == 0
    assert logs.verbose() and logs.library_output(tmp_path / "x.log") is None and logs.quiet_env({}) == {}
