"""User data for a model: ``.npz`` / ``.npy`` arrays or a folder of images, one complete feed per sample.

``verify`` measures accuracy on a user's test set and ``quantize`` calibrates on a user's samples. Both
read data through this module so that the same rules hold everywhere and a file that calibrates a
model also verifies it:

* arrays are split into samples along axis 0; an input with a batch axis (dynamic, or fixed to 1)
  gets feeds of batch 1, an input without one (axis 0 fixed to another size) gets the bare sample;
* dtypes are converted only when no value changes (float to float, or a cast numpy calls safe, or
  integers that fit); anything else is refused with the ``astype`` call that would fix it;
* static dimensions are checked here, against the file, instead of failing later inside an engine;
* an image folder is either flat (no labels) or in ImageFolder layout (one subfolder per class, the
  class index being the position of the subfolder among the sorted names, as in torchvision).

Every problem raises ``error`` (:class:`ConfigError` for verify, ``CalibrationDataError`` for quantize)
naming the file or array, what was seen, what was expected and how to fix it.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelport.errors import ConfigError, ModelportError
from modelport.ir.specs import TensorSpec

__all__ = [
    "IMAGE_SUFFIXES",
    "Dataset",
    "ImagePreprocess",
    "eval_fraction",
    "load_dataset",
    "parse_preprocess",
    "split_samples",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
Feeds = dict[str, np.ndarray[Any, Any]]
ErrorType = type[ModelportError]


class ImagePreprocess(BaseModel):
    """How a folder of images becomes model input.

    ``size`` is (height, width); by default it comes from the model's input shape. ``resize`` says
    how an image reaches that size: ``stretch`` (ignore the aspect ratio), ``letterbox`` (fit inside,
    pad the rest with ``pad_value``, centred) or ``crop`` (scale the image so that it covers
    ``size / crop_fraction``, then cut the centre; ``crop_fraction=0.875`` is the usual 256 -> 224).
    Pixels (0-255) are then multiplied by ``scale`` (default 1/255) and become ``(x - mean) / std``
    per channel. ``color`` is the channel order the model expects; the dtype is the input's dtype.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: tuple[int, int] | None = None
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    color: Literal["RGB", "BGR", "GRAY"] = "RGB"
    resize: Literal["stretch", "letterbox", "crop"] = "stretch"
    crop_fraction: float = Field(default=0.875, gt=0.0, le=1.0)
    pad_value: float = 0.0
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = Field(default=(0.0, 0.0, 0.0))
    std: tuple[float, ...] = Field(default=(1.0, 1.0, 1.0))

    @model_validator(mode="after")
    def _check_channels(self) -> ImagePreprocess:
        for key in ("mean", "std"):
            values: tuple[float, ...] = getattr(self, key)
            if len(values) not in (1, 3):
                raise ValueError(f"{key} has {len(values)} values; give 1 (all channels) or 3 (one per channel)")
        if any(s == 0 for s in self.std):
            raise ValueError(f"std {self.std} contains 0, which would divide by zero")
        if self.size is not None and min(self.size) < 1:
            raise ValueError(f"size {self.size} must be positive")
        return self


def parse_preprocess(text: str, *, error: ErrorType = ConfigError) -> ImagePreprocess:
    """Parse ``size=224x224,layout=NCHW,color=RGB,resize=crop,mean=0.485:0.456:0.406,std=...,scale=1/255``."""
    fields: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise error(f"preprocess item '{part}' is not KEY=VALUE (e.g. size=224x224)")
        key = key.strip()
        try:
            if key == "size":
                fields[key] = tuple(int(v) for v in value.lower().split("x"))
            elif key in ("mean", "std"):
                fields[key] = tuple(float(v) for v in value.split(":"))
            elif key == "scale":
                fields[key] = eval_fraction(value, error=error)
            else:
                fields[key] = value.strip()
        except ValueError as e:
            raise error(f"preprocess item '{part}' has a value that is not a number: {e}") from e
    try:
        return ImagePreprocess(**fields)
    except ValidationError as e:
        raise error(f"invalid preprocess spec '{text}': {_first_error(e)}") from e


def eval_fraction(text: str, *, error: ErrorType = ConfigError) -> float:
    """'1/255' or '0.0039' -> float."""
    num, sep, den = text.partition("/")
    try:
        return float(num) / float(den) if sep else float(num)
    except (ValueError, ZeroDivisionError) as e:
        raise error(f"'{text}' is not a number or a fraction like 1/255") from e


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    return f"{loc}: {err['msg']}" if loc else str(err["msg"])


@dataclass
class Dataset:
    """Samples for one model: complete feeds, optional labels, names for reports."""

    #: One complete feed per sample; an input with a batch axis has ``shape[0] == 1``.
    samples: list[Feeds]
    #: One label per sample (an ``int`` class index for top-k), or ``None`` when unlabelled.
    labels: list[Any] | None
    #: One name per sample, for reports ("cat/001.jpg", "sample 3").
    names: list[str]
    #: Where the samples came from.
    source: str
    #: Class names of an ImageFolder dataset (index = label), else ``None``.
    classes: list[str] | None = None

    def __post_init__(self) -> None:
        if len(self.names) != len(self.samples):
            raise ConfigError(
                f"dataset '{self.source}' has {len(self.samples)} samples but {len(self.names)} names — "
                "give one name per sample"
            )
        if self.labels is not None and len(self.labels) != len(self.samples):
            raise ConfigError(
                f"dataset '{self.source}' has {len(self.samples)} samples but {len(self.labels)} labels — "
                "give one label per sample, or labels=None"
            )

    def __len__(self) -> int:
        return len(self.samples)


def load_dataset(
    path: str | os.PathLike[str],
    specs: Sequence[TensorSpec],
    *,
    preprocess: ImagePreprocess | None = None,
    limit: int | None = None,
    labels_key: str = "labels",
    error: ErrorType = ConfigError,
) -> Dataset:
    """Read samples (and labels, where the source has them) for a model with inputs ``specs``.

    ``path`` is an ``.npz`` (one array per input, named after it, plus labels under ``labels_key``;
    an array named after an input always feeds that input), an ``.npy`` (one-input models), or a
    folder of images (flat, or one subfolder per class). ``limit`` keeps the first samples; in a
    class-folder dataset it takes them round-robin over the classes so that every class is seen.
    """
    path = Path(path)
    if limit is not None and limit < 1:
        raise error(f"limit must be at least 1 sample, got {limit}")
    if not path.exists():
        raise error(f"data '{path}' does not exist — give a .npz, a .npy or a folder of images")
    if path.is_dir():
        dataset = _load_images(path, specs, preprocess or ImagePreprocess(), limit, error)
    elif path.suffix.lower() in (".npy", ".npz"):
        dataset = _load_arrays(path, specs, limit, labels_key, error)
    else:
        raise error(
            f"data '{path}' is neither .npy, .npz nor a folder of images (suffix '{path.suffix}') — "
            "save arrays with np.savez(path, <input name>=array, labels=labels)"
        )
    if not dataset.samples:
        raise error(f"data '{path}' holds no samples — it needs at least one entry along axis 0")
    logger.info(
        "read %d samples from %s (%s)", len(dataset), path, "labelled" if dataset.labels is not None else "no labels"
    )
    return dataset


# arrays ---------------------------------------------------------------------------------------------


def _load_arrays(
    path: Path, specs: Sequence[TensorSpec], limit: int | None, labels_key: str, error: ErrorType
) -> Dataset:
    source = str(path)
    raw_labels: np.ndarray[Any, Any] | None = None
    if path.suffix.lower() == ".npy":
        if len(specs) != 1:
            raise error(
                f"'{path}' holds one array but the model has {len(specs)} inputs "
                f"({', '.join(s.name for s in specs)}) — use an .npz with one array per input"
            )
        arrays = {specs[0].name: _np_load(path, error)}
    else:
        arrays = _npz_load(path, error)
        inputs = {s.name for s in specs}
        if len(specs) == 1 and set(arrays) == {"arr_0"}:
            arrays = {specs[0].name: arrays["arr_0"]}
        if labels_key in arrays and labels_key not in inputs:
            raw_labels = arrays.pop(labels_key)
    samples = split_samples(arrays, specs, source, error=error)
    labels = _label_list(raw_labels, len(samples), source, labels_key, error) if raw_labels is not None else None
    names = [f"sample {i}" for i in range(len(samples))]
    if limit is not None:
        samples, names = samples[:limit], names[:limit]
        labels = labels[:limit] if labels is not None else None
    return Dataset(samples=samples, labels=labels, names=names, source=source)


def _np_load(path: Path, error: ErrorType) -> np.ndarray[Any, Any]:
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except (ValueError, OSError, EOFError) as e:
        raise error(f"'{path}' is not a numeric .npy array: {e} — save it with np.save(path, array)") from e


def _npz_load(path: Path, error: ErrorType) -> dict[str, np.ndarray[Any, Any]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise error(
            f"'{path}' is not a readable .npz of numeric arrays: {e} — save it with np.savez(path, name=array, ...)"
        ) from e


def _label_list(raw: np.ndarray[Any, Any], count: int, source: str, key: str, error: ErrorType) -> list[Any]:
    if raw.ndim == 0 or raw.shape[0] != count:
        seen = "a single value" if raw.ndim == 0 else f"{raw.shape[0]} labels (shape {list(raw.shape)})"
        raise error(
            f"{source}: '{key}' holds {seen} for {count} samples — give exactly one label per sample "
            f"along axis 0 (shape [{count}] for class indices)"
        )
    return [_python_value(raw[i]) for i in range(count)]


def _python_value(value: Any) -> Any:
    array = np.asarray(value)
    return array.item() if array.ndim == 0 else array


def _has_batch_axis(spec: TensorSpec) -> bool:
    """Axis 0 is a batch axis unless it is fixed to a size other than 1 (or there is no axis 0)."""
    if spec.shape is None:
        return True
    if not spec.shape:
        return False
    first = spec.shape[0]
    return not isinstance(first, int) or first == 1


def split_samples(
    arrays: dict[str, np.ndarray[Any, Any]],
    specs: Sequence[TensorSpec],
    source: str,
    *,
    error: ErrorType = ConfigError,
) -> list[Feeds]:
    """Turn stacked arrays (one per input, N samples each along axis 0) into N complete feeds."""
    by_name = {s.name: s for s in specs}
    unknown = [k for k in arrays if k not in by_name]
    missing = [k for k in by_name if k not in arrays]
    if unknown or missing:
        raise error(
            f"{source}: arrays {sorted(arrays)} do not match the model inputs {sorted(by_name)} — "
            "name each array after the input it feeds (np.savez(path, <input>=array, ...))"
        )
    stacked = {name: _stack(name, np.asarray(given), by_name[name], source, error) for name, given in arrays.items()}
    counts = {name: array.shape[0] for name, array in stacked.items()}
    if len(set(counts.values())) > 1:
        raise error(f"{source}: inputs have different sample counts {counts} — give every input the same count")
    count = next(iter(counts.values()), 0)
    batched = {name: _has_batch_axis(by_name[name]) for name in stacked}
    return [
        {name: array[i : i + 1] if batched[name] else array[i] for name, array in stacked.items()} for i in range(count)
    ]


def _stack(
    name: str, given: np.ndarray[Any, Any], spec: TensorSpec, source: str, error: ErrorType
) -> np.ndarray[Any, Any]:
    """The array with samples along axis 0, checked against the input's rank and static dims."""
    batched = _has_batch_axis(spec)
    if spec.shape is None:
        if given.ndim == 0:
            raise error(f"{source}: array '{name}' is a single value — stack samples along axis 0")
        return _cast(given, spec, source, error)
    rank = len(spec.shape)
    stacked_rank = rank if batched else rank + 1
    array = given[None] if given.ndim == stacked_rank - 1 else given
    if array.ndim != stacked_rank:
        layout = "with the batch axis first" if batched else "along a new axis 0 (the input has no batch axis)"
        raise error(
            f"{source}: array '{name}' has shape {list(given.shape)}, but input '{name}' has rank {rank} "
            f"{spec.shape_str()} — stack samples {layout}"
        )
    sample_dims = spec.shape[1:] if batched else spec.shape
    first_axis = 1 if batched else 0
    _check_dims(name, array.shape[1:], sample_dims, first_axis, list(array.shape), spec, source, error)
    return _cast(array, spec, source, error)


def _check_dims(
    name: str,
    got: Sequence[int],
    want: Sequence[Any],
    first_axis: int,
    shape: list[int],
    spec: TensorSpec,
    source: str,
    error: ErrorType,
    fix: str = "resize or transpose the data to match",
) -> None:
    for axis, (size, expected) in enumerate(zip(got, want, strict=True), start=first_axis):
        if isinstance(expected, int) and size != expected:
            raise error(
                f"{source}: array '{name}' has size {size} on axis {axis} (shape {shape}), but input "
                f"'{spec.name}' is {spec.shape_str()} — {fix}"
            )


def _cast(array: np.ndarray[Any, Any], spec: TensorSpec, source: str, error: ErrorType) -> np.ndarray[Any, Any]:
    """``array`` as the input's dtype, only when no value changes."""
    src, dst = array.dtype, spec.dtype
    if src == dst:
        return array
    ok = (src.kind == "f" and dst.kind == "f") or np.can_cast(src, dst, "safe")
    if not ok and src.kind in "iub" and dst.kind in "iu" and array.size:
        info = np.iinfo(dst)
        ok = bool(array.min() >= info.min and array.max() <= info.max)
    if ok:
        with np.errstate(over="ignore", invalid="ignore"):
            out = array.astype(dst)
        if src.kind == "f" and dst.itemsize < src.itemsize and not np.array_equal(np.isfinite(array), np.isfinite(out)):
            raise error(
                f"{source}: array '{spec.name}' has values beyond the range of {dst} (the input's dtype) — "
                "rescale the data before saving it"
            )
        return out
    raise error(
        f"{source}: array '{spec.name}' has dtype {src}, but the input expects {dst} and the values would change — "
        f"save it with .astype(np.{dst})"
    )


# images ---------------------------------------------------------------------------------------------


def _load_images(
    folder: Path, specs: Sequence[TensorSpec], pre: ImagePreprocess, limit: int | None, error: ErrorType
) -> Dataset:
    if len(specs) != 1:
        raise error(
            f"a folder of images feeds one input, but the model has {len(specs)} "
            f"({', '.join(s.name for s in specs)}) — save the samples as an .npz with one array per input"
        )
    spec = specs[0]
    files, labels, classes = _scan_folder(folder, error)
    keep = _first_samples(labels, len(files), limit) if limit is not None else list(range(len(files)))
    size = _image_size(spec, pre, error)
    samples = [{spec.name: _image_feed(files[i], spec, pre, size, error)} for i in keep]
    names = [files[i].relative_to(folder).as_posix() for i in keep]
    return Dataset(
        samples=samples,
        labels=[labels[i] for i in keep] if labels is not None else None,
        names=names,
        source=str(folder),
        classes=classes,
    )


def _images_in(folder: Path, *, recursive: bool) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in found
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _scan_folder(folder: Path, error: ErrorType) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """(files, labels, class names): flat folder -> no labels; one subfolder per class -> labels."""
    top = _images_in(folder, recursive=False)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if top and classes:
        raise error(
            f"'{folder}' has images at the top level and subfolders {classes[:5]} — use one layout: "
            "all images in the folder (no labels) or one subfolder per class (labels)"
        )
    if top:
        return top, None, None
    if not classes:
        raise error(f"'{folder}' has no images ({', '.join(sorted(IMAGE_SUFFIXES))}) and no class subfolders")
    files: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        found = _images_in(folder / name, recursive=True)
        if not found:
            raise error(
                f"class folder '{folder / name}' has no images ({', '.join(sorted(IMAGE_SUFFIXES))}) — "
                "remove it or add images; an empty class would shift every class index after it"
            )
        files += found
        labels += [index] * len(found)
    return files, labels, classes


def _first_samples(labels: list[int] | None, count: int, limit: int) -> list[int]:
    """Indices of the first ``limit`` of ``count`` samples; round-robin over classes when labelled."""
    if labels is None:
        return list(range(min(limit, count)))
    seen: dict[int, int] = {}
    rank = []
    for label in labels:
        rank.append(seen.get(label, 0))
        seen[label] = rank[-1] + 1
    order = sorted(range(len(labels)), key=lambda i: (rank[i], labels[i]))
    return sorted(order[:limit])


def _spatial_offset(spec: TensorSpec) -> int:
    """1 when the image input has a batch axis (rank 4, or unknown rank), 0 for a bare image (rank 3)."""
    return 0 if spec.shape is not None and len(spec.shape) == 3 else 1


def _image_size(spec: TensorSpec, pre: ImagePreprocess, error: ErrorType) -> tuple[int, int]:
    if spec.shape is not None and len(spec.shape) not in (3, 4):
        raise error(
            f"input '{spec.name}' {spec.shape_str()} is not an image input (rank 3 or 4, NCHW or NHWC) — "
            "save the samples as an .npz instead"
        )
    if pre.size is not None:
        return pre.size
    offset = _spatial_offset(spec)
    shape = spec.shape or ()
    dims = shape[offset + 1 : offset + 3] if pre.layout == "NCHW" else shape[offset : offset + 2]
    if len(dims) == 2 and all(isinstance(d, int) for d in dims):
        return int(dims[0]), int(dims[1])  # type: ignore[arg-type]
    raise error(f"input '{spec.name}' {spec.shape_str()} has no static image size — give one with size=HxW")


def _read_image(file: Path, pre: ImagePreprocess, size: tuple[int, int], error: ErrorType) -> np.ndarray[Any, Any]:
    """Decoded, resized pixels as float32 [H, W, C] in 0-255, channels in RGB (or gray) order."""
    from PIL import Image

    try:
        with Image.open(file) as opened:
            image = opened.convert("L" if pre.color == "GRAY" else "RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise error(f"cannot read image '{file}': {e} — replace or remove the file") from e
    pixels = _resize(image, pre, size)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def _resize(image: Any, pre: ImagePreprocess, size: tuple[int, int]) -> np.ndarray[Any, Any]:
    from PIL import Image

    height, width = size
    bilinear = Image.Resampling.BILINEAR
    if pre.resize == "stretch":
        return np.asarray(image.resize((width, height), bilinear), dtype=np.float32)
    src_w, src_h = image.size
    if pre.resize == "letterbox":
        ratio = min(height / src_h, width / src_w)
        new_w, new_h = max(1, round(src_w * ratio)), max(1, round(src_h * ratio))
        inner = np.asarray(image.resize((new_w, new_h), bilinear), dtype=np.float32)
        canvas = np.full((height, width, *inner.shape[2:]), pre.pad_value, dtype=np.float32)
        top, left = (height - new_h) // 2, (width - new_w) // 2
        canvas[top : top + new_h, left : left + new_w] = inner
        return canvas
    ratio = max(height / src_h, width / src_w) / pre.crop_fraction
    new_w, new_h = max(width, round(src_w * ratio)), max(height, round(src_h * ratio))
    resized = np.asarray(image.resize((new_w, new_h), bilinear), dtype=np.float32)
    top, left = round((new_h - height) / 2), round((new_w - width) / 2)
    return resized[top : top + height, left : left + width]


def _image_feed(
    file: Path, spec: TensorSpec, pre: ImagePreprocess, size: tuple[int, int], error: ErrorType
) -> np.ndarray[Any, Any]:
    pixels = _read_image(file, pre, size, error)
    if pre.color == "BGR":
        pixels = pixels[..., ::-1]
    channels = pixels.shape[-1]
    mean = np.asarray(pre.mean[:channels], dtype=np.float32)
    std = np.asarray(pre.std[:channels], dtype=np.float32)
    pixels = (pixels * np.float32(pre.scale) - mean) / std
    if pre.layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    feed = np.ascontiguousarray(pixels[None] if _spatial_offset(spec) else pixels)
    if spec.shape is not None:
        _check_dims(
            spec.name,
            feed.shape,
            spec.shape,
            0,
            list(feed.shape),
            spec,
            str(file),
            error,
            fix=f"check layout= (now {pre.layout}) and color= (now {pre.color}, {channels} channel(s))",
        )
    return _image_dtype(feed, spec, file, error)


def _image_dtype(feed: np.ndarray[Any, Any], spec: TensorSpec, file: Path, error: ErrorType) -> np.ndarray[Any, Any]:
    if spec.dtype.kind == "f":
        return feed.astype(spec.dtype)
    if spec.dtype.kind in "iu":
        info = np.iinfo(spec.dtype)
        rounded = np.rint(feed)
        if np.abs(feed - rounded).max() <= 1e-3 and rounded.min() >= info.min and rounded.max() <= info.max:
            return np.asarray(rounded.astype(spec.dtype))
        raise error(
            f"{file}: input '{spec.name}' is {spec.dtype}, but preprocessing gives values from {feed.min():.4g} to "
            f"{feed.max():.4g} that do not fit it — for integer image inputs use scale=1,mean=0,std=1"
        )
    raise error(f"input '{spec.name}' has dtype {spec.dtype}, which a folder of images cannot feed — use an .npz")
