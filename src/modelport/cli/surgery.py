"""modelport surgery ACTION MODEL -o OUT: graph edits from the command line.

Each action loads the model, calls one function of :mod:`modelport.surgery`, saves the result
(never over the input without ``--in-place``) and prints one line with the node counts.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from modelport.cli._common import add_json, add_output, emit_json
from modelport.errors import ConfigError

if TYPE_CHECKING:
    import onnx_ir as ir

__all__ = ["add_parser", "run"]

# An action edits the model (or returns a new one) and describes what it did.
_Action = Callable[["ir.Model", argparse.Namespace], "tuple[ir.Model, str]"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("surgery", help="edit a model: extract, rename, shapes, batch, opset, remove, cleanup, sort")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    a = _action(actions, "extract", "keep the sub-model between named tensors (If/Loop bodies too)", _extract)
    a.add_argument("--inputs", help="comma-separated tensors to cut at (default: the model inputs needed)")
    a.add_argument("--outputs", required=True, help="comma-separated tensors to compute")

    a = _action(actions, "rename", "rename tensors (inputs, outputs, intermediates)", _rename)
    a.add_argument("--tensor", action="append", required=True, metavar="OLD=NEW", help="repeatable")

    a = _action(actions, "set-shape", "set input shapes; free static dims (fixing hard-coded constants)", _set_shape)
    a.add_argument(
        "--input", action="append", default=[], metavar="NAME=D0,D1,...", help="sizes, names or ? (repeatable)"
    )
    a.add_argument(
        "--dynamic", action="append", default=[], metavar="NAME:AXIS=DIM", help="make one axis dynamic (repeatable)"
    )
    _add_no_verify(a)

    a = _action(actions, "batch", "set axis 0 of every input to a size or a name", _batch)
    a.add_argument("size", metavar="N|NAME", help="a batch size, or a name for a dynamic batch")
    _add_no_verify(a)

    a = _action(actions, "opset", "convert to another default-domain opset", _opset)
    a.add_argument("target", type=int, metavar="N", help="target opset")

    a = _action(actions, "remove", "remove nodes by name (bypassing single-input nodes)", _remove)
    a.add_argument("--node", action="append", required=True, metavar="NAME", help="repeatable")

    a = _action(actions, "cleanup", "remove dead nodes, unused initializers, functions and opsets", _cleanup)
    a.add_argument("--remove-unused-inputs", action="store_true", help="also drop graph inputs nothing reads")

    _action(actions, "sort", "sort nodes topologically", _sort)

    a = _action(
        actions,
        "recipe",
        "apply a deployment recipe: replace-op, identity-output, focus or nms",
        _recipe,
    )
    a.add_argument("--recipe", required=True, help="replace-op, identity-output, focus or nms")
    a.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help='a recipe option (repeatable); VALUE is JSON (0.5, true, [1,2], "text"), a bare word, '
        "or @file.npy for an array",
    )


def _action(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str, apply: _Action
) -> argparse.ArgumentParser:
    a = actions.add_parser(name, help=help_text, description=help_text)
    a.add_argument("model", help="path to an .onnx file")
    add_output(a)
    add_json(a)
    a.set_defaults(run=run, apply=apply)
    return a


def _add_no_verify(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-verify", action="store_true", help="skip running the model at two sizes of each freed dimension"
    )


def run(args: argparse.Namespace) -> int:
    from modelport.ir.serde import load, save

    model = load(args.model)
    from modelport.ir.summary import node_count

    before = node_count(model)
    result, detail = args.apply(model, args)
    after = node_count(result)
    save(result, args.output, in_place=args.in_place)
    if args.json:
        emit_json(
            {
                "action": args.action,
                "output": args.output,
                "nodes_before": before,
                "nodes_after": after,
                "detail": detail,
            }
        )
    else:
        print(f"surgery {args.action}: {detail}; nodes {before} → {after}; wrote {args.output}")
    return 0


def _csv(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _pair(item: str, flag: str, form: str) -> tuple[str, str]:
    key, sep, value = item.rpartition("=")
    if not sep or not key or not value:
        raise ConfigError(f"{flag} '{item}' is not of the form {form}")
    return key, value


# ------------------------------------------------------------------------------------- actions


def _extract(model: ir.Model, args: argparse.Namespace) -> tuple[ir.Model, str]:
    from modelport.surgery import extract

    inputs = _csv(args.inputs) if args.inputs is not None else None
    outputs = _csv(args.outputs)
    result = extract(model, inputs, outputs)
    return result, f"inputs {[v.name for v in result.graph.inputs]} → outputs {outputs}"


def _rename(model: ir.Model, args: argparse.Namespace) -> tuple[ir.Model, str]:
    from modelport.surgery import rename_value

    pairs = [_pair(item, "--tensor", "OLD=NEW") for item in args.tensor]
    for old, new in pairs:
        rename_value(model, old, new)
    return model, ", ".join(f"{old} → {new}" for old, new in pairs)


def _dim(text: str) -> int | str | None:
    text = text.strip()
    if text == "?":
        return None
    return int(text) if text.isdigit() else text


def _set_shape(model: ir.Model, args: argparse.Namespace) -> tuple[ir.Model, str]:
    from modelport.surgery import set_input_shapes
    from modelport.surgery.shapes import Dim

    if not args.input and not args.dynamic:
        raise ConfigError("set-shape needs --input NAME=D0,D1,... or --dynamic NAME:AXIS=DIM")
    shapes: dict[str, list[Dim]] = {}
    for item in args.input:
        name, text = _pair(item, "--input", "NAME=D0,D1,... (e.g. x=1,3,224,224 or x=batch,3,?,?)")
        shapes[name] = [_dim(d) for d in text.split(",")]
    current = {
        v.name: [d if isinstance(d, int) else d.value for d in v.shape]
        for v in model.graph.inputs
        if v.shape is not None
    }
    for item in args.dynamic:
        where, label = _pair(item, "--dynamic", "NAME:AXIS=DIM (e.g. x:0=batch)")
        name, _, axis_text = where.rpartition(":")
        if not name or not axis_text.lstrip("-").isdigit():
            raise ConfigError(f"--dynamic '{item}' is not of the form NAME:AXIS=DIM (e.g. x:0=batch)")
        if name not in current:
            shapes[name] = []  # the library names the inputs there are
            continue
        dims = shapes.setdefault(name, list(current[name]))
        axis = int(axis_text)
        if not -len(dims) <= axis < len(dims):
            raise ConfigError(f"--dynamic '{item}': input '{name}' has no axis {axis} (rank {len(dims)})")
        dims[axis] = label
    set_input_shapes(model, shapes, verify=not args.no_verify)
    shown = ", ".join(f"{v.name}: {v.shape}" for v in model.graph.inputs if v.name in shapes)
    return model, shown


def _batch(model: ir.Model, args: argparse.Namespace) -> tuple[ir.Model, str]:
    from modelport.surgery import set_batch

    size: int | str = int(args.size) if args.size.lstrip("-").isdigit() else args.size
    set_batch(model, size, verify=not args.no_verify)
    return model, f"batch {size}"


def _opset(model: ir.Model, args: argparse.Namespace) -> tuple[ir.Model, str]:
    from modelport.surgery import convert_opset

    before = model.opset_imports.get("")
    return convert_opset(model, args.target), f"opset {before} → {args.target}"


def _remove(model: ir.Model, args: argparse.Namespace) -> tuple[ir.Model, str]:
    from modelport.surgery import find_node, remove_node

    for name in args.node:
        remove_node(find_node(model, name=name))
    return model, f"removed {', '.join(args.node)}"


def _cleanup(model: ir.Model, args: argparse.Namespace) -> tuple[ir.Model, str]:
    from modelport.surgery import cleanup

    changed = cleanup(model, remove_unused_inputs=args.remove_unused_inputs)
    return model, "cleaned up" if changed else "nothing to clean up"


def _sort(model: ir.Model, args: argparse.Namespace) -> tuple[ir.Model, str]:
    from modelport.surgery import toposort

    toposort(model)
    return model, "sorted"


def _option_value(text: str) -> object:
    import json

    if text.startswith("@"):
        import numpy as np

        try:
            return np.load(text[1:])
        except OSError as e:
            raise ConfigError(f"cannot read the array file '{text[1:]}': {e}") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _recipe(model: ir.Model, args: argparse.Namespace) -> tuple[ir.Model, str]:
    from modelport.surgery.recipes import RECIPES

    recipe = RECIPES.get(args.recipe)
    if recipe is None:
        raise ConfigError(f"unknown recipe '{args.recipe}' — choose from: {', '.join(RECIPES)}")
    options = {
        key.replace("-", "_"): _option_value(value)
        for key, value in (_pair(i, "--set", "OPTION=VALUE") for i in args.set)
    }
    try:
        result = recipe(model, **options)
    except TypeError as e:  # an option the recipe does not take
        raise ConfigError(f"recipe '{args.recipe}': {e} — see help(modelport.surgery.recipes.{recipe.__name__})") from e
    return result, f"recipe {args.recipe} ({', '.join(options) or 'defaults'})"
