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

