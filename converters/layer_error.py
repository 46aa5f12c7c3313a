"""Layer-by-layer quantization error: which tensors int8 hurts most.

Runs the float ONNX model and its QDQ int8 version on the same samples with
every intermediate tensor exposed (ONNX Runtime's qdq_loss_debug), and gives,
per activation tensor, the signal-to-quantization-noise ratio (SQNR, dB) of
the int8 model's tensor against the float model's: the error accumulated up to
that layer. Low SQNR = large error. The report names the worst layers and the
ONNX nodes that produce them (candidates to keep in float).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from converters.export import _Reader


def _producers(model_path: Path) -> dict[str, tuple[str, str]]:
    import onnx

    graph = onnx.load(os.fspath(model_path)).graph
    return {out: (node.name, node.op_type) for node in graph.node for out in node.output}


def layer_errors(float_onnx: Path, int8_onnx: Path, samples: dict[str, np.ndarray], limit: int = 64) -> list[dict]:
    """Per activation tensor of the float model: SQNR of the int8 model, worst first."""
    from onnxruntime.quantization import qdq_loss_debug as dbg

    count = min(limit, len(next(iter(samples.values()))))
    subset = {k: v[:count] for k, v in samples.items()}
    with tempfile.TemporaryDirectory(prefix="edgemm-layers-") as tmp:
        float_aug, qdq_aug = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        dbg.modify_model_output_intermediate_tensors(os.fspath(float_onnx), os.fspath(float_aug))
        dbg.modify_model_output_intermediate_tensors(os.fspath(int8_onnx), os.fspath(qdq_aug))
        float_acts = dbg.collect_activations(os.fspath(float_aug), _Reader(subset))
        qdq_acts = dbg.collect_activations(os.fspath(qdq_aug), _Reader(subset))
    matched = dbg.create_activation_matching(qdq_acts, float_acts)
    errors = dbg.compute_activation_error(matched)
    producers = _producers(float_onnx)
    rows = []
    for tensor, err in errors.items():
        if "xmodel_err" not in err or tensor not in producers:
            continue
        node, op_type = producers[tensor]
        rows.append({"tensor": tensor, "node": node, "op_type": op_type,
                     "sqnr_db": round(float(err["xmodel_err"]), 2),
                     "local_sqnr_db": round(float(err.get("qdq_err", np.nan)), 2)})
    rows.sort(key=lambda r: r["sqnr_db"])
    return rows


def format_rows(rows: list[dict], top: int = 5) -> list[str]:
    lines = [f"  {'SQNR dB':>8} {'local':>7}  {'op':<18} tensor"]
    for r in rows[:top]:
        lines.append(f"  {r['sqnr_db']:>8.1f} {r['local_sqnr_db']:>7.1f}  {r['op_type']:<18} {r['tensor']}")
    return lines
