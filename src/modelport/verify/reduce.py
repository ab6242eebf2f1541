"""Shrink a failing model to a minimal sub-model that still fails (``modelport debug reduce``).

Why in-process. Polygraphy's ``debug reduce`` shells out and rebuilds for every step; that is
where its 45–123 s on one broken Conv of a ResNet-18 go. Here a candidate is a set of the
original graph's nodes, cut out with :func:`modelport.surgery.extract`, and the built-in checks
run it in this process. Only a user's external command costs a process per candidate.

What "still fails" means is a :class:`Check` (see :func:`parse_check` for the spellings):

* ``nan[:BACKEND]`` — an output holds NaN or Inf while every input is finite (a non-finite input
  means the fault is upstream of the candidate, so it does not count);
* ``error[:BACKEND]`` — the engine raises while loading or running the candidate;
* ``compare:A,B[:ATOL,RTOL]`` — the candidate's outputs differ between two engines;
* ``package.module:function`` — ``function(model, feeds) -> bool``, called in-process;
* a command line — run per candidate with the candidate saved to a temporary file that replaces
  ``{model}`` (``{feeds}``: an .npz of its inputs); a non-zero exit means it still fails, as
  with polygraphy's ``--check``.

Realistic inputs. A candidate cut in the middle reads intermediate tensors. They are fed with
the values those tensors have in the original model on the generated inputs — computed on ONNX
Runtime with graph optimizations off, a few tensors per run, each run holding only the part of
the model they need, and cached — so a fault that needs realistic upstream values (a divisor
that is exactly zero, indices in range, a NaN that arrives from upstream) still shows. A
candidate whose inputs cannot be computed that way (ONNX Runtime fails upstream of them) does
not count as failing.

The search, in three phases; each distinct candidate is checked once (verdicts are memoised):

1. outputs: the earliest tensor whose sub-model, from the model inputs, still fails;
2. inputs: the latest node whose descendants up to that tensor, fed where they are cut, still
   fail — tried first with the node computing the tensor alone, so one broken node costs one
   check here;
3. linear: remove one node at a time from either end — one whose outputs nothing left reads, or
   one that reads only the candidate's inputs — while that keeps the failure.

Phases 1 and 2 are bisections over the graph, not over a list: a probe that fails confines the
answer to what it depends on (phase 1) or what depends on it (phase 2), a probe that passes
clears the same set, and each probe is the tensor or node that splits the undecided ones most
evenly — plain binary search on a chain, and parallel branches cannot mislead it. That assumes
a failure that shows at a tensor also shows downstream of it. Where it does not, every answer is
still a checked, failing sub-model (a bisection returns a probe that failed, never an unchecked
bound), only perhaps not the smallest; phase 3 then removes what it can.
"""

from __future__ import annotations

import abc
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from modelport.entry_points import load_callable
from modelport.errors import BackendError, ConfigError, InputError, ModelSaveError
from modelport.ir.serde import clone, infer_shapes, save
from modelport.ir.specs import specs_of
from modelport.runners import create_runner, runner_class
from modelport.surgery.editing import toposort
from modelport.surgery.extract import extract
from modelport.verify.diff import diff_outputs
from modelport.verify.inputs import InputPlan, generate_feeds, integer_input_ranges, mask_inputs, merge_ranges
from modelport.verify.tolerance import Tolerance

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_TOLERANCE",
    "Check",
    "CommandCheck",
    "CompareCheck",
    "ErrorCheck",
    "FunctionCheck",
    "KeptNode",
    "NanCheck",
    "ReduceResult",
    "ReduceStep",
    "Verdict",
    "feeds_path",
    "load_function_check",
    "parse_check",
    "reduce_model",
]

logger = logging.getLogger(__name__)

Feeds = Mapping[str, np.ndarray[Any, Any]]
Arrays = dict[str, np.ndarray[Any, Any]]

#: Bound of the ``compare`` check when none is given (FP32 against FP32).
DEFAULT_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-4)
#: Seconds one run of an external check command may take.
DEFAULT_TIMEOUT = 60.0
#: Tensors captured from the original model per ONNX Runtime run.
_CAPTURE_CHUNK = 16
_ENTRY_POINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_CHECK_FORMS = (
    "nan[:BACKEND], error[:BACKEND], compare:A,B[:ATOL,RTOL], package.module:function, "
    "or a command line (the candidate's path replaces {model})"
)


# ------------------------------------------------------------------------------------------ checks


@dataclass(frozen=True)
class Verdict:
    """A check's answer on one candidate: does it still fail, and what was seen."""

    failing: bool
    detail: str


class Check(abc.ABC):
    """Decides whether a candidate sub-model still shows the failure."""

    #: How the check is named in reports.
    name: str = "check"
    #: Whether :meth:`run` reads the feeds (only then are intermediate tensors captured).
    wants_feeds: bool = True

    @abc.abstractmethod
    def run(self, model: ir.Model, feeds: Feeds) -> Verdict:
        """Check one candidate; ``feeds`` hold a value for each of its inputs."""

    def close(self) -> None:  # noqa: B027  # optional hook, nothing to free by default
        """Free what the check holds between candidates (a temporary folder)."""


def _infer(backend: str, model: ir.Model, feeds: Feeds) -> Arrays:
    with create_runner(backend, model, name="candidate") as runner:
        return runner.infer(feeds)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _non_finite_input(feeds: Feeds) -> str | None:
    for name, array in feeds.items():
        if array.dtype.kind in "fc" and not bool(np.isfinite(array).all()):
            return name
    return None


class NanCheck(Check):
    """Fails when an output holds NaN or Inf although every input is finite."""

    def __init__(self, backend: str = "onnxruntime") -> None:
        runner_class(backend)  # an unknown or missing engine fails now, not on the first candidate
        self.backend = backend
        self.name = f"nan:{backend}"

    def run(self, model: ir.Model, feeds: Feeds) -> Verdict:
        upstream = _non_finite_input(feeds)
        if upstream is not None:
            return Verdict(False, f"input '{upstream}' already holds NaN/Inf: the fault is upstream")
        try:
            outputs = _infer(self.backend, model, feeds)
        except BackendError as e:
            return Verdict(False, f"{self.backend} failed instead of computing: {_first_line(e)}")
        for name, array in outputs.items():
            if array.dtype.kind in "fc" and not bool(np.isfinite(array).all()):
                nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
                return Verdict(True, f"output '{name}' holds {nan} NaN and {inf} Inf of {array.size} values")
        return Verdict(False, "every output is finite")


class ErrorCheck(Check):
    """Fails when the engine raises while loading or running the candidate."""

    def __init__(self, backend: str = "onnxruntime") -> None:
        runner_class(backend)
        self.backend = backend
        self.name = f"error:{backend}"

    def run(self, model: ir.Model, feeds: Feeds) -> Verdict:
        try:
            _infer(self.backend, model, feeds)
        except InputError:
            raise  # the feeds do not fit: a fault of the reducer, not of the engine
        except Exception as e:
            return Verdict(True, f"{type(e).__name__}: {_first_line(e)}")
        return Verdict(False, f"{self.backend} loaded and ran it")


class CompareCheck(Check):
    """Fails when the outputs on ``backend_a`` differ from those on ``backend_b`` (the reference)."""

    def __init__(self, backend_a: str, backend_b: str, tolerance: Tolerance = DEFAULT_TOLERANCE) -> None:
        runner_class(backend_a)
        runner_class(backend_b)
        self.backend_a, self.backend_b, self.tolerance = backend_a, backend_b, tolerance
        self.name = f"compare:{backend_a},{backend_b}:{tolerance.atol:g},{tolerance.rtol:g}"

    def run(self, model: ir.Model, feeds: Feeds) -> Verdict:
        try:
            candidate = _infer(self.backend_a, model, feeds)
            reference = _infer(self.backend_b, model, feeds)
        except BackendError as e:
            return Verdict(False, f"an engine failed instead of computing: {_first_line(e)}")
        bad = [d for d in diff_outputs(candidate, reference, self.tolerance) if not d.passed]
        if bad:
            shown = "; ".join(f"'{d.name}': {d.reason}" for d in bad[:3])
            return Verdict(True, f"{self.backend_a} vs {self.backend_b}: {shown}")
        return Verdict(False, f"{self.backend_a} and {self.backend_b} agree within {self.tolerance}")


class FunctionCheck(Check):
    """Calls ``fn(model, feeds) -> bool`` in-process; True means the candidate still fails."""

    def __init__(self, fn: Callable[[ir.Model, Arrays], object], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or str(getattr(fn, "__qualname__", repr(fn)))

    def run(self, model: ir.Model, feeds: Feeds) -> Verdict:
        try:
            result = self.fn(model, dict(feeds))
        except Exception as e:
            raise ConfigError(
                f"check {self.name} raised {type(e).__name__} on a candidate of {len(model.graph)} nodes: {e} — "
                "a check returns True (the candidate still fails) or False; it must not raise"
            ) from e
        if not isinstance(result, bool | np.bool_):
            raise ConfigError(
                f"check {self.name} returned {type(result).__name__} {result!r}, but it must return True "
                "(the candidate still fails) or False"
            )
        return Verdict(bool(result), f"{self.name} returned {bool(result)}")


def load_function_check(spec: str) -> FunctionCheck:
    """The check ``'package.module:function'``; raises :class:`ConfigError` when it cannot be loaded."""
    fn = load_callable(spec, what="check", expects="a function(model, feeds) -> bool")
    return FunctionCheck(fn, name=spec)


class CommandCheck(Check):
    """Runs a command per candidate; a non-zero exit status means the candidate still fails.

    The candidate is saved to a temporary ``.onnx`` whose path replaces ``{model}`` in the
    arguments (or is appended when no argument names it); ``{feeds}`` is replaced by an ``.npz``
    of the candidate's inputs. A run longer than ``timeout`` seconds is an error.
    """

    def __init__(self, command: str | Sequence[str], *, timeout: float = DEFAULT_TIMEOUT) -> None:
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not argv:
            raise ConfigError(f"the check command is empty — give a command line; forms: {_CHECK_FORMS}")
        if not timeout > 0:
            raise ConfigError(f"the check timeout must be > 0 seconds, got {timeout}")
        if not any("{model}" in arg for arg in argv):
            argv.append("{model}")
        self.argv = argv
        self.timeout = timeout
        self.wants_feeds = any("{feeds}" in arg for arg in argv)
        self.name = shlex.join(argv)
        self._folder: Path | None = None

    def run(self, model: ir.Model, feeds: Feeds) -> Verdict:
        from modelport.protect import ENCRYPTED_META

        if ENCRYPTED_META in model.meta:
            raise ConfigError(
                f"'{self.name}' gets each candidate as a file, and the model was decrypted from an encrypted file "
                f"({model.meta[ENCRYPTED_META]}) — use an in-process check (nan, error, compare:A,B, pkg.mod:fn), "
                "or decrypt the model yourself to a place you trust"
            )
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="modelport-reduce-"))
        model_path = save(model, self._folder / "candidate.onnx")
        npz_path = self._folder / "candidate.feeds.npz"
        if self.wants_feeds:
            _save_npz(feeds, npz_path)
        argv = [arg.replace("{model}", str(model_path)).replace("{feeds}", str(npz_path)) for arg in self.argv]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, errors="replace", timeout=self.timeout, check=False
            )
        except subprocess.TimeoutExpired as e:
            raise ConfigError(
                f"check command {self.name!r} did not finish within {self.timeout:g} s on a candidate of "
                f"{len(model.graph)} nodes — give it more time (--timeout) or make it faster"
            ) from e
        except OSError as e:
            raise ConfigError(
                f"check command {self.name!r} could not be started: {e} — check that '{argv[0]}' exists and is "
                "executable"
            ) from e
        if done.returncode == 0:
            return Verdict(False, "exit status 0")
        return Verdict(True, f"exit status {_status_text(done.returncode)}{_last_line(done.stderr or done.stdout)}")

    def close(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


def _status_text(code: int) -> str:
    if code < 0:
        try:
            return f"{code} (killed by {signal.Signals(-code).name})"
        except ValueError:
            return str(code)
    return str(code)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f": {lines[-1][:200]}" if lines else ""


def _compare_check(spec: str, rest: str) -> CompareCheck:
    parts = rest.split(":")
    backends = [b.strip() for b in parts[0].split(",") if b.strip()]
    if len(backends) != 2 or len(parts) > 2:
        raise ConfigError(
            f"check {spec!r} must name two backends and optionally a tolerance: compare:A,B[:ATOL,RTOL], "
            "e.g. compare:onnxruntime,openvino:1e-4,1e-4"
        )
    tolerance = DEFAULT_TOLERANCE
    if len(parts) == 2:
        values = parts[1].split(",")
        try:
            atol, rtol = (float(v) for v in values)
        except ValueError:
            raise ConfigError(
                f"check {spec!r}: the tolerance '{parts[1]}' must be two numbers ATOL,RTOL, e.g. 1e-4,1e-4"
            ) from None
        tolerance = Tolerance(atol, rtol)
    return CompareCheck(backends[0], backends[1], tolerance)


def parse_check(spec: str, *, timeout: float = DEFAULT_TIMEOUT) -> Check:
    """The check a command-line spelling names.

    ``nan[:BACKEND]``, ``error[:BACKEND]`` (default backend onnxruntime),
    ``compare:A,B[:ATOL,RTOL]``, ``package.module:function``, or a command: anything with a space,
    or the name or path of an executable. ``timeout`` bounds each run of a command.
    """
    text = spec.strip()
    if not text:
        raise ConfigError(f"the check is empty — give one of: {_CHECK_FORMS}")
    if any(c.isspace() for c in text):
        return CommandCheck(text, timeout=timeout)
    head, _, rest = text.partition(":")
    if head == "nan":
        return NanCheck(rest or "onnxruntime")
    if head == "error":
        return ErrorCheck(rest or "onnxruntime")
    if head == "compare":
        return _compare_check(text, rest)
    if _ENTRY_POINT.match(text):
        return load_function_check(text)
    if shutil.which(text) is not None or Path(text).is_file():
        return CommandCheck([text], timeout=timeout)
    raise ConfigError(f"unknown check {spec!r} — use {_CHECK_FORMS}")


# ------------------------------------------------------------------------------------------ result


@dataclass
class ReduceStep:
    """One candidate that was really checked (memoised repeats are not steps)."""

    phase: str
    nodes: int
    inputs: list[str]
    outputs: list[str]
    failing: bool
    detail: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class KeptNode:
    """A node of the reproducer."""

    name: str
    op_type: str


def feeds_path(model_path: str | os.PathLike[str]) -> Path:
    """Where the inputs of a reproducer saved at ``model_path`` go: ``<name>.feeds.npz`` next to it."""
    path = Path(model_path)
    stem = path.name[: -len(".onnx")] if path.name.endswith(".onnx") else path.name
    return path.with_name(f"{stem}.feeds.npz")


def _save_npz(feeds: Feeds, path: Path) -> None:
    """Write ``feeds`` to ``path`` atomically (a temporary file in the same folder, then renamed)."""
    fd, tmp = tempfile.mkstemp(prefix=".modelport-", suffix=".npz", dir=path.parent)
    try:
        arrays: dict[str, Any] = dict(feeds)
        with os.fdopen(fd, "wb") as out:
            np.savez(out, **arrays)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise ModelSaveError(f"writing the inputs '{path}' failed: {e}") from e


@dataclass
class ReduceResult:
    """The reproducer and how it was found.

    ``feeds`` are its inputs' values in the original model on the generated inputs (None when
    they could not be computed; ``notes`` then say why). ``checks_run`` counts candidates really
    checked, ``cache_hits`` the repeats answered from memory, ``captures`` the ONNX Runtime runs
    that computed intermediate tensors of the original.
    """

    model: ir.Model
    feeds: Arrays | None
    check: str
    original_nodes: int
    nodes: list[KeptNode]
    inputs: list[str]
    outputs: list[str]
    detail: str
    steps: list[ReduceStep]
    checks_run: int
    cache_hits: int
    captures: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "original_nodes": self.original_nodes,
            "nodes": [asdict(n) for n in self.nodes],
            "inputs": self.inputs,
            "outputs": self.outputs,
            "detail": self.detail,
            "checks_run": self.checks_run,
            "cache_hits": self.cache_hits,
            "captures": self.captures,
            "seconds": self.seconds,
            "steps": [s.to_dict() for s in self.steps],
            "notes": self.notes,
        }

    def save(self, path: str | os.PathLike[str], *, in_place: bool = False) -> tuple[Path, Path | None]:
        """Write the reproducer to ``path`` and its inputs to :func:`feeds_path`, both atomically.

        Refuses to overwrite the model the reduction started from unless ``in_place``.
        Returns both paths (the second is None when there are no feeds to write).
        """
        model_path = save(self.model, path, in_place=in_place)
        if self.feeds is None:
            return model_path, None
        npz = feeds_path(model_path)
        _save_npz(self.feeds, npz)
        return model_path, npz


# ----------------------------------------------------------------------------------- graph index


def _names(values: Iterable[ir.Value]) -> list[str]:
    return [v.name or "" for v in values]


def _is_constant(value: ir.Value) -> bool:
    return not value.is_graph_input() and (value.is_initializer() or value.const_value is not None)


def _cuttable(value: ir.Value) -> bool:
    """A tensor a sub-model can take as input or give as output: named, a tensor, dtype known."""
    return bool(value.name) and isinstance(value.type, ir.TensorType) and value.dtype is not None


def _reads(node: ir.Node, main: ir.Graph) -> list[ir.Value]:
    """What ``node`` reads from the main graph: its inputs, then what its bodies read from outside."""
    values = [v for v in node.inputs if v is not None]
    for attr in node.attributes.values():
        if attr.type == ir.AttributeType.GRAPH:
            bodies = [attr.as_graph()]
        elif attr.type == ir.AttributeType.GRAPHS:
            bodies = list(attr.as_graphs())
        else:
            continue
        for body in bodies:
            values += [v for v in body.outputs if v.graph is main]
            for inner in ir.traversal.RecursiveGraphIterator(body):
                values += [v for v in inner.inputs if v is not None and v.graph is main]
    return list(dict.fromkeys(values))


@dataclass(frozen=True)
class _Candidate:
    """A sub-model: the main-graph nodes it keeps (constant producers aside) and its outputs."""

    core: frozenset[int]
    outputs: tuple[ir.Value, ...]


class _Graph:
    """The main graph's nodes in topological order, what each reads, and who reads what."""

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.nodes = list(model.graph)
        self.index = {node: i for i, node in enumerate(self.nodes)}
        self.reads = [_reads(node, model.graph) for node in self.nodes]
        self.readers: dict[ir.Value, list[int]] = {}
        for i, values in enumerate(self.reads):
            for value in values:
                self.readers.setdefault(value, []).append(i)
        # Nodes that read nothing (Constant): part of any candidate that reads what they make.
        self.free = frozenset(i for i, values in enumerate(self.reads) if not values)

    def producer(self, value: ir.Value) -> int | None:
        node = value.producer()
        return None if node is None else self.index.get(node)

    def cone(self, values: Iterable[ir.Value]) -> frozenset[int]:
        """The nodes ``values`` depend on, from the model inputs (constant producers aside)."""
        seen: set[int] = set()
        stack = [p for v in values if (p := self.producer(v)) is not None]
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            stack.extend(p for v in self.reads[i] if (p := self.producer(v)) is not None and p not in seen)
        return frozenset(seen - self.free)

    def frontier(self, core: Collection[int]) -> list[ir.Value]:
        """What ``core`` reads from outside itself and must be fed (never a constant)."""
        found: dict[ir.Value, None] = {}
        for i in sorted(core):
            for value in self.reads[i]:
                p = self.producer(value)
                if (p is not None and (p in core or p in self.free)) or _is_constant(value):
                    continue
                found[value] = None
        return list(found)

    def tensors(self, core: Collection[int]) -> list[ir.Value]:
        """The cuttable, used tensors ``core`` produces, in topological order."""
        return [
            v for i in sorted(core) for v in self.nodes[i].outputs if _cuttable(v) and (v.uses() or v.is_graph_output())
        ]

    def ancestry(self, tensors: Sequence[ir.Value], core: Collection[int]) -> list[int]:
        """Bit sets over ``tensors``: each tensor and those of ``tensors`` it depends on, in ``core``."""
        bit = {v: 1 << k for k, v in enumerate(tensors)}
        reach: dict[ir.Value, int] = {}
        for i in sorted(core):
            inputs = 0
            for value in self.reads[i]:
                inputs |= reach.get(value, 0)
            for out in self.nodes[i].outputs:
                reach[out] = inputs | bit.get(out, 0)
        return [reach[v] for v in tensors]

    def descendants(self, order: Sequence[int]) -> list[int]:
        """Bit sets over positions in ``order``: each node and the nodes of ``order`` reading from it."""
        position = {i: k for k, i in enumerate(order)}
        cover = [0] * len(order)
        for k in reversed(range(len(order))):
            bits = 1 << k
            for out in self.nodes[order[k]].outputs:
                for reader in self.readers.get(out, ()):
                    if reader in position:
                        bits |= cover[position[reader]]
            cover[k] = bits
        return cover

    def candidate(self, value: ir.Value) -> _Candidate:
        """The sub-model ending at ``value``, from the model inputs."""
        return _Candidate(self.cone([value]), (value,))

    def without(self, cand: _Candidate, drop: int) -> _Candidate | None:
        """``cand`` without node ``drop``: what it read from the rest becomes an output, what it made
        becomes an input. None when nothing is left or a new input or output has no known dtype."""
        rest = cand.core - {drop}
        if not rest:
            return None
        kept = [o for o in cand.outputs if self.producer(o) in rest]
        exposed = [
            v
            for v in self.reads[drop]
            if self.producer(v) in rest and v not in kept and not any(r in rest for r in self.readers[v])
        ]
        outputs = kept + exposed
        if not outputs or not all(_cuttable(v) for v in [*exposed, *self.frontier(rest)]):
            return None
        return _Candidate(frozenset(rest), tuple(outputs))

    def ends(self, core: Collection[int]) -> list[int]:
        """Nodes that can go: those nothing in ``core`` reads (latest first), then those that read
        only from outside ``core`` (earliest first)."""
        order = sorted(core)
        sinks = [
            i
            for i in reversed(order)
            if not any(r in core for v in self.nodes[i].outputs for r in self.readers.get(v, ()))
        ]
        sources = [i for i in order if all(self.producer(v) not in core for v in self.reads[i])]
        return list(dict.fromkeys([*sinks, *sources]))


# ------------------------------------------------------------------------------------------- search


def _bits(bits: int) -> Iterator[int]:
    """The positions of the set bits, lowest first."""
    while bits:
        low = bits & -bits
        yield low.bit_length() - 1
        bits ^= low


def _split_search(
    unknown: int, cover: Sequence[int], probe: Callable[[int], bool | None], *, first: int | None = None
) -> int | None:
    """Bisection over a DAG: the last item whose probe failed, or None when none did.

    Items are bit positions; ``unknown`` holds those not yet decided. ``cover[i]`` holds ``i`` and
    the items whose failure it is assumed to share: when ``i`` fails, the answer lies in its cover
    (``i`` itself is one); when it passes, nothing in its cover fails. Each probe is the item
    whose cover splits the unknown items most evenly — plain binary search on a chain — starting
    with ``first`` when given. ``probe`` answers None for an item that cannot be checked.
    """
    best: int | None = None
    pick = first
    while unknown:
        if pick is None or not (unknown >> pick) & 1:
            members = list(_bits(unknown))
            half = len(members) / 2
            pick = min(members, key=lambda i: (abs((cover[i] & unknown).bit_count() - half), i))
        failing = probe(pick)
        if failing is None:
            unknown &= ~(1 << pick)
        elif failing:
            best = pick
            unknown &= cover[pick] & ~(1 << pick)
        else:
            unknown &= ~cover[pick]
        pick = None
    return best


# ------------------------------------------------------------------------------------------ capture


class _CaptureError(Exception):
    """An intermediate tensor of the original model cannot be computed on ONNX Runtime."""


class _Capture:
    """Values of the original model's tensors on the generated inputs, computed on demand.

    Each run extracts only what the requested tensors need and runs it on ONNX Runtime with
    graph optimizations off, at most :data:`_CAPTURE_CHUNK` tensors at a time; values are cached.
    """

    def __init__(self, model: ir.Model, feeds: Feeds) -> None:
        self._model = model
        self.values: Arrays = dict(feeds)
        self._failed: dict[str, str] = {}
        self.runs = 0

    def get(self, names: Sequence[str], hint: Iterable[str] = ()) -> Arrays:
        """The values of ``names``; ``hint`` names tensors likely wanted next, fetched in the same run
        while there is room."""
        missing = [n for n in dict.fromkeys(names) if n not in self.values and n not in self._failed]
        if missing:
            extra = [n for n in dict.fromkeys(hint) if n not in self.values and n not in self._failed]
            todo = list(dict.fromkeys([*missing, *extra]))[: max(_CAPTURE_CHUNK, len(missing))]
            for start in range(0, len(todo), _CAPTURE_CHUNK):
                self._run(todo[start : start + _CAPTURE_CHUNK])
        failed = [n for n in names if n in self._failed]
        if failed:
            raise _CaptureError(
                f"the value of '{failed[0]}' in the original model cannot be computed on ONNX Runtime "
                f"({self._failed[failed[0]]}), so this candidate cannot be fed realistic inputs"
            )
        return {n: self.values[n] for n in names}

    def _run(self, names: list[str]) -> None:
        from modelport.runners.onnxruntime import OrtRunner

        part = extract(self._model, None, names)
        feeds = {name: self.values[name] for name in _names(part.graph.inputs)}
        self.runs += 1
        logger.debug("capturing %d tensors of the original model: %s", len(names), names)
        try:
            with OrtRunner(part, graph_optimization="disable", share_weights=True, name="capture") as runner:
                self.values.update(runner.infer(feeds))
        except BackendError as e:
            if len(names) == 1:
                self._failed[names[0]] = _first_line(e)
                return
            half = len(names) // 2  # one tensor ONNX Runtime cannot compute must not spoil the others
            self._run(names[:half])
            self._run(names[half:])


# ---------------------------------------------------------------------------------------- reducer


class _Reducer:
    """The three phases over one model, with memoised verdicts."""

    def __init__(
        self, graph: _Graph, check: Check, capture: _Capture, progress: Callable[[ReduceStep], None] | None
    ) -> None:
        self.graph = graph
        self.check = check
        self.capture = capture
        self.progress = progress
        self.memo: dict[_Candidate, Verdict] = {}
        self.steps: list[ReduceStep] = []
        self.cache_hits = 0
        # Later candidates are subsets of the best so far: extracting from it is cheaper.
        self.base = graph.model

    def build(self, cand: _Candidate) -> ir.Model:
        return extract(self.base, _names(self.graph.frontier(cand.core)), _names(cand.outputs))

    def fails(self, cand: _Candidate, phase: str, hint: Iterable[ir.Value] = ()) -> bool:
        known = self.memo.get(cand)
        if known is not None:
            self.cache_hits += 1
            return known.failing
        start = time.perf_counter()
        inputs = self.graph.frontier(cand.core)
        sub = self.build(cand)
        verdict = self._verdict(sub, _names(inputs), _names(hint))
        self.memo[cand] = verdict
        step = ReduceStep(
            phase,
            len(sub.graph),
            _names(inputs),
            _names(cand.outputs),
            verdict.failing,
            verdict.detail,
            time.perf_counter() - start,
        )
        self.steps.append(step)
        logger.debug("%s: %d nodes -> %s (%s)", phase, step.nodes, verdict.failing, verdict.detail)
        if self.progress is not None:
            self.progress(step)
        return verdict.failing

    def _verdict(self, sub: ir.Model, inputs: list[str], hint: list[str]) -> Verdict:
        if not self.check.wants_feeds:
            return self.check.run(sub, {})
        try:
            feeds = self.capture.get(inputs, hint)
        except _CaptureError as e:
            return Verdict(False, str(e))
        return self.check.run(sub, feeds)

    def settle(self, cand: _Candidate) -> None:
        """``cand`` is the best so far: later candidates are extracted from it."""
        self.base = self.build(cand)

    # phase 1 ------------------------------------------------------------------------------------
    def outputs_phase(self, whole: _Candidate) -> _Candidate:
        """The earliest tensor whose sub-model, from the model inputs, still fails."""
        g = self.graph
        best, bound = whole, whole.outputs[0] if len(whole.outputs) == 1 else None
        if bound is None:
            for out in whole.outputs:  # a multi-output model: keep one output when it fails alone
                if self.fails(g.candidate(out), "outputs"):
                    best, bound = g.candidate(out), out
                    break
        tensors = g.tensors(best.core)
        cover = g.ancestry(tensors, best.core)
        unknown = (1 << len(tensors)) - 1
        if bound is not None:
            known = tensors.index(bound)
            unknown = cover[known] & ~(1 << known)
        found = _split_search(unknown, cover, lambda k: self.fails(g.candidate(tensors[k]), "outputs"))
        return best if found is None else g.candidate(tensors[found])

    # phase 2 ------------------------------------------------------------------------------------
    def inputs_phase(self, best: _Candidate) -> _Candidate:
        """The latest node whose descendants (up to the outputs), fed where they are cut, still fail.

        The first probe is the smallest such sub-model — the node computing the output — so a
        single broken node costs one check."""
        g = self.graph
        order = sorted(best.core)
        cover = g.descendants(order)

        def probe(k: int) -> _Candidate | None:
            core = frozenset(order[j] for j in _bits(cover[k]))
            if not all(_cuttable(v) for v in g.frontier(core)):
                return None
            return _Candidate(core, tuple(o for o in best.outputs if g.producer(o) in core))

        def check(k: int) -> bool | None:
            cand = probe(k)
            return None if cand is None else self.fails(cand, "inputs", g.tensors(cand.core))

        smallest = min(range(len(order)), key=lambda k: (cover[k].bit_count(), -k))
        found = _split_search((1 << len(order)) - 1, cover, check, first=smallest)
        result = None if found is None else probe(found)
        return best if result is None else result

    # phase 3 ------------------------------------------------------------------------------------
    def _removals(self, best: _Candidate) -> Iterator[_Candidate]:
        for node in self.graph.ends(best.core):
            smaller = self.graph.without(best, node)
            if smaller is not None:
                yield smaller

    def linear_phase(self, best: _Candidate) -> _Candidate:
        improved = True
        while improved:
            improved = False
            hint = self.graph.tensors(best.core)
            for smaller in self._removals(best):
                if self.fails(smaller, "linear", hint):
                    best, improved = smaller, True
                    break
        return best


# ------------------------------------------------------------------------------------------- entry


def _coerce_check(check: Check | str | Callable[[ir.Model, Arrays], object], timeout: float) -> Check:
    if isinstance(check, Check):
        return check
    if isinstance(check, str):
        return parse_check(check, timeout=timeout)
    if callable(check):
        return FunctionCheck(check)
    raise ConfigError(f"a check is a Check, a spelling ({_CHECK_FORMS}) or a function, not {type(check).__name__}")


def _original_feeds(model: ir.Model, plan: InputPlan | None) -> Arrays:
    plan = plan or InputPlan()
    plan = replace(
        plan,
        int_ranges=merge_ranges(integer_input_ranges(model), plan.int_ranges),
        masks=mask_inputs(model) | plan.masks,
    )
    return generate_feeds(specs_of(model.graph.inputs), plan)


def _prepare(model: ir.Model) -> _Graph:
    work = clone(model)
    infer_shapes(work)
    toposort(work)
    return _Graph(work)


def reduce_model(
    model: ir.Model,
    check: Check | str | Callable[[ir.Model, Arrays], object],
    *,
    plan: InputPlan | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Callable[[ReduceStep], None] | None = None,
) -> ReduceResult:
    """The smallest sub-model of ``model`` found that still fails ``check``; ``model`` is not changed.

    ``check`` is a :class:`Check`, a spelling for :func:`parse_check` (``timeout`` bounds each run
    of a command), or a function ``(model, feeds) -> bool``. Inputs are generated following
    ``plan``. ``progress`` is called after every candidate checked. Raises :class:`ConfigError`
    when the original model does not fail the check (there is nothing to reduce).
    """
    start = time.perf_counter()
    the_check = _coerce_check(check, timeout)
    try:
        feeds = _original_feeds(model, plan)
        verdict = the_check.run(model, feeds if the_check.wants_feeds else {})
        first = ReduceStep(
            "original", len(model.graph), list(feeds), _names(model.graph.outputs),
            verdict.failing, verdict.detail, time.perf_counter() - start,
        )  # fmt: skip
        if progress is not None:
            progress(first)
        if not verdict.failing:
            raise ConfigError(
                f"the original model does not fail the check {the_check.name} ({verdict.detail}), so there is "
                "nothing to reduce — check the check, the inputs (--batch, --dim, --int-range, --seed) or the backend"
            )
        graph = _prepare(model)
        reducer = _Reducer(graph, the_check, _Capture(graph.model, feeds), progress)
        reducer.steps.append(first)
        best, notes = _search(reducer, verdict)
        return _result(reducer, best, model, notes, start)
    finally:
        the_check.close()


def _search(reducer: _Reducer, verdict: Verdict) -> tuple[_Candidate | None, list[str]]:
    g = reducer.graph
    outputs = tuple(
        v for v in g.model.graph.outputs if (p := g.producer(v)) is not None and p not in g.free and _cuttable(v)
    )
    whole = _Candidate(g.cone(outputs), outputs)
    everything = frozenset(range(len(g.nodes))) - g.free
    if whole.core == everything and len(outputs) == len(g.model.graph.outputs):
        reducer.memo[whole] = verdict  # the same graph as the original, already checked
    elif not outputs or not reducer.fails(whole, "outputs"):
        return None, ["the failure needs nodes no output depends on (or outputs no node computes); nothing was removed"]
    best = reducer.outputs_phase(whole)
    logger.info("outputs phase: %d nodes up to %s", len(best.core), [v.name for v in best.outputs])
    reducer.settle(best)
    best = reducer.inputs_phase(best)
    logger.info("inputs phase: %d nodes from %s", len(best.core), [v.name for v in g.frontier(best.core)])
    reducer.settle(best)
    best = reducer.linear_phase(best)
    logger.info("linear phase: %d nodes", len(best.core))
    return best, []


def _result(
    reducer: _Reducer, best: _Candidate | None, original: ir.Model, notes: list[str], start: float
) -> ReduceResult:
    capture = reducer.capture
    if best is None:
        final, detail = clone(original), reducer.steps[0].detail
        inputs = _names(original.graph.inputs)
    else:
        final, detail = reducer.build(best), reducer.memo[best].detail
        inputs = _names(reducer.graph.frontier(best.core))
    try:
        feeds: Arrays | None = capture.get(inputs)
    except _CaptureError as e:
        feeds = None
        notes = [*notes, f"no inputs saved: {e}"]
    return ReduceResult(
        model=final,
        feeds=feeds,
        check=reducer.check.name,
        original_nodes=len(original.graph),
        nodes=[KeptNode(n.name or "", n.op_type) for n in final.graph],
        inputs=_names(final.graph.inputs),
        outputs=_names(final.graph.outputs),
        detail=detail,
        steps=reducer.steps,
        checks_run=len(reducer.steps),
        cache_hits=reducer.cache_hits,
        captures=capture.runs,
        seconds=time.perf_counter() - start,
        notes=notes,
    )
