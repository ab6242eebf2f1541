"""Per-output error statistics between a candidate and a reference."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from modelport.verify.tolerance import Tolerance

__all__ = ["OutputDiff", "diff_array", "diff_outputs"]


@dataclass
class OutputDiff:
    """How one output of a candidate differs from the reference.

    ``required_atol`` is the smallest atol that would have passed at the given rtol (and
    ``required_rtol`` the smallest rtol at the given atol): the number to put in a config.
    """

    name: str
    passed: bool
    reason: str
    shape: list[int]
    dtype: str
    max_abs: float
    max_rel: float
    mean_abs: float
    cosine: float
    sqnr_db: float
    nan_candidate: int
    nan_reference: int
    inf_candidate: int
    inf_reference: int
    required_atol: float
    required_rtol: float
    tolerance: str

    def to_dict(self) -> dict[str, Any]:
        return {k: (_json_float(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _json_float(x: float) -> float | str:
    return x if np.isfinite(x) else str(x)


def _mismatch(name: str, reason: str, cand: np.ndarray[Any, Any], tol: Tolerance) -> OutputDiff:
    nan = float("nan")
    return OutputDiff(
        name,
        False,
        reason,
        list(cand.shape),
        str(cand.dtype),
        nan,
        nan,
        nan,
        nan,
        nan,
        0,
        0,
        0,
        0,
        nan,
        nan,
        str(tol),
    )


def diff_array(
    name: str,
    candidate: np.ndarray[Any, Any],
    reference: np.ndarray[Any, Any],
    tolerance: Tolerance,
) -> OutputDiff:
    """Compare one output. NaN/Inf where the reference has none fail the comparison."""
    if candidate.shape != reference.shape:
        return _mismatch(
            name,
            f"shape {list(candidate.shape)} != reference {list(reference.shape)}",
            candidate,
            tolerance,
        )
    if candidate.dtype != reference.dtype:
        return _mismatch(name, f"dtype {candidate.dtype} != reference {reference.dtype}", candidate, tolerance)
    if candidate.dtype == object or candidate.dtype.kind in "USO":
        same = bool(np.array_equal(candidate, reference))
        return _exact_only(name, candidate, same, tolerance)
    c = candidate.astype(np.float64)
    r = reference.astype(np.float64)
    nan_c, nan_r = int(np.isnan(c).sum()), int(np.isnan(r).sum())
    inf_c, inf_r = int(np.isinf(c).sum()), int(np.isinf(r).sum())
    finite = np.isfinite(c) & np.isfinite(r)
    # Errors only where both are finite (Inf - Inf would warn and mean nothing).
    err_f = np.abs(np.where(finite, c, 0.0) - np.where(finite, r, 0.0))
    ref_abs = np.abs(np.where(finite, r, 0.0))
    max_abs = float(err_f.max()) if err_f.size else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(ref_abs > 0, err_f / ref_abs, np.where(err_f > 0, np.inf, 0.0))
    max_rel = float(rel.max()) if rel.size else 0.0
    mean_abs = float(err_f.mean()) if err_f.size else 0.0
    cosine = _cosine(np.where(finite, c, 0.0).ravel(), np.where(finite, r, 0.0).ravel())
    sqnr = _sqnr_db(np.where(finite, r, 0.0), err_f)
    required_atol = _smallest_passing(
        float(np.max(err_f - tolerance.rtol * ref_abs, initial=0.0)),
        lambda atol: bool(np.all(err_f <= atol + tolerance.rtol * ref_abs)),
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        need_rtol = np.where(err_f > tolerance.atol, (err_f - tolerance.atol) / ref_abs, 0.0)
    required_rtol = _smallest_passing(
        float(np.max(need_rtol, initial=0.0)),
        lambda rtol: bool(np.all(err_f <= tolerance.atol + rtol * ref_abs)),
    )
    within = bool(np.all(err_f <= tolerance.atol + tolerance.rtol * ref_abs))
    # Non-finite values must agree position by position (NaN where the reference has NaN).
    same_nonfinite = bool(
        np.array_equal(np.isnan(c), np.isnan(r))
        and np.array_equal(np.isinf(c) & (c > 0), np.isinf(r) & (r > 0))
        and np.array_equal(np.isinf(c) & (c < 0), np.isinf(r) & (r < 0))
    )
    passed = within and same_nonfinite
    if not same_nonfinite:
        reason = f"non-finite values differ: candidate has {nan_c} NaN / {inf_c} Inf, reference {nan_r} / {inf_r}"
    elif not within:
        reason = f"max abs error {max_abs:.3g} exceeds {tolerance} (needs atol >= {required_atol:.3g})"
    else:
        reason = "ok"
    return OutputDiff(
        name,
        passed,
        reason,
        list(candidate.shape),
        str(candidate.dtype),
        max_abs,
        max_rel,
        mean_abs,
        cosine,
        sqnr,
        nan_c,
        nan_r,
        inf_c,
        inf_r,
        required_atol,
        required_rtol,
        str(tolerance),
    )


def _smallest_passing(estimate: float, passes: Callable[[float], bool]) -> float:
    """``estimate`` nudged up by a few ulps until it really passes (rounding can undershoot)."""
    value = estimate
    for _ in range(8):
        if not np.isfinite(value) or passes(value):
            return value
        value = float(np.nextafter(value, np.inf))
    return value


def _exact_only(name: str, cand: np.ndarray[Any, Any], same: bool, tol: Tolerance) -> OutputDiff:
    reason = "ok" if same else "values differ (compared exactly: non-numeric dtype)"
    zero = 0.0 if same else float("inf")
    return OutputDiff(
        name,
        same,
        reason,
        list(cand.shape),
        str(cand.dtype),
        zero,
        zero,
        zero,
        1.0 if same else 0.0,
        float("inf") if same else 0.0,
        0,
        0,
        0,
        0,
        zero,
        zero,
        str(tol),
    )


def _cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _sqnr_db(reference: np.ndarray[Any, Any], error: np.ndarray[Any, Any]) -> float:
    noise = float(np.sum(error * error))
    signal = float(np.sum(reference * reference))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return float(10.0 * np.log10(signal / noise))


def diff_outputs(
    candidate: Mapping[str, np.ndarray[Any, Any]],
    reference: Mapping[str, np.ndarray[Any, Any]],
    tolerance: Tolerance | Mapping[str, Tolerance],
) -> list[OutputDiff]:
    """Compare every output the reference has; an output missing from the candidate fails."""
    diffs = []
    for name, ref in reference.items():
        tol = tolerance[name] if isinstance(tolerance, Mapping) else tolerance
        if name not in candidate:
            diffs.append(_mismatch(name, "missing from the candidate's outputs", ref, tol))
            continue
        diffs.append(diff_array(name, candidate[name], ref, tol))
    return diffs
