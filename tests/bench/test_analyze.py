"""modelport analyze: the search on synthetic landscapes, config writing, the CLI, and one real run.

The search logic is driven by a fake measurement (a known landscape over the knobs), so the tests
know the optimum and never time anything. One test runs the real thing end to end: the server as
a process and the loadtest, on a tiny model with two candidates and short windows.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from collections import Counter
from pathlib import Path

import onnx_ir as ir
import pytest
import yaml

import modelport.bench.analyze as analyze_module
from modelport.bench.analyze import (
    AnalysisResult,
    Candidate,
    Constraints,
    Measurement,
    ModelLoad,
    ModelSettings,
    ModelSpace,
    ServerMeasure,
    analyze,
    apply_best,
    best_of,
    better,
    grid,
    judge,
    neighbours,
    pareto_front,
    peak_rss_mb,
    pin_threads,
    search,
    stage_repository,
    thread_use,
    with_settings,
)
from modelport.cli import analyze as analyze_cli
from modelport.errors import BackendError, ConfigError, ModelSaveError, RepositoryError
from modelport.ir.serde import save
from modelport.report import write_text_atomic
from modelport.serve.repository import ModelRepository, read_config

CORES = 4
#: Throughput multipliers of the synthetic landscape (known optimum: both models batching at 1 ms
#: with max batch 8; model a on 2 instances × 1 thread, model b on 1 instance × 2 threads).
BATCHING = {None: 1.0, 0.0: 1.3, 1.0: 1.5, 5.0: 1.2}
MAX_BATCH = {4: 1.0, 8: 1.1}
COMPUTE = {
    "a": {(1, 1): 1.0, (1, 2): 1.6, (2, 1): 1.9, (2, 2): 3.0},
    "b": {(1, 1): 1.0, (1, 2): 1.9, (2, 1): 1.6, (2, 2): 3.0},
}
BASE = {"a": 100.0, "b": 50.0}
OPTIMUM = Candidate.of(
    {
        "a": ModelSettings(max_batch_size=8, batching_delay_ms=1.0, instance_count=2, intra_op_threads=1),
        "b": ModelSettings(max_batch_size=8, batching_delay_ms=1.0, instance_count=1, intra_op_threads=2),
    }
)
DEFAULT = Candidate.of({"a": ModelSettings(), "b": ModelSettings()})


@pytest.fixture(autouse=True)
def four_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """analyze() sizes the search to the machine; these tests assume 4 cores wherever they run."""
    monkeypatch.setattr(analyze_module, "cpu_count", lambda: CORES)


class Landscape:
    """A fake measurement: throughput is a product of known factors, p99 grows with the delay,
    memory with the instances. Counts the calls per candidate."""

    def __init__(self) -> None:
        self.calls: Counter[Candidate] = Counter()

    def __call__(self, candidate: Candidate) -> Measurement:
        self.calls[candidate] += 1
        pinned = pin_threads(candidate, CORES)
        loads = {}
        for name, s in pinned.models:
            assert s.intra_op_threads is not None
            factor = BATCHING[s.batching_delay_ms]
            if s.batching_delay_ms is not None:
                factor *= MAX_BATCH[s.max_batch_size]
            throughput = BASE[name] * factor * COMPUTE[name][s.instance_count, s.intra_op_threads]
            p99 = 10.0 + 2 * (s.batching_delay_ms or 0.0)
            loads[name] = ModelLoad(throughput=throughput, p50_ms=p99 / 2, p99_ms=p99, requests=int(throughput))
        instances = sum(s.instance_count for _, s in candidate.models)
        return Measurement(candidate, loads, memory_mb=100.0 + 50.0 * instances)


def spaces(
    batching: tuple[float | None, ...] = (None, 0.0, 1.0, 5.0), max_batch: tuple[int, ...] = (4, 8)
) -> dict[str, ModelSpace]:
    return {
        name: ModelSpace(instances=(1, 2), threads=(1, 2), batching=batching, max_batch=max_batch, concurrency=8)
        for name in ("a", "b")
    }


def measured(tp: float, p99: float, *, failure: str | None = None, errors: int = 0) -> Measurement:
    """A judged measurement of one model 'm' with the given numbers (a distinct candidate each)."""
    candidate = Candidate.of({"m": ModelSettings(max_batch_size=int(tp * 1000 + p99))})
    if failure is not None:
        return judge(Measurement(candidate, failure=failure), Constraints())
    load = ModelLoad(throughput=tp, p50_ms=p99 / 2, p99_ms=p99, requests=100, errors=errors)
    return judge(Measurement(candidate, {"m": load}, memory_mb=10.0), Constraints())


# the search ------------------------------------------------------------------------------------
def test_quick_climbs_to_the_known_optimum_measuring_each_candidate_once() -> None:
    landscape = Landscape()
    outcome = search(DEFAULT, spaces(), landscape, mode="quick", cores=CORES)
    best = best_of(outcome.measurements)
    assert best is not None and best.candidate == OPTIMUM
    assert outcome.path[0] == DEFAULT and outcome.path[-1] == OPTIMUM
    assert max(landscape.calls.values()) == 1
    assert len({pin_threads(c, CORES) for c in landscape.calls}) == len(landscape.calls)  # no equivalent pair
    # hill climbing measures far fewer candidates than the grid holds
    assert len(outcome.measurements) < len(grid(spaces(), cores=CORES)) / 3
    expected = 100 * 1.65 * 1.9 + 50 * 1.65 * 1.9
    assert best.throughput == pytest.approx(expected, rel=1e-12)


def test_exhaustive_measures_every_grid_point_and_agrees_with_quick() -> None:
    small = spaces(batching=(None, 1.0), max_batch=(8,))
    full = grid(small, cores=CORES)
    # per model: batching off or 1 ms (x2); (instances, threads) pairs within 4 cores over both
    # models: a in {1x1, 1x2, 2x1} and b likewise, minus pairs using more than 4 threads -> 9
    assert len(full) == 2 * 2 * 9
    landscape = Landscape()
    outcome = search(DEFAULT, small, landscape, mode="exhaustive", cores=CORES)
    # the grid point that is the default with its threads spelled out is measured once, as the default
    assert set(landscape.calls) == {*full, DEFAULT} - {pin_threads(DEFAULT, CORES)}
    assert set(landscape.calls.values()) == {1}
    best = best_of(outcome.measurements)
    assert best is not None and best.candidate == OPTIMUM
    quick = best_of(search(DEFAULT, small, Landscape(), mode="quick", cores=CORES).measurements)
    assert quick is not None and quick.candidate == OPTIMUM


def test_exhaustive_cap_measures_an_evenly_spaced_subset_and_says_so() -> None:
    small = spaces(batching=(None, 1.0), max_batch=(8,))
    landscape = Landscape()
    outcome = search(DEFAULT, small, landscape, mode="exhaustive", cores=CORES, max_candidates=10)
    assert len(outcome.measurements) == 10 and outcome.measurements[0].candidate == DEFAULT
    assert any("the grid has 36 candidates; measured 9 of them, evenly spaced" in n for n in outcome.notes)


def test_quick_cap_stops_the_climb_and_says_so() -> None:
    outcome = search(DEFAULT, spaces(), Landscape(), mode="quick", cores=CORES, max_candidates=3)
    assert len(outcome.measurements) == 3
    assert outcome.notes == ["hill climbing stopped at the limit of 3 candidates before converging"]


def test_constraints_exclude_violators() -> None:
    # the p99 budget rules out the 1 ms and 5 ms delays (p99 12 and 20 ms): 0 ms wins
    outcome = search(DEFAULT, spaces(), Landscape(), mode="quick", cores=CORES, constraints=Constraints(p99_ms=11))
    best = best_of(outcome.measurements)
    assert best is not None
    assert [best.candidate[n].batching_delay_ms for n in ("a", "b")] == [0.0, 0.0]
    violators = [m for m in outcome.measurements if not m.feasible]
    assert violators and all("p99 12.00 ms > 11 ms" in "; ".join(m.violations) for m in violators if m.p99_ms == 12)
    assert all(m.p99_ms <= 11 for m in outcome.measurements if m.feasible)


def test_memory_and_throughput_constraints() -> None:
    small = spaces(batching=(None, 1.0), max_batch=(8,))
    outcome = search(
        DEFAULT, small, Landscape(), mode="exhaustive", cores=CORES, constraints=Constraints(max_memory_mb=220)
    )
    best = best_of(outcome.measurements)
    assert best is not None and best.memory_mb is not None and best.memory_mb <= 220
    assert sum(s.instance_count for _, s in best.candidate.models) == 2
    assert any("server memory 250 MiB > 220 MiB" in m.violations for m in outcome.measurements)
    none = search(
        DEFAULT, small, Landscape(), mode="exhaustive", cores=CORES, constraints=Constraints(min_throughput=1e6)
    )
    assert best_of(none.measurements) is None
    assert "b: 95.0 infer/s < 1e+06" in none.measurements[0].violations  # 1 x 2 threads: the server budget


def test_thread_budget_is_respected_unless_oversubscription_is_allowed() -> None:
    for mode in ("quick", "exhaustive"):
        outcome = search(DEFAULT, spaces(), Landscape(), mode=mode, cores=CORES)
        assert all(thread_use(m.candidate, CORES) <= CORES for m in outcome.measurements)
    over = grid(spaces(batching=(None,)), cores=CORES, allow_oversubscribe=True)
    assert max(thread_use(c, CORES) for c in over) == 8
    # an over-budget default is still measured, and said to be
    greedy = Candidate.of({n: ModelSettings(instance_count=2, intra_op_threads=2) for n in ("a", "b")})
    outcome = search(greedy, spaces(), Landscape(), mode="quick", cores=CORES)
    assert outcome.measurements[0].candidate == greedy
    assert "runs 8 threads on 4 cores" in outcome.notes[0]
    assert all(thread_use(m.candidate, CORES) <= CORES for m in outcome.measurements[1:])


def test_neighbours_move_one_knob_and_fit_more_instances_into_the_cores() -> None:
    start = pin_threads(DEFAULT, CORES)  # 2 threads each: the server's budget for 2 instances on 4 cores
    assert [s.intra_op_threads for _, s in start.models] == [2, 2]
    steps = neighbours(DEFAULT, spaces(), cores=CORES)
    changed = [[n for n in ("a", "b") if step[n] != start[n]] for step in steps]
    assert all(len(c) == 1 for c in changed)
    # batching on (max batch: the largest that 8 clients fill), threads down, and one more
    # instance of a with its threads lowered to fit: 2 x 1 + 1 x 2 = 4 cores
    assert steps[0]["a"] == ModelSettings(max_batch_size=8, batching_delay_ms=0.0, instance_count=1, intra_op_threads=2)
    assert ModelSettings(0, None, 2, 1) in [s["a"] for s in steps]
    assert all(thread_use(s, CORES) <= CORES for s in steps)


def test_pareto_front_on_synthetic_points() -> None:
    points = [
        measured(100, 10),
        measured(120, 12),
        measured(110, 15),  # dominated by (120, 12)
        measured(90, 9),
        measured(80, 11),  # dominated by (90, 9)
        measured(120, 13),  # dominated by (120, 12)
        measured(0, 0, failure="server exited"),
    ]
    front = pareto_front(points)
    assert [(m.throughput, m.p99_ms) for m in front] == [(90, 9), (100, 10), (120, 12)]


def test_better_and_best_of_treat_noise_as_a_tie_and_prefer_lower_p99() -> None:
    assert better(measured(110, 10), measured(100, 10))
    assert not better(measured(102, 10), measured(100, 10))  # within 3 %: noise
    assert better(measured(99, 8), measured(100, 10))  # a tie on throughput, clearly lower p99
    assert better(measured(10, 100), measured(100, 10, errors=1))  # feasible beats failing requests
    assert better(measured(1, 1, errors=1), measured(0, 0, failure="x"))  # a violator beats a failure
    best = best_of([measured(100, 10), measured(101, 15), measured(50, 1)])
    assert best is not None and (best.throughput, best.p99_ms) == (100, 10)
    assert best_of([measured(1, 1, errors=2)]) is None


def test_judge_names_each_violation() -> None:
    load = ModelLoad(throughput=50, p50_ms=5, p99_ms=30, requests=98, errors=2)
    m = Measurement(Candidate.of({"m": ModelSettings()}), {"m": load}, memory_mb=300)
    judged = judge(m, Constraints(p99_ms=20, min_throughput=100, max_memory_mb=200))
    assert judged.violations == (
        "m: 2 of 100 requests failed",
        "m: p99 30.00 ms > 20 ms",
        "m: 50.0 infer/s < 100",
        "server memory 300 MiB > 200 MiB",
    )
    assert judged.excess == pytest.approx(1 + 0.5 + 0.5 + 0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"instances": (0,)}, r"the instances to search \[0\] must be integers >= 1"),
        ({"threads": ()}, r"the threads to search \[\] must be integers >= 1"),
        ({"batching": (None, -1.0)}, r"must be 'off' or 0\.\.60000 ms"),
        ({"max_batch": (1, 8)}, r"max batch sizes to search \[1, 8\] must be 2 or more"),
    ],
)
def test_bad_search_space(kwargs: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"instances": (1,), "threads": (1,), "batching": (None, 0.0), "max_batch": (8,)}
    values.update(kwargs)
    with pytest.raises(ConfigError, match=message):
        ModelSpace(**values)  # type: ignore[arg-type]


def test_bad_constraints_and_search_options() -> None:
    with pytest.raises(ConfigError, match="the p99 budget must be a positive number, got -1"):
        Constraints(p99_ms=-1)
    with pytest.raises(ConfigError, match="the memory limit must be a positive number, got nan"):
        Constraints(max_memory_mb=float("nan"))
    with pytest.raises(ConfigError, match="unknown search mode 'grid'"):
        search(DEFAULT, spaces(), Landscape(), mode="grid", cores=CORES)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_candidates must be 1 or more, got 0"):
        search(DEFAULT, spaces(), Landscape(), cores=CORES, max_candidates=0)
    with pytest.raises(ConfigError, match=r"the default configures \['a'\] but the search space has"):
        search(Candidate.of({"a": ModelSettings()}), spaces(), Landscape(), cores=CORES)


def test_a_default_that_cannot_be_measured_stops_the_search() -> None:
    def broken(candidate: Candidate) -> Measurement:
        raise BackendError("the server exited with code 1")

    with pytest.raises(ConfigError, match=r"own configuration could not be measured.*the server exited with code 1"):
        search(DEFAULT, spaces(), broken, cores=CORES)


def test_a_candidate_that_fails_is_recorded_and_never_chosen() -> None:
    landscape = Landscape()

    def flaky(candidate: Candidate) -> Measurement:
        if candidate["a"].instance_count == 2:
            raise BackendError("out of memory")
        return landscape(candidate)

    outcome = search(DEFAULT, spaces(), flaky, mode="quick", cores=CORES)
    failed = [m for m in outcome.measurements if not m.ok]
    assert failed and failed[0].violations == ("not measured: out of memory",)
    best = best_of(outcome.measurements)
    assert best is not None and best.candidate["a"].instance_count == 1


# configuration files ---------------------------------------------------------------------------
def tiny_model(batch: str = "batch") -> ir.Model:
    return ir.from_onnx_text(
        f"""
        <ir_version: 10, opset_import: ["" : 21]>
        tiny (float[{batch}, 4] x) => (float[{batch}, 4] y)
        {{
            y = Add(x, x)
        }}
        """
    )


USER_YAML = """\
# tuned by hand
max_batch_size: 16
max_queue_size: 32
timeout_ms: 500
graph_optimization: basic
dynamic_batching:
  max_queue_delay_ms: 3
  preferred_batch_sizes: [4, 16]
"""
PBTXT = """\
name: "b"
platform: "onnxruntime_onnx"
max_batch_size: 8
instance_group [ { count: 2, kind: KIND_CPU } ]
dynamic_batching { max_queue_delay_microseconds: 500 }
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """REPO/a (config.yaml with user keys), REPO/b (Triton config.pbtxt), REPO/fixed (static batch)."""
    root = tmp_path / "repo"
    save(tiny_model(), root / "a" / "1" / "model.onnx")
    (root / "a" / "config.yaml").write_text(USER_YAML, encoding="utf-8")
    save(tiny_model(), root / "b" / "1" / "model.onnx")
    (root / "b" / "config.pbtxt").write_text(PBTXT, encoding="utf-8")
    save(tiny_model("1"), root / "fixed" / "1" / "model.onnx")
    return root


def test_with_settings_keeps_the_users_other_keys() -> None:
    raw = yaml.safe_load(USER_YAML)
    merged = with_settings(raw, ModelSettings(8, 1.0, 2, 1), where="a")
    assert merged == {
        "max_queue_size": 32,
        "timeout_ms": 500,
        "graph_optimization": "basic",
        "max_batch_size": 8,
        "dynamic_batching": {"max_queue_delay_ms": 1.0, "preferred_batch_sizes": [4]},
        "instance_count": 2,
        "intra_op_threads": 1,
    }
    off = with_settings({**raw, "intra_op_threads": 2}, ModelSettings(16, None, 1, None), where="a")
    assert "dynamic_batching" not in off and "intra_op_threads" not in off and off["max_batch_size"] == 16
    assert with_settings({}, ModelSettings(), where="a") == {}
    with pytest.raises(ConfigError, match=r"the settings batching b1/0ms.* do not make a valid config for a"):
        with_settings({}, ModelSettings(1, 0.0, 1, None), where="a")


def test_stage_repository_links_models_and_writes_each_config(repo: Path, tmp_path: Path) -> None:
    candidate = Candidate.of({"a": ModelSettings(8, 0.0, 2, 1), "b": ModelSettings(4, None, 1, 2)})
    staged = stage_repository(repo, tmp_path / "staged", candidate)
    assert sorted(p.name for p in staged.iterdir()) == ["a", "b"]  # only the analyzed models
    source, copy = repo / "a" / "1" / "model.onnx", staged / "a" / "1" / "model.onnx"
    assert os.stat(source).st_ino == os.stat(copy).st_ino  # hard-linked, not copied
    a = read_config(staged / "a")
    assert (a.max_batch_size, a.instance_count, a.intra_op_threads) == (8, 2, 1)
    assert a.dynamic_batching is not None and a.dynamic_batching.max_queue_delay_ms == 0
    assert (a.max_queue_size, a.timeout_ms, a.graph_optimization) == (32, 500, "basic")
    assert not (staged / "b" / "config.pbtxt").exists()
    b = read_config(staged / "b")
    assert (b.name, b.max_batch_size, b.instance_count, b.intra_op_threads, b.dynamic_batching) == ("b", 4, 1, 2, None)
    assert (repo / "b" / "config.pbtxt").read_text(encoding="utf-8") == PBTXT
    assert ModelRepository(staged).models == ["a", "b"]


def fake_result(repo: Path, best: Candidate | None) -> AnalysisResult:
    default = Candidate.of({"a": ModelSettings(16, 3.0, 1, None), "b": ModelSettings(8, 0.5, 2, None)})
    m = Landscape()
    del m  # the numbers do not matter for writing configs
    load = ModelLoad(throughput=10, p50_ms=1, p99_ms=2, requests=10)
    default_m = judge(Measurement(default, {"a": load, "b": load}), Constraints())
    best_m = judge(Measurement(best, {"a": load, "b": load}), Constraints()) if best is not None else None
    return AnalysisResult(
        repo=str(repo),
        mode="quick",
        cores=2,
        concurrency={"a": 4, "b": 4},
        constraints=Constraints(),
        default=default_m,
        measurements=[default_m] + ([best_m] if best_m is not None else []),
        best=best_m,
        pareto=[],
    )


def test_apply_writes_config_yaml_and_refuses_to_overwrite_a_pbtxt(repo: Path) -> None:
    best = Candidate.of({"a": ModelSettings(8, 1.0, 2, 1), "b": ModelSettings(8, None, 1, 1)})
    applied = apply_best(repo, fake_result(repo, best))
    a, b = applied
    assert (a.path, a.suggested) == (repo / "a" / "config.yaml", False)
    text = a.path.read_text(encoding="utf-8")
    assert text.startswith("# written by `modelport analyze`") and "# tuned by hand" not in text
    config = read_config(repo / "a")
    assert (config.max_batch_size, config.instance_count, config.intra_op_threads) == (8, 2, 1)
    assert (config.max_queue_size, config.timeout_ms, config.graph_optimization) == (32, 500, "basic")
    assert (b.path, b.suggested) == (repo / "b" / "config.yaml.suggested", True)
    assert "not applied — it is configured by" in b.message and "rename it to config.yaml" in b.message
    assert (repo / "b" / "config.pbtxt").read_text(encoding="utf-8") == PBTXT
    assert not (repo / "b" / "config.yaml").exists()
    suggested = yaml.safe_load(b.path.read_text(encoding="utf-8"))
    assert suggested["instance_count"] == 1 and "dynamic_batching" not in suggested
    assert ModelRepository(repo).models == ["a", "b", "fixed"]  # still a valid repository
    assert sorted(p.name for p in (repo / "a").iterdir()) == ["1", "config.yaml"]  # no temp file left


def test_apply_with_nothing_feasible_is_refused(repo: Path) -> None:
    with pytest.raises(ConfigError, match="no candidate met the constraints, so there is nothing to apply"):
        apply_best(repo, fake_result(repo, None))


def test_applied_config_leaves_the_old_file_when_the_replace_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "config.yaml"
    target.write_text("old: 1\n", encoding="utf-8")

    def fail(source: str, destination: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(ModelSaveError, match="disk full"):
        write_text_atomic(target, "new: 2\n")
    assert target.read_text(encoding="utf-8") == "old: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


# analyze() and the CLI with a fake measurement -------------------------------------------------
class FakeServerMeasure:
    """Stands in for ServerMeasure: the landscape of model 'a', scaled for any model name."""

    def __init__(self, repo: Path, concurrency: dict[str, int], *, window_s: float, max_windows: int) -> None:
        self.concurrency = concurrency

    def __call__(self, candidate: Candidate) -> Measurement:
        loads = {}
        for name, s in candidate.models:
            factor = BATCHING.get(s.batching_delay_ms, 1.1) * (
                s.max_batch_size if s.batching_delay_ms is not None else 1
            )
            loads[name] = ModelLoad(throughput=10 * factor, p50_ms=1, p99_ms=2 + (s.batching_delay_ms or 0), requests=9)
        return Measurement(candidate, loads, memory_mb=120.0)


def test_analyze_builds_each_models_space_and_reports(repo: Path, tmp_path: Path) -> None:
    seen: list[Measurement] = []
    result = analyze(
        repo,
        models=["a", "fixed"],
        concurrency={"a": 4, "fixed": 2},
        instances=[1],
        threads=[1],
        batching=[None, 0.0, 1.0],
        max_batch=[4],
        measure=FakeServerMeasure(repo, {}, window_s=1, max_windows=1),
        progress=seen.append,
    )
    assert result.notes == ["fixed: an input has no dynamic batch axis, so batching is not searched"]
    assert result.default.candidate["a"] == ModelSettings(16, 3.0, 1, None)
    assert result.best is not None and result.best.candidate["fixed"].batching_delay_ms is None
    # max batch kept at 16, delay 1 ms; threads: the 2 the server gives each of 2 instances on 4 cores
    assert result.best.candidate["a"] == ModelSettings(16, 1.0, 1, 2)
    assert all(m.candidate["fixed"].batching_delay_ms is None for m in result.measurements)
    assert result.confirmation is not None and result.comparison == result.confirmation
    assert result.confirmed is True
    assert len(seen) == len(result.measurements) + 2  # the confirmation is reported too
    assert result.gain == pytest.approx(result.confirmation[1].throughput / result.confirmation[0].throughput)
    data = json.loads(result.to_json())
    assert data["best"]["label"] == result.best.candidate.label and len(data["candidates"]) == len(seen) - 2
    html = result.to_html()
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and "<polyline" in html and "<script" not in html
    result.write_html(tmp_path / "report.html")
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == html


def test_a_best_that_does_not_hold_up_when_measured_again_is_not_applied(repo: Path) -> None:
    calls: list[Candidate] = []

    def drifting(candidate: Candidate) -> Measurement:
        """The default measures 10 infer/s at first, 30 once the machine quietens; the others 20."""
        calls.append(candidate)
        tp = 20.0 if candidate != calls[0] else (10.0 if len(calls) == 1 else 30.0)
        return Measurement(candidate, {"a": ModelLoad(throughput=tp, p50_ms=1, p99_ms=2, requests=9)}, memory_mb=1)

    result = analyze(repo, models=["a"], instances=[1], threads=[1], batching=[None, 0.0], measure=drifting)
    assert result.best is not None and result.best.candidate != calls[0]
    assert result.confirmed is False and result.gain == pytest.approx(20 / 30)
    assert "did not hold up (20.0 against 30.0 infer/s)" in result.notes[-1]
    with pytest.raises(ConfigError, match=r"not applied: measured again next to the default, .* made 0\.67×"):
        apply_best(repo, result)
    assert read_config(repo / "a").max_batch_size == 16  # untouched
    (applied,) = apply_best(repo, result, force=True)
    assert not applied.suggested and read_config(repo / "a").max_queue_size == 32


def test_a_pipeline_models_batching_is_kept(repo: Path) -> None:
    save(tiny_model(), repo / "p" / "1" / "model.onnx")
    (repo / "p" / "config.yaml").write_text(
        "max_batch_size: 4\ndynamic_batching: {max_queue_delay_ms: 2}\n"
        "pipeline:\n  postprocess:\n    - {kind: classification, top_k: 2}\n",
        encoding="utf-8",
    )
    result = analyze(
        repo,
        models=["p"],
        instances=[1, 2],
        threads=[1],
        mode="exhaustive",
        measure=FakeServerMeasure(repo, {}, window_s=1, max_windows=1),
    )
    assert result.notes == ["p: has a pipeline; its batching is kept as configured and not searched"]
    assert {(m.candidate["p"].max_batch_size, m.candidate["p"].batching_delay_ms) for m in result.measurements} == {
        (4, 2.0)
    }
    assert {m.candidate["p"].instance_count for m in result.measurements} == {1, 2}


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"models": ["nope"]}, RepositoryError, r"model\(s\) \['nope'\] are not served from repository"),
        ({"models": []}, ConfigError, "no model to analyze"),
        ({"concurrency": {"a": 2, "zzz": 3}}, ConfigError, r"concurrency is given for \['zzz'\], which are not"),
        ({"concurrency": {"b": 2}}, ConfigError, r"no concurrency for model\(s\) \['a'\]"),
        ({"concurrency": 0}, ConfigError, r"concurrency must be 1 or more clients, got \{'a': 0, 'b': 0\}"),
    ],
)
def test_analyze_option_errors(repo: Path, kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    options: dict[str, object] = {
        "models": ["a", "b"],
        "measure": FakeServerMeasure(repo, {}, window_s=1, max_windows=1),
    }
    options.update(kwargs)
    with pytest.raises(error, match=message):
        analyze(repo, **options)  # type: ignore[arg-type]


def test_analyze_needs_a_repository_folder(repo: Path) -> None:
    with pytest.raises(ConfigError, match=r"analyze needs a model repository folder, got .*model\.onnx"):
        analyze(repo / "a" / "1" / "model.onnx")


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    analyze_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["analyze", *argv])
    code: int = args.run(args)
    return code


def test_cli_search_apply_and_reports(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(analyze_module, "ServerMeasure", FakeServerMeasure)
    html, data = tmp_path / "r.html", tmp_path / "r.json"
    argv = ["--model", "a", "--concurrency", "a=4", "--instances", "1", "--threads", "1", "--batching", "off,0,1"]
    code = run_cli([str(repo), *argv, "--max-batch", "4,16", "--p99-ms", "50", "--apply", "--html", str(html)])
    assert code == 0
    out = capsys.readouterr().out
    assert "gain" in out and f"wrote {repo / 'a' / 'config.yaml'}" in out
    assert "<svg" in html.read_text(encoding="utf-8")
    assert read_config(repo / "a").dynamic_batching is not None
    code = run_cli([str(repo), *argv, "--json", "--json-file", str(data), "--search", "exhaustive", "--no-confirm"])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["mode"] == "exhaustive" and printed["applied"] == []
    assert json.loads(data.read_text(encoding="utf-8"))["best"] == printed["best"]
    # nothing meets the constraint: exit code 1, and --apply refuses
    with pytest.raises(ConfigError, match="nothing to apply"):
        run_cli([str(repo), *argv, "--min-throughput", "1e9", "--apply"])
    assert run_cli([str(repo), *argv, "--min-throughput", "1e9"]) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--concurrency", "a=x"], r"--concurrency 'a=x' must be one number of clients >= 1"),
        (["--concurrency", "0"], r"--concurrency '0' must be one number"),
        (["--concurrency", "4,8"], r"--concurrency '4,8' must be one number"),
        (["--batching", "off,soon"], r"--batching 'off,soon' must list 'off' and/or queue delays in ms.*got 'soon'"),
        (["--instances", "0"], r"--instances '0' must list sizes >= 1"),
        (["--window", "0"], r"--window must be positive seconds, got 0\.0"),
        (["--p99-ms", "-3"], r"the p99 budget must be a positive number, got -3\.0"),
    ],
)
def test_cli_option_errors(repo: Path, argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analyze_module, "ServerMeasure", FakeServerMeasure)
    with pytest.raises(ConfigError, match=message):
        run_cli([str(repo), "--model", "a", *argv])


def test_cli_parsers() -> None:
    assert analyze_cli.parse_concurrency("8") == 8
    assert analyze_cli.parse_concurrency("a=4, b=8") == {"a": 4, "b": 8}
    assert analyze_cli.parse_batching("off, 0,2.5") == [None, 0.0, 2.5]


# the real server -------------------------------------------------------------------------------
def test_peak_rss_from_proc() -> None:
    rss = peak_rss_mb(os.getpid())
    assert rss is not None and rss > 1
    assert peak_rss_mb(2**22 + 12345) is None  # beyond pid_max: no such process


def test_server_measure_options_and_a_server_that_cannot_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the measurement window must be positive, got 0 s"):
        ServerMeasure(tmp_path, {}, window_s=0)
    with pytest.raises(ConfigError, match="max_windows must be 1 or more, got 0"):
        ServerMeasure(tmp_path, {}, max_windows=0)
    broken = tmp_path / "broken"
    (broken / "m" / "1").mkdir(parents=True)
    (broken / "m" / "1" / "model.onnx").write_bytes(b"not an onnx model")
    measure = ServerMeasure(broken, {"m": 1}, window_s=0.1, max_windows=1)
    with pytest.raises(
        BackendError, match=r"(?s)the server for this candidate exited with code \d+ before it was ready"
    ):
        measure(Candidate.of({"m": ModelSettings()}))


@pytest.mark.skipif(
    importlib.util.find_spec("modelport.bench.loadtest") is None,
    reason="modelport.bench.loadtest (the load generator analyze measures with) is not in this tree yet",
)
def test_end_to_end_with_the_real_server_and_loadtest(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    save(tiny_model(), root / "tiny" / "1" / "model.onnx")
    (root / "tiny" / "config.yaml").write_text("intra_op_threads: 1\nmax_queue_size: 16\n", encoding="utf-8")
    result = analyze(
        root,
        concurrency=2,
        mode="exhaustive",
        instances=[1],
        threads=[1],
        batching=[None, 0.0],
        max_batch=[4],
        window_s=0.2,
        max_windows=1,
        confirm=False,
    )
    assert [m.candidate["tiny"] for m in result.measurements] == [
        ModelSettings(0, None, 1, 1),
        ModelSettings(4, 0.0, 1, 1),
    ]
    for m in result.measurements:
        assert m.ok and m.feasible, m.violations
        load = m.loads["tiny"]
        assert load.requests > 0 and load.throughput > 0 and 0 < load.p50_ms <= load.p99_ms
        assert m.memory_mb is not None and m.memory_mb > 10
    # the server ran each candidate's config.yaml: batches of one without batching, at most 4 with it
    off, on = (m.loads["tiny"].batch_sizes for m in result.measurements)
    assert set(off) == {1}
    assert on and max(on) <= 4
    assert result.best is not None and result.pareto
