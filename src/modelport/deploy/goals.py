"""A recipe's goals against what the run measured: each says met or missed, and by how much."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelport.deploy.recipe import Goals

if TYPE_CHECKING:
    from modelport.deploy.job import DeployResult, GoalCheck

__all__ = ["check_goals", "final_bench", "worst_sqnr"]


def final_bench(result: DeployResult) -> list[dict[str, Any]]:
    """The final model's benchmark rows (the other model in the bench is the input FP32)."""
    return [b for b in result.bench if str(b["name"]).startswith("final")]


def worst_sqnr(result: DeployResult) -> float | None:
    report = result.compare.get("report") or {}
    values = [float(d["sqnr_db"]) for r in report.get("runs", []) for d in r.get("outputs", [])]
    return min(values) if values else None


def _check(name: str, goal: float, measured: float | None, *, higher_is_better: bool, unit: str) -> GoalCheck:
    from modelport.deploy.job import GoalCheck

    if measured is None:
        return GoalCheck(name, goal, None, False, f"not measured (goal {goal:g}{unit})")
    passed = measured >= goal if higher_is_better else measured <= goal
    sign = ">=" if higher_is_better else "<="
    if passed:
        return GoalCheck(name, goal, measured, True, f"{measured:.4g}{unit} {sign} {goal:g}{unit}")
    gap = abs(measured - goal)
    relative = f", {gap / abs(goal):.0%}" if goal else ""
    return GoalCheck(
        name,
        goal,
        measured,
        False,
        f"{measured:.4g}{unit} vs goal {sign} {goal:g}{unit}: missed by {gap:.3g}{unit}{relative}",
    )


def check_goals(goals: Goals, result: DeployResult) -> list[GoalCheck]:
    """Every goal the recipe sets, checked against the result."""
    checks = []
    rows = final_bench(result)
    if goals.latency_ms is not None:
        one = [float(b["median_ms"]) for b in rows if b["batch"] == 1]
        checks.append(
            _check("latency_ms", goals.latency_ms, one[0] if one else None, higher_is_better=False, unit=" ms")
        )
    if goals.throughput is not None:
        best = max((float(b["throughput"]) for b in rows), default=None)
        checks.append(_check("throughput", goals.throughput, best, higher_is_better=True, unit=" items/s"))
    if goals.min_sqnr_db is not None:
        checks.append(_check("min_sqnr_db", goals.min_sqnr_db, worst_sqnr(result), higher_is_better=True, unit=" dB"))
    accuracy = result.accuracy or {}
    if goals.accuracy_floor is not None:
        score = accuracy.get("candidate_score")
        checks.append(_check("accuracy_floor", goals.accuracy_floor, score, higher_is_better=True, unit=""))
    if goals.max_accuracy_drop is not None:
        delta = accuracy.get("delta")
        drop = -float(delta) if delta is not None else None
        checks.append(_check("max_accuracy_drop", goals.max_accuracy_drop, drop, higher_is_better=False, unit=""))
    return checks
