"""What offline batch inference writes: parquet, one row per sample, in a folder that appears whole.

Why parquet: it is what Ray Data writes natively and what every data tool reads. Each row holds
the sample's ``id`` (the file name, or the parquet input's id / row number) and one column per
model output. A tensor is stored as nested lists, one level per axis (a scalar as a plain value),
so a reader needs no side information to restore its shape; :func:`read_results` does that.

Why atomic: a job that fails half way must not leave a folder that looks like a result. The files
are written into a hidden sibling folder that is renamed onto the output path only at the end
(with ``force``, the old folder is moved away first and deleted after the rename).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from modelport.batch.arrow import Table, compute, parquet, pyarrow
from modelport.batch.inputs import ID_COLUMN
from modelport.errors import BackendError, ConfigError

__all__ = ["StagedOutput", "read_results", "to_table"]

logger = logging.getLogger(__name__)

_INT32_MAX = 2**31 - 1


def to_table(ids: list[Any], outputs: dict[str, np.ndarray[Any, Any]]) -> Table:
    """An Arrow table of ``ids`` and one column per output (axis 0 of each output is the row)."""
    pa = pyarrow()

    columns: dict[str, Any] = {ID_COLUMN: pa.array(ids)}
    for name, array in outputs.items():
        if name == ID_COLUMN:
            raise ConfigError(
                f"the model has an output named '{ID_COLUMN}', which clashes with the id column of the results — "
                "rename the output (modelport surgery)"
            )
        if array.ndim == 0 or array.shape[0] != len(ids):
            raise BackendError(
                f"output '{name}' has shape {list(array.shape)}, but the batch has {len(ids)} rows — batch-infer "
                "needs outputs whose axis 0 is the batch axis"
            )
        columns[name] = _nested(array)
    return pa.table(columns)


def _nested(array: np.ndarray[Any, Any]) -> Any:
    """``array`` [rows, d1, ..., dk] as a list (of lists ...) array of ``rows`` elements."""
    pa = pyarrow()

    flat = np.ascontiguousarray(array).reshape(-1)
    values = pa.array(flat.tolist()) if array.dtype == np.dtype(object) else pa.array(flat)
    if flat.size > _INT32_MAX:
        raise BackendError(
            f"an output batch of {flat.size} values is too large for one parquet column — lower the batch size"
        )
    for axis in range(array.ndim - 1, 0, -1):
        count = math.prod(array.shape[:axis])
        offsets = np.arange(count + 1, dtype=np.int32) * np.int32(array.shape[axis])
        values = pa.ListArray.from_arrays(pa.array(offsets), values)
    return values


def read_results(folder: str | os.PathLike[str]) -> dict[str, np.ndarray[Any, Any]]:
    """Every column of a batch-infer result folder, sorted by id, as numpy arrays.

    A tensor column becomes one array ``[rows, ...]``; when its rows have different shapes, an
    object array of per-row arrays.
    """
    pq = parquet()

    files = sorted(Path(folder).glob("*.parquet"))
    if not files:
        raise ConfigError(f"'{folder}' holds no .parquet files — pass the --output folder of a batch-infer run")
    pa = pyarrow()

    table = pa.concat_tables([pq.read_table(path) for path in files]).sort_by(ID_COLUMN)
    return {name: _to_numpy(table.column(name).combine_chunks()) for name in table.column_names}


def _to_numpy(values: Any) -> np.ndarray[Any, Any]:
    pa = pyarrow()
    pc = compute()

    rows = len(values)
    leaf = values
    dims: list[int] = []
    uniform = True
    while pa.types.is_list(leaf.type) or pa.types.is_large_list(leaf.type):
        lengths = np.asarray(pc.list_value_length(leaf).to_numpy(zero_copy_only=False))
        if lengths.size == 0 or np.any(lengths != lengths[0]):
            uniform = False
            break
        dims.append(int(lengths[0]))
        leaf = leaf.flatten()
    if not uniform:
        per_row = np.empty(rows, dtype=object)
        per_row[:] = [np.array(row) for row in values.to_pylist()]
        return per_row
    if pa.types.is_binary(leaf.type) or pa.types.is_string(leaf.type):
        flat = np.array(leaf.to_pylist(), dtype=object)
    else:
        flat = leaf.to_numpy(zero_copy_only=False)
    return flat.reshape(rows, *dims)


class StagedOutput:
    """A hidden sibling folder that becomes the output folder on :meth:`commit` (see the module docstring)."""

    def __init__(self, target: str | os.PathLike[str], *, force: bool = False, inputs: Path | None = None) -> None:
        self.target = Path(target).resolve()
        if inputs is not None and (self.target == inputs.resolve() or self.target in inputs.resolve().parents):
            raise ConfigError(
                f"output folder '{self.target}' is the input '{inputs}' or contains it — write the results elsewhere"
            )
        if self.target.exists() and not self.target.is_dir():
            raise ConfigError(f"output '{self.target}' is a file — pass a folder for the results")
        if self.target.is_dir() and any(self.target.iterdir()) and not force:
            raise ConfigError(
                f"output folder '{self.target}' is not empty — pass another folder, or --force to replace it"
            )
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.path = self.target.parent / f".{self.target.name}.partial-{uuid.uuid4().hex[:8]}"
        self.path.mkdir()

    def commit(self) -> list[Path]:
        """Put the staged files in place of the output folder; return their final paths."""
        old = None
        if self.target.exists():
            old = self.target.parent / f".{self.target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.target, old)
        os.replace(self.path, self.target)
        if old is not None:
            shutil.rmtree(old)
        logger.info("wrote %s", self.target)
        return sorted(self.target.glob("*.parquet"))

    def discard(self) -> None:
        """Delete the staged files (the job failed); the output folder is left as it was."""
        shutil.rmtree(self.path, ignore_errors=True)
