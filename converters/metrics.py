"""How close a converted model is to its float source, per output head.

classify    top-1 agreement with the float model, accuracy when the validation set has labels
multilabel  per-label agreement (each label on/off at the head's threshold), averaged over labels
raw, state  SQNR in dB (signal power of the float output over the power of the difference) and cosine
            similarity, over all validation samples

A head passes when agreement >= min_agreement (classify, multilabel) or SQNR >= min_sqnr_db (raw,
state): the defaults (90 %, 20 dB) fail meaningless conversions, such as a detector read as a
classifier, unless the user lowers them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgemm.runtime.postprocess import activate

DEFAULT_MIN_AGREEMENT = 0.90
DEFAULT_MIN_SQNR_DB = 20.0


@dataclasses.dataclass(frozen=True)
class Gates:
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    min_sqnr_db: float = DEFAULT_MIN_SQNR_DB


MAX_SQNR_DB = 200.0  # identical outputs: reported as this, not as infinity (JSON has no infinity)


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB; outputs with NaN or infinity (a float DIV by a divisor that
    int8 made 0) get -MAX_SQNR_DB, the worst there is, not NaN (which compares as neither closer nor not)."""
    if not np.isfinite(test).all():
        return -MAX_SQNR_DB
    signal = float(np.sum(np.square(reference, dtype=np.float64)))
    noise = float(np.sum(np.square(reference.astype(np.float64) - test)))
    if noise <= signal * 10 ** (-MAX_SQNR_DB / 10):
        return MAX_SQNR_DB
    return float(10.0 * np.log10(max(signal, 1e-30) / noise))


def cosine(reference: np.ndarray, test: np.ndarray) -> float:
    a, b = reference.reshape(-1).astype(np.float64), test.reshape(-1).astype(np.float64)
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return 1.0 if denominator == 0.0 else float(a @ b / denominator)


def _rows(x: np.ndarray, n: int) -> np.ndarray:
    return np.asarray(x, np.float32).reshape(n, -1)


def head_metrics(head, reference: np.ndarray, test: np.ndarray, labels: np.ndarray | None) -> dict:
    """Metrics of one output (`head`: an edgemm.spec.OutputSpec) over n samples (first axis)."""
    n = len(reference)
    ref, out = _rows(reference, n), _rows(test, n)
    finite = np.isfinite(out).all(axis=1)
    diff = np.abs(ref - out)[finite]
    result = {"head": head.head, "max_abs_diff": round(float(np.max(diff)), 5) if diff.size else 0.0}
    if not finite.all():  # counted apart: max_abs_diff is over the other samples, SQNR is the worst
        result["non_finite_samples"] = int(np.sum(~finite))
    if head.head == "classify":
        top1 = out.argmax(1)
        result["agreement"] = round(float(np.mean(top1 == ref.argmax(1))), 4)
        result["accuracy"] = None if labels is None else round(float(np.mean(top1 == labels)), 4)
    elif head.head == "multilabel":
        on_ref = np.stack([activate(r, head.activation, True) for r in ref]) >= head.threshold
        on_out = np.stack([activate(r, head.activation, True) for r in out]) >= head.threshold
        result["agreement"] = round(float(np.mean(on_ref == on_out)), 4)
    else:
        result["sqnr_db"] = round(sqnr_db(ref, out), 2)
        result["cosine"] = round(cosine(ref, np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)), 5)
    return result


def passes(result: dict, gates: Gates) -> bool:
    if "agreement" in result:
        return result["agreement"] >= gates.min_agreement
    return result["sqnr_db"] >= gates.min_sqnr_db


def summary(per_head: dict[str, dict]) -> dict:
    """The artifact-level figures the report table and the gates use: the first classify head's agreement
    and accuracy (or the worst agreement), the worst SQNR, the largest difference, and the most samples with
    a NaN or infinite output in one head."""
    classify = [r for r in per_head.values() if r["head"] == "classify"]
    agreements = [r["agreement"] for r in per_head.values() if "agreement" in r]
    sqnrs = [r["sqnr_db"] for r in per_head.values() if "sqnr_db" in r]
    return {
        "agreement": classify[0]["agreement"] if classify else (min(agreements) if agreements else None),
        "accuracy": classify[0]["accuracy"] if classify else None,
        "sqnr_db": min(sqnrs) if sqnrs else None,
        "max_abs_diff": max((r["max_abs_diff"] for r in per_head.values()), default=0.0),
        "non_finite_samples": max((r.get("non_finite_samples", 0) for r in per_head.values()), default=0),
    }
