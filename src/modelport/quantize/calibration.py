"""Calibration data: ``.npy`` / ``.npz`` files or a folder of images with a preprocessing spec."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelport.errors import CalibrationDataError
from modelport.ir.specs import TensorSpec

__all__ = [
    "IMAGE_SUFFIXES",
    "ImagePreprocess",
    "load_calibration",
    "parse_preprocess",
    "split_samples",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
Feeds = dict[str, np.ndarray[Any, Any]]


class ImagePreprocess(BaseModel):
    """How a folder of images becomes model input.

    Pixels are scaled by ``scale`` (default 1/255), then ``(x - mean) / std`` per channel.
    ``size`` is (height, width); by default it comes from the model's input shape.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: tuple[int, int] | None = None
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    color: Literal["RGB", "BGR", "GRAY"] = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = Field(default=(0.0, 0.0, 0.0))
    std: tuple[float, ...] = Field(default=(1.0, 1.0, 1.0))


def parse_preprocess(text: str) -> ImagePreprocess:
    """Parse ``size=224x224,layout=NCHW,color=RGB,mean=0.485:0.456:0.406,std=...,scale=0.0039``."""
    fields: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise CalibrationDataError(f"preprocess item '{part}' is not KEY=VALUE (e.g. size=224x224)")
        key = key.strip()
        if key == "size":
            fields[key] = tuple(int(v) for v in value.lower().split("x"))
        elif key in ("mean", "std"):
            fields[key] = tuple(float(v) for v in value.split(":"))
        elif key == "scale":
            fields[key] = float(eval_fraction(value))
        else:
            fields[key] = value.strip()
    try:
        return ImagePreprocess(**fields)
    except ValidationError as e:
        raise CalibrationDataError(f"invalid preprocess spec '{text}': {_first_error(e)}") from e


def eval_fraction(text: str) -> float:
    """'1/255' or '0.0039' -> float."""
    num, sep, den = text.partition("/")
    try:
        return float(num) / float(den) if sep else float(num)
    except (ValueError, ZeroDivisionError) as e:
        raise CalibrationDataError(f"'{text}' is not a number or a fraction like 1/255") from e


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    return f"{loc}: {err['msg']}"


def split_samples(arrays: dict[str, np.ndarray[Any, Any]], specs: Sequence[TensorSpec], source: str) -> list[Feeds]:
    """Turn stacked arrays (one per input, N samples each) into N feeds of batch 1."""
    by_name = {s.name: s for s in specs}
    unknown = [k for k in arrays if k not in by_name]
    missing = [k for k in by_name if k not in arrays]
    if unknown or missing:
        raise CalibrationDataError(
            f"{source}: arrays {sorted(arrays)} do not match the model inputs {sorted(by_name)} — "
            "name each array after the input it feeds"
        )
    counts = {}
    for name, given in arrays.items():
        spec = by_name[name]
        rank = len(spec.shape) if spec.shape is not None else given.ndim
        array = given[None] if given.ndim == rank - 1 else given
        if array.ndim != rank:
            raise CalibrationDataError(
                f"{source}: array '{name}' has shape {list(array.shape)}, but input '{name}' has rank {rank} "
                f"{spec.shape_str()} — stack samples along axis 0"
            )
        _check_static_dims(name, array, spec, source)
        arrays[name] = _cast(array, spec, source)
        counts[name] = array.shape[0]
    if len(set(counts.values())) != 1:
        raise CalibrationDataError(f"{source}: inputs have different sample counts {counts}")
    n = next(iter(counts.values()))
    return [{k: v[i : i + 1] for k, v in arrays.items()} for i in range(n)]


def _check_static_dims(name: str, array: np.ndarray[Any, Any], spec: TensorSpec, source: str) -> None:
    if spec.shape is None:
        return
    for axis, (got, want) in enumerate(zip(array.shape[1:], spec.shape[1:], strict=True), start=1):
        if isinstance(want, int) and got != want:
            raise CalibrationDataError(
                f"{source}: array '{name}' has size {got} on axis {axis} (shape {list(array.shape)}), but input "
                f"'{name}' is {spec.shape_str()} — resize or transpose the data to match"
            )


def _cast(array: np.ndarray[Any, Any], spec: TensorSpec, source: str) -> np.ndarray[Any, Any]:
    if array.dtype == spec.dtype:
        return array
    if array.dtype.kind == "f" and spec.dtype.kind == "f":
        return array.astype(spec.dtype)
    raise CalibrationDataError(
        f"{source}: array '{spec.name}' has dtype {array.dtype}, but the input expects {spec.dtype} — "
        f"save it with .astype(np.{spec.dtype})"
    )


def load_calibration(
    path: str | os.PathLike[str],
    specs: Sequence[TensorSpec],
    *,
    preprocess: ImagePreprocess | None = None,
    limit: int | None = None,
) -> list[Feeds]:
    """Read calibration samples for a model with inputs ``specs`` (one feed per sample)."""
    path = Path(path)
    if not path.exists():
        raise CalibrationDataError(f"calibration data '{path}' does not exist")
    if path.is_dir():
        samples = _load_images(path, specs, preprocess or ImagePreprocess(), limit)
    elif path.suffix == ".npy":
        if len(specs) != 1:
            raise CalibrationDataError(
                f"'{path}' holds one array but the model has {len(specs)} inputs — use an .npz with one array per input"
            )
        samples = split_samples({specs[0].name: _np_load(path)}, specs, str(path))
    elif path.suffix == ".npz":
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        samples = split_samples(arrays, specs, str(path))
    else:
        raise CalibrationDataError(f"calibration data '{path}' is neither .npy, .npz nor a folder of images")
    if not samples:
        raise CalibrationDataError(f"calibration data '{path}' holds no samples")
    return samples[:limit] if limit else samples


def _np_load(path: Path) -> np.ndarray[Any, Any]:
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except ValueError as e:
        raise CalibrationDataError(f"'{path}' is not a numeric .npy array: {e}") from e


def _load_images(folder: Path, specs: Sequence[TensorSpec], pre: ImagePreprocess, limit: int | None) -> list[Feeds]:
    from PIL import Image

    if len(specs) != 1:
        raise CalibrationDataError(f"a folder of images feeds one input, but the model has {len(specs)}")
    spec = specs[0]
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationDataError(f"'{folder}' has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    height, width = _image_size(spec, pre)
    samples = []
    for file in files[:limit] if limit else files:
        with Image.open(file) as opened:
            img = opened.convert("L" if pre.color == "GRAY" else "RGB")
            pixels = np.asarray(img.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        if pre.color == "BGR":
            pixels = pixels[..., ::-1]
        channels = pixels.shape[-1]
        mean = np.asarray(pre.mean[:channels], dtype=np.float32)
        std = np.asarray(pre.std[:channels], dtype=np.float32)
        pixels = (pixels * pre.scale - mean) / std
        if pre.layout == "NCHW":
            pixels = pixels.transpose(2, 0, 1)
        samples.append({spec.name: np.ascontiguousarray(pixels[None]).astype(spec.dtype)})
    return samples


def _image_size(spec: TensorSpec, pre: ImagePreprocess) -> tuple[int, int]:
    if pre.size is not None:
        return pre.size
    shape = spec.shape or ()
    dims = shape[2:4] if pre.layout == "NCHW" else shape[1:3]
    if len(dims) == 2 and all(isinstance(d, int) for d in dims):
        return int(dims[0]), int(dims[1])  # type: ignore[arg-type]
    raise CalibrationDataError(
        f"input '{spec.name}' {spec.shape_str()} has no static image size — give one with size=HxW"
    )
