"""Offline batch inference over a model or a repository: locally, or on Ray Data with ``use_ray``.

Why: scoring a folder of images or a parquet table should not need a server, and should give what
the server would have answered. :class:`BatchPredictor` runs one model version of a repository
exactly as ``modelport serve`` does — the same :class:`ServedModel` load (batch axis check, Triton
config check, pipeline build) and the same pipeline stages before and after one ONNX Runtime
session — on Arrow tables of raw rows (see ``batch/inputs.py``).

Two engines drive it, and their results are the same rows:

- local (default): a plain loop over batches of the input in this process, written to one parquet
  file.
- Ray (``use_ray``): ``ray.data.read_binary_files`` / ``read_parquet``, then ``map_batches`` with
  :class:`BatchPredictor` as a callable class (each actor loads the model once), then
  ``write_parquet``. The input and output paths must be readable and writable at the same path on
  every node.

Everything that can be checked before inference is checked in this process first (the input
files, the model name, that the input kind fits the model), so a mistake fails at once with one
clear error, also under Ray; an error raised on a Ray worker comes back as the modelport error it was.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modelport import errors
from modelport.batch.arrow import Table, parquet, pyarrow
from modelport.batch.inputs import (
    BatchInput,
    InputKind,
    Sample,
    decode_rows,
    file_tables,
    find_inputs,
    parquet_tables,
)
from modelport.batch.outputs import StagedOutput, to_table
from modelport.errors import (
    BackendError,
    ConfigError,
    InputDtypeError,
    InputShapeError,
    ModelportError,
    UnknownInputError,
)
from modelport.ir.specs import TensorSpec
from modelport.runners.base import check_feeds
from modelport.serve.repository import ModelRepository, ServedModel
from modelport.system import cpu_count

__all__ = ["BatchPredictor", "BatchResult", "batch_infer", "select_model"]

logger = logging.getLogger(__name__)

Engine = Literal["local", "ray"]
# An error line of a worker's traceback, as Ray reports it: "modelport.errors.InputShapeError: ...".
_WORKER_ERROR = re.compile(r"^modelport\.errors\.(\w+): (.+)$", re.MULTILINE)


@dataclass(frozen=True)
class BatchResult:
    """What a batch job wrote."""

    output: Path
    files: tuple[Path, ...]
    rows: int
    model: str
    engine: Engine
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "files": [str(p) for p in self.files],
            "rows": self.rows,
            "model": self.model,
            "engine": self.engine,
            "seconds": round(self.seconds, 3),
        }


def select_model(repository: ModelRepository, name: str | None) -> ServedModel:
    """The highest served version of model ``name``, or of the only model when ``name`` is None."""
    if name is not None:
        return repository.get(name)
    if len(repository.models) != 1:
        listed = ", ".join(f"'{m}'" for m in repository.models)
        raise ConfigError(
            f"repository '{repository.root}' serves several models ({listed}) — pick one with --model NAME"
        )
    return repository.get(repository.models[0])


class BatchPredictor:
    """One model version of a repository run on raw Arrow tables, as the server runs it.

    Call it with a table of raw rows (see ``batch/inputs.py``); it returns the table of results.
    It is also Ray Data's callable class: the model loads once per actor, in the constructor.
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        kind: InputKind,
        *,
        model: str | None = None,
        intra_op_threads: int | None = None,
    ) -> None:
        served = select_model(ModelRepository(source), model)
        # One session is enough here (instances serve concurrent requests, not a loop).
        self.model = dataclasses.replace(served, runners=served.runners[:1])
        self.model.load(intra_op_threads=intra_op_threads)
        self.kind = kind
        self.label = self.model.label
        self.inputs: list[TensorSpec] = self.model.inputs
        try:
            self.max_rows = _rows_per_run(self.model)
            _check_kind(kind, self.inputs, self.label)
        except BaseException:
            self.close()
            raise

    def __call__(self, table: Table) -> Table:
        ids, samples = decode_rows(table, self.kind, self.inputs, label=self.label, check=self.model.pipeline is None)
        tables = []
        for indices in _groups(samples, self.max_rows):
            outputs = self.predict({s.name: np.stack([samples[i][s.name] for i in indices]) for s in self.inputs})
            tables.append(to_table([ids[i] for i in indices], outputs))
        return pyarrow().concat_tables(tables)

    def predict(self, feeds: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """The outputs for one batch of client feeds: pre-process, the model, post-process."""
        runner = self.model.runner
        pipeline = self.model.pipeline
        if pipeline is None:
            check_feeds(runner.inputs, feeds, model_name=self.label)
            return runner.infer(feeds, check=False)
        staged = pipeline.preprocess(feeds)
        check_feeds(runner.inputs, staged.feeds, model_name=self.label)
        outputs = runner.infer(staged.feeds, check=False)
        return pipeline.postprocess(outputs, staged.context).feeds

    def close(self) -> None:
        self.model.unload()


def _rows_per_run(model: ServedModel) -> int:
    """How many samples one run may take: the batch axis decides (1 when it is fixed to 1)."""
    limit = model.config.max_batch_size
    for spec in model.inputs:
        if spec.shape is None:
            continue
        if not spec.shape:
            raise InputShapeError(
                f"{model.label} takes input '{spec.name}' as a scalar, so it has no batch axis — batch-infer runs "
                "models whose inputs have a batch axis 0 (dynamic, or 1)"
            )
        first = spec.shape[0]
        if first == 1:
            limit = 1
        elif isinstance(first, int):
            raise InputShapeError(
                f"{model.label} fixes axis 0 of input '{spec.name}' {spec.shape_str()} to {first}, so it takes "
                "exactly that many samples at once — export it with a dynamic batch axis (or a batch of 1)"
            )
    return limit


def _check_kind(kind: InputKind, inputs: list[TensorSpec], label: str) -> None:
    """Fail before any file is read when the input kind cannot feed the model."""
    names = ", ".join(f"'{s.name}' {s.dtype} {s.shape_str()}" for s in inputs)
    if kind in ("images", "npy") and len(inputs) != 1:
        raise UnknownInputError(
            f"a folder of {kind} feeds a model with one input, but {label} takes {names} — pass .npz files with one "
            "array per input name, or a parquet file with one column per input"
        )
    if kind == "images" and inputs[0].dtype != np.dtype(object):
        raise InputDtypeError(
            f"a folder of images feeds encoded image bytes, but {label} takes {names} — add an image stage to its "
            "config.yaml (pipeline: {preprocess: [{kind: image}]}), or pass the pixels as .npy files"
        )


def _groups(samples: list[Sample], max_rows: int) -> list[list[int]]:
    """Indices of samples that run together: the same shape per input, at most ``max_rows`` (0: no limit)."""
    by_shape: dict[tuple[Any, ...], list[int]] = {}
    for index, sample in enumerate(samples):
        key = tuple((name, array.shape) for name, array in sample.items())
        by_shape.setdefault(key, []).append(index)
    groups = []
    for indices in by_shape.values():
        step = max_rows or len(indices)
        groups += [indices[start : start + step] for start in range(0, len(indices), step)]
    return groups


# the job ---------------------------------------------------------------------------------------


def batch_infer(
    source: str | os.PathLike[str],
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    model: str | None = None,
    batch_size: int = 32,
    use_ray: bool = False,
    force: bool = False,
    ray_address: str | None = None,
    actors: int | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> BatchResult:
    """Run ``model`` of repository (or .onnx file) ``source`` over ``input``; write parquet to ``output``.

    ``input`` is a folder of images, .npy or .npz files, or a parquet file or folder (see
    ``batch/inputs.py``). ``output`` must not exist or be empty, unless ``force``. With
    ``use_ray``, Ray Data runs it on ``actors`` actors (default: one per CPU of the cluster, less
    one for reading) of the cluster at ``ray_address`` (default: a local Ray). ``on_rows`` is
    called with the number of rows of each batch done (local engine).
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    if actors is not None and actors < 1:
        raise ConfigError(f"actors must be at least 1, got {actors}")
    inputs = find_inputs(input)
    start = time.perf_counter()
    staged = StagedOutput(output, force=force, inputs=Path(input))
    try:
        # Built here on both engines: a model or input that does not fit fails now, in this process.
        predictor = BatchPredictor(source, inputs.kind, model=model, intra_op_threads=1 if use_ray else cpu_count())
        try:
            if not use_ray:
                _run_local(predictor, inputs, staged.path, batch_size, on_rows)
        finally:
            predictor.close()
        if use_ray:  # the actors load their own
            _run_ray(source, inputs, staged.path, predictor.model.name, batch_size, ray_address, actors)
        files = staged.commit()
    except BaseException:
        staged.discard()
        raise
    rows = _count_rows(files)
    engine: Engine = "ray" if use_ray else "local"
    logger.info("%s: %d rows from %s to %s (%s)", predictor.label, rows, input, staged.target, engine)
    return BatchResult(staged.target, tuple(files), rows, predictor.label, engine, time.perf_counter() - start)


def _run_local(
    predictor: BatchPredictor,
    inputs: BatchInput,
    folder: Path,
    batch_size: int,
    on_rows: Callable[[int], None] | None,
) -> None:
    pq = parquet()

    tables = (
        parquet_tables(inputs.files, batch_size) if inputs.kind == "parquet" else file_tables(inputs.files, batch_size)
    )
    writer: Any = None
    try:
        for raw in tables:
            result = predictor(raw)
            if writer is None:
                writer = pq.ParquetWriter(folder / "part-00000.parquet", result.schema)
            writer.write_table(result)
            if on_rows is not None:
                on_rows(raw.num_rows)
    finally:
        if writer is not None:
            writer.close()


def _run_ray(
    source: str | os.PathLike[str],
    inputs: BatchInput,
    folder: Path,
    model: str,
    batch_size: int,
    address: str | None,
    actors: int | None,
) -> None:
    from modelport.serve.ray_serve import import_ray, init_ray

    started = init_ray(address)
    try:
        ray = import_ray()
        data = import_ray("ray.data")
        pool = actors or max(1, int(ray.cluster_resources().get("CPU", 1)) - 1)
        try:
            predicted = _ray_dataset(data, inputs).map_batches(
                BatchPredictor,
                fn_constructor_kwargs={
                    "source": str(Path(source).resolve()),
                    "kind": inputs.kind,
                    "model": model,
                    "intra_op_threads": 1,
                },
                batch_size=batch_size,
                batch_format="pyarrow",
                compute=data.ActorPoolStrategy(min_size=1, max_size=pool),
                num_cpus=1,
            )
            predicted.write_parquet(str(folder))
        except Exception as e:  # Ray wraps what its workers raise
            raise _worker_error(e) from e
    finally:
        if started:
            import_ray().shutdown()


def _ray_dataset(data: Any, inputs: BatchInput) -> Any:
    """The raw rows as a Ray dataset: the same columns the local engine builds."""
    paths = [str(p) for p in inputs.files]
    if inputs.kind == "parquet":
        return data.read_parquet(paths)
    return data.read_binary_files(paths, include_paths=True)


def _worker_error(error: Exception) -> ModelportError:
    """The modelport error a Ray worker raised (found in the traceback Ray reports), or a BackendError."""
    found = _WORKER_ERROR.findall(str(error))
    if found:
        name, message = found[-1]
        kind = getattr(errors, name, None)
        if isinstance(kind, type) and issubclass(kind, ModelportError):
            try:
                return kind(message)
            except TypeError:  # an error class that takes more arguments
                pass
    return BackendError(f"Ray Data batch inference failed: {error}")


def _count_rows(files: list[Path]) -> int:
    pq = parquet()

    return sum(pq.ParquetFile(path).metadata.num_rows for path in files)
