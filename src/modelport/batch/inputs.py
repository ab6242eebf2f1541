"""What offline batch inference reads: a folder of images, .npy or .npz files, or parquet.

Why one module: the local loop and Ray Data must see the very same rows, decoded by the very same
code, for their results to be identical. So both hand :class:`~modelport.batch.infer.BatchPredictor`
the same *raw* Arrow tables, and decoding happens there, through :func:`decode_rows`:

- files: columns ``bytes`` (the file's content) and ``path`` — what
  ``ray.data.read_binary_files(paths, include_paths=True)`` yields; :func:`file_tables` builds the
  same tables locally. A row's id is the file name.
- parquet: one column per model input (extra columns are ignored) and an ``id`` column, a key
  per row that results are matched by (Ray Data gives rows no position, so ids are not
  invented). Every file of a folder has the same schema.

A sample is one row of the model's batch: its arrays lack the batch axis. An image is the bytes of
one JPEG or PNG file (for a model whose config has an image pipeline stage); a ``.npy`` file holds
the one input of a single-input model; a ``.npz`` file holds one array per input name. A parquet
cell holds a tensor flattened (the model fixes its shape) or as nested lists (one level per axis).
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modelport.batch.arrow import Table, compute, parquet, pyarrow
from modelport.errors import ConfigError, InputDtypeError, InputError, InputShapeError, UnknownInputError
from modelport.ir.specs import TensorSpec

__all__ = [
    "BYTES_COLUMN",
    "ID_COLUMN",
    "IMAGE_SUFFIXES",
    "PATH_COLUMN",
    "BatchInput",
    "InputKind",
    "Sample",
    "check_sample",
    "decode_rows",
    "file_tables",
    "find_inputs",
    "parquet_tables",
]

logger = logging.getLogger(__name__)

InputKind = Literal["images", "npy", "npz", "parquet"]
#: One row of the model's batch: an array per input, without the batch axis.
Sample = dict[str, np.ndarray[Any, Any]]

ID_COLUMN = "id"
BYTES_COLUMN = "bytes"
PATH_COLUMN = "path"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_KINDS: dict[str, InputKind] = {
    **{suffix: "images" for suffix in IMAGE_SUFFIXES},
    ".npy": "npy",
    ".npz": "npz",
    ".parquet": "parquet",
}
_WHAT = "a folder of images (.png, .jpg), of .npy or .npz files, or a parquet file or folder"


@dataclass(frozen=True)
class BatchInput:
    """The input of a batch job: its kind and its files, sorted by name."""

    kind: InputKind
    root: Path
    files: tuple[Path, ...]

    def count_rows(self) -> int:
        """Rows the job will produce (one per file; parquet: from the files' metadata)."""
        if self.kind != "parquet":
            return len(self.files)
        pq = parquet()

        return sum(pq.ParquetFile(path).metadata.num_rows for path in self.files)


def find_inputs(source: str | os.PathLike[str]) -> BatchInput:
    """The files under ``source`` and their kind; :class:`ConfigError` for a missing, empty or mixed input.

    A folder is read one level deep (sub-folders and hidden files are skipped).
    """
    path = Path(source)
    if path.is_file():
        if path.suffix.lower() != ".parquet":
            raise ConfigError(f"input '{path}' is a {path.suffix or 'suffix-less'} file — pass {_WHAT}")
        return _checked_parquet(BatchInput("parquet", path.parent, (path,)))
    if not path.is_dir():
        raise ConfigError(f"input '{path}' does not exist — pass {_WHAT}")
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ConfigError(f"input folder '{path}' has no files — put the samples there ({_WHAT})")
    unknown = [p.name for p in files if p.suffix.lower() not in _KINDS]
    if unknown:
        raise ConfigError(
            f"input folder '{path}' holds {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}, which "
            f"batch-infer cannot read — keep only {', '.join(_KINDS)} files there"
        )
    kinds = sorted({_KINDS[p.suffix.lower()] for p in files})
    if len(kinds) > 1:
        raise ConfigError(
            f"input folder '{path}' mixes {' and '.join(kinds)} files — put one kind of input in a folder"
        )
    found = BatchInput(kinds[0], path, tuple(files))
    return _checked_parquet(found) if found.kind == "parquet" else found


def _checked_parquet(found: BatchInput) -> BatchInput:
    """Every parquet file has an ``id`` column, and all have one schema (read from the footers only)."""
    pq = parquet()
    schemas = {}
    for path in found.files:
        try:
            schemas[path] = pq.read_schema(path)
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise ConfigError(f"input '{path}' is not a readable parquet file: {e}") from e
        if ID_COLUMN not in schemas[path].names:
            raise ConfigError(
                f"parquet input '{path}' has no '{ID_COLUMN}' column (it has {', '.join(schemas[path].names)}) — add "
                f"a key per row that the results will carry, e.g. table.append_column('{ID_COLUMN}', "
                "pa.array(range(table.num_rows)))"
            )
    first = found.files[0]
    for path, schema in schemas.items():
        if not schema.equals(schemas[first]):
            raise ConfigError(
                f"parquet files '{first.name}' and '{path.name}' of input '{found.root}' have different schemas "
                f"({schemas[first].to_string(show_schema_metadata=False)!r} vs "
                f"{schema.to_string(show_schema_metadata=False)!r}) — write every file with one schema"
            )
    return found


# raw tables -------------------------------------------------------------------------------------


def file_tables(files: tuple[Path, ...], batch_size: int) -> Iterator[Table]:
    """``bytes`` + ``path`` tables of ``batch_size`` files: what Ray's ``read_binary_files`` gives."""
    pa = pyarrow()

    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        yield pa.table(
            {
                BYTES_COLUMN: pa.array([p.read_bytes() for p in chunk], pa.binary()),
                PATH_COLUMN: pa.array([str(p) for p in chunk], pa.string()),
            }
        )


def parquet_tables(files: tuple[Path, ...], batch_size: int) -> Iterator[Table]:
    """Tables of at most ``batch_size`` rows of the parquet files, in order."""
    pa = pyarrow()
    pq = parquet()
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
            yield pa.Table.from_batches([batch])


# decoding ---------------------------------------------------------------------------------------


def decode_rows(
    table: Table, kind: InputKind, specs: list[TensorSpec], *, label: str, check: bool = True
) -> tuple[list[Any], list[Sample]]:
    """The ids and samples of one raw table, decoded for a model whose inputs are ``specs``.

    Images and .npy files feed a model with one input (images: a BYTES one); the caller checks that.

    Raises an :class:`InputError` subclass naming the file or row when the data cannot feed the
    model: names always; with ``check``, dtypes, ranks and static dimensions too (a model with a
    pipeline checks its inputs itself, as the server does).
    """
    if kind == "parquet":
        ids, samples = _parquet_rows(table, specs, label)
        where = "row id {}"
    else:
        paths = [str(p) for p in table.column(PATH_COLUMN).to_pylist()]
        contents: list[bytes] = table.column(BYTES_COLUMN).to_pylist()
        ids = [Path(p).name for p in paths]
        samples = [_file_sample(kind, data, name, specs, label) for name, data in zip(ids, contents, strict=True)]
        where = "file '{}'"
    if check:
        for row_id, sample in zip(ids, samples, strict=True):
            for spec in specs:
                check_sample(spec, sample[spec.name], where.format(row_id), label)
    return ids, samples


def _file_sample(kind: InputKind, data: bytes, name: str, specs: list[TensorSpec], label: str) -> Sample:
    """One file as a sample; images and .npy files feed the model's one input (the caller checked that)."""
    if kind == "images":
        return {specs[0].name: np.array(data, dtype=object)}
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"file '{name}' is not a readable {kind} file: {e} — write it with np.save / np.savez") from e
    if kind == "npy":
        return {specs[0].name: loaded}
    with loaded:
        arrays = {key: loaded[key] for key in loaded.files}
    _check_names(arrays, specs, f"file '{name}'", label, "save one array per input with np.savez(path, name=array)")
    return arrays


def _check_names(arrays: dict[str, Any], specs: list[TensorSpec], where: str, label: str, fix: str) -> None:
    expected = [s.name for s in specs]
    missing = [n for n in expected if n not in arrays]
    unknown = [n for n in arrays if n not in expected]
    if missing or unknown:
        seen = ", ".join(f"'{n}'" for n in arrays) or "nothing"
        raise UnknownInputError(
            f"{where} holds {seen}, but {label} takes {', '.join(repr(n) for n in expected)} — {fix}"
        )


def _parquet_rows(table: Table, specs: list[TensorSpec], label: str) -> tuple[list[Any], list[Sample]]:
    columns = table.column_names
    missing = [s.name for s in specs if s.name not in columns]
    if missing:
        raise UnknownInputError(
            f"the parquet input has no column {', '.join(repr(n) for n in missing)}, which {label} takes (its "
            f"columns are {', '.join(repr(c) for c in columns)}) — write one column per model input"
        )
    ids = table.column(ID_COLUMN).to_pylist()
    per_input = {spec.name: _column_samples(table.column(spec.name), spec, label) for spec in specs}
    samples = [{name: arrays[i] for name, arrays in per_input.items()} for i in range(table.num_rows)]
    return ids, samples


def _column_samples(column: Any, spec: TensorSpec, label: str) -> list[np.ndarray[Any, Any]]:
    """One array per row of a parquet column, shaped as one sample of ``spec``.

    A primitive column gives 0-d samples; a list column is reshaped to the model's static sample
    shape (flattened tensors) or read level by level (nested lists, one level per axis).
    """
    leaf, lengths = _levels(column.combine_chunks(), spec.name)
    dtype = _leaf_dtype(leaf.type)
    if spec.dtype != dtype:
        raise InputDtypeError(
            f"column '{spec.name}' of the parquet input holds {leaf.type} values ({dtype}), but {label} expects "
            f"{spec.dtype} for input '{spec.name}' — cast the column when writing it "
            f"(numpy: arr.astype(np.{spec.dtype}))"
        )
    flat = (
        np.array(leaf.to_pylist(), dtype=object) if dtype == np.dtype(object) else leaf.to_numpy(zero_copy_only=False)
    )
    rows = len(column)
    shape = _uniform_shape(lengths, rows, spec)
    if shape is not None:
        batch = flat.reshape(rows, *shape)
        return [batch[i, ...] for i in range(rows)]
    # Ragged nested lists (a dynamic axis that varies from row to row): one row at a time.
    out = []
    for index, row in enumerate(column.to_pylist()):
        try:
            out.append(np.array(row, dtype=dtype))
        except ValueError as e:
            raise InputShapeError(
                f"row {index} of column '{spec.name}' is not a rectangular tensor ({e}) — write each tensor as "
                "nested lists of equal length on every axis"
            ) from e
    return out


def _levels(values: Any, name: str) -> tuple[Any, list[np.ndarray[Any, Any]]]:
    """The leaf values of a (nested) list column and the list lengths at each level."""
    pa = pyarrow()
    pc = compute()

    lengths: list[np.ndarray[Any, Any]] = []
    while True:
        if values.null_count:
            raise InputError(
                f"column '{name}' of the parquet input has {values.null_count} empty (null) values — fill them"
            )
        if not (pa.types.is_list(values.type) or pa.types.is_large_list(values.type)):
            return values, lengths
        lengths.append(np.asarray(pc.list_value_length(values).to_numpy(zero_copy_only=False)))
        values = values.flatten()


def _leaf_dtype(arrow_type: Any) -> np.dtype[Any]:
    pa = pyarrow()

    if pa.types.is_binary(arrow_type) or pa.types.is_string(arrow_type) or pa.types.is_large_binary(arrow_type):
        return np.dtype(object)
    if pa.types.is_large_string(arrow_type):
        return np.dtype(object)
    try:
        dtype: np.dtype[Any] = np.dtype(arrow_type.to_pandas_dtype())
        return dtype
    except (NotImplementedError, TypeError) as e:
        raise InputDtypeError(
            f"parquet values of type {arrow_type} cannot feed a model — write numbers or bytes"
        ) from e


def _uniform_shape(lengths: list[np.ndarray[Any, Any]], rows: int, spec: TensorSpec) -> tuple[int, ...] | None:
    """The sample shape when every row has the same one; None for ragged nested lists."""
    sample = spec.shape[1:] if spec.shape is not None else None
    if not lengths:
        return ()
    if len(lengths) == 1 and sample is not None and len(sample) > 1:
        if all(isinstance(d, int) for d in sample):
            size = math.prod(d for d in sample if isinstance(d, int))
            wrong = np.flatnonzero(lengths[0] != size)
            if wrong.size:
                raise InputShapeError(
                    f"row {int(wrong[0])} of column '{spec.name}' has {int(lengths[0][wrong[0]])} values, but one "
                    f"sample of input '{spec.name}' {spec.shape_str()} has {_dims(sample)} = {size} — write whole "
                    "tensors, flattened or as nested lists"
                )
            return tuple(d for d in sample if isinstance(d, int))
        raise InputShapeError(
            f"column '{spec.name}' holds flat lists, but input '{spec.name}' {spec.shape_str()} has dynamic axes, so "
            "a flat list does not say its shape — write each tensor as nested lists (one level per axis)"
        )
    dims = []
    for level in lengths:
        if level.size == 0 or np.any(level != level[0]):
            return None
        dims.append(int(level[0]))
    return tuple(dims)


def check_sample(spec: TensorSpec, array: np.ndarray[Any, Any], where: str, label: str) -> None:
    """Raise an :class:`InputError` unless ``array`` is one sample of ``spec`` (``spec`` minus its batch axis)."""
    if array.dtype != spec.dtype:
        raise InputDtypeError(
            f"{where}: input '{spec.name}' has dtype {array.dtype}, but {label} expects {spec.dtype} — convert it "
            f"with arr.astype(np.{spec.dtype}) when writing it"
        )
    if spec.shape is None:
        return
    sample = spec.shape[1:]
    fits = array.ndim == len(sample) and all(
        not isinstance(want, int) or got == want for got, want in zip(array.shape, sample, strict=True)
    )
    if not fits:
        raise InputShapeError(
            f"{where}: input '{spec.name}' has shape {list(array.shape)}, but one sample of {label}'s input "
            f"{spec.shape_str()} has shape {_dims(sample)} — store one sample without the batch axis"
        )


def _dims(shape: tuple[Any, ...]) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else "?" for d in shape) + "]"
