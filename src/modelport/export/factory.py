"""Getting an ``nn.Module`` (and, optionally, example inputs) from a factory.

A factory is named ``package.module:function`` or ``path/to/file.py:function``. It is called
with no arguments and returns an ``nn.Module`` or ``(nn.Module, example_inputs)``, where
``example_inputs`` is a tensor, a tuple of tensors (positional arguments of ``forward``) or a
dict of tensors (keyword arguments). The attribute may also be a module instance itself.

torch is imported only when a factory's result is inspected.
"""

# torch is imported inside functions on purpose, so importing modelport never imports it.

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

from modelport.errors import ConfigError, ExportError, ModelportError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "ExampleInputs",
    "LoadedModule",
    "load_factory",
    "normalize_example_inputs",
    "resolve_module",
]

#: Positional (tuple) or keyword (dict) example arguments of ``forward``.
ExampleInputs: TypeAlias = "tuple[torch.Tensor, ...] | dict[str, torch.Tensor]"

_FORM = "'package.module:function' or 'path/to/file.py:function'"
_RETURN = "an nn.Module or (nn.Module, example_inputs)"


class LoadedModule(NamedTuple):
    """A module and the example inputs its factory returned (``None`` when it gave none)."""

    module: nn.Module
    example_inputs: ExampleInputs | None


def load_factory(spec: str) -> LoadedModule:
    """Import the factory named by ``spec``, call it, and check what it returned."""
    module_part, sep, attr = spec.strip().rpartition(":")
    module_part, attr = module_part.strip(), attr.strip()
    if not sep or not module_part or not attr:
        raise ConfigError(f"factory '{spec}' should have the form {_FORM}")
    if not attr.isidentifier():
        raise ConfigError(f"'{attr}' in factory '{spec}' is not a Python name — expected the form {_FORM}")
    is_file = module_part.endswith(".py") or "/" in module_part or "\\" in module_part
    folder = Path(module_part).resolve().parent if is_file else None
    with _on_path(folder):
        source = _import_file(module_part, spec) if is_file else _import_module(module_part, spec)
        target = getattr(source, attr, None)
        if target is None:
            raise ConfigError(
                f"module '{module_part}' has no attribute '{attr}' (factory '{spec}')"
                f"{_available(source)} — check the name after the ':'"
            )
        return _call_factory(target, f"factory '{spec}'")


def resolve_module(obj: Any) -> LoadedModule:
    """An ``nn.Module``, a factory spec string, or a zero-argument callable -> LoadedModule."""
    from torch import nn

    if isinstance(obj, nn.Module):
        return LoadedModule(obj, None)
    if isinstance(obj, str):
        return load_factory(obj)
    if callable(obj):
        return _call_factory(obj, f"factory {getattr(obj, '__qualname__', repr(obj))}")
    raise ConfigError(
        f"expected an nn.Module, a factory spec ({_FORM}) or a callable returning {_RETURN}, got a {type(obj).__name__}"
    )


def normalize_example_inputs(value: Any, *, where: str, error: type[ModelportError] = ConfigError) -> ExampleInputs:
    """A tensor, a list/tuple of tensors or a dict of tensors -> a tuple or a dict of tensors.

    Anything else raises ``error`` (ConfigError for inputs a caller gave, ExportError for what a
    factory returned).
    """
    import torch

    if isinstance(value, torch.Tensor):
        return (value,)
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if not isinstance(item, torch.Tensor):
                raise error(
                    f"{where}: example input {i} is a {type(item).__name__}, not a torch.Tensor — "
                    "example inputs must be tensors (non-tensor arguments belong in the module)"
                )
        return tuple(value)
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or not isinstance(item, torch.Tensor):
                raise error(
                    f"{where}: example input {key!r} is a {type(item).__name__} under a "
                    f"{type(key).__name__} key — a dict of example inputs must map names to tensors"
                )
        return dict(value)
    raise error(
        f"{where}: example inputs are a {type(value).__name__} — give a tensor, a tuple of "
        "tensors (positional arguments of forward) or a dict of tensors (keyword arguments)"
    )


@contextmanager
def _on_path(folder: Path | None) -> Iterator[None]:
    """Let a factory file import its neighbours while it is imported and called."""
    if folder is None or str(folder) in sys.path:
        yield
        return
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))


def _import_module(name: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
            raise ConfigError(
                f"cannot import module '{name}' for factory '{spec}': no module named '{e.name}' — "
                "check the spelling, install the package, or run from the folder that holds it "
                "(a file path such as path/to/model.py:function works too)"
            ) from e
        raise ExportError(
            f"importing module '{name}' for factory '{spec}' failed: it needs '{e.name}', which "
            "is not installed — install it"
        ) from e
    except Exception as e:
        raise ExportError(f"importing module '{name}' for factory '{spec}' failed: {type(e).__name__}: {e}") from e


def _import_file(path_text: str, spec: str) -> ModuleType:
    path = Path(path_text)
    if not path.is_file():
        raise ConfigError(
            f"factory file '{path}' does not exist (factory '{spec}') — check the path, or use the form {_FORM}"
        )
    digest = hashlib.sha1(str(path.resolve()).encode(), usedforsecurity=False).hexdigest()[:8]
    module_name = f"_modelport_factory_{path.stem.replace('-', '_')}_{digest}"
    import_spec = importlib.util.spec_from_file_location(module_name, path)
    if import_spec is None or import_spec.loader is None:
        raise ConfigError(f"'{path}' cannot be imported as Python (factory '{spec}') — is it a .py file?")
    module = importlib.util.module_from_spec(import_spec)
    sys.modules[module_name] = module
    try:
        import_spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        raise ExportError(f"importing factory file '{path}' (factory '{spec}') failed: {type(e).__name__}: {e}") from e
    return module


def _available(module: ModuleType) -> str:
    names = sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and callable(value) and not isinstance(value, ModuleType)
    )
    if not names:
        return ""
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return f"; it defines {shown}"


def _call_factory(target: Any, where: str) -> LoadedModule:
    from torch import nn

    if isinstance(target, nn.Module):
        return LoadedModule(target, None)
    if not callable(target):
        raise ConfigError(f"{where} names a {type(target).__name__}, which is not callable")
    factory: Callable[[], Any] = target
    try:
        result = factory()
    except Exception as e:
        raise ExportError(f"{where} raised {type(e).__name__}: {e}") from e
    if isinstance(result, nn.Module):
        return LoadedModule(result, None)
    if isinstance(result, tuple | list) and len(result) == 2 and isinstance(result[0], nn.Module):
        examples = normalize_example_inputs(result[1], where=where, error=ExportError)
        return LoadedModule(result[0], examples)
    raise ExportError(f"{where} returned a {type(result).__name__}, but a factory must return {_RETURN}")
