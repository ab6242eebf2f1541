"""Per-output error statistics between a candidate and a reference.

Every number here summarises a tensor without keeping it: the statistics, the smallest tolerance
that would have passed, LSB counts for integer outputs and a histogram of errors in fixed decade
bins. A report over a million-element output is therefore a few hundred bytes, not a dump of the
tensors (Polygraphy's JSON for one sample can run to 137 MB).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from modelport.errors import ConfigError
from modelport.verify.tolerance import Tolerance

__all__ = [
    "HISTOGRAM_BINS",
    "HISTOGRAM_EDGES",
    "OutputDiff",
    "diff_array",
    "diff_outputs",
    "error_histogram",
    "lsb_distance",
    "merge_diffs",
]


@dataclass
class OutputDiff:
    """How one output of a candidate differs from the reference.

    ``required_atol`` is the smallest atol that would have passed at the given rtol (and
    ``required_rtol`` the smallest rtol at the given atol): the number to put in a config.
    Integer outputs also carry ``max_lsb``; every compared output carries ``histogram``.
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
    #: Integer outputs: the largest |candidate - reference| in LSBs (None for float outputs).
    max_lsb: int | None = None
    #: Number of elements that differ at all (NaN against NaN counts as equal).
    differing: int = 0
    #: Counts of |error| in the bins of :data:`HISTOGRAM_BINS` (empty when not compared).
    histogram: list[int] = field(default_factory=list)

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
    *,
    lsb: int = 0,
) -> OutputDiff:
    """Compare one output. NaN/Inf where the reference has none fail the comparison.

    Float outputs must satisfy ``tolerance``; integer and boolean outputs are compared in LSBs
    (units of the last place) and pass when no element differs by more than ``lsb`` — the float
    tolerance does not apply to them, so an off-by-one class id is never "close enough".
    """
    if lsb < 0:
        raise ConfigError(f"the integer tolerance must be >= 0 LSB, got lsb={lsb}")
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
    diff = _float_diff(name, candidate, reference, tolerance)
    if candidate.dtype.kind in "iub":
        _judge_in_lsb(diff, candidate, reference, lsb)
    return diff


def _float_diff(
    name: str,
    candidate: np.ndarray[Any, Any],
    reference: np.ndarray[Any, Any],
    tolerance: Tolerance,
) -> OutputDiff:
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
    required_atol, required_rtol = _required(err_f, ref_abs, tolerance)
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
    nonfinite_differ = ~finite & ~((c == r) | (np.isnan(c) & np.isnan(r)))
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
        differing=int(np.count_nonzero(err_f)) + int(np.count_nonzero(nonfinite_differ)),
        histogram=error_histogram(err_f[finite], nonfinite=int(err_f.size - np.count_nonzero(finite))),
    )


def _required(err: np.ndarray[Any, Any], ref_abs: np.ndarray[Any, Any], tolerance: Tolerance) -> tuple[float, float]:
    """The smallest atol that passes at the given rtol, and the smallest rtol at the given atol."""
    required_atol = _smallest_passing(
        float(np.max(err - tolerance.rtol * ref_abs, initial=0.0)),
        lambda atol: bool(np.all(err <= atol + tolerance.rtol * ref_abs)),
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        need_rtol = np.where(err > tolerance.atol, (err - tolerance.atol) / ref_abs, 0.0)
    required_rtol = _smallest_passing(
        float(np.max(need_rtol, initial=0.0)),
        lambda rtol: bool(np.all(err <= tolerance.atol + rtol * ref_abs)),
    )
    return required_atol, required_rtol


def _judge_in_lsb(diff: OutputDiff, candidate: np.ndarray[Any, Any], reference: np.ndarray[Any, Any], lsb: int) -> None:
    """Re-judge an integer output in LSBs: exact counts, no float rounding, no atol/rtol."""
    distance = lsb_distance(candidate, reference)
    diff.max_lsb = int(distance.max()) if distance.size else 0
    diff.differing = int(np.count_nonzero(distance))
    diff.tolerance = "exact (0 LSB)" if lsb == 0 else f"<= {lsb} LSB"
    diff.passed = diff.max_lsb <= lsb
    if diff.passed:
        diff.reason = "ok"
    else:
        diff.reason = (
            f"{diff.differing} of {distance.size} elements differ, by up to {diff.max_lsb} LSB (allowed {lsb} LSB)"
        )


def lsb_distance(candidate: np.ndarray[Any, Any], reference: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``|candidate - reference|`` of integer (or boolean) arrays as uint64, without overflow.

    Both are taken modulo 2**64; the larger minus the smaller is then exact for every pair of
    int64 or uint64 values (int64 extremes differ by up to 2**64 - 1).
    """
    signed = candidate.dtype.kind == "i"
    wide = np.int64 if signed else np.uint64
    c = candidate.astype(wide)
    r = reference.astype(wide)
    cu = c.astype(np.uint64)
    ru = r.astype(np.uint64)
    return np.where(c >= r, cu - ru, ru - cu)


#: Upper edges of the error histogram's decades: errors in [1e-9, 1e-8), ..., [1e1, 1e2).
HISTOGRAM_EDGES: tuple[float, ...] = tuple(float(f"1e{k}") for k in range(-9, 3))
#: Labels of the histogram's bins, in order (the counts in :attr:`OutputDiff.histogram`).
HISTOGRAM_BINS: tuple[str, ...] = (
    "0",
    "<1e-9",
    *(f"1e{lo}..1e{lo + 1}" for lo in range(-9, 2)),
    ">=1e2",
    "non-finite",
)


def error_histogram(errors: np.ndarray[Any, Any], *, nonfinite: int = 0) -> list[int]:
    """Counts of ``|error|`` in the fixed bins of :data:`HISTOGRAM_BINS`.

    A fixed, log-spaced set of bins keeps every report the same small size (15 integers per
    output, whatever the tensor's size) and comparable between runs. ``nonfinite`` counts the
    elements where either side was NaN or Inf, which have no error value.
    """
    flat = np.abs(np.asarray(errors, dtype=np.float64).ravel())
    zero = int(np.count_nonzero(flat == 0))
    positive = flat[flat > 0]
    decades = np.bincount(np.searchsorted(HISTOGRAM_EDGES, positive, side="right"), minlength=len(HISTOGRAM_EDGES) + 1)
    return [zero, *(int(n) for n in decades), int(nonfinite)]


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
    *,
    lsb: int = 0,
) -> list[OutputDiff]:
    """Compare every output the reference has; an output missing from the candidate fails.

    ``lsb`` is the tolerance of integer outputs, in units of the last place (0: exact).
    """
    diffs = []
    for name, ref in reference.items():
        tol = tolerance[name] if isinstance(tolerance, Mapping) else tolerance
        if name not in candidate:
            diffs.append(_mismatch(name, "missing from the candidate's outputs", ref, tol))
            continue
        diffs.append(diff_array(name, candidate[name], ref, tol, lsb=lsb))
    return diffs


def merge_diffs(diffs: Sequence[OutputDiff]) -> OutputDiff:
    """One output's diffs over many samples folded into one, without keeping any tensor.

    Maxima (errors, needed tolerances, LSBs) are the largest over the samples, counts and the
    histogram are summed, ``mean_abs`` is weighted by element count, and ``cosine`` and
    ``sqnr_db`` are the *worst* sample's — one bad sample is what a verification must show. The
    first failing sample's reason is kept; ``shape`` is the first sample's with axis 0 summed.
    """
    if not diffs:
        raise ConfigError("merge_diffs needs at least one diff")
    names = {d.name for d in diffs}
    if len(names) > 1:
        raise ConfigError(f"merge_diffs merges one output's diffs, got outputs {sorted(names)}")
    first = diffs[0]
    failing = next((d for d in diffs if not d.passed), None)
    sizes = [int(np.prod(d.shape)) if d.shape else 1 for d in diffs]
    total = sum(sizes)
    mean_abs = sum(d.mean_abs * n for d, n in zip(diffs, sizes, strict=True)) / total if total else 0.0
    lsbs = [d.max_lsb for d in diffs if d.max_lsb is not None]
    histogram = [int(x) for x in np.sum([d.histogram for d in diffs if d.histogram], axis=0)] if first.histogram else []
    return OutputDiff(
        first.name,
        failing is None,
        "ok" if failing is None else failing.reason,
        [sum(d.shape[0] for d in diffs if d.shape), *first.shape[1:]] if first.shape else [],
        first.dtype,
        _worst(d.max_abs for d in diffs),
        _worst(d.max_rel for d in diffs),
        mean_abs,
        _worst((d.cosine for d in diffs), largest=False),
        _worst((d.sqnr_db for d in diffs), largest=False),
        sum(d.nan_candidate for d in diffs),
        sum(d.nan_reference for d in diffs),
        sum(d.inf_candidate for d in diffs),
        sum(d.inf_reference for d in diffs),
        _worst(d.required_atol for d in diffs),
        _worst(d.required_rtol for d in diffs),
        first.tolerance,
        max_lsb=max(lsbs) if lsbs else None,
        differing=sum(d.differing for d in diffs),
        histogram=histogram,
    )


def _worst(values: Iterable[float], *, largest: bool = True) -> float:
    """Largest (or smallest) value; NaN (not compared) wins, since nothing can be said."""
    seen = list(values)
    if any(np.isnan(v) for v in seen):
        return float("nan")
    return float(max(seen) if largest else min(seen))
