"""The device runtime (everything under edgemm/) must import without TensorFlow or Keras."""

import subprocess
import sys

CHECK = """
import pkgutil, sys, edgemm
names = [m.name for m in pkgutil.walk_packages(edgemm.__path__, "edgemm.") if m.name != "edgemm.__main__"]
for name in names:
    __import__(name)
heavy = sorted(m for m in ("tensorflow", "keras", "tf2onnx", "tensorflow_model_optimization") if m in sys.modules)
print(len(names), ",".join(heavy))
"""


def test_edgemm_modules_do_not_import_tensorflow_or_keras():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True).stdout.split()
    count, heavy = int(out[0]), (out[1] if len(out) > 1 else "")
    assert count >= 6, "module discovery found too few edgemm modules"
    assert heavy == "", f"edgemm imports {heavy}"


def test_cli_help_does_not_import_tensorflow():
    code = "import sys; from click.testing import CliRunner; from edgemm.cli import main; " \
           "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0; " \
           "print('keras' in sys.modules or 'tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
