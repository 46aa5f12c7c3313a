import os
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



@pytest.mark.parametrize("args, hint", [(["--keep-float", "auto"], "needs --max-accuracy-drop"),
                                        (["--keep-float-steps", "0"], "--keep-float-steps")])
def test_convert_keep_float_usage_errors(tmp_path, args, hint):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not read: usage is checked first")
    result = CliRunner().invoke(main, ["convert", str(model), "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2 and hint in result.output and not (tmp_path / "out").exists(), result.output


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


@pytest.mark.convert
def test_spec_of_a_keras_model_prints_only_the_template(tmp_path):
    """`edgemm spec` reads Keras models and SavedModels with TensorFlow in its own process: TensorFlow's C++
    start-up lines (oneDNN, CPU features, absl) are not printed unless -v."""
    import subprocess
    import sys

    import keras

    inp = keras.Input((8, 8, 1), name="pixels")
    keras.Model(inp, keras.layers.Dense(2, name="cls")(keras.layers.Flatten()(inp))).save(tmp_path / "m.keras")
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEMM_VERBOSE", "EDGEMM_DEBUG")}
    proc = subprocess.run([sys.executable, "-m", "edgemm", "spec", str(tmp_path / "m.keras")], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and "pixels" in proc.stdout
    assert [line for line in proc.stdout.splitlines() if _LIBRARY_LINE.search(line)] == []


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
