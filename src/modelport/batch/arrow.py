"""pyarrow, imported on first use.

Why a module: batch inference reads and writes Arrow tables and parquet, but ``import modelport``
must stay cheap, and pyarrow ships no type information (its tables are typed ``Any`` here). A
missing pyarrow is reported once, here, with the fix.
"""

from __future__ import annotations

import importlib
from typing import Any

from modelport.errors import BackendError

__all__ = ["Table", "compute", "parquet", "pyarrow"]

#: A ``pyarrow.Table`` (pyarrow has no type stubs).
Table = Any


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise BackendError(
            f"{name} is not installed, and batch inference reads and writes parquet with it — "
            "pip install pyarrow (the 'ray' extra installs it too)"
        ) from e


def pyarrow() -> Any:
    """The ``pyarrow`` module."""
    return _module("pyarrow")


def parquet() -> Any:
    """The ``pyarrow.parquet`` module."""
    return _module("pyarrow.parquet")


def compute() -> Any:
    """The ``pyarrow.compute`` module."""
    return _module("pyarrow.compute")
