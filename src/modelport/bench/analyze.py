"""Capacity search: the serving configuration that gets the most out of a machine several models share.

What model_analyzer does for Triton, for a modelport repository. A *candidate* is one set of
serving settings per model — dynamic batching off or on with a queue delay, the largest batch,
the instance count and the intra-op threads of each instance. Each candidate is measured for
real: the repository is copied to a temporary folder (model files hard-linked, each model's
config.yaml rewritten with the candidate's settings and the user's other keys kept), the server
(:func:`modelport.serve.server.run_server`) is started as its own process on a free port, and one
:func:`modelport.bench.loadtest.loadtest` per model drives *all models at once*, each at its own
concurrency, so the models contend for the cores as they will in production (models of the
repository that are not analyzed are left out). Every loadtest runs the same number of windows,
so the load overlaps for the whole measurement; figures come from the last three. The server's
peak resident memory (``VmHWM``) is read from ``/proc`` before it is stopped with SIGTERM.

Why a search and not a formula: batching, instances and threads interact with the model's cost,
the client concurrency and the other models on the machine, and the only trustworthy number is
a measured one. Two strategies:

* ``quick`` — hill climbing from the repository's own configuration: one knob of one model moves
  one step at a time; a move is kept when it improves the objective, and the search stops when no
  neighbour improves. Cheap (tens of candidates), may stop at a local optimum.
* ``exhaustive`` — the full grid (optionally capped: an evenly spaced subset, said so in the
  notes).

Objective: the total throughput of all models, subject to the constraints (each model's p99
latency under a budget, each model's throughput over a minimum, the server's memory under a cap,
no failed request); within ``min_gain`` (measurement noise) the lower p99 wins. A candidate that
violates a constraint is never chosen; between two violators, the one that violates less is the
better place to climb from. Candidates never use more threads (instances × intra-op threads,
summed over the models) than the machine has cores unless asked (``allow_oversubscribe``), since
oversubscribed ONNX Runtime thread pools spin against each other.

The result holds every candidate's numbers, the Pareto front of throughput against p99 (over
every measured candidate), the best candidate and the default's numbers, measured again back to
back with the best so that drift does not flatter the winner (a best that does not hold up is
said so, and not applied); it is written as JSON and as a self-contained HTML page with an inline
SVG scatter, and :func:`apply_best` writes the winning settings into the repository.

Total throughput adds the models' inferences/s, so it favours a cheap model over an expensive
one; ``min_throughput`` keeps each model above a floor.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from html import escape
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

from modelport.errors import BackendError, ConfigError, ModelportError, RepositoryError
from modelport.report import write_text_atomic
from modelport.serve.pbtxt import read_triton_config
from modelport.serve.repository import ModelConfig, ModelRepository, read_config
from modelport.system import cpu_count

__all__ = [
    "AnalysisResult",
    "AppliedConfig",
    "Candidate",
    "Constraints",
    "Measure",
    "Measurement",
    "ModelLoad",
    "ModelSettings",
    "ModelSpace",
    "ServerMeasure",
    "analyze",
    "apply_best",
    "best_of",
    "better",
    "grid",
    "neighbours",
    "pareto_front",
    "pin_threads",
    "search",
    "stage_repository",
    "thread_use",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
TRITON_CONFIG_FILE = "config.pbtxt"
SUGGESTED_FILE = "config.yaml.suggested"
#: The config.yaml keys the search owns; every other key of the user's config is kept as written.
SEARCHED_KEYS = ("max_batch_size", "dynamic_batching", "instance_count", "intra_op_threads")
Mode = Literal["quick", "exhaustive"]
KNOBS = ("batching", "max_batch", "instances", "threads")


# ---------------------------------------------------------------------------------------------
# What is searched
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSettings:
    """The searched settings of one model. ``batching_delay_ms`` None: dynamic batching off;
    ``intra_op_threads`` None: the server divides the cores among the instances."""

    max_batch_size: int = 0
    batching_delay_ms: float | None = None
    instance_count: int = 1
    intra_op_threads: int | None = None

    @property
    def label(self) -> str:
        batching = "off" if self.batching_delay_ms is None else f"b{self.max_batch_size}/{self.batching_delay_ms:g}ms"
        threads = "auto" if self.intra_op_threads is None else str(self.intra_op_threads)
        return f"batching {batching}, {self.instance_count} inst × {threads} thr"

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_batch_size": self.max_batch_size,
            "dynamic_batching": self.batching_delay_ms is not None,
            "max_queue_delay_ms": self.batching_delay_ms,
            "instance_count": self.instance_count,
            "intra_op_threads": self.intra_op_threads,
        }

    @classmethod
    def from_config(cls, config: ModelConfig) -> ModelSettings:
        batching = config.dynamic_batching
        return cls(
            max_batch_size=config.max_batch_size,
            batching_delay_ms=batching.max_queue_delay_ms if batching is not None else None,
            instance_count=config.instance_count,
            intra_op_threads=config.intra_op_threads,
        )


@dataclass(frozen=True)
class Candidate:
    """One configuration of every analyzed model (hashable: the search memoizes measurements)."""

    models: tuple[tuple[str, ModelSettings], ...]

    @classmethod
    def of(cls, settings: Mapping[str, ModelSettings]) -> Candidate:
        return cls(tuple(settings.items()))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.models]

    def __getitem__(self, name: str) -> ModelSettings:
        for model, settings in self.models:
            if model == name:
                return settings
        raise KeyError(name)

    def with_model(self, name: str, settings: ModelSettings) -> Candidate:
        return Candidate(tuple((m, settings if m == name else s) for m, s in self.models))

    @property
    def label(self) -> str:
        return " | ".join(f"{name}: {settings.label}" for name, settings in self.models)

    def to_dict(self) -> dict[str, Any]:
        return {name: settings.to_dict() for name, settings in self.models}


@dataclass(frozen=True)
class ModelSpace:
    """The values one model's knobs may take. ``batching`` lists queue delays in ms, None for off;
    ``default_max_batch`` is the max batch size kept while batching is off (the user's)."""

    instances: tuple[int, ...]
    threads: tuple[int, ...]
    batching: tuple[float | None, ...]
    max_batch: tuple[int, ...]
    default_max_batch: int = 0
    concurrency: int = 1

    def __post_init__(self) -> None:
        for what, values, low in (("instances", self.instances, 1), ("threads", self.threads, 1)):
            if not values or any(v < low for v in values):
                raise ConfigError(f"the {what} to search {list(values)} must be integers >= {low}, e.g. 1,2")
        if not self.batching or any(d is not None and not 0 <= d <= 60_000 for d in self.batching):
            raise ConfigError(
                f"the batching delays to search {list(self.batching)} must be 'off' or 0..60000 ms, e.g. off,0,1,5"
            )
        if any(d is not None for d in self.batching) and (not self.max_batch or min(self.max_batch) < 2):
            raise ConfigError(
                f"the max batch sizes to search {list(self.max_batch)} must be 2 or more — dynamic batching "
                "needs room for at least two requests, e.g. --max-batch 8"
            )

    def batch_when_enabled(self) -> int:
        """The max batch size to use when a step turns batching on: the largest that concurrent
        single-row requests can fill, else the smallest offered."""
        fillable = [b for b in self.max_batch if b <= max(2, self.concurrency)]
        return max(fillable) if fillable else min(self.max_batch)


@dataclass(frozen=True)
class Constraints:
    """Limits a chosen configuration must respect; None: no limit.

    ``p99_ms`` and ``min_throughput`` (inferences/s) hold for every model on its own;
    ``max_memory_mb`` is the server's peak resident memory.
    """

    p99_ms: float | None = None
    min_throughput: float | None = None
    max_memory_mb: float | None = None

    def __post_init__(self) -> None:
        for what, value in (
            ("p99 budget", self.p99_ms),
            ("minimum throughput", self.min_throughput),
            ("memory limit", self.max_memory_mb),
        ):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"the {what} must be a positive number, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return {"p99_ms": self.p99_ms, "min_throughput": self.min_throughput, "max_memory_mb": self.max_memory_mb}


# ---------------------------------------------------------------------------------------------
# What is measured
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelLoad:
    """One model's numbers under load (from its loadtest), while the other models were loaded too."""

    throughput: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int = 0
    stable: bool = True
    #: Executed batch size -> count, from the server's statistics (empty when unknown).
    batch_sizes: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "throughput": self.throughput,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "requests": self.requests,
            "errors": self.errors,
            "stable": self.stable,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
        }


@dataclass(frozen=True)
class Measurement:
    """One candidate, measured: each model's load, the server's peak memory, and (once judged
    against the constraints) what it violates. ``failure`` says why it could not be measured."""

    candidate: Candidate
    loads: dict[str, ModelLoad] = field(default_factory=dict)
    memory_mb: float | None = None
    failure: str | None = None
    violations: tuple[str, ...] = ()
    #: How far outside the constraints (0 when it meets them; inf when it failed).
    excess: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def feasible(self) -> bool:
        return self.ok and not self.violations

    @property
    def throughput(self) -> float:
        """Total inferences/s over all models."""
        return sum(load.throughput for load in self.loads.values())

    @property
    def p99_ms(self) -> float:
        """The worst model's p99 (inf when nothing was measured)."""
        return max((load.p99_ms for load in self.loads.values()), default=math.inf)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.candidate.label,
            "settings": self.candidate.to_dict(),
            "models": {name: load.to_dict() for name, load in self.loads.items()},
            "throughput": self.throughput if self.ok else None,
            "p99_ms": self.p99_ms if self.ok else None,
            "memory_mb": self.memory_mb,
            "failure": self.failure,
            "feasible": self.feasible,
            "violations": list(self.violations),
        }


#: Measures one candidate; raises a ModelportError when it cannot (the search records the failure).
Measure = Callable[[Candidate], Measurement]


def judge(measurement: Measurement, constraints: Constraints) -> Measurement:
    """``measurement`` with its constraint violations and their total relative excess filled in."""
    if not measurement.ok:
        return replace(measurement, violations=(f"not measured: {measurement.failure}",), excess=math.inf)
    problems: list[tuple[str, float]] = []
    for name, load in measurement.loads.items():
        if load.errors:
            problems.append((f"{name}: {load.errors} of {load.requests + load.errors} requests failed", 1.0))
        if constraints.p99_ms is not None and load.p99_ms > constraints.p99_ms:
            problems.append(
                (f"{name}: p99 {load.p99_ms:.2f} ms > {constraints.p99_ms:g} ms", load.p99_ms / constraints.p99_ms - 1)
            )
        if constraints.min_throughput is not None and load.throughput < constraints.min_throughput:
            problems.append(
                (
                    f"{name}: {load.throughput:.1f} infer/s < {constraints.min_throughput:g}",
                    1 - load.throughput / constraints.min_throughput,
                )
            )
    limit = constraints.max_memory_mb
    if limit is not None and measurement.memory_mb is not None and measurement.memory_mb > limit:
        problems.append(
            (f"server memory {measurement.memory_mb:.0f} MiB > {limit:g} MiB", measurement.memory_mb / limit - 1)
        )
    return replace(measurement, violations=tuple(p for p, _ in problems), excess=sum(e for _, e in problems))


def better(a: Measurement, b: Measurement, *, min_gain: float = 0.03) -> bool:
    """True when ``a`` is clearly better than ``b`` (both judged).

    Meeting the constraints beats violating them; between violators, the smaller excess wins;
    between two that meet them, ``a`` needs ``min_gain`` more total throughput, or throughput
    within ``min_gain`` and a p99 lower by ``min_gain`` (so measurement noise does not count).
    """
    if a.feasible != b.feasible:
        return a.feasible
    if not a.feasible:
        return a.excess < b.excess * (1 - min_gain) if math.isfinite(b.excess) else math.isfinite(a.excess)
    if a.throughput > b.throughput * (1 + min_gain):
        return True
    return a.throughput >= b.throughput * (1 - min_gain) and a.p99_ms < b.p99_ms * (1 - min_gain)


def best_of(measurements: Sequence[Measurement], *, min_gain: float = 0.03) -> Measurement | None:
    """The feasible measurement with the most total throughput; among those within ``min_gain`` of
    the top throughput, the one with the lowest p99. None when none is feasible."""
    feasible = [m for m in measurements if m.feasible]
    if not feasible:
        return None
    top = max(m.throughput for m in feasible)
    contenders = [m for m in feasible if m.throughput >= top * (1 - min_gain)]
    return min(contenders, key=lambda m: (m.p99_ms, -m.throughput))


def pareto_front(measurements: Sequence[Measurement]) -> list[Measurement]:
    """The measured candidates no other beats on both throughput (higher) and p99 (lower), by
    ascending throughput. Equal points are all kept."""
    points = [m for m in measurements if m.ok]
    front = [
        m
        for m in points
        if not any(
            o.throughput >= m.throughput
            and o.p99_ms <= m.p99_ms
            and (o.throughput > m.throughput or o.p99_ms < m.p99_ms)
            for o in points
        )
    ]
    return sorted(front, key=lambda m: (m.throughput, m.p99_ms))


# ---------------------------------------------------------------------------------------------
# The search
# ---------------------------------------------------------------------------------------------
def thread_use(candidate: Candidate, cores: int) -> int:
    """Intra-op threads the candidate runs: instances × threads summed over the models (an unset
    thread count is the server's budget, the cores divided among all instances)."""
    instances = sum(s.instance_count for _, s in candidate.models)
    auto = max(1, cores // max(1, instances))
    return sum(s.instance_count * (s.intra_op_threads or auto) for _, s in candidate.models)


def _model_grid(space: ModelSpace) -> list[ModelSettings]:
    settings = []
    for delay in space.batching:
        batches = (space.default_max_batch,) if delay is None else space.max_batch
        for batch, instances, threads in itertools.product(batches, space.instances, space.threads):
            settings.append(ModelSettings(batch, delay, instances, threads))
    return settings


def grid(spaces: Mapping[str, ModelSpace], *, cores: int, allow_oversubscribe: bool = False) -> list[Candidate]:
    """Every combination of every model's settings, in a fixed order, within the thread budget."""
    names = list(spaces)
    combos = itertools.product(*(_model_grid(spaces[name]) for name in names))
    candidates = [Candidate(tuple(zip(names, combo, strict=True))) for combo in combos]
    return [c for c in candidates if allow_oversubscribe or thread_use(c, cores) <= cores]


def _adjacent(options: Sequence[float], current: float) -> list[float]:
    """The option just above ``current`` and the one just below (those that exist)."""
    above = [o for o in options if o > current]
    below = [o for o in options if o < current]
    return ([min(above)] if above else []) + ([max(below)] if below else [])


def _knob_steps(current: ModelSettings, knob: str, space: ModelSpace) -> list[ModelSettings]:
    """One model's settings with ``knob`` moved one value up and one down (threads pinned)."""
    if knob == "batching":
        now = -1.0 if current.batching_delay_ms is None else current.batching_delay_ms
        options = [-1.0 if d is None else d for d in space.batching]
        steps = []
        for value in _adjacent(options, now):
            if value < 0:
                steps.append(replace(current, batching_delay_ms=None, max_batch_size=space.default_max_batch))
            else:
                batch = current.max_batch_size if current.max_batch_size >= 2 else space.batch_when_enabled()
                steps.append(replace(current, batching_delay_ms=value, max_batch_size=batch))
        return steps
    if knob == "max_batch":
        if current.batching_delay_ms is None:
            return []
        return [replace(current, max_batch_size=int(v)) for v in _adjacent(space.max_batch, current.max_batch_size)]
    if knob == "instances":
        return [replace(current, instance_count=int(v)) for v in _adjacent(space.instances, current.instance_count)]
    threads = current.intra_op_threads or 1
    return [replace(current, intra_op_threads=int(v)) for v in _adjacent(space.threads, threads)]


def pin_threads(candidate: Candidate, cores: int) -> Candidate:
    """``candidate`` with every unset thread count replaced by what the server would give it."""
    instances = sum(s.instance_count for _, s in candidate.models)
    auto = max(1, cores // max(1, instances))
    return Candidate(
        tuple(
            (name, s if s.intra_op_threads is not None else replace(s, intra_op_threads=auto))
            for name, s in candidate.models
        )
    )


def _fit_threads(step: Candidate, name: str, space: ModelSpace, cores: int) -> Candidate | None:
    """``step`` with model ``name``'s threads lowered to the most that fit the cores, or None."""
    for threads in sorted(space.threads, reverse=True):
        fitted = step.with_model(name, replace(step[name], intra_op_threads=threads))
        if thread_use(fitted, cores) <= cores:
            return fitted
    return None


def neighbours(
    candidate: Candidate,
    spaces: Mapping[str, ModelSpace],
    *,
    cores: int,
    allow_oversubscribe: bool = False,
) -> list[Candidate]:
    """The candidates one step away: one knob of one model moved to the next value up or down;
    in model order, then knob order (batching, max batch, instances, threads), up before down.

    Unset thread counts are pinned to what the server would give them first, so a step changes
    one model only. Within the thread budget, one more instance that does not fit takes fewer
    threads per instance instead (the same cores, split differently); other steps that do not
    fit are left out.
    """
    pinned = pin_threads(candidate, cores)
    found: list[Candidate] = []
    for name in pinned.names:
        for knob in KNOBS:
            for settings in _knob_steps(pinned[name], knob, spaces[name]):
                step: Candidate | None = pinned.with_model(name, settings)
                if step is not None and not allow_oversubscribe and thread_use(step, cores) > cores:
                    step = _fit_threads(step, name, spaces[name], cores) if knob == "instances" else None
                if step is not None and step not in (candidate, pinned) and step not in found:
                    found.append(step)
    return found


class _Trials:
    """Measures candidates once each (memoized), judges them, and stops at the candidate limit.

    Candidates that differ only in an unset thread count against the count the server would pick
    for it are the same configuration and are measured once (the first one asked for is kept).
    """

    def __init__(
        self,
        measure: Measure,
        constraints: Constraints,
        limit: int | None,
        progress: Callable[[Measurement], None] | None,
        cores: int,
    ) -> None:
        self.measure = measure
        self.constraints = constraints
        self.limit = limit
        self.progress = progress
        self.cores = cores
        self.done: dict[Candidate, Measurement] = {}

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and len(self.done) >= self.limit

    def __call__(self, candidate: Candidate) -> Measurement | None:
        """The candidate's judged measurement (memoized); None when the limit is reached."""
        key = pin_threads(candidate, self.cores)
        if key in self.done:
            return self.done[key]
        if self.exhausted:
            return None
        result = self.once(candidate)
        self.done[key] = result
        return result

    def once(self, candidate: Candidate) -> Measurement:
        """Measure and judge ``candidate`` now (not memoized, no limit)."""
        try:
            measured = self.measure(candidate)
        except ModelportError as e:
            measured = Measurement(candidate, failure=str(e))
        result = judge(replace(measured, candidate=candidate), self.constraints)
        logger.info(
            "measured %s -> %.1f infer/s, p99 %.2f ms%s",
            candidate.label,
            result.throughput,
            result.p99_ms,
            "" if result.feasible else f" ({'; '.join(result.violations)})",
        )
        if self.progress is not None:
            self.progress(result)
        return result


def _climb(
    start: Candidate,
    spaces: Mapping[str, ModelSpace],
    trials: _Trials,
    *,
    cores: int,
    allow_oversubscribe: bool,
    min_gain: float,
) -> tuple[list[Candidate], bool]:
    """Hill climbing from ``start`` (first improvement, one knob at a time); returns the path and
    whether it converged (False: the candidate limit stopped it)."""
    current = start
    held = trials(start)
    path = [start]
    visited = {pin_threads(start, cores)}
    moved = held is not None
    while moved and held is not None:
        moved = False
        for step in neighbours(current, spaces, cores=cores, allow_oversubscribe=allow_oversubscribe):
            if pin_threads(step, cores) in visited:
                continue
            measured = trials(step)
            if measured is None:
                return path, False
            if better(measured, held, min_gain=min_gain):
                current, held, moved = step, measured, True
                path.append(step)
                visited.add(pin_threads(step, cores))
                break
    return path, held is not None


@dataclass
class SearchOutcome:
    """What :func:`search` measured, in order, and for ``quick`` the candidates it moved through."""

    measurements: list[Measurement]
    path: list[Candidate]
    notes: list[str]


def search(
    default: Candidate,
    spaces: Mapping[str, ModelSpace],
    measure: Measure,
    *,
    mode: Mode = "quick",
    constraints: Constraints | None = None,
    cores: int | None = None,
    allow_oversubscribe: bool = False,
    max_candidates: int | None = None,
    min_gain: float = 0.03,
    progress: Callable[[Measurement], None] | None = None,
) -> SearchOutcome:
    """Measure ``default`` and search from it (see the module docstring); ``measure`` is called
    once per distinct candidate, at most ``max_candidates`` times in all."""
    if mode not in ("quick", "exhaustive"):
        raise ConfigError(f"unknown search mode {mode!r} — use 'quick' (hill climbing) or 'exhaustive' (the grid)")
    if max_candidates is not None and max_candidates < 1:
        raise ConfigError(f"max_candidates must be 1 or more, got {max_candidates}")
    if set(default.names) != set(spaces):
        raise ConfigError(f"the default configures {default.names} but the search space has {sorted(spaces)}")
    cores = cores or cpu_count()
    trials = _Trials(measure, constraints or Constraints(), max_candidates, progress, cores)
    notes: list[str] = []
    if not allow_oversubscribe and thread_use(default, cores) > cores:
        notes.append(
            f"the repository's own configuration runs {thread_use(default, cores)} threads on {cores} cores; "
            "it is measured for comparison, but no candidate oversubscribes the cores (allow it to search there)"
        )
    start = trials(default)
    if start is not None and not start.ok:
        raise ConfigError(
            "the repository's own configuration could not be measured, so there is nothing to compare "
            f"with — fix it first: {start.failure}"
        )
    path: list[Candidate] = []
    if mode == "quick":
        path, converged = _climb(
            default, spaces, trials, cores=cores, allow_oversubscribe=allow_oversubscribe, min_gain=min_gain
        )
        if not converged:
            notes.append(f"hill climbing stopped at the limit of {max_candidates} candidates before converging")
    else:
        _sweep(default, spaces, trials, cores=cores, allow_oversubscribe=allow_oversubscribe, notes=notes)
    return SearchOutcome(list(trials.done.values()), path, notes)


def _sweep(
    default: Candidate,
    spaces: Mapping[str, ModelSpace],
    trials: _Trials,
    *,
    cores: int,
    allow_oversubscribe: bool,
    notes: list[str],
) -> None:
    full = grid(spaces, cores=cores, allow_oversubscribe=allow_oversubscribe)
    pinned = pin_threads(default, cores)
    chosen = [c for c in full if c != pinned]
    room = None if trials.limit is None else max(0, trials.limit - 1)  # the default is measured first
    if room is not None and len(chosen) > room:
        stride = len(chosen) / room if room else math.inf
        chosen = [chosen[int(i * stride)] for i in range(room)]
        notes.append(
            f"the grid has {len(full)} candidates; measured {len(chosen)} of them, evenly spaced (every "
            f"{stride:.1f}th), plus the default — raise the candidate limit or narrow the search to see all"
        )
    trials(default)
    for candidate in chosen:
        trials(candidate)


# ---------------------------------------------------------------------------------------------
# Configuration files
# ---------------------------------------------------------------------------------------------
def user_settings(folder: Path) -> tuple[dict[str, Any], str | None]:
    """The keys the user set for one model (validated with :func:`read_config`), and the file they
    came from (``config.yaml``, ``config.pbtxt``, or None)."""
    read_config(folder)  # validates; RepositoryError names the file and the problem
    if (folder / TRITON_CONFIG_FILE).exists():
        return dict(read_triton_config(folder / TRITON_CONFIG_FILE).settings), TRITON_CONFIG_FILE
    path = folder / CONFIG_FILE
    if not path.exists():
        return {}, None
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return (dict(raw) if isinstance(raw, dict) else {}), CONFIG_FILE


def with_settings(raw: Mapping[str, Any], settings: ModelSettings, *, where: str) -> dict[str, Any]:
    """The user's keys with the searched ones replaced by ``settings`` (validated as a ModelConfig).

    A user's ``dynamic_batching`` keeps its other keys; preferred batch sizes over the new max
    batch size are dropped. An unset thread count removes the key (the server budgets threads).
    """
    merged = {k: v for k, v in raw.items() if k not in SEARCHED_KEYS}
    if settings.max_batch_size or "max_batch_size" in raw:
        merged["max_batch_size"] = settings.max_batch_size
    if settings.batching_delay_ms is not None:
        old = raw.get("dynamic_batching")
        batching = dict(old) if isinstance(old, dict) else {}
        batching["max_queue_delay_ms"] = settings.batching_delay_ms
        preferred = batching.get("preferred_batch_sizes")
        if isinstance(preferred, list):
            batching["preferred_batch_sizes"] = [
                b for b in preferred if isinstance(b, int) and b <= settings.max_batch_size
            ]
        merged["dynamic_batching"] = batching
    if settings.instance_count != 1 or "instance_count" in raw:
        merged["instance_count"] = settings.instance_count
    if settings.intra_op_threads is not None:
        merged["intra_op_threads"] = settings.intra_op_threads
    try:
        ModelConfig.model_validate(merged)
    except pydantic.ValidationError as e:
        raise ConfigError(f"the settings {settings.label} do not make a valid config for {where}: {e}") from e
    return merged


def _yaml(settings: Mapping[str, Any], header: str) -> str:
    return header + yaml.safe_dump(dict(settings), sort_keys=False, default_flow_style=False)


def _link_or_copy(source: str, target: str) -> str:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed: copy instead
        shutil.copy2(source, target)
    return target


def stage_repository(repo: Path, target: Path, candidate: Candidate) -> Path:
    """Lay out the models of ``candidate`` under ``target`` with its settings: model files
    hard-linked (copied where links fail), each model's config.yaml written from the user's keys
    plus the candidate's; a Triton config.pbtxt is read the same way and replaced by config.yaml."""
    target.mkdir(parents=True, exist_ok=True)
    for name, settings in candidate.models:
        source = repo / name
        raw, _ = user_settings(source)
        config = with_settings(raw, settings, where=f"model '{name}'")
        shutil.copytree(
            source,
            target / name,
            copy_function=_link_or_copy,
            ignore=shutil.ignore_patterns(CONFIG_FILE, TRITON_CONFIG_FILE, SUGGESTED_FILE),
        )
        (target / name / CONFIG_FILE).write_text(_yaml(config, ""), encoding="utf-8")
    return target


@dataclass(frozen=True)
class AppliedConfig:
    """What :func:`apply_best` wrote for one model; ``suggested``: written next to a config.pbtxt
    (which is not overwritten) rather than into effect."""

    model: str
    path: Path
    suggested: bool
    message: str


def apply_best(repo: str | os.PathLike[str], result: AnalysisResult, *, force: bool = False) -> list[AppliedConfig]:
    """Write the best candidate's settings into ``repo/<model>/config.yaml``, atomically.

    The user's other keys are kept; YAML comments are not (the file is written anew). A model
    configured by Triton's config.pbtxt is not touched: its settings go to config.yaml.suggested
    (modelport refuses a folder with both files, and rewriting a pbtxt would lose what Triton
    alone reads). A best candidate that did not hold up when measured again next to the default
    is not applied unless ``force``.
    """
    if result.best is None:
        raise ConfigError(
            "no candidate met the constraints, so there is nothing to apply — relax --p99-ms, "
            "--min-throughput or --max-memory-mb, or widen the search"
        )
    if result.confirmed is False and not force:
        raise ConfigError(
            f"not applied: measured again next to the default, the best candidate made {result.gain or 0:.2f}× "
            "its throughput, which does not confirm the search — the machine's load varied while measuring; "
            "analyze again with a longer --window or more --max-windows, on a quieter machine"
        )
    root = Path(repo)
    applied = []
    header = f"# written by `modelport analyze` ({result.best.candidate.label}); comments are not kept\n"
    for name, settings in result.best.candidate.models:
        folder = root / name
        raw, source = user_settings(folder)
        config = with_settings(raw, settings, where=f"model '{name}'")
        if source == TRITON_CONFIG_FILE:
            path = folder / SUGGESTED_FILE
            write_text_atomic(path, _yaml(config, header))
            message = (
                f"{name}: not applied — it is configured by {folder / TRITON_CONFIG_FILE}, which is left as it "
                f"is; the winning settings are in {path}: rename it to {CONFIG_FILE} and remove the "
                f"{TRITON_CONFIG_FILE} to use them"
            )
            applied.append(AppliedConfig(name, path, True, message))
        else:
            path = folder / CONFIG_FILE
            write_text_atomic(path, _yaml(config, header))
            applied.append(AppliedConfig(name, path, False, f"{name}: wrote {path} ({settings.label})"))
    return applied


# ---------------------------------------------------------------------------------------------
# Measuring with the real server
# ---------------------------------------------------------------------------------------------
_SERVE = (
    "import sys; from modelport.serve.core import ServerOptions; from modelport.serve.server import run_server; "
    "run_server(sys.argv[1], host='127.0.0.1', port=int(sys.argv[2]), log_level='warning', "
    "options=ServerOptions(drain_delay=0.0))"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def peak_rss_mb(pid: int) -> float | None:
    """A process's peak resident memory (VmHWM, else VmRSS) in MiB from /proc; None off Linux."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    fields: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields[key] = value
    for key in ("VmHWM", "VmRSS"):
        if key in fields:
            return int(fields[key].split()[0]) / 1024
    return None


class _Server:
    """``run_server`` on a free port in its own process, for one candidate; stopped with SIGTERM."""

    def __init__(self, repo: Path, log: Path, ready_timeout_s: float) -> None:
        self.repo = repo
        self.log = log
        self.ready_timeout_s = ready_timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _Server:
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _SERVE, str(self.repo), str(self.port)], stdout=sink, stderr=subprocess.STDOUT
            )
        try:
            self._wait_ready(self.process)
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _log_tail(self) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return text[-2000:].strip() or "(no output)"

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BackendError(
                    f"the server for this candidate exited with code {process.returncode} before it was ready; "
                    f"its output:\n{self._log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise BackendError(
            f"the server for this candidate was not ready {self.ready_timeout_s:g} s after starting — loading "
            f"its models takes longer; raise the ready timeout. Its output:\n{self._log_tail()}"
        )

    def peak_rss_mb(self) -> float | None:
        return None if self.process is None else peak_rss_mb(self.process.pid)

    def _stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            logger.warning("the server (pid %d) did not stop within 30 s of SIGTERM; killing it", process.pid)
            process.kill()
            process.wait()


#: Window throughputs within this fraction of their mean count as stable.
STABILITY = 0.10


def run_loadtest(url: str, model: str, concurrency: int, *, window_s: float, max_windows: int) -> ModelLoad:
    """One model's closed-loop load at ``concurrency`` clients for exactly ``max_windows`` windows.

    The loadtest's own early stop (three windows agreeing) is turned off on purpose: the models'
    loadtests run side by side, and one that stopped early would leave the others measured without
    its contention. Its figures come from the last three windows (the earlier ones warm up);
    ``stable`` says whether those agreed within :data:`STABILITY`.
    """
    from modelport.bench.loadtest import STABLE_WINDOWS, loadtest

    result = loadtest(url, model, concurrency=[concurrency], window_s=window_s, max_windows=max_windows, stability=1e-9)
    level = result.levels[0]
    last = level.windows[-STABLE_WINDOWS:]
    mean = sum(last) / len(last) if last else 0.0
    stable = len(last) == STABLE_WINDOWS and all(abs(w - mean) <= STABILITY * mean for w in last)
    server = level.server
    return ModelLoad(
        throughput=level.throughput,
        p50_ms=level.p50_ms,
        p99_ms=level.p99_ms,
        requests=level.requests,
        errors=sum(level.errors.values()),
        stable=stable,
        batch_sizes=dict(server.batch_sizes) if server is not None else {},
    )


class ServerMeasure:
    """The real measurement: a staged repository, a server process, one loadtest per model, all
    running at once (see the module docstring)."""

    def __init__(
        self,
        repo: str | os.PathLike[str],
        concurrency: Mapping[str, int],
        *,
        window_s: float = 2.0,
        max_windows: int = 4,
        ready_timeout_s: float = 120.0,
        load: Callable[..., ModelLoad] = run_loadtest,
    ) -> None:
        if window_s <= 0:
            raise ConfigError(f"the measurement window must be positive, got {window_s} s")
        if max_windows < 1:
            raise ConfigError(f"max_windows must be 1 or more, got {max_windows}")
        self.repo = Path(repo)
        self.concurrency = dict(concurrency)
        self.window_s = window_s
        self.max_windows = max_windows
        self.ready_timeout_s = ready_timeout_s
        self.load = load

    def __call__(self, candidate: Candidate) -> Measurement:
        with tempfile.TemporaryDirectory(prefix="modelport-analyze-") as temp:
            staged = stage_repository(self.repo, Path(temp) / "repo", candidate)
            with _Server(staged, Path(temp) / "server.log", self.ready_timeout_s) as server:
                loads = self._drive(server.url, candidate.names)
                memory = server.peak_rss_mb()
        return Measurement(candidate, loads, memory)

    def _drive(self, url: str, names: list[str]) -> dict[str, ModelLoad]:
        with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="analyze-load") as pool:
            futures = {
                name: pool.submit(
                    self.load,
                    url,
                    name,
                    self.concurrency[name],
                    window_s=self.window_s,
                    max_windows=self.max_windows,
                )
                for name in names
            }
            return {name: future.result() for name, future in futures.items()}


# ---------------------------------------------------------------------------------------------
# The result and its report
# ---------------------------------------------------------------------------------------------
@dataclass
class AnalysisResult:
    """Every candidate measured, the Pareto front, the best candidate and the default's numbers.

    ``confirmation`` holds the default and the best measured once more, back to back, after the
    search (None when the best is the default or nothing met the constraints).
    """

    repo: str
    mode: Mode
    cores: int
    concurrency: dict[str, int]
    constraints: Constraints
    default: Measurement
    measurements: list[Measurement]
    best: Measurement | None
    pareto: list[Measurement]
    path: list[Candidate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    confirmation: tuple[Measurement, Measurement] | None = None
    #: The relative difference below which two measurements count as equal (noise).
    min_gain: float = 0.03

    @property
    def comparison(self) -> tuple[Measurement, Measurement] | None:
        """(default, best) to compare: the back-to-back confirmation when there is one."""
        if self.best is None:
            return None
        return self.confirmation or (self.default, self.best)

    @property
    def confirmed(self) -> bool | None:
        """Whether the best held up when measured again next to the default: it still meets the
        constraints and the default is not clearly better (None: no confirmation was run)."""
        if self.confirmation is None:
            return None
        default, best = self.confirmation
        return best.feasible and not better(default, best, min_gain=self.min_gain)

    @property
    def gain(self) -> float | None:
        """Best total throughput over the default's (from :attr:`comparison`)."""
        pair = self.comparison
        if pair is None or not pair[0].ok or pair[0].throughput <= 0:
            return None
        return pair[1].throughput / pair[0].throughput

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "mode": self.mode,
            "cores": self.cores,
            "concurrency": self.concurrency,
            "constraints": self.constraints.to_dict(),
            "default": self.default.to_dict(),
            "best": self.best.to_dict() if self.best is not None else None,
            "confirmation": (
                {"default": self.confirmation[0].to_dict(), "best": self.confirmation[1].to_dict()}
                if self.confirmation is not None
                else None
            ),
            "gain": self.gain,
            "confirmed": self.confirmed,
            "pareto": [m.candidate.label for m in self.pareto],
            "path": [c.label for c in self.path],
            "notes": self.notes,
            "candidates": [m.to_dict() for m in self.measurements],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False, default=_json_default)

    def to_html(self) -> str:
        return _html(self)

    def write_json(self, path: str | os.PathLike[str]) -> None:
        write_text_atomic(path, self.to_json() + "\n")

    def write_html(self, path: str | os.PathLike[str]) -> None:
        write_text_atomic(path, self.to_html())


def _json_default(value: object) -> object:
    return str(value)


_CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td.l,th.l{text-align:left}"
    "tr.best{background:#e8f4e8}tr.bad{color:#999}.note{color:#8a5a00}"
)


def _html(result: AnalysisResult) -> str:
    c = result.constraints
    limits = ", ".join(
        text
        for text in (
            f"p99 ≤ {c.p99_ms:g} ms" if c.p99_ms else "",
            f"≥ {c.min_throughput:g} infer/s per model" if c.min_throughput else "",
            f"server memory ≤ {c.max_memory_mb:g} MiB" if c.max_memory_mb else "",
        )
        if text
    )
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>modelport analyze</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>modelport analyze {escape(result.repo)}</h1>",
        f"<p>{result.mode} search, {len(result.measurements)} candidates measured on {result.cores} cores; load: "
        + escape(", ".join(f"{m} at {n} clients" for m, n in result.concurrency.items()))
        + f"; constraints: {escape(limits or 'none')}.</p>",
    ]
    parts += [f"<p class='note'>{escape(note)}</p>" for note in result.notes]
    parts.append(_comparison_html(result))
    parts.append("<h2>Throughput against p99</h2>")
    parts.append(scatter_svg(result))
    parts.append(
        "<p>Red: the Pareto front (no other candidate has both more throughput and a lower p99); blue: "
        "meets the constraints; grey: violates one. The square is the default, the green ring the best.</p>"
    )
    parts.append("<h2>Every candidate</h2>")
    parts.append(_candidates_html(result))
    parts.append("</body></html>")
    return "".join(parts)


def _comparison_html(result: AnalysisResult) -> str:
    pair = result.comparison
    if pair is None:
        return "<h2>No candidate met the constraints</h2>"
    default, best = pair
    rows = []
    for label, m in (("default", default), ("best", best)):
        per_model = "".join(
            f"<td>{m.loads[n].throughput:.1f}</td>" if n in m.loads else "<td>—</td>" for n in best.candidate.names
        )
        rows.append(
            f"<tr><td class='l'>{label}</td><td class='l'>{escape(m.candidate.label)}</td>{per_model}"
            f"<td>{m.throughput:.1f}</td><td>{m.p99_ms:.2f}</td></tr>"
        )
    heads = "".join(f"<th>{escape(n)} infer/s</th>" for n in best.candidate.names)
    gain = f"{result.gain:.2f}×" if result.gain is not None else "n/a"
    source = "measured again back to back after the search" if result.confirmation else "from the search"
    return (
        f"<h2>Best against default: {gain} total throughput</h2><p>Numbers {source}.</p>"
        f"<table><tr><th class='l'></th><th class='l'>settings</th>{heads}<th>total infer/s</th>"
        f"<th>worst p99 ms</th></tr>{''.join(rows)}</table>"
    )


def _candidates_html(result: AnalysisResult) -> str:
    front = {id(m) for m in result.pareto}
    names = list(result.concurrency)
    rows = []
    for i, m in enumerate(result.measurements, 1):
        css = "best" if m is result.best else ("" if m.feasible else "bad")
        memory = f"{m.memory_mb:.0f}" if m.memory_mb is not None else "—"
        per_model = "".join(
            f"<td>{m.loads[n].throughput:.1f}</td><td>{m.loads[n].p99_ms:.2f}</td>"
            if n in m.loads
            else "<td>—</td>" * 2
            for n in names
        )
        total = f"<td>{m.throughput:.1f}</td><td>{m.p99_ms:.2f}</td>" if m.ok else "<td>—</td>" * 2
        rows.append(
            f"<tr class='{css}'><td>{i}</td><td class='l'>{escape(m.candidate.label)}</td>{per_model}{total}"
            f"<td>{memory}</td><td>{'yes' if id(m) in front else ''}</td>"
            f"<td class='l'>{escape('; '.join(m.violations) or 'ok')}</td></tr>"
        )
    heads = "".join(f"<th>{escape(n)} infer/s</th><th>{escape(n)} p99 ms</th>" for n in names)
    return (
        f"<table><tr><th>#</th><th class='l'>settings</th>{heads}<th>total infer/s</th><th>worst p99 ms</th>"
        "<th>memory MiB</th><th>Pareto</th><th class='l'>constraints</th></tr>" + "".join(rows) + "</table>"
    )


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    span = high - low or abs(high) or 1.0
    raw = span / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if step * m >= raw)
    start = math.floor(low / step) * step
    return [start + i * step for i in range(math.ceil((high - start) / step) + 1)]


def _points(result: AnalysisResult) -> Iterator[tuple[Measurement, str, float]]:
    """(measurement, fill colour, radius) of every measured candidate, drawing order."""
    front = {id(m) for m in result.pareto}
    for m in result.measurements:
        if not m.ok:
            continue
        colour = "#c8553d" if id(m) in front else ("#4878a8" if m.feasible else "#bbbbbb")
        yield m, colour, 4.0


def scatter_svg(result: AnalysisResult, *, width: int = 640, height: int = 360) -> str:
    """Every measured candidate as a point (total throughput across, worst p99 up), the Pareto
    front joined in red, the default as a square and the best ringed. Inline SVG, no script."""
    points = list(_points(result))
    if not points:
        return "<p>No candidate could be measured.</p>"
    left, right, top, bottom = 56, 12, 12, 40
    xs = [m.throughput for m, _, _ in points]
    ys = [m.p99_ms for m, _, _ in points]
    xt, yt = _ticks(min(xs) * 0.95, max(xs) * 1.05), _ticks(0.0, max(ys) * 1.1)

    def sx(x: float) -> float:
        return left + (x - xt[0]) / (xt[-1] - xt[0] or 1) * (width - left - right)

    def sy(y: float) -> float:
        return height - bottom - (y - yt[0]) / (yt[-1] - yt[0] or 1) * (height - top - bottom)

    font = 'font-family="sans-serif" font-size="10"'
    parts = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="'
        'throughput against p99"><title>throughput against p99 latency</title>'
    ]
    for x in xt:
        parts.append(f'<line x1="{sx(x):.1f}" y1="{top}" x2="{sx(x):.1f}" y2="{height - bottom}" stroke="#eee"/>')
        parts.append(f'<text x="{sx(x):.1f}" y="{height - bottom + 14}" text-anchor="middle" {font}>{x:g}</text>')
    for y in yt:
        parts.append(f'<line x1="{left}" y1="{sy(y):.1f}" x2="{width - right}" y2="{sy(y):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 4}" y="{sy(y) + 3:.1f}" text-anchor="end" {font}>{y:g}</text>')
    parts.append(
        f'<text x="{(left + width - right) / 2:.0f}" y="{height - 6}" text-anchor="middle" {font}>'
        "total throughput (infer/s)</text>"
        f'<text x="12" y="{(top + height - bottom) / 2:.0f}" text-anchor="middle" {font} '
        f'transform="rotate(-90 12 {(top + height - bottom) / 2:.0f})">worst p99 (ms)</text>'
    )
    line = " ".join(f"{sx(m.throughput):.1f},{sy(m.p99_ms):.1f}" for m in result.pareto)
    parts.append(f'<polyline points="{line}" fill="none" stroke="#c8553d" stroke-width="1.5"/>')
    for m, colour, radius in points:
        tip = f"{m.candidate.label}: {m.throughput:.1f} infer/s, p99 {m.p99_ms:.2f} ms"
        x, y = sx(m.throughput), sy(m.p99_ms)
        if m.candidate == result.default.candidate:
            parts.append(
                f'<rect x="{x - radius:.1f}" y="{y - radius:.1f}" width="{2 * radius}" height="{2 * radius}" '
                f'fill="{colour}" stroke="#000"><title>default — {escape(tip)}</title></rect>'
            )
        else:
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius}" fill="{colour}"><title>{escape(tip)}</title></circle>'
            )
        if result.best is not None and m is result.best:
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius + 4}" fill="none" stroke="#2a7a2a" stroke-width="2"/>'
            )
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------------
def _batchable(model_path: Path) -> bool:
    """Whether every input of the model has a dynamic axis 0 (so the server may batch requests)."""
    from modelport.ir.serde import load
    from modelport.ir.specs import specs_of

    specs = specs_of(load(model_path).graph.inputs)
    return all(s.shape is not None and len(s.shape) > 0 and not isinstance(s.shape[0], int) for s in specs)


def default_values(cores: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to ``cores``, and ``cores`` itself."""
    values = [1]
    while values[-1] * 2 <= cores:
        values.append(values[-1] * 2)
    return tuple(sorted({*values, cores}))


def _concurrency_of(names: Sequence[str], concurrency: int | Mapping[str, int]) -> dict[str, int]:
    if isinstance(concurrency, int):
        table = dict.fromkeys(names, concurrency)
    else:
        unknown = sorted(set(concurrency) - set(names))
        if unknown:
            raise ConfigError(f"concurrency is given for {unknown}, which are not analyzed — analyzed: {list(names)}")
        missing = [n for n in names if n not in concurrency]
        if missing:
            raise ConfigError(f"no concurrency for model(s) {missing} — give one per model (a=4,b=8) or one for all")
        table = {n: concurrency[n] for n in names}
    bad = {n: c for n, c in table.items() if c < 1}
    if bad:
        raise ConfigError(f"concurrency must be 1 or more clients, got {bad}")
    return table


def _select(repository: ModelRepository, models: Sequence[str] | None) -> list[str]:
    if models is None:
        return repository.models
    unknown = [m for m in models if m not in repository.models]
    if unknown:
        raise RepositoryError(
            f"model(s) {unknown} are not served from repository '{repository.root}' — it has {repository.models}"
        )
    if not models:
        raise ConfigError("no model to analyze — name at least one, or leave the selection out for all")
    return list(dict.fromkeys(models))


def _spaces(
    repository: ModelRepository,
    names: Sequence[str],
    concurrency: Mapping[str, int],
    *,
    instances: Sequence[int],
    threads: Sequence[int],
    batching: Sequence[float | None],
    max_batch: Sequence[int],
) -> tuple[Candidate, dict[str, ModelSpace], list[str]]:
    """The default candidate (the repository's configs), each model's space, and notes."""
    defaults: dict[str, ModelSettings] = {}
    spaces: dict[str, ModelSpace] = {}
    notes: list[str] = []
    for name in names:
        served = repository.get(name)
        config = read_config(repository.root / name)
        defaults[name] = ModelSettings.from_config(config)
        model_batching: Sequence[float | None] = batching
        model_max_batch: Sequence[int] = max_batch
        if config.pipeline is not None:
            model_batching = (defaults[name].batching_delay_ms,)
            model_max_batch = (config.max_batch_size,) if config.dynamic_batching is not None else max_batch
            notes.append(f"{name}: has a pipeline; its batching is kept as configured and not searched")
        elif not _batchable(served.path):
            model_batching = (None,)
            notes.append(f"{name}: an input has no dynamic batch axis, so batching is not searched")
        spaces[name] = ModelSpace(
            instances=tuple(sorted(set(instances))),
            threads=tuple(sorted(set(threads))),
            batching=tuple(dict.fromkeys(model_batching)),
            max_batch=tuple(sorted(set(model_max_batch))),
            default_max_batch=config.max_batch_size,
            concurrency=concurrency[name],
        )
    return Candidate.of(defaults), spaces, notes


def analyze(
    repo: str | os.PathLike[str],
    *,
    models: Sequence[str] | None = None,
    concurrency: int | Mapping[str, int] = 8,
    constraints: Constraints | None = None,
    mode: Mode = "quick",
    instances: Sequence[int] | None = None,
    threads: Sequence[int] | None = None,
    batching: Sequence[float | None] = (None, 0.0, 1.0, 5.0),
    max_batch: Sequence[int] = (8,),
    window_s: float = 2.0,
    max_windows: int = 4,
    max_candidates: int | None = None,
    allow_oversubscribe: bool = False,
    confirm: bool = True,
    min_gain: float = 0.03,
    measure: Measure | None = None,
    progress: Callable[[Measurement], None] | None = None,
) -> AnalysisResult:
    """Search the serving configuration of ``models`` (default: all) in repository folder ``repo``.

    ``instances`` and ``threads`` default to 1, 2, 4, ... up to the cores; ``batching`` lists
    queue delays in ms (None: off). ``measure`` replaces the real server measurement (tests).
    Raises :class:`RepositoryError` for a malformed repository or an unknown model and
    :class:`ConfigError` for a bad option or when the default configuration cannot be measured.
    """
    root = Path(repo)
    if not root.is_dir():
        raise ConfigError(
            f"analyze needs a model repository folder, got '{root}' — lay models out as "
            f"{root}/<name>/1/model.onnx (a single .onnx file has no config.yaml to tune)"
        )
    repository = ModelRepository(root)
    names = _select(repository, models)
    load = _concurrency_of(names, concurrency)
    cores = cpu_count()
    default, spaces, notes = _spaces(
        repository,
        names,
        load,
        instances=instances or default_values(cores),
        threads=threads or default_values(cores),
        batching=batching,
        max_batch=max_batch,
    )
    constraints = constraints or Constraints()
    measure = measure or ServerMeasure(root, load, window_s=window_s, max_windows=max_windows)
    outcome = search(
        default,
        spaces,
        measure,
        mode=mode,
        constraints=constraints,
        cores=cores,
        allow_oversubscribe=allow_oversubscribe,
        max_candidates=max_candidates,
        min_gain=min_gain,
        progress=progress,
    )
    measured = {m.candidate: m for m in outcome.measurements}
    best = best_of(outcome.measurements, min_gain=min_gain)
    confirmation = None
    if confirm and best is not None and best.candidate != default:
        again = _Trials(measure, constraints, None, progress, cores)
        confirmation = (again.once(default), again.once(best.candidate))
    if confirmation is not None and not (confirmation[1].feasible and not better(*confirmation, min_gain=min_gain)):
        notes.append(
            "measured again next to the default, the best candidate did not hold up "
            f"({confirmation[1].throughput:.1f} against {confirmation[0].throughput:.1f} infer/s) — the "
            "measurements are noisier than the differences between candidates; use longer windows"
        )
    return AnalysisResult(
        repo=str(root),
        mode=mode,
        cores=cores,
        concurrency=load,
        constraints=constraints,
        default=measured[default],
        measurements=outcome.measurements,
        best=best,
        pareto=pareto_front(outcome.measurements),
        path=outcome.path,
        notes=notes + outcome.notes,
        confirmation=confirmation,
        min_gain=min_gain,
    )
