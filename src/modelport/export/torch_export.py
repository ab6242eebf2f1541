"""PyTorch -> ONNX export, always validated against eager PyTorch.

:func:`export_torch` exports with ``torch.onnx.export`` (the TorchScript-based "legacy" exporter
or the ``torch.export``-based "dynamo" one), saves atomically, runs the ONNX checker, and runs
the saved file in ONNX Runtime against the eager module at the example shape and at a second
batch size. The comparison is reported in an :class:`ExportResult`; a mismatch raises nothing
by itself — call :meth:`ExportResult.raise_for_mismatch` to make it an error.
"""

# torch is imported inside functions on purpose, so importing modelport never imports it.

from __future__ import annotations

import logging
import os
import re
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from modelport.errors import BackendError, ConfigError, ExportError, InputError, InvalidModelError
from modelport.export.eager import (
    ModuleCall,
    default_output_names,
    example_feeds,
    numpy_dtype,
    to_numpy,
    to_tensor,
)
from modelport.export.factory import ExampleInputs, normalize_example_inputs, resolve_module
from modelport.export.result import HINTS, Exporter, ExportResult
from modelport.ir.serde import check_model, from_bytes, save
from modelport.ir.specs import TensorSpec, specs_of
from modelport.runners.onnxruntime import OrtRunner
from modelport.verify.compare import BatchComparison
from modelport.verify.diff import diff_outputs
from modelport.verify.inputs import DEFAULT_INT_RANGE, InputPlan, generate_feeds
from modelport.verify.tolerance import Tolerance

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["DEFAULT_TOLERANCE", "ExportResult", "Exporter", "export_torch"]

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray[Any, Any]]
DynamicAxes = Mapping[str, Mapping[int, str]]

#: fp32 export noise passes; a wrong operator or a frozen shape does not.
DEFAULT_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-3)
_EXPORTERS = ("dynamo", "legacy")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class _Job:
    """Everything one export needs, settled before torch.onnx.export is called."""

    module: nn.Module
    call: ModuleCall
    tensors: list[torch.Tensor]
    feeds: Arrays
    output_names: list[str]
    axes: dict[str, dict[int, str]]
    device: str


def export_torch(
    module_or_factory: Any,
    output_path: str | os.PathLike[str],
    *,
    inputs: list[TensorSpec] | None = None,
    example_inputs: Any = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: DynamicAxes | None = None,
    opset: int = 17,
    exporter: Exporter = "legacy",
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    second_batch: int | None = 2,
) -> ExportResult:
    """Export a module to ONNX at ``output_path`` and validate it against eager PyTorch.

    ``module_or_factory`` is an ``nn.Module``, a factory spec (``'package.module:function'`` or
    ``'path/to/file.py:function'``) or a zero-argument callable; a factory may also return example
    inputs. Example inputs are ``example_inputs`` (a tensor, tuple or dict of tensors), else the
    factory's, else generated from ``inputs`` (seeded; integers in a valid index range). Input
    specs also name the inputs. ``dynamic_axes`` maps input and output names to
    ``{axis: label}``; symbolic dims in ``inputs`` add to it. The module runs in eval mode and its
    training flag is restored afterwards.

    Raises :class:`ExportError` (cause chained) when the exporter, the checker or ONNX Runtime
    fails, and :class:`ConfigError` for inconsistent arguments. Numeric mismatches are only
    reported: see :meth:`ExportResult.raise_for_mismatch`.
    """
    if exporter not in _EXPORTERS:
        raise ConfigError(f"unknown exporter '{exporter}' — choose 'legacy' or 'dynamo'")
    if second_batch is not None and second_batch < 1:
        raise ConfigError(f"second_batch must be at least 1 (or None to skip), got {second_batch}")
    loaded = resolve_module(module_or_factory)
    module = loaded.module
    examples = loaded.example_inputs if example_inputs is None else example_inputs
    was_training = module.training
    module.eval()
    try:
        job = _prepare(module, inputs, examples, output_names, dynamic_axes)
        model, caught = _run_exporter(job, opset, exporter)
        path = save(model, output_path)
        try:
            check_model(model)
        except InvalidModelError as e:
            raise ExportError(
                f"the model exported to '{path}' fails the ONNX checker: {e} — the file is kept "
                f"for inspection; {HINTS[exporter]}"
            ) from e
        result, comparable = _describe(job, model, path, exporter, opset, tolerance)
        result.warnings = caught
        if comparable:
            _validate(result, job, second_batch)
        else:
            result.second_batch_skipped = "the model's inputs or outputs do not match forward's"
            result.notes.append("outputs were not compared: the signatures differ (see problems)")
        logger.info(
            "exported %s to %s (%s exporter, opset %d): %s",
            type(module).__name__,
            path,
            exporter,
            result.opset,
            "passed" if result.passed else "MISMATCH",
        )
        return result
    finally:
        module.train(was_training)


# preparing ------------------------------------------------------------------------------------
def _prepare(
    module: nn.Module,
    specs: list[TensorSpec] | None,
    examples: Any,
    output_names: Sequence[str] | None,
    dynamic_axes: DynamicAxes | None,
) -> _Job:
    device = _module_device(module)
    if examples is not None:
        normalized = normalize_example_inputs(examples, where="example_inputs")
        call = _named_call(ModuleCall.for_examples(module, normalized), specs, normalized)
        tensors = call.tensors(normalized)
        if tensors:
            device = str(tensors[0].device)
        feeds = {name: to_numpy(t) for name, t in zip(call.names, tensors, strict=True)}
    elif specs:
        call = ModuleCall.for_names(module, [s.name for s in specs])
        feeds = example_feeds(specs, module)
        tensors = [to_tensor(feeds[name], device) for name in call.names]
    else:
        raise ConfigError(
            "no example inputs: give input specs (inputs=[TensorSpec(...)], or --input "
            "NAME:SHAPE[:DTYPE] such as x:1x3x224x224) or example tensors, or return "
            "(module, example_inputs) from the factory"
        )
    reference = _run_example(module, call, feeds, device)
    names = _output_names(output_names, len(reference))
    axes = _merge_axes(dynamic_axes, specs)
    _check_axes(axes, feeds, names)
    return _Job(module, call, tensors, feeds, names, axes, device)


def _run_example(module: nn.Module, call: ModuleCall, feeds: Arrays, device: str) -> list[np.ndarray[Any, Any]]:
    """Eager outputs on the example inputs; a failure here is the caller's inputs, not export."""
    try:
        return call.run(module, feeds, device=device)
    except ExportError:
        raise
    except Exception as e:
        shapes = ", ".join(f"{n}: {a.dtype} {list(a.shape)}" for n, a in feeds.items())
        raise ExportError(
            f"{type(module).__name__} fails on the example inputs ({shapes}): "
            f"{type(e).__name__}: {e} — give input specs or example inputs that forward accepts"
        ) from e


def _module_device(module: nn.Module) -> str:
    for parameter in module.parameters():
        return str(parameter.device)
    for buffer in module.buffers():
        return str(buffer.device)
    return "cpu"


def _named_call(call: ModuleCall, specs: list[TensorSpec] | None, examples: ExampleInputs) -> ModuleCall:
    """Input specs given next to example tensors rename positional inputs and must agree."""
    if not specs:
        return call
    names = [s.name for s in specs]
    if len(specs) != len(examples):
        raise ConfigError(
            f"{len(specs)} input specs ({', '.join(names)}) were given for {len(examples)} example "
            "inputs — give one spec per example input, or leave the specs out"
        )
    if call.keyword:
        if set(names) != set(call.names):
            raise ConfigError(
                f"input specs name {', '.join(sorted(names))}, but the example inputs are keyed "
                f"{', '.join(sorted(call.names))} — use the same names"
            )
    else:
        call = ModuleCall(tuple(names), keyword=False)
    by_name = {s.name: s for s in specs}
    for name, tensor in zip(call.names, call.tensors(examples), strict=True):
        spec = by_name[name]
        shape = tuple(tensor.shape)
        dtype = numpy_dtype(tensor.dtype)
        static_ok = spec.shape is None or (
            len(spec.shape) == len(shape)
            and all(not isinstance(d, int) or d == s for d, s in zip(spec.shape, shape, strict=True))
        )
        if dtype != spec.dtype or not static_ok:
            raise ConfigError(
                f"example input '{name}' is {dtype} {list(shape)}, but its spec says "
                f"{spec.dtype} {spec.shape_str()} — make them agree, or leave the spec out"
            )
    return call


def _output_names(given: Sequence[str] | None, count: int) -> list[str]:
    if given is None:
        return default_output_names(count)
    names = list(given)
    if len(names) != count:
        raise ConfigError(
            f"{len(names)} output names ({', '.join(names)}) were given, but forward returns "
            f"{count} tensors — give exactly {count}"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"output names {names} repeat a name — give each output its own name")
    return names


def _merge_axes(given: DynamicAxes | None, specs: list[TensorSpec] | None) -> dict[str, dict[int, str]]:
    """``dynamic_axes`` plus the symbolic dims of the input specs."""
    axes = {name: dict(per) for name, per in (given or {}).items()}
    for spec in specs or []:
        for axis, found in spec.dynamic_axes.items():
            label = f"{spec.name}_dim{axis}" if found == "?" else found
            current = axes.setdefault(spec.name, {})
            if current.get(axis, label) != label:
                raise ConfigError(
                    f"axis {axis} of input '{spec.name}' is '{label}' in its spec but "
                    f"'{current[axis]}' in dynamic_axes — use one label"
                )
            current[axis] = label
    return axes


def _check_axes(axes: dict[str, dict[int, str]], feeds: Arrays, output_names: list[str]) -> None:
    for name, per_axis in axes.items():
        if name not in feeds and name not in output_names:
            raise ConfigError(
                f"dynamic_axes names '{name}', which is neither an input ({', '.join(feeds)}) nor "
                f"an output ({', '.join(output_names)}) of the model"
            )
        rank = feeds[name].ndim if name in feeds else None
        for axis in per_axis:
            if axis < 0 or (rank is not None and axis >= rank):
                raise ConfigError(
                    f"dynamic axis {axis} of input '{name}' does not exist: the input has rank "
                    f"{rank} (shape {list(feeds[name].shape)})"
                )


# exporting ------------------------------------------------------------------------------------
def _run_exporter(job: _Job, opset: int, exporter: Exporter) -> tuple[ir.Model, list[str]]:
    """Run torch.onnx.export; return the model and the warnings it raised (recorded, not shown)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if exporter == "legacy":
                data = _export_legacy(job, opset)
            else:
                model = _export_dynamo(job, opset)
        except Exception as e:
            raise ExportError(
                f"the {exporter} exporter failed on {type(job.module).__name__}: "
                f"{type(e).__name__}: {_first_lines(str(e))} — {HINTS[exporter]}"
            ) from e
    if exporter == "legacy":
        model = from_bytes(data, what="the legacy exporter's output")
    return model, _warning_lines(caught)


def _export_legacy(job: _Job, opset: int) -> bytes:
    import torch

    args, kwargs = job.call.split(job.tensors)
    with tempfile.TemporaryDirectory(prefix="modelport-export-") as folder:
        path = Path(folder) / "model.onnx"
        torch.onnx.export(
            job.module,
            args,
            str(path),
            kwargs=kwargs or None,
            input_names=list(job.call.names),
            output_names=job.output_names,
            dynamic_axes={name: dict(per) for name, per in job.axes.items()} or None,
            opset_version=opset,
            dynamo=False,
            verbose=False,
        )
        return path.read_bytes()


def _export_dynamo(job: _Job, opset: int) -> ir.Model:
    import torch

    args, kwargs = job.call.split(job.tensors)
    program = torch.onnx.export(
        job.module,
        args,
        None,
        kwargs=kwargs or None,
        input_names=list(job.call.names),
        output_names=job.output_names,
        dynamic_shapes=_dynamic_shapes(job),
        opset_version=opset,
        dynamo=True,
        verbose=False,
    )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no ONNXProgram")
    model: ir.Model = program.model
    return model


def _dynamic_shapes(job: _Job) -> tuple[Any, ...] | dict[str, Any] | None:
    """``dynamic_axes`` of the inputs as torch.export dims; one Dim object per label."""
    import torch

    if not any(name in job.axes for name in job.call.names):
        return None
    dims: dict[str, Any] = {}

    def dim(label: str) -> Any:
        if label not in dims:
            safe = "".join(c if c.isalnum() or c == "_" else "_" for c in label)
            dims[label] = torch.export.Dim(safe if safe.isidentifier() else f"d_{safe}")
        return dims[label]

    per_input = [
        {axis: dim(label) for axis, label in job.axes[name].items()} if name in job.axes else None
        for name in job.call.names
    ]
    if job.call.keyword:
        return dict(zip(job.call.names, per_input, strict=True))
    return tuple(per_input)


def _first_lines(text: str, limit: int = 8) -> str:
    """The start of a (possibly huge, possibly colored) exporter message."""
    lines = [line for line in _ANSI.sub("", text).strip().splitlines() if line.strip()]
    shown = "\n".join(lines[:limit])
    return shown + ("\n..." if len(lines) > limit else "")


def _warning_lines(caught: list[warnings.WarningMessage]) -> list[str]:
    """Warnings about the model (not about torch's own API), once each."""
    lines: list[str] = []
    for item in caught:
        if issubclass(item.category, DeprecationWarning | FutureWarning):
            continue
        line = f"{item.category.__name__}: {str(item.message).strip()}"
        if line not in lines:
            lines.append(line)
            logger.debug("exporter warning: %s", line)
    return lines


# validating -----------------------------------------------------------------------------------
def _describe(
    job: _Job, model: ir.Model, path: Path, exporter: Exporter, opset: int, tolerance: Tolerance
) -> tuple[ExportResult, bool]:
    """The result before any numbers, and whether its signature lets outputs be compared."""
    actual_opset = model.opset_imports.get("", opset)
    result = ExportResult(
        path=path,
        exporter=exporter,
        opset=actual_opset,
        tolerance=tolerance,
        inputs=specs_of(model.graph.inputs),
        outputs=specs_of(model.graph.outputs),
    )
    if actual_opset != opset:
        result.notes.append(f"opset {opset} was requested; the {exporter} exporter produced opset {actual_opset}")
    onnx_inputs = {s.name for s in result.inputs}
    for name in job.call.names:
        if name not in onnx_inputs:
            result.notes.append(f"input '{name}' is unused by forward and was left out of the model")
    for spec in result.inputs:
        if spec.name not in job.feeds:
            result.problems.append(f"the model has an input '{spec.name}' that forward does not take")
    if len(result.outputs) != len(job.output_names):
        result.problems.append(
            f"forward returns {len(job.output_names)} tensors, but the model has {len(result.outputs)} outputs"
        )
    comparable = not result.problems
    result.problems.extend(_frozen_axes(job, result))
    return result, comparable


def _frozen_axes(job: _Job, result: ExportResult) -> list[str]:
    """Axes ``dynamic_axes`` asked for that came out static."""
    problems = []
    specs = {s.name: s for s in result.inputs + result.outputs}
    for name, per_axis in job.axes.items():
        spec = specs.get(name)
        if spec is None or spec.shape is None:
            continue
        for axis, label in per_axis.items():
            if axis < len(spec.shape) and isinstance(spec.shape[axis], int):
                problems.append(
                    f"axis {axis} of '{name}' was asked to be dynamic ('{label}'), but the model "
                    f"fixes it to {spec.shape[axis]} — forward ties that size to a constant "
                    f"(e.g. int(x.shape[{axis}]) or a size check)"
                )
    return problems


def _validate(result: ExportResult, job: _Job, second_batch: int | None) -> None:
    """Compare ONNX Runtime with eager PyTorch at the example shape and at a second batch."""
    runner = OrtRunner(result.path, name=result.path.stem)
    try:
        runner.activate()
    except BackendError as e:
        raise ExportError(
            f"ONNX Runtime cannot load the exported model '{result.path}': {e} — {HINTS[result.exporter]}"
        ) from e
    try:
        batch = _batch_of(job.feeds)
        result.comparisons.append(_compare(runner, job, result, job.feeds, batch, "example inputs"))
        result.second_batch_skipped = _second_batch_skip(result, job, second_batch)
        if result.second_batch_skipped is None:
            assert second_batch is not None
            size = second_batch if second_batch != batch else batch + 1
            if size != second_batch:
                result.notes.append(f"second batch {second_batch} equals the example batch; used {size}")
            feeds = _second_feeds(job.feeds, size)
            result.comparisons.append(_compare(runner, job, result, feeds, size, "random"))
    finally:
        runner.deactivate()


def _batch_of(feeds: Arrays) -> int:
    for array in feeds.values():
        if array.ndim > 0:
            return int(array.shape[0])
    return 1


def _second_batch_skip(result: ExportResult, job: _Job, second_batch: int | None) -> str | None:
    """Why the second batch cannot be checked, or None when it can."""
    if second_batch is None:
        return "second_batch=None was given"
    batched = [s for s in result.inputs if s.shape]
    if not batched:
        return "the model has no input with a batch axis"
    for spec in batched:
        assert spec.shape is not None
        if isinstance(spec.shape[0], int):
            if 0 in job.axes.get(spec.name, {}):
                return (
                    f"input '{spec.name}' came out with a static batch axis ({spec.shape[0]}) "
                    "although dynamic_axes asked for a dynamic one (see problems)"
                )
            return (
                f"input '{spec.name}' has a static batch axis ({spec.shape[0]}) — export with "
                f"dynamic_axes={{'{spec.name}': {{0: 'batch'}}}} "
                f"(--dynamic-axis {spec.name}:0=batch) to make it dynamic"
            )
    return None


def _second_feeds(feeds: Arrays, batch: int) -> Arrays:
    """Fresh seeded values at ``batch``: other sizes as in the example, integers in the range the
    example used (token ids stay valid, masks stay masks)."""
    specs = []
    ranges: dict[str, tuple[int, int]] = {}
    for name, array in feeds.items():
        shape = (batch, *array.shape[1:]) if array.ndim > 0 else ()
        specs.append(TensorSpec(name=name, dtype=array.dtype, shape=shape))
        if array.dtype.kind in "iu":
            ranges[name] = (int(array.min()), int(array.max()) + 1) if array.size else DEFAULT_INT_RANGE
    return generate_feeds(specs, InputPlan(batch=batch, int_ranges=ranges, seed=1))


def _compare(
    runner: OrtRunner, job: _Job, result: ExportResult, feeds: Arrays, batch: int, fill: str
) -> BatchComparison:
    eager = job.call.run(job.module, feeds, device=job.device)
    reference = {spec.name: value for spec, value in zip(result.outputs, eager, strict=True)}
    onnx_feeds = {s.name: feeds[s.name] for s in result.inputs}
    described = {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in feeds.items()}
    try:
        candidate = runner.infer(onnx_feeds)
    except (BackendError, InputError) as e:
        failed = diff_outputs({}, reference, result.tolerance)
        diffs = [replace(d, reason=f"ONNX Runtime failed at batch {batch}: {e}") for d in failed]
        return BatchComparison(batch, fill, described, diffs)
    return BatchComparison(batch, fill, described, diff_outputs(candidate, reference, result.tolerance))
