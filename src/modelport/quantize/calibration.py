"""Calibration data: ``.npy`` / ``.npz`` files, a folder of images with a preprocessing spec, or a
Python entry point that yields feeds.

Calibration reads user data with exactly the rules ``verify`` uses for its datasets (the loaders live in
:mod:`modelport.verify.dataset`), so a file that verifies a model also calibrates it. Here every
problem is a :class:`CalibrationDataError`, and labels, if the data has any, are not needed.

An entry point (``"package.module:function"``) is for data no file format describes — a video
decoder, a tokenizer, a database. :func:`entry_point_reader` returns a zero-argument callable that
gives a fresh, checked iterator on every call, which is what streaming calibration needs: it reads
the samples twice (min/max, then histograms) without ever holding them all.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from modelport.entry_points import load_callable
from modelport.errors import CalibrationDataError, InputError
from modelport.ir.specs import TensorSpec
from modelport.runners.base import check_feeds
from modelport.verify import dataset as _dataset
from modelport.verify.dataset import IMAGE_SUFFIXES, ImagePreprocess

__all__ = [
    "IMAGE_SUFFIXES",
    "ImagePreprocess",
    "entry_point_reader",
    "load_calibration",
    "parse_preprocess",
    "split_samples",
]


Feeds = dict[str, np.ndarray[Any, Any]]


def parse_preprocess(text: str) -> ImagePreprocess:
    """Parse ``size=224x224,layout=NCHW,color=RGB,mean=0.485:0.456:0.406,std=...,scale=0.0039``."""
    return _dataset.parse_preprocess(text, error=CalibrationDataError)


def eval_fraction(text: str) -> float:
    """'1/255' or '0.0039' -> float."""
    return _dataset.eval_fraction(text, error=CalibrationDataError)


def split_samples(arrays: dict[str, np.ndarray[Any, Any]], specs: Sequence[TensorSpec], source: str) -> list[Feeds]:
    """Turn stacked arrays (one per input, N samples each) into N feeds of batch 1."""
    return _dataset.split_samples(arrays, specs, source, error=CalibrationDataError)


def load_calibration(
    path: str | os.PathLike[str],
    specs: Sequence[TensorSpec],
    *,
    preprocess: ImagePreprocess | None = None,
    limit: int | None = None,
) -> list[Feeds]:
    """Read calibration samples for a model with inputs ``specs`` (one feed per sample)."""
    data = _dataset.load_dataset(path, specs, preprocess=preprocess, limit=limit or None, error=CalibrationDataError)
    return data.samples


_FORM = "'package.module:function'"


def entry_point_reader(spec: str, specs: Sequence[TensorSpec]) -> Callable[[], Iterator[Feeds]]:
    """The function named by ``spec`` as a source of calibration samples for inputs ``specs``.

    The function takes no arguments and returns an iterable of feeds dicts (or is a generator
    function). The result is a zero-argument callable returning a fresh iterator each time; every
    sample is checked against ``specs`` (names, dtypes, ranks, static dimensions) as it is read.
    Import problems are raised now, problems with the data when it is iterated.
    """
    function = _load_function(spec)
    expected = list(specs)

    def read() -> Iterator[Feeds]:
        return _checked(spec, function, expected)

    return read


def _load_function(spec: str) -> Callable[[], Any]:
    target = load_callable(
        spec,
        what="calibration entry point",
        expects="a function with no arguments that returns (or yields) feeds dicts",
        error=CalibrationDataError,
    )
    _check_no_arguments(spec, target)
    function: Callable[[], Any] = target
    return function


def _check_no_arguments(spec: str, target: Callable[..., Any]) -> None:
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin without a signature: calling it will tell
        return
    required = [
        p.name
        for p in signature.parameters.values()
        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise CalibrationDataError(
            f"calibration entry point '{spec}' needs argument(s) {', '.join(required)}, but it is called with "
            "none — give the parameters defaults, or wrap it in a function without arguments"
        )


def _checked(spec: str, function: Callable[[], Any], specs: list[TensorSpec]) -> Iterator[Feeds]:
    try:
        produced = function()
    except Exception as e:
        raise CalibrationDataError(f"calibration entry point '{spec}' failed: {type(e).__name__}: {e}") from e
    if isinstance(produced, Mapping) or not isinstance(produced, Iterable):
        raise CalibrationDataError(
            f"calibration entry point '{spec}' returned a {type(produced).__name__}, but it must return an "
            "iterable of feeds dicts (a list, or yield them from a generator)"
        )
    items = iter(produced)
    index = 0
    while True:
        try:
            item = next(items)
        except StopIteration:
            break
        except Exception as e:
            raise CalibrationDataError(
                f"calibration entry point '{spec}' failed at sample {index}: {type(e).__name__}: {e}"
            ) from e
        yield _check_item(spec, index, item, specs)
        index += 1
    if index == 0:
        raise CalibrationDataError(f"calibration entry point '{spec}' yielded no samples — it must yield at least one")


def _check_item(spec: str, index: int, item: object, specs: list[TensorSpec]) -> Feeds:
    if not isinstance(item, Mapping) or not all(isinstance(k, str) for k in item):
        raise CalibrationDataError(
            f"calibration entry point '{spec}' yielded a {type(item).__name__} as sample {index}, but each sample "
            f"must be a dict of input name -> numpy array for the inputs {[s.name for s in specs]}"
        )
    try:
        check_feeds(specs, item, model_name="the model")
    except InputError as e:
        raise CalibrationDataError(
            f"sample {index} from calibration entry point '{spec}' does not fit the model: {e}"
        ) from e
    return dict(item)
