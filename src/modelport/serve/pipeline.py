"""Serving pipelines: pre-process → model → post-process stages around one model (Triton ensembles).

Why: clients of a vision model want to send a JPEG and get labels or boxes back, not to copy the
model's resize, normalisation and NMS into every client (where they drift from what the model was
trained with). A model's ``config.yaml`` names the stages under ``pipeline:``; this module parses
that into :class:`PipelineConfig`, checks it against the model's inputs and outputs once, when the
model loads (:meth:`Pipeline.build`, which raises :class:`RepositoryError` with a fix), and runs it
per request (:meth:`Pipeline.preprocess` before the model, :meth:`Pipeline.postprocess` after).

Data flow of one request:

- pre-process stages run in order on the request's feeds. An ``image`` stage replaces its
  ``input`` (encoded JPEG/PNG bytes ``BYTES [N]``, or pixels ``UINT8 [N, H, W, 3]`` in RGB) with
  the model input ``target``; every other feed passes through. A ``python`` stage gets the feeds
  so far and returns the complete feeds for the next stage (replace, not merge).
- the model runs on what the last pre-process stage produced (its inputs, by name, exactly).
- post-process stages run in order on the model's outputs: ``classification`` and ``detection``
  replace the output they read with their results; a ``python`` stage returns the complete
  outputs. Outputs no stage consumes pass through to the client.
- geometry (how each original image was resized, padded or cropped) travels from pre-process to
  post-process in the :class:`PipelineContext` of the request, so detections come back in each
  original image's pixel coordinates.

Resizing is Pillow's ``BILINEAR`` filter (it widens its support when shrinking, i.e. it
antialiases like torchvision's ``antialias=True``). ``letterbox`` keeps the aspect ratio, centres
the image and pads with ``pad_value`` (in 0-255 pixel units, before normalisation);
``center_crop`` scales the image to cover ``size / crop_fraction`` and cuts out the centre.

Errors in a request's data (bytes that do not decode, a wrong dtype or rank, a python stage that
raises) are :class:`InputError` subclasses naming the stage and the input; they fail only that
request. A python stage that breaks its contract (returns something other than a dict of numpy
arrays) and model outputs that do not fit a stage are :class:`BackendError` — server-side faults.
"""

from __future__ import annotations

import abc
import io
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pydantic
from pydantic import BaseModel, ConfigDict, Field

from modelport.entry_points import load_callable
from modelport.errors import (
    BackendError,
    InputDtypeError,
    InputError,
    InputShapeError,
    RepositoryError,
    UnknownInputError,
)
from modelport.ir.specs import Dim, TensorSpec
from modelport.serve.protocol import DATATYPES

__all__ = [
    "ClassificationStage",
    "DetectionStage",
    "ImageGeometry",
    "ImageStage",
    "Pipeline",
    "PipelineConfig",
    "PipelineContext",
    "PostStage",
    "PreStage",
    "PythonStage",
    "Staged",
    "TensorDecl",
    "allowed_keys",
    "non_max_suppression",
]

logger = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray[Any, Any]]
Geometries = dict[str, tuple["ImageGeometry", ...]]

#: Encoded image formats an ``image`` stage decodes (anything else is refused before decoding).
IMAGE_FORMATS = ("JPEG", "PNG")
#: Detection candidates kept (highest scores) before NMS, which is quadratic in the worst case.
MAX_NMS_CANDIDATES = 30_000
_BYTES = np.dtype(object)


# -------------------------------------------------------------------------------------------------
# configuration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Name = Annotated[str, Field(min_length=1)]


class TensorDecl(_Strict):
    """A tensor a python stage receives or returns: ``{name, datatype: FP32, shape: [-1, 3]}``."""

    name: Name
    datatype: str
    shape: list[Annotated[int, Field(ge=-1)]]

    @pydantic.field_validator("datatype")
    @classmethod
    def _known_datatype(cls, value: str) -> str:
        if value not in DATATYPES:
            raise ValueError(f"unknown datatype {value!r} — use one of {', '.join(DATATYPES)}")
        return value

    def spec(self) -> TensorSpec:
        shape = tuple(None if d == -1 else d for d in self.shape)
        return TensorSpec(name=self.name, dtype=DATATYPES[self.datatype], shape=shape)


class ImageStage(_Strict):
    """Decode, resize, normalise and lay out images for one 4-D model input.

    ``target`` defaults to the model's only 4-D float input; ``size`` (height, width) and
    ``layout`` default to what the target's shape says. Pixels (0-255) become
    ``(pixel * scale - mean) / std`` per channel, with ``mean`` and ``std`` in the model's
    (``color``) channel order. An encoded image larger than ``max_pixels`` (width × height) is
    refused before it is decoded: the request size limit bounds the bytes, not the pixels.
    """

    kind: Literal["image"]
    input: Name = "image"
    target: Name | None = None
    size: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=2, max_length=2)] | None = None
    resize: Literal["stretch", "letterbox", "center_crop"] = "stretch"
    pad_value: Annotated[float, Field(ge=0, le=255)] = 114.0
    crop_fraction: Annotated[float, Field(gt=0, le=1)] = 0.875
    color: Literal["rgb", "bgr"] = "rgb"
    layout: Literal["nchw", "nhwc"] | None = None
    scale: Annotated[float, Field(gt=0)] = 1.0 / 255.0
    mean: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = Field(default_factory=lambda: [1.0, 1.0, 1.0])
    max_pixels: Annotated[int, Field(ge=1)] = 40_000_000

    @pydantic.model_validator(mode="after")
    def _check(self) -> ImageStage:
        for key in ("mean", "std"):
            values: list[float] = getattr(self, key)
            if len(values) not in (1, 3):
                raise ValueError(f"{key} has {len(values)} values; give 1 (all channels) or 3 (one per channel)")
        if any(s == 0 for s in self.std):
            raise ValueError(f"std {self.std} contains 0, which would divide by zero")
        if "pad_value" in self.model_fields_set and self.resize != "letterbox":
            raise ValueError(f"pad_value applies only to resize: letterbox (resize is {self.resize}) — remove it")
        if "crop_fraction" in self.model_fields_set and self.resize != "center_crop":
            raise ValueError(f"crop_fraction applies only to resize: center_crop (resize is {self.resize}) — remove it")
        return self


def _check_entry_point(value: str) -> str:
    module, sep, attr = value.partition(":")
    if not sep or not module.strip() or not attr.strip():
        raise ValueError(f"entry_point {value!r} should have the form 'package.module:function'")
    return value


def _check_unique(decls: list[TensorDecl] | None, key: str) -> None:
    names = [d.name for d in decls or []]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{key} names {', '.join(repr(n) for n in repeated)} more than once")


class PythonStage(_Strict):
    """A user function ``fn(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]``.

    It gets every tensor so far and returns every tensor after it. ``inputs`` / ``outputs``
    optionally declare those sets (for metadata and checks); undeclared, the stage is assumed to
    keep the names it is given.
    """

    kind: Literal["python"]
    entry_point: Annotated[str, pydantic.AfterValidator(_check_entry_point)]
    inputs: list[TensorDecl] | None = None
    outputs: list[TensorDecl] | None = None

    @pydantic.model_validator(mode="after")
    def _check(self) -> PythonStage:
        _check_unique(self.inputs, "inputs")
        _check_unique(self.outputs, "outputs")
        return self


class ClassificationStage(_Strict):
    """Softmax (unless the output already holds probabilities) and top-k, optionally with labels.

    ``labels`` is a file next to ``config.yaml`` (one label per line) or an inline list. The stage
    returns ``<prefix>scores`` FP32 [N, k], ``<prefix>indices`` INT64 [N, k] and, with labels,
    ``<prefix>labels`` BYTES [N, k].
    """

    kind: Literal["classification"]
    output: Name | None = None
    softmax: bool = True
    top_k: Annotated[int, Field(ge=1)] = 5
    labels: str | Annotated[list[str], Field(min_length=1)] | None = None
    prefix: str = ""


class DetectionStage(_Strict):
    """Decode YOLO-style boxes and run per-class greedy NMS.

    The output is ``[N, boxes, 4 + classes]`` (``boxes_first``, YOLOv5) or ``[N, 4 + classes,
    boxes]`` (``channels_first``, YOLOv8); with ``objectness`` one more column after the box
    multiplies the class scores. Each box takes its best class; boxes scoring above
    ``score_threshold`` enter NMS, which drops a box whose IoU with a kept higher-scoring box of
    the same class exceeds ``iou_threshold``. Results are padded to ``max_detections``.
    """

    kind: Literal["detection"]
    output: Name | None = None
    layout: Literal["boxes_first", "channels_first"] | None = None
    box_format: Literal["cxcywh", "xyxy"] = "cxcywh"
    objectness: bool = False
    score_threshold: Annotated[float, Field(ge=0)] = 0.25
    iou_threshold: Annotated[float, Field(gt=0, le=1)] = 0.45
    max_detections: Annotated[int, Field(ge=1)] = 100
    class_agnostic: bool = False
    image_input: Name | None = None
    prefix: str = ""


PreStage = Annotated[ImageStage | PythonStage, Field(discriminator="kind")]
PostStage = Annotated[ClassificationStage | DetectionStage | PythonStage, Field(discriminator="kind")]


class PipelineConfig(_Strict):
    """The ``pipeline:`` key of a model's ``config.yaml``: pre-process and post-process stages."""

    preprocess: list[PreStage] = Field(default_factory=list)
    postprocess: list[PostStage] = Field(default_factory=list)

    @pydantic.model_validator(mode="after")
    def _not_empty(self) -> PipelineConfig:
        if not self.preprocess and not self.postprocess:
            raise ValueError("the pipeline has no stages — add preprocess or postprocess stages, or remove 'pipeline'")
        return self


_STAGE_CLASSES: dict[str, type[BaseModel]] = {
    "image": ImageStage,
    "python": PythonStage,
    "classification": ClassificationStage,
    "detection": DetectionStage,
}


def allowed_keys(parents: Sequence[str | int]) -> list[str]:
    """The keys allowed at a pydantic error location inside ``pipeline`` (for "unknown key" hints).

    ``parents`` is the location below ``pipeline`` without the offending key, as pydantic reports
    it: ``["preprocess", 0, "image"]`` -> the keys of an image stage.
    """
    model: type[BaseModel] = PipelineConfig
    for part in (str(p) for p in parents):
        if part in _STAGE_CLASSES:
            model = _STAGE_CLASSES[part]
        elif part in ("inputs", "outputs") and model is PythonStage:
            model = TensorDecl
    return list(model.model_fields)


# -------------------------------------------------------------------------------------------------
# runtime values


@dataclass(frozen=True)
class Staged:
    """What a pipeline half returns: the tensors for the next step, context, time per stage."""

    feeds: dict[str, np.ndarray[Any, Any]]
    context: Any
    seconds: dict[str, float]


@dataclass(frozen=True)
class ImageGeometry:
    """How one original image maps onto the model input: ``model = original * scale + offset``."""

    width: int
    height: int
    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float

    def to_original(self, boxes: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """``[K, 4]`` x1, y1, x2, y2 in model pixels -> original image pixels, clipped to the image."""
        out = np.empty_like(boxes)
        out[:, 0::2] = (boxes[:, 0::2] - self.offset_x) / self.scale_x
        out[:, 1::2] = (boxes[:, 1::2] - self.offset_y) / self.scale_y
        np.clip(out[:, 0::2], 0, self.width, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, self.height, out=out[:, 1::2])
        return out


@dataclass(frozen=True)
class PipelineContext:
    """Per-request state from pre-process to post-process: image geometry by image-stage input."""

    geometry: Mapping[str, tuple[ImageGeometry, ...]]


def _shape(array: np.ndarray[Any, Any]) -> list[int]:
    return [int(d) for d in array.shape]


# -------------------------------------------------------------------------------------------------
# stages


class _Stage(abc.ABC):
    """One built stage: checked against the model at build time, run once per request."""

    def __init__(self, name: str) -> None:
        self.name = name

    @abc.abstractmethod
    def run(self, tensors: Tensors, geometry: Geometries) -> Tensors:
        """The tensors after this stage; pre-process stages record geometry, post-process read it."""


class _ImageRun(_Stage):
    """An :class:`ImageStage` resolved against its target input."""

    def __init__(
        self, name: str, config: ImageStage, target: str, size: tuple[int, int], layout: str, dtype: np.dtype[Any]
    ) -> None:
        super().__init__(name)
        self.config = config
        self.input = config.input
        self.target = target
        self.size = size
        self.layout = layout
        self.dtype = dtype
        std = np.asarray(config.std, dtype=np.float32)
        self._gain = np.float32(config.scale) / std
        self._bias = -np.asarray(config.mean, dtype=np.float32) / std

    def run(self, tensors: Tensors, geometry: Geometries) -> Tensors:
        if self.input not in tensors:
            raise UnknownInputError(
                f"stage '{self.name}' needs input '{self.input}' (BYTES [N] encoded images, or UINT8 "
                f"[N, H, W, 3]), which the request does not have — send it"
            )
        pixels, geometries = self._pixels(tensors[self.input])
        out = {k: v for k, v in tensors.items() if k != self.input}
        out[self.target] = self._finish(pixels)
        geometry[self.input] = geometries
        return out

    def _pixels(self, array: Any) -> tuple[np.ndarray[Any, Any], tuple[ImageGeometry, ...]]:
        """Float32 ``[N, H, W, 3]`` RGB pixels in 0-255 at the model's size, and their geometry."""
        if not isinstance(array, np.ndarray):
            raise InputDtypeError(
                f"stage '{self.name}': input '{self.input}' is a {type(array).__name__}, not a numpy array"
            )
        if array.dtype == _BYTES or array.dtype.kind == "S":
            if array.ndim != 1:
                raise InputShapeError(
                    f"stage '{self.name}': input '{self.input}' is BYTES with shape {_shape(array)}, but encoded "
                    "images come as a 1-D BYTES tensor [N] (one JPEG or PNG per element) — reshape it to [N]"
                )
            images = [self._decode(element, i) for i, element in enumerate(array)]
        elif array.dtype == np.uint8:
            if array.ndim != 4 or array.shape[-1] != 3 or 0 in array.shape[1:3]:
                raise InputShapeError(
                    f"stage '{self.name}': input '{self.input}' is UINT8 with shape {_shape(array)}, but pixel "
                    "images come as [N, H, W, 3] (height, width > 0, RGB channels) — add the batch axis or convert "
                    "the images to RGB"
                )
            if self._is_identity(array.shape[1], array.shape[2]):
                return array.astype(np.float32), tuple(_identity(self.size) for _ in range(len(array)))
            images = [_pil_from_array(array[i]) for i in range(len(array))]
        else:
            raise InputDtypeError(
                f"stage '{self.name}': input '{self.input}' has dtype {array.dtype} (shape {_shape(array)}), but "
                "it takes encoded images (BYTES [N], JPEG or PNG) or pixels (UINT8 [N, H, W, 3], RGB) — send one "
                "of those"
            )
        pixels = np.empty((len(images), *self.size, 3), dtype=np.float32)
        geometries = []
        for i, image in enumerate(images):
            pixels[i], placed = _fit(image, self.size, self.config)
            geometries.append(placed)
        return pixels, tuple(geometries)

    def _is_identity(self, height: int, width: int) -> bool:
        return (height, width) == self.size and self.config.resize != "center_crop"

    def _decode(self, element: object, index: int) -> Any:
        from PIL import Image

        where = f"stage '{self.name}': element {index} of input '{self.input}'"
        if not isinstance(element, bytes):
            raise InputDtypeError(
                f"{where} is a {type(element).__name__}, not bytes — send the encoded file's bytes as a BYTES tensor"
            )
        try:
            with Image.open(io.BytesIO(element), formats=IMAGE_FORMATS) as opened:
                self._check_pixels(where, opened.size)
                return opened.convert("RGB")
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
            raise InputError(
                f"{where} ({len(element)} bytes, starting {element[:8]!r}) is not a decodable "
                f"{' or '.join(IMAGE_FORMATS)} image: {e} — send the bytes of a complete JPEG or PNG file"
            ) from e

    def _check_pixels(self, where: str, size: tuple[int, int]) -> None:
        width, height = size
        if width * height > self.config.max_pixels:
            raise InputShapeError(
                f"{where} is {width} x {height} pixels, more than the stage's max_pixels {self.config.max_pixels} — "
                "send a smaller image"
            )

    def _finish(self, pixels: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Normalise, reorder channels, lay out and cast ``[N, H, W, 3]`` RGB pixels."""
        if self.config.color == "bgr":
            pixels = pixels[..., ::-1]
        floating = self.dtype.kind == "f"
        pixels = pixels * self._gain + self._bias if floating else np.clip(np.rint(pixels), 0, 255)
        if self.layout == "nchw":
            pixels = pixels.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(pixels, dtype=self.dtype)


def _identity(size: tuple[int, int]) -> ImageGeometry:
    return ImageGeometry(width=size[1], height=size[0], scale_x=1.0, scale_y=1.0, offset_x=0.0, offset_y=0.0)


def _pil_from_array(pixels: np.ndarray[Any, Any]) -> Any:
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")


def _resized(image: Any, width: int, height: int) -> np.ndarray[Any, Any]:
    from PIL import Image

    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def _fit(image: Any, size: tuple[int, int], config: ImageStage) -> tuple[np.ndarray[Any, Any], ImageGeometry]:
    """One RGB image at ``size`` (float32 [H, W, 3], 0-255) by ``config.resize``, and its geometry."""
    height, width = size
    src_w, src_h = image.size
    if config.resize == "stretch":
        placed = ImageGeometry(src_w, src_h, width / src_w, height / src_h, 0.0, 0.0)
        return _resized(image, width, height), placed
    if config.resize == "letterbox":
        ratio = min(height / src_h, width / src_w)
        new_w, new_h = max(1, round(src_w * ratio)), max(1, round(src_h * ratio))
        top, left = (height - new_h) // 2, (width - new_w) // 2
        canvas = np.full((height, width, 3), config.pad_value, dtype=np.float32)
        canvas[top : top + new_h, left : left + new_w] = _resized(image, new_w, new_h)
        return canvas, ImageGeometry(src_w, src_h, new_w / src_w, new_h / src_h, float(left), float(top))
    ratio = max(height / src_h, width / src_w) / config.crop_fraction
    new_w, new_h = max(width, round(src_w * ratio)), max(height, round(src_h * ratio))
    top, left = round((new_h - height) / 2), round((new_w - width) / 2)
    cropped = _resized(image, new_w, new_h)[top : top + height, left : left + width]
    return cropped, ImageGeometry(src_w, src_h, new_w / src_w, new_h / src_h, float(-left), float(-top))


class _PythonRun(_Stage):
    """A :class:`PythonStage` with its function loaded."""

    def __init__(self, name: str, config: PythonStage, function: Callable[..., Any]) -> None:
        super().__init__(name)
        self.entry_point = config.entry_point
        self.function = function
        self.declared = [d.spec() for d in config.outputs] if config.outputs is not None else None

    def run(self, tensors: Tensors, geometry: Geometries) -> Tensors:
        try:
            result = self.function(dict(tensors))
        except Exception as e:
            raise InputError(
                f"stage '{self.name}' (entry point '{self.entry_point}') raised {type(e).__name__}: {e} — "
                f"it was given {_listing(tensors)}; fix the request or the function"
            ) from e
        return self._checked(result)

    def _checked(self, result: Any) -> Tensors:
        where = f"stage '{self.name}': entry point '{self.entry_point}'"
        if not isinstance(result, Mapping):
            raise BackendError(
                f"{where} returned a {type(result).__name__}, not a dict of numpy arrays — return {{name: np.ndarray}}"
            )
        for key, value in result.items():
            if not isinstance(key, str):
                raise BackendError(f"{where} returned a dict with key {key!r} ({type(key).__name__}); keys are names")
            if not isinstance(value, np.ndarray):
                raise BackendError(
                    f"{where} returned '{key}' as a {type(value).__name__}, not a numpy array — wrap it with np.asarray"
                )
        if self.declared is not None:
            self._check_declared(where, result)
        return dict(result)

    def _check_declared(self, where: str, result: Mapping[str, np.ndarray[Any, Any]]) -> None:
        expected = {s.name: s for s in self.declared or []}
        if set(result) != set(expected):
            raise BackendError(
                f"{where} returned {', '.join(repr(n) for n in result) or 'nothing'}, but its 'outputs' declare "
                f"{', '.join(repr(n) for n in expected)} — make the function and the declaration agree"
            )
        for name, spec in expected.items():
            if result[name].dtype != spec.dtype:
                raise BackendError(
                    f"{where} returned '{name}' as {result[name].dtype}, but its 'outputs' declare {spec.dtype} — "
                    f"return arr.astype(np.{spec.dtype}) or fix the declaration"
                )


def _listing(tensors: Mapping[str, np.ndarray[Any, Any]]) -> str:
    if not tensors:
        return "no tensors"
    return ", ".join(f"'{k}' {getattr(v, 'dtype', '?')} {list(getattr(v, 'shape', []))}" for k, v in tensors.items())


def _model_output(stage: _Stage, tensors: Tensors, name: str, rank: int) -> np.ndarray[Any, Any]:
    """The float output ``name`` a post-process stage reads, checked (a wrong one is a server fault)."""
    array = tensors.get(name)
    if array is None:
        raise BackendError(
            f"stage '{stage.name}' reads output '{name}', but the model gave only {_listing(tensors)} — "
            "run the model with all of its outputs before postprocess()"
        )
    if array.ndim != rank or array.dtype.kind != "f":
        raise BackendError(
            f"stage '{stage.name}' needs output '{name}' as a rank-{rank} float tensor, but the model returned "
            f"{array.dtype} {_shape(array)} — point 'output' at the right tensor"
        )
    return array


class _ClassificationRun(_Stage):
    def __init__(self, name: str, config: ClassificationStage, output: str, labels: list[str] | None) -> None:
        super().__init__(name)
        self.config = config
        self.output = output
        self.labels = None if labels is None else np.array([s.encode() for s in labels], dtype=object)

    def run(self, tensors: Tensors, geometry: Geometries) -> Tensors:
        values = _model_output(self, tensors, self.output, rank=2).astype(np.float32, copy=False)
        classes = values.shape[1]
        if self.labels is not None and len(self.labels) != classes:
            raise BackendError(
                f"stage '{self.name}' has {len(self.labels)} labels, but output '{self.output}' has {classes} "
                "classes — give one label per class"
            )
        probabilities = _softmax(values) if self.config.softmax else values
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, : self.config.top_k]
        prefix = self.config.prefix
        results: Tensors = {
            f"{prefix}scores": np.ascontiguousarray(np.take_along_axis(probabilities, order, axis=1)),
            f"{prefix}indices": order.astype(np.int64),
        }
        if self.labels is not None:
            results[f"{prefix}labels"] = self.labels[order]
        return _replace(tensors, self.output, results)


def _softmax(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    shifted = values - values.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    result: np.ndarray[Any, Any] = exp / exp.sum(axis=1, keepdims=True)
    return result


def _replace(tensors: Tensors, consumed: str, results: Tensors) -> Tensors:
    """``tensors`` with ``consumed`` replaced, in place of order, by ``results``."""
    out: Tensors = {}
    for key, value in tensors.items():
        if key == consumed:
            out.update(results)
        else:
            out[key] = value
    return out


class _DetectionRun(_Stage):
    def __init__(self, name: str, config: DetectionStage, output: str, channels_first: bool) -> None:
        super().__init__(name)
        self.config = config
        self.output = output
        self.channels_first = channels_first
        self.first_class = 5 if config.objectness else 4

    def run(self, tensors: Tensors, geometry: Geometries) -> Tensors:
        predictions = _model_output(self, tensors, self.output, rank=3)
        if self.channels_first:
            predictions = predictions.transpose(0, 2, 1)
        count = predictions.shape[0]
        if predictions.shape[2] <= self.first_class:
            raise BackendError(
                f"stage '{self.name}': output '{self.output}' has {predictions.shape[2]} values per box, but "
                f"decoding needs {self.first_class} box values and at least one class score — check 'layout' "
                "and 'objectness'"
            )
        placed = self._geometry(geometry, count)
        limit = self.config.max_detections
        boxes = np.zeros((count, limit, 4), dtype=np.float32)
        scores = np.zeros((count, limit), dtype=np.float32)
        classes = np.full((count, limit), -1, dtype=np.int64)
        found = np.zeros(count, dtype=np.int64)
        for i in range(count):
            kept_boxes, kept_scores, kept_classes = self._detect(predictions[i])
            if placed is not None:
                kept_boxes = placed[i].to_original(kept_boxes)
            n = len(kept_scores)
            boxes[i, :n], scores[i, :n], classes[i, :n], found[i] = kept_boxes, kept_scores, kept_classes, n
        prefix = self.config.prefix
        results = {
            f"{prefix}boxes": boxes,
            f"{prefix}scores": scores,
            f"{prefix}classes": classes,
            f"{prefix}num_detections": found,
        }
        return _replace(tensors, self.output, results)

    def _geometry(self, geometry: Geometries, count: int) -> tuple[ImageGeometry, ...] | None:
        key = self.config.image_input
        if key is None:
            return None
        placed = geometry.get(key)
        if placed is None:
            raise BackendError(
                f"stage '{self.name}' maps boxes back through image stage input '{key}', but the request's "
                "context has no geometry for it — pass the Staged.context that preprocess() returned to postprocess()"
            )
        if len(placed) != count:
            raise BackendError(
                f"stage '{self.name}': output '{self.output}' has {count} images, but the request sent "
                f"{len(placed)} to input '{key}' — the model must keep the batch size"
            )
        return placed

    def _detect(self, rows: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], ...]:
        """One image's ``[boxes, values]`` -> kept (xyxy boxes, scores, classes), best first."""
        class_scores = rows[:, self.first_class :].astype(np.float32, copy=False)
        if self.config.objectness:
            class_scores = class_scores * rows[:, 4:5]
        classes = class_scores.argmax(axis=1)
        scores = np.take_along_axis(class_scores, classes[:, None], axis=1)[:, 0]
        candidates = np.flatnonzero(scores > self.config.score_threshold)
        if len(candidates) > MAX_NMS_CANDIDATES:
            best = np.argpartition(-scores[candidates], MAX_NMS_CANDIDATES)[:MAX_NMS_CANDIDATES]
            candidates = candidates[best]
        boxes = rows[candidates, :4].astype(np.float64)
        if self.config.box_format == "cxcywh":
            half = boxes[:, 2:4] / 2
            boxes = np.concatenate([boxes[:, 0:2] - half, boxes[:, 0:2] + half], axis=1)
        kept = non_max_suppression(
            boxes,
            scores[candidates],
            self.config.iou_threshold,
            classes=None if self.config.class_agnostic else classes[candidates],
            max_output=self.config.max_detections,
        )
        return boxes[kept], scores[candidates][kept], classes[candidates][kept].astype(np.int64)


def non_max_suppression(
    boxes: np.ndarray[Any, Any],
    scores: np.ndarray[Any, Any],
    iou_threshold: float,
    *,
    classes: np.ndarray[Any, Any] | None = None,
    max_output: int | None = None,
) -> np.ndarray[Any, Any]:
    """Greedy NMS: indices of the kept ``[K, 4]`` x1, y1, x2, y2 boxes, highest score first.

    A box is dropped when its IoU with an already kept box exceeds ``iou_threshold``. With
    ``classes`` boxes only suppress boxes of their own class (each class is shifted to its own
    region of the plane, as torchvision's ``batched_nms`` does). Ties keep the lower index first.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if classes is not None and len(boxes):
        span = float(boxes.max() - boxes.min()) + 1.0
        boxes = boxes + (np.asarray(classes, dtype=np.float64) * span)[:, None]
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    limit = len(order) if max_output is None else max_output
    kept: list[int] = []
    while order.size and len(kept) < limit:
        best, rest = order[0], order[1:]
        kept.append(int(best))
        top_left = np.maximum(boxes[best, :2], boxes[rest, :2])
        bottom_right = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
        union = areas[best] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(kept, dtype=np.int64)


# -------------------------------------------------------------------------------------------------
# building


class _Builder:
    """Checks a :class:`PipelineConfig` against a model and builds its stages (one model, once)."""

    def __init__(self, label: str, base_dir: Path) -> None:
        self.label = label
        self.base_dir = base_dir

    def fail(self, stage: str, message: str) -> RepositoryError:
        return RepositoryError(f"pipeline stage '{stage}' of {self.label}: {message}")

    # pre-process: walk backwards from the model's inputs to what clients send
    def preprocess(
        self, configs: Sequence[ImageStage | PythonStage], model_inputs: list[TensorSpec]
    ) -> tuple[list[TensorSpec], list[_Stage]]:
        names = _stage_names("preprocess", [c.kind for c in configs])
        needed = list(model_inputs)
        built: list[_Stage] = []
        stage: _Stage
        for name, config in reversed(list(zip(names, configs, strict=True))):
            if isinstance(config, ImageStage):
                stage, needed = self.image(name, config, needed)
            else:
                stage, needed = self.python_pre(name, config, needed)
            built.insert(0, stage)
        return needed, built

    def image(self, name: str, config: ImageStage, needed: list[TensorSpec]) -> tuple[_Stage, list[TensorSpec]]:
        target = self.image_target(name, config, needed)
        layout = self.image_layout(name, config, target)
        size = self.image_size(name, config, target, layout)
        dtype = self.image_dtype(name, config, target)
        clash = [s.name for s in needed if s.name == config.input and s.name != target.name]
        if clash:
            raise self.fail(
                name, f"input '{config.input}' is also an input of the next step — name the image input differently"
            )
        batch: Dim = target.shape[0] if target.shape is not None else None
        client = TensorSpec(name=config.input, dtype=_BYTES, shape=(batch,))
        stage = _ImageRun(name, config, target.name, size, layout, dtype)
        return stage, [client if s.name == target.name else s for s in needed]

    def image_target(self, name: str, config: ImageStage, needed: list[TensorSpec]) -> TensorSpec:
        described = ", ".join(f"'{s.name}' {s.dtype} {s.shape_str()}" for s in needed) or "none"
        if config.target is not None:
            for spec in needed:
                if spec.name == config.target:
                    return spec
            raise self.fail(name, f"target '{config.target}' is not an input of the next step (inputs: {described})")
        images = [s for s in needed if s.dtype.kind == "f" and s.shape is not None and len(s.shape) == 4]
        if len(images) == 1:
            return images[0]
        found = "none is" if not images else f"{', '.join(repr(s.name) for s in images)} are"
        raise self.fail(
            name,
            f"cannot choose the image input: it must be the only 4-D float input, but {found} (inputs: {described}) "
            "— set 'target' to the input to feed",
        )

    def image_layout(self, name: str, config: ImageStage, target: TensorSpec) -> str:
        shape = target.shape
        if shape is not None and len(shape) != 4:
            raise self.fail(
                name, f"target '{target.name}' has shape {target.shape_str()}, but images go to a 4-D input [N, ...]"
            )
        channel_axis = {"nchw": 1, "nhwc": 3}
        if config.layout is not None:
            axis = channel_axis[config.layout]
            if shape is not None and isinstance(shape[axis], int) and shape[axis] != 3:
                raise self.fail(
                    name,
                    f"layout {config.layout} puts channels on axis {axis}, but target '{target.name}' "
                    f"{target.shape_str()} has {shape[axis]} there and the stage produces 3 (RGB/BGR) — fix 'layout'",
                )
            return config.layout
        fits = [k for k, axis in channel_axis.items() if shape is not None and shape[axis] == 3]
        if len(fits) == 1:
            return fits[0]
        raise self.fail(
            name,
            f"cannot infer the layout of target '{target.name}' {target.shape_str()} (3 channels on axis 1 for "
            "nchw or axis 3 for nhwc) — set 'layout: nchw' or 'layout: nhwc'",
        )

    def image_size(self, name: str, config: ImageStage, target: TensorSpec, layout: str) -> tuple[int, int]:
        hw: tuple[Dim, ...] = (None, None)
        if target.shape is not None:
            hw = target.shape[2:4] if layout == "nchw" else target.shape[1:3]
        if config.size is None:
            if isinstance(hw[0], int) and isinstance(hw[1], int):
                return hw[0], hw[1]
            raise self.fail(
                name,
                f"target '{target.name}' {target.shape_str()} has no static height and width — set "
                "'size: [height, width]'",
            )
        size = (config.size[0], config.size[1])
        for axis, (want, got) in enumerate(zip(hw, size, strict=True)):
            if isinstance(want, int) and want != got:
                raise self.fail(
                    name,
                    f"size {list(size)} gives {('height', 'width')[axis]} {got}, but target '{target.name}' "
                    f"{target.shape_str()} fixes it to {want} — set 'size' to match or drop it",
                )
        return size

    def image_dtype(self, name: str, config: ImageStage, target: TensorSpec) -> np.dtype[Any]:
        if target.dtype.kind == "f":
            return target.dtype
        if target.dtype == np.uint8:
            normalising = sorted({"scale", "mean", "std"} & config.model_fields_set)
            if normalising:
                raise self.fail(
                    name,
                    f"target '{target.name}' is uint8, so pixels go to it as 0-255 and {', '.join(normalising)} "
                    "cannot apply — remove them",
                )
            return target.dtype
        raise self.fail(
            name,
            f"target '{target.name}' has dtype {target.dtype}; an image stage feeds float or uint8 inputs — use a "
            "python stage for this input",
        )

    def entry_point(self, name: str, config: PythonStage, receives: str) -> _PythonRun:
        function = load_callable(
            config.entry_point,
            what=f"pipeline stage '{name}' of {self.label}: entry point",
            expects=f"a function fn({receives}: dict[str, np.ndarray]) -> dict[str, np.ndarray]",
            error=RepositoryError,
        )
        return _PythonRun(name, config, function)

    def python_pre(self, name: str, config: PythonStage, needed: list[TensorSpec]) -> tuple[_Stage, list[TensorSpec]]:
        """A pre-process python stage: what it returns must cover ``needed``; returns what it needs."""
        stage = self.entry_point(name, config, "feeds")
        returns = needed if config.outputs is None else [d.spec() for d in config.outputs]
        missing = [s.name for s in needed if s.name not in {r.name for r in returns}]
        if missing:
            raise self.fail(
                name,
                f"its 'outputs' lack {', '.join(repr(n) for n in missing)}, which the next step needs "
                f"(it needs {', '.join(repr(s.name) for s in needed)}) — declare every tensor the function returns",
            )
        return stage, returns if config.inputs is None else [d.spec() for d in config.inputs]

    def python_post(self, name: str, config: PythonStage, current: list[TensorSpec]) -> tuple[_Stage, list[TensorSpec]]:
        """A post-process python stage: what it declares to read must exist; returns what it gives."""
        stage = self.entry_point(name, config, "outputs")
        unknown = [d.name for d in config.inputs or [] if d.name not in {s.name for s in current}]
        if unknown:
            raise self.fail(
                name,
                f"its 'inputs' name {', '.join(repr(n) for n in unknown)}, but the outputs so far are "
                f"{', '.join(repr(s.name) for s in current)} — declare only tensors it is given",
            )
        return stage, current if config.outputs is None else [d.spec() for d in config.outputs]

    # post-process: walk forwards from the model's outputs to what clients get
    def postprocess(
        self,
        configs: Sequence[ClassificationStage | DetectionStage | PythonStage],
        model_outputs: list[TensorSpec],
        image_inputs: list[str],
    ) -> tuple[list[TensorSpec], list[_Stage]]:
        names = _stage_names("postprocess", [c.kind for c in configs])
        current = list(model_outputs)
        built: list[_Stage] = []
        for name, config in zip(names, configs, strict=True):
            stage: _Stage
            if isinstance(config, ClassificationStage):
                stage, current = self.classification(name, config, current)
            elif isinstance(config, DetectionStage):
                stage, current = self.detection(name, config, current, image_inputs)
            else:
                stage, current = self.python_post(name, config, current)
            built.append(stage)
        return current, built

    def source(self, name: str, chosen: str | None, current: list[TensorSpec], rank: int) -> TensorSpec:
        described = ", ".join(f"'{s.name}' {s.dtype} {s.shape_str()}" for s in current) or "none"
        if chosen is None:
            if len(current) != 1:
                raise self.fail(name, f"the model has several outputs ({described}) — set 'output' to the one to read")
            spec = current[0]
        else:
            found = [s for s in current if s.name == chosen]
            if not found:
                raise self.fail(name, f"output '{chosen}' does not exist; the outputs so far are {described}")
            spec = found[0]
        if spec.dtype.kind != "f" or (spec.shape is not None and len(spec.shape) != rank):
            raise self.fail(
                name,
                f"output '{spec.name}' is {spec.dtype} {spec.shape_str()}, but the stage reads a rank-{rank} float",
            )
        return spec

    def results(
        self, name: str, source: TensorSpec, current: list[TensorSpec], results: list[TensorSpec]
    ) -> list[TensorSpec]:
        taken = {s.name for s in current if s.name != source.name}
        clash = [s.name for s in results if s.name in taken]
        if clash:
            raise self.fail(
                name, f"its result {', '.join(repr(n) for n in clash)} would hide a model output — set 'prefix'"
            )
        out: list[TensorSpec] = []
        for spec in current:
            out.extend(results if spec.name == source.name else [spec])
        return out

    def classification(
        self, name: str, config: ClassificationStage, current: list[TensorSpec]
    ) -> tuple[_Stage, list[TensorSpec]]:
        source = self.source(name, config.output, current, rank=2)
        shape = source.shape or (None, None)
        classes = shape[1] if isinstance(shape[1], int) else None
        labels = self.labels(name, config.labels)
        if classes is not None and config.top_k > classes:
            if "top_k" in config.model_fields_set:
                raise self.fail(
                    name, f"top_k {config.top_k} is more than the {classes} classes of '{source.name}' — lower it"
                )
            config = config.model_copy(update={"top_k": classes})
        if classes is not None and labels is not None and len(labels) != classes:
            raise self.fail(
                name, f"{len(labels)} labels were given for the {classes} classes of '{source.name}' — one per class"
            )
        k: Dim = config.top_k if classes is not None else None
        results = [
            TensorSpec(f"{config.prefix}scores", np.dtype(np.float32), (shape[0], k)),
            TensorSpec(f"{config.prefix}indices", np.dtype(np.int64), (shape[0], k)),
        ]
        if labels is not None:
            results.append(TensorSpec(f"{config.prefix}labels", _BYTES, (shape[0], k)))
        stage = _ClassificationRun(name, config, source.name, labels)
        return stage, self.results(name, source, current, results)

    def labels(self, name: str, labels: str | list[str] | None) -> list[str] | None:
        if labels is None or isinstance(labels, list):
            return labels
        path = self.base_dir / labels
        try:
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as e:
            raise self.fail(name, f"cannot read labels file '{path}': {e} — put one label per line there") from e
        while lines and not lines[-1]:
            lines.pop()
        blank = [i + 1 for i, line in enumerate(lines) if not line]
        if not lines or blank:
            where = f"line {blank[0]} is blank" if blank else "it is empty"
            raise self.fail(name, f"labels file '{path}': {where} — give one non-empty label per line")
        return lines

    def detection(
        self, name: str, config: DetectionStage, current: list[TensorSpec], image_inputs: list[str]
    ) -> tuple[_Stage, list[TensorSpec]]:
        source = self.source(name, config.output, current, rank=3)
        channels_first = self.detection_layout(name, config, source)
        if config.image_input is not None and config.image_input not in image_inputs:
            known = ", ".join(repr(n) for n in image_inputs) or "none"
            raise self.fail(name, f"image_input '{config.image_input}' is not the input of an image stage ({known})")
        if config.image_input is None and len(image_inputs) > 1:
            raise self.fail(
                name, f"several image stages ({', '.join(image_inputs)}) — set 'image_input' to the one boxes refer to"
            )
        if config.image_input is None and image_inputs:
            config = config.model_copy(update={"image_input": image_inputs[0]})
        batch: Dim = source.shape[0] if source.shape is not None else None
        limit = config.max_detections
        results = [
            TensorSpec(f"{config.prefix}boxes", np.dtype(np.float32), (batch, limit, 4)),
            TensorSpec(f"{config.prefix}scores", np.dtype(np.float32), (batch, limit)),
            TensorSpec(f"{config.prefix}classes", np.dtype(np.int64), (batch, limit)),
            TensorSpec(f"{config.prefix}num_detections", np.dtype(np.int64), (batch,)),
        ]
        stage = _DetectionRun(name, config, source.name, channels_first)
        return stage, self.results(name, source, current, results)

    def detection_layout(self, name: str, config: DetectionStage, source: TensorSpec) -> bool:
        if config.layout is not None:
            return config.layout == "channels_first"
        dims = source.shape[1:] if source.shape is not None else (None, None)
        if isinstance(dims[0], int) and isinstance(dims[1], int) and dims[0] != dims[1]:
            return dims[0] < dims[1]  # far fewer values per box than boxes: [N, 4 + classes, boxes]
        raise self.fail(
            name,
            f"cannot infer whether output '{source.name}' {source.shape_str()} is [N, boxes, 4+classes] or "
            "[N, 4+classes, boxes] — set 'layout: boxes_first' or 'layout: channels_first'",
        )


def _stage_names(section: str, kinds: list[str]) -> list[str]:
    """``section.kind``, with ``.2``, ``.3`` ... for a kind that repeats."""
    names = []
    seen: dict[str, int] = {}
    for kind in kinds:
        seen[kind] = seen.get(kind, 0) + 1
        names.append(f"{section}.{kind}" if seen[kind] == 1 else f"{section}.{kind}.{seen[kind]}")
    return names


# -------------------------------------------------------------------------------------------------
# the pipeline


class Pipeline:
    """The built stages of one model version: ``preprocess`` → model → ``postprocess`` per request.

    ``inputs`` are what clients send (an image stage's input is listed as BYTES [N]; UINT8
    [N, H, W, 3] pixels are accepted under the same name), ``outputs`` what they get back.
    Thread safe: stages hold no per-request state.
    """

    def __init__(
        self,
        pre: list[_Stage],
        post: list[_Stage],
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        model_inputs: list[str],
    ) -> None:
        self._pre = pre
        self._post = post
        self.inputs = inputs
        self.outputs = outputs
        self.stage_names = [s.name for s in (*pre, *post)]
        self._model_inputs = model_inputs

    @classmethod
    def build(
        cls,
        config: PipelineConfig,
        model_inputs: Sequence[TensorSpec],
        model_outputs: Sequence[TensorSpec],
        *,
        base_dir: Path,
        label: str = "the model",
    ) -> Pipeline:
        """Check ``config`` against the model and build its stages; raise :class:`RepositoryError`.

        ``base_dir`` is the folder of ``config.yaml`` (labels files are relative to it); ``label``
        names the model in messages.
        """
        builder = _Builder(label, Path(base_dir))
        inputs, pre = builder.preprocess(config.preprocess, list(model_inputs))
        image_inputs = [s.input for s in pre if isinstance(s, _ImageRun)]
        outputs, post = builder.postprocess(config.postprocess, list(model_outputs), image_inputs)
        pipeline = cls(pre, post, inputs, outputs, [s.name for s in model_inputs])
        logger.debug("built pipeline of %s: %s", label, ", ".join(pipeline.stage_names))
        return pipeline

    def preprocess(self, feeds: Mapping[str, np.ndarray[Any, Any]]) -> Staged:
        """One request's client feeds -> the model's feeds (and the context postprocess needs)."""
        _check_names(feeds, [s.name for s in self.inputs], "the request", "the model's pipeline")
        tensors = dict(feeds)
        geometry: Geometries = {}
        seconds: dict[str, float] = {}
        for stage in self._pre:
            start = time.perf_counter()
            tensors = stage.run(tensors, geometry)
            seconds[stage.name] = time.perf_counter() - start
        if self._pre:
            _check_names(tensors, self._model_inputs, f"the result of stage '{self._pre[-1].name}'", "the model")
        return Staged(tensors, PipelineContext(geometry) if geometry else None, seconds)

    def postprocess(self, outputs: Mapping[str, np.ndarray[Any, Any]], context: Any) -> Staged:
        """One request's model outputs -> what the client gets; ``context`` from :meth:`preprocess`."""
        if context is not None and not isinstance(context, PipelineContext):
            raise BackendError(
                f"postprocess() got a {type(context).__name__} as context — pass the Staged.context of preprocess()"
            )
        geometry: Geometries = dict(context.geometry) if context is not None else {}
        tensors = dict(outputs)
        seconds: dict[str, float] = {}
        for stage in self._post:
            start = time.perf_counter()
            tensors = stage.run(tensors, geometry)
            seconds[stage.name] = time.perf_counter() - start
        return Staged(tensors, None, seconds)

    def __repr__(self) -> str:
        return f"Pipeline({self.stage_names})"


def _check_names(tensors: Mapping[str, Any], expected: list[str], who: str, taker: str) -> None:
    unknown = [n for n in tensors if n not in expected]
    missing = [n for n in expected if n not in tensors]
    if not unknown and not missing:
        return
    problems = []
    if unknown:
        problems.append(f"has {', '.join(repr(n) for n in unknown)}, which {taker} does not take")
    if missing:
        problems.append(f"lacks {', '.join(repr(n) for n in missing)}")
    raise UnknownInputError(
        f"{who} {' and '.join(problems)} — {taker} takes {', '.join(repr(n) for n in expected)}, exactly"
    )
