"""User code named as ``package.module:function``: calibration readers, metrics, reduce checks.

One loader so that every place that accepts a function by name fails the same clear way: a
malformed spec, a module that does not import (missing, or raising while it imports), an attribute
that is not there, or something that is not callable.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from modelport.errors import ConfigError, ModelportError

__all__ = ["load_callable"]

FORM = "'package.module:function'"


def load_callable(
    spec: str, *, what: str, expects: str, error: type[ModelportError] = ConfigError
) -> Callable[..., Any]:
    """The callable ``spec`` names (``module:attr`` or ``module:Class.attr``).

    ``what`` names the role in messages ("metric", "calibration entry point"); ``expects`` says
    what kind of function is wanted; ``error`` is the exception type raised.
    """
    module_name, sep, attr = spec.strip().partition(":")
    module_name, attr = module_name.strip(), attr.strip()
    if not sep or not module_name or not attr:
        raise error(f"{what} '{spec}' should have the form {FORM}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise error(
            f"cannot import module '{module_name}' for {what} '{spec}': {e} — "
            "check the spelling, install it, or add its folder to PYTHONPATH"
        ) from e
    except Exception as e:
        raise error(f"importing module '{module_name}' for {what} '{spec}' failed: {type(e).__name__}: {e}") from e
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise error(
                f"module '{module_name}' has no attribute '{attr}' ({what} '{spec}') — "
                "check the function name after the ':'"
            )
        target = getattr(target, part)
    if not callable(target):
        raise error(f"{what} '{spec}' is a {type(target).__name__}, not a function — name {expects}")
    function: Callable[..., Any] = target
    return function
