"""ONNX -> TensorFlow SavedModel with onnx2tf, for the TFLite (Edge TPU) artifacts of an ONNX source.

Why onnx2tf 1.29.24, in its own environment (measured; README "ONNX to TFLite"):
  - onnx-tf is dead (needs tensorflow-addons, which stops at TF 2.15); onnx2tf 2.x needs Python >= 3.12
    and its int8 path lost accuracy in a probe (max error 0.115 vs 0.002); litert-torch takes PyTorch
    modules, not ONNX files. onnx2tf 1.x is maintained and rewrites NCHW graphs into NHWC ones with
    no TRANSPOSE at the inputs, which is what the Edge TPU needs (it maps no TRANSPOSE).
  - Its requirements are exact pins (tensorflow 2.19, numpy 1.26, onnx 1.19...) that conflict with
    edgemm's, so install.sh puts it in .venv-onnx2tf and edgemm runs it as a command.
edgemm only takes onnx2tf's float SavedModel: quantization is done here, by the same TFLite converter
and the same name-keyed calibration as for Keras sources, and validated against the ONNX model.

onnx2tf's habits this module works around (each one measured):
  - it rewrites its input file in place: it gets a copy;
  - unusual tensor names change or break the export (":" -> "__", a space: no SavedModel, rc 0): the copy's
    inputs are renamed i0, i1, ...; outputs come back as output_0, output_1, ... in ONNX order;
  - dynamic dimensions: the copy has every input shape fixed (batch 1), so the graph is static;
  - when every input is a 3-channel image with a small fixed batch, it downloads a sample image file from
    GitHub for its own accuracy check: a file of that name, made here, stands in;
  - 4D outputs come out NHWC: recorded as output layouts, like the inputs' (edgemm.layout).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from converters import shapes
from converters.saved_model import Graph, signature_io
from edgemm.binding import Tensor
from edgemm.errors import DependencyError, InputError
from edgemm.layout import ArtifactLayout

VERSION = "1.29.24"
MAX_IR_VERSION = 10  # onnx2tf's pinned onnxruntime reads IR <= 11; onnx 1.23 may write 12+
_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
INSTALL = (f"python3 -m venv .venv-onnx2tf && .venv-onnx2tf/bin/pip install onnx2tf=={VERSION} "
           "(install.sh does this), or set EDGEMM_ONNX2TF to an onnx2tf command")


def find_onnx2tf() -> Path:
    """$EDGEMM_ONNX2TF, else .venv-onnx2tf/bin/onnx2tf in the checkout, else onnx2tf on PATH."""
    candidates = [os.environ.get("EDGEMM_ONNX2TF"),
                  Path(__file__).resolve().parent.parent / ".venv-onnx2tf" / "bin" / "onnx2tf",
                  shutil.which("onnx2tf")]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    raise DependencyError(f"ONNX -> TFLite needs onnx2tf {VERSION} in its own environment: {INSTALL}; "
                          "or convert with --format onnx")


def _command(onnx2tf: Path) -> list[str]:
    """onnx2tf run through onnx2tf_stop.py by its own Python (read from the script's #! line), so it
    stops after the SavedModel; any other onnx2tf command ($EDGEMM_ONNX2TF) runs as it is."""
    with open(onnx2tf, "rb") as f:
        first = f.readline(4096).decode("utf-8", "replace").strip()
    python = first[2:].strip() if first.startswith("#!") else ""
    if python and " " not in python and Path(python).name.startswith("python") and Path(python).is_file():
        return [python, str(Path(__file__).with_name("onnx2tf_stop.py"))]
    return [str(onnx2tf)]


def _prepared_copy(source, path: Path) -> tuple[Path, dict[str, str]]:
    """The source ONNX with static shapes (batch 1), inputs renamed i0, i1, ... and IR <= MAX_IR_VERSION."""
    import onnx

    settled = {t.name: tuple(1 if d < 0 else d for d in t.shape) for t in source.inputs}
    fixed = shapes.fix_onnx(source.graph, settled, path)
    model = onnx.load(str(fixed))
    keys = {t.name: f"i{i}" for i, t in enumerate(source.inputs)}
    for value in model.graph.input:
        value.name = keys.get(value.name, value.name)
    for node in model.graph.node:
        node.input[:] = [keys.get(n, n) for n in node.input]
    _tf_node_names(model.graph)
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    onnx.save(model, str(path))
    return path, keys


def _tf_node_names(graph) -> None:
    """Node names TensorFlow accepts as scope names: onnx2tf names some TF ops after their ONNX node, and
    TF refuses names outside [A-Za-z0-9_.\\/>-] (Paddle exports name nodes 'Softmax@0'). Names stay unique."""
    taken: set[str] = set()
    for i, node in enumerate(graph.node):
        if not node.name:
            continue
        name = re.sub(r"[^A-Za-z0-9_./>-]", "_", node.name)
        if name in taken:
            name = f"{name}_{i}"
        taken.add(name)
        node.name = name


def _keep(bound) -> bool:
    """Inputs onnx2tf must leave as they are (-kat): state and constants (fed back / fed as given), and
    inputs the spec already lays out channels-last (an NHWC ONNX from tf2onnx: onnx2tf would take its H
    for channels). Without a spec, onnx2tf's rule applies: rank 3+ inputs are NCHW / NCL."""
    item = bound.spec
    if len(bound.shape) < 3:
        return False
    if item.source == "camera":
        return item.transform.layout != "NCHW"
    if item.source == "mic":
        return item.transform.axes[-1] != "time"
    return True


def _perm(source: tuple[int, ...], got: tuple[int, ...], keep: bool, where: str) -> tuple[int, ...]:
    """How onnx2tf permuted a tensor: channels last (NCHW -> NHWC, NCL -> NLC) or not at all."""
    rank = len(source)
    identity, last = tuple(range(rank)), (0, *range(2, rank), 1) if rank >= 3 else tuple(range(rank))
    fits = [p for p in ((identity, last) if keep else (last, identity)) if tuple(source[a] for a in p) == got]
    if not fits:
        raise InputError(f"onnx2tf made {where} {list(got)} from {list(source)}: not a layout edgemm can feed")
    return fits[0]


def to_saved_model(source, out: Path, log, keep_layout: bool = False) -> tuple[Graph, ArtifactLayout]:
    """Converts the ONNX source (source.graph) to a float SavedModel in `out`; returns it as a Graph named like
    the source model, and the layouts of its inputs and outputs. keep_layout: every input keeps its layout
    (an ONNX made from a TFLite model, NHWC already)."""
    onnx2tf = find_onnx2tf()
    work = out.parent / (out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    model, keys = _prepared_copy(source, work / "model.onnx")
    np.save(work / _SAMPLE, np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
    if keep_layout:
        kept = [keys[t.name] for t in source.inputs if len(t.shape) >= 3]
    else:
        kept = [keys[n] for n, b in (source.binding.inputs.items() if source.binding else ()) if _keep(b)]
    args = [*_command(onnx2tf), "-i", model.name, "-o", str(out), "-osd", "-n"] + (["-kat", *kept] if kept else [])
    env = dict(os.environ, PATH=os.pathsep.join([str(onnx2tf.parent), os.environ.get("PATH", "")]))
    try:
        proc = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        raise InputError(f"{source.path}: onnx2tf did not finish in 30 minutes") from None
    if proc.returncode != 0 or not (out / "saved_model.pb").is_file():
        text = (proc.stdout + proc.stderr).splitlines()
        errors = [line for line in text if "Error" in line or "ERROR" in line] or text or ["no output"]
        raise InputError(f"{source.path}: onnx2tf could not convert this model ({errors[-1].strip()[:300]})")
    inputs, outputs = signature_io(out)
    by_key = {t.name: t for t in inputs}
    layout_in, graph_inputs = {}, []
    for t in source.inputs:
        got = by_key[keys[t.name]]
        settled = tuple(1 if d < 0 else d for d in t.shape)
        layout_in[t.name] = _perm(settled, got.shape, keys[t.name] in kept, f"input {t.name}")
        graph_inputs.append(Tensor(t.name, got.shape, t.dtype))
    made = {int(t.name.rsplit("_", 1)[1]): t for t in outputs if t.name.startswith("output_")}
    if sorted(made) != list(range(len(source.outputs))):
        raise InputError(f"{source.path}: onnx2tf made outputs {[t.name for t in outputs]} for "
                         f"{[t.name for t in source.outputs]}")
    layout_out = {}
    for i, t in enumerate(source.outputs):
        settled = tuple(1 if d < 0 else d for d in t.shape)
        layout_out[t.name] = _perm(settled, made[i].shape, False, f"output {t.name}")
    log(f"  onnx2tf: inputs {', '.join(f'{t.name} {_dims(t.shape)}' for t in graph_inputs)}")
    graph = Graph(out, graph_inputs, input_keys={t.name: keys[t.name] for t in source.inputs},
                  output_keys={f"output_{i}": t.name for i, t in enumerate(source.outputs)})
    return graph, ArtifactLayout(layout_in, layout_out)


def _dims(shape) -> str:
    return "x".join(map(str, shape))
