import json

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
    for name in ("reference", "demo"):
        assert name in out


@pytest.mark.convert
def test_missing_data_dir_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["reference", "eval", "--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 4
    assert result.output.strip().count("\n") == 0 and result.output.startswith("Error: AV-digits data not found")
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.convert
@pytest.mark.parametrize("content", [b"", b"PK\x03\x04garbage", b"random bytes" * 100])
def test_bad_model_file_is_a_one_line_error(tmp_path, content):
    model = tmp_path / "bad.keras"
    model.write_bytes(content)
    model.with_suffix(".json").write_text(json.dumps({"preprocess": {}}))
    result = CliRunner().invoke(main, ["reference", "eval", "--model", str(model)])
    assert result.exit_code == 3, result.output
    assert result.output.startswith("Error: ") and "bad.keras" in result.output
    assert result.output.strip().count("\n") == 0


@pytest.mark.convert
def test_model_without_sidecar_is_a_one_line_error(tmp_path):
    model = tmp_path / "lonely.keras"
    model.write_bytes(b"")
    result = CliRunner().invoke(main, ["reference", "eval", "--model", str(model)])
    assert result.exit_code == 3 and "sidecar" in result.output
