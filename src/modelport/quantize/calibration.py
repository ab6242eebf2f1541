"""Calibration data: ``.npy`` / ``.npz`` files or a folder of images with a preprocessing spec.

Calibration reads user data with exactly the rules ``verify`` uses for its datasets (the loaders live in
:mod:`modelport.verify.dataset`), so a file that verifies a model also calibrates it. Here every
problem is a :class:`CalibrationDataError`, and labels, if the data has any, are not needed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from modelport.errors import CalibrationDataError
from modelport.ir.specs import TensorSpec
from modelport.verify import dataset as _dataset
from modelport.verify.dataset import IMAGE_SUFFIXES, ImagePreprocess

__all__ = [
    "IMAGE_SUFFIXES",
    "ImagePreprocess",
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
