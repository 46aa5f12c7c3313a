"""Legacy (TF 2.x) Keras .h5 files that Keras 3 cannot load: loaded with tf_keras in a child process.

tf_keras only takes over `tf.keras` when TF_USE_LEGACY_KERAS=1 is set before TensorFlow is
imported, and that switch is process-wide: set in edgemm's own process it would change what every
Keras call means. So a child process loads the file with tf_keras and writes a SavedModel whose
serving signature keeps the Keras input and output names; conversion goes on from that SavedModel.

    python -m converters.legacy_keras MODEL.h5 OUT_DIR [CUSTOM_CODE.py]
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from edgemm.errors import InputError


def check_h5(path: Path) -> None:
    """Refuses what is not a whole Keras model in HDF5 (weights only, or not HDF5 at all) before any loading."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            attrs = set(f.attrs)
    except OSError:
        raise InputError(f"{path}: not an HDF5 file (truncated or another format)") from None
    if "model_config" not in attrs:
        raise InputError(f"{path}: holds weights only (no model config); load them into the model's code and "
                         "save the whole model (model.save('model.keras'))")


def to_saved_model(path: Path, out: Path, code: Path | None, keras3_error: InputError) -> Path:
    """Loads `path` with tf_keras in a child process and writes a SavedModel to `out`."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    args = [sys.executable, "-m", "converters.legacy_keras", os.fspath(path), os.fspath(out)]
    if code is not None:
        args.append(os.fspath(code))
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
        reason = lines[-1].removeprefix("Error: ") if lines else (proc.stderr.strip().splitlines() or ["crashed"])[-1]
        raise InputError(f"{keras3_error}; tf_keras cannot load it either ({reason[:300]})") from None
    return out


def _load(path: str, code: str | None):
    import tf_keras

    from converters.sources import custom_objects

    # Classes the file registers with register_keras_serializable(package=P) (stored as "P>Name") are found
    # through Keras' registry once the file has run; the others by their class name.
    objects = custom_objects(Path(code)) if code else {}
    if not code:  # without the opt-in, refuse what would run the file's Python code
        import json

        import h5py

        with h5py.File(path, "r") as f:
            config = f.attrs["model_config"]
        config = json.loads(config.decode() if isinstance(config, bytes) else config)
        lambdas = [layer.get("config", {}).get("name") for layer in config.get("config", {}).get("layers", [])
                   if layer.get("class_name") == "Lambda"]
        if lambdas:
            raise InputError(f"Lambda layer {lambdas[0]!r} runs Python code stored in the file; load it only if you "
                             "trust it, with --custom-code FILE.py (any file, even empty)")
    return tf_keras.models.load_model(path, compile=False, custom_objects=objects or None)


def _main(path: str, out: str, code: str | None = None) -> int:
    import tensorflow as tf

    model = _load(path, code)
    names = list(model.input_names)
    specs = [tf.TensorSpec([None, *t.shape[1:].as_list()], t.dtype, name=n) for n, t in zip(names, model.inputs)]

    @tf.function(input_signature=specs)
    def serve(*args):
        y = model(list(args) if len(args) > 1 else args[0], training=False)
        return dict(zip(model.output_names, y if isinstance(y, (list, tuple)) else [y]))

    tf.saved_model.save(model, out, signatures={"serving_default": serve.get_concrete_function()})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(_main(*sys.argv[1:]))
    except Exception as e:  # the parent reports this one line
        text = str(e).strip()
        print(f"Error: {type(e).__name__}: {(text.splitlines() or [''])[0][:300]}", file=sys.stderr)
        sys.exit(3)
