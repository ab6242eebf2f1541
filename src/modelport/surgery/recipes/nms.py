"""Detection post-processing in standard ONNX ops, with TensorRT EfficientNMS_TRT's outputs.

``append_nms`` appends box decoding and non-maximum suppression to a detector and gives it the
four outputs of ``EfficientNMS_TRT``, so the same client code reads ONNX Runtime, OpenVINO and
TensorRT results::

    num_detections     int32 [N, 1]
    detection_boxes    float [N, max_output_boxes, 4]   corners x1, y1, x2, y2 (always)
    detection_scores   float [N, max_output_boxes]      descending, zero-padded
    detection_classes  int32 [N, max_output_boxes]      zero-padded

Inputs, by ``mode``:

* ``boxes_scores``: boxes ``[N, B, 4]`` and per-class scores ``[N, B, C]`` (EfficientNMS's
  standard mode).
* ``raw``: one head tensor ``[N, B, 4 + C]``, or ``[N, B, 5 + C]`` with ``objectness`` (the
  score of class c is ``obj * cls_c``, as in YOLOv5), or ``[N, 4 + C, B]`` with
  ``channels_first`` (YOLOv8).

In both modes ``anchors`` ``[B, 4]`` (or ``[1, B, 4]``, same box coding) switches on the fused
box decoder of EfficientNMS: the four box values are deltas ``d`` against the anchors ``a``::

    corners:      box = a + d                                   (x1, y1, x2, y2 each)
    center_size:  cx = dx * aw + ax,   cy = dy * ah + ay,
                  w  = aw * exp(dw),   h  = ah * exp(dh)

Without anchors (anchor-free) the box values are used as they are. ``center_size`` boxes
``(cx, cy, w, h)`` become corners ``(cx - w/2, cy - h/2, cx + w/2, cy + h/2)``.
``score_activation`` applies a sigmoid to the scores (and objectness) first.

Selection: ONNX ``NonMaxSuppression`` keeps, per image and class, the boxes with
``score > score_threshold`` greedily in descending score order, dropping those whose IoU with a
kept box is ``> iou_threshold`` (at most ``max_output_boxes`` per class). With
``class_agnostic`` each box competes once, with its best class (what EfficientNMS's
class-agnostic mode amounts to for ``iou_threshold < 1``). The kept detections of each image are
then ranked by score with TopK and the first ``max_output_boxes`` are written out; the rest is
zero. Dynamic batch sizes work: the per-image ranking compares each kept detection's batch index
against ``Range(N)`` rather than looping.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common

from modelport.errors import ConfigError
from modelport.passes.base import add_initializer
from modelport.surgery.recipes.replace_op import graph_value

__all__ = ["OUTPUT_NAMES", "BoxCoding", "NmsMode", "append_nms"]

logger = logging.getLogger(__name__)

NmsMode = Literal["boxes_scores", "raw"]
BoxCoding = Literal["corners", "center_size"]

#: The outputs, in EfficientNMS_TRT's order.
OUTPUT_NAMES = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")

#: NonMaxSuppression (10/11), GatherND, Range and Pad with a pads input all need opset 11.
_MIN_OPSET = 11
_INT64_MAX = np.iinfo(np.int64).max


@dataclass(frozen=True)
class _Options:
    box_coding: BoxCoding
    score_threshold: float
    iou_threshold: float
    max_output_boxes: int
    class_agnostic: bool
    score_activation: bool


@dataclass
class _Inputs:
    """The tensors NMS reads and what is statically known about them."""

    batch: int | str | None
    count: int | str | None
    boxes: ir.Value | None = None
    scores: ir.Value | None = None
    head: ir.Value | None = None
    #: A model tensor [B,4] / [1,B,4], or a float32 array [1,B,4] to store as an initializer.
    anchors: ir.Value | np.ndarray[Any, Any] | None = None


class _Builder:
    """Appends named nodes to a graph (every value gets a unique ``nms/...`` name)."""

    def __init__(self, graph: ir.Graph, opset: int) -> None:
        self.graph = graph
        self.opset = opset
        self._taken = {v.name for node in graph for v in node.outputs} | set(graph.initializers)
        self._taken.update(v.name for v in graph.inputs)
        self._count = 0

    def _name(self, hint: str) -> str:
        while True:
            self._count += 1
            name = f"nms/{hint}_{self._count}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    def op(self, op_type: str, *inputs: ir.Value | None, outputs: int = 1, **attrs: Any) -> list[ir.Value]:
        node = ir.node(op_type, list(inputs), attrs, num_outputs=outputs, name=self._name(op_type))
        for value in node.outputs:
            value.name = self._name(op_type.lower())
        self.graph.append(node)
        return list(node.outputs)

    def one(self, op_type: str, *inputs: ir.Value | None, **attrs: Any) -> ir.Value:
        return self.op(op_type, *inputs, **attrs)[0]

    def const(self, values: Any, dtype: type) -> ir.Value:
        return add_initializer(self.graph, np.asarray(values, dtype), self._name("const"))

    def slice_last(self, x: ir.Value, start: int, end: int) -> ir.Value:
        """``x[..., start:end]``."""
        starts, ends, axes = (self.const([v], np.int64) for v in (start, end, -1))
        return self.one("Slice", x, starts, ends, axes)

    def reduce_sum(self, x: ir.Value, axis: int) -> ir.Value:
        """ReduceSum over one axis, keepdims, in the signature of the model's opset."""
        if self.opset >= 13:
            return self.one("ReduceSum", x, self.const([axis], np.int64), keepdims=1)
        return self.one("ReduceSum", x, axes=[axis], keepdims=1)


def append_nms(
    model: ir.Model,
    *,
    mode: NmsMode = "boxes_scores",
    boxes: str = "boxes",
    scores: str = "scores",
    head: str = "output0",
    anchors: np.ndarray[Any, Any] | str | None = None,
    objectness: bool = False,
    channels_first: bool = False,
    num_classes: int | None = None,
    box_coding: BoxCoding = "corners",
    score_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    max_output_boxes: int = 100,
    class_agnostic: bool = False,
    score_activation: bool = False,
    keep_outputs: bool = False,
) -> ir.Model:
    """Append box decoding + NMS producing EfficientNMS_TRT's four outputs.

    Options:
        mode: "boxes_scores" (tensors ``boxes`` [N,B,4] and ``scores`` [N,B,C]) or "raw"
            (one tensor ``head`` [N,B,4+C], [N,B,5+C] with ``objectness``, or transposed with
            ``channels_first``).
        anchors: anchor boxes [B,4] or [1,B,4] as a numpy array or the name of a model tensor;
            when given, box values are deltas decoded against them (EfficientNMS's fused decoder).
        num_classes: expected C; checked against the model's shapes when given.
        box_coding: "corners" (x1,y1,x2,y2; EfficientNMS box_coding=0) or "center_size"
            (cx,cy,w,h; box_coding=1). Output boxes are always corners.
        score_threshold, iou_threshold: keep score > score_threshold; suppress IoU > iou_threshold.
        max_output_boxes: detections per image (the padded size).
        class_agnostic: one NMS over all classes, each box with its best class.
        score_activation: apply a sigmoid to scores (and objectness) first.
        keep_outputs: keep the model's existing outputs next to the four new ones.

    Raises ConfigError for unknown tensor names, wrong ranks or sizes, a class-count mismatch,
    a non-float32 input, out-of-range options, an opset below 11, or output names already taken.
    """
    _check_options(box_coding, score_threshold, iou_threshold, max_output_boxes)
    options = _Options(box_coding, score_threshold, iou_threshold, max_output_boxes, class_agnostic, score_activation)
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))
    if opset < _MIN_OPSET:
        raise ConfigError(
            f"append_nms needs opset >= {_MIN_OPSET}, the model has opset {opset} — "
            "convert it first (onnx.version_converter.convert_version)"
        )
    _check_free_names(model)
    if mode == "boxes_scores":
        inputs = _boxes_scores_inputs(model, boxes, scores, num_classes)
    elif mode == "raw":
        inputs = _raw_inputs(model, head, objectness, channels_first, num_classes)
    else:
        raise ConfigError(f"mode must be 'boxes_scores' or 'raw', got {mode!r}")
    if anchors is not None:
        inputs.anchors = _checked_anchors(model, anchors, inputs.count)
    # Everything is validated: only now is the graph changed.
    builder = _Builder(model.graph, opset)
    box_values, score_values = _boxes_and_scores(builder, inputs, objectness, channels_first, options)
    results = _select(builder, box_values, score_values, options)
    _set_outputs(model, results, inputs.batch, max_output_boxes, keep_outputs)
    return model


def _boxes_and_scores(
    b: _Builder, inputs: _Inputs, objectness: bool, channels_first: bool, o: _Options
) -> tuple[ir.Value, ir.Value]:
    """Corner boxes [N,B,4] and class scores [N,B,C]: split, activate, decode, convert."""
    if inputs.head is not None:
        boxes, scores = _split_head(b, inputs.head, objectness, channels_first, o.score_activation)
    else:
        assert inputs.boxes is not None and inputs.scores is not None
        boxes, scores = inputs.boxes, inputs.scores
        if o.score_activation:
            scores = b.one("Sigmoid", scores)
    if isinstance(inputs.anchors, np.ndarray):
        boxes = _decode(b, boxes, b.const(inputs.anchors, np.float32), o.box_coding)
    elif inputs.anchors is not None:
        anchors = inputs.anchors
        if anchors.shape is not None and len(anchors.shape) == 2:
            anchors = b.one("Reshape", anchors, b.const([1, -1, 4], np.int64))
        boxes = _decode(b, boxes, anchors, o.box_coding)
    if o.box_coding == "center_size":
        boxes = _to_corners(b, boxes)
    return boxes, scores


def _check_options(box_coding: str, score_threshold: float, iou_threshold: float, max_output_boxes: int) -> None:
    if box_coding not in ("corners", "center_size"):
        raise ConfigError(f"box_coding must be 'corners' or 'center_size', got {box_coding!r}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ConfigError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    if not np.isfinite(score_threshold):
        raise ConfigError(f"score_threshold must be a finite number, got {score_threshold}")
    if isinstance(max_output_boxes, bool) or not isinstance(max_output_boxes, int) or max_output_boxes < 1:
        raise ConfigError(f"max_output_boxes must be an integer >= 1, got {max_output_boxes!r}")


def _check_free_names(model: ir.Model) -> None:
    graph = model.graph
    taken = {v.name for v in [*graph.inputs, *graph.initializers.values()]}
    taken.update(v.name for node in graph for v in node.outputs)
    clash = [name for name in OUTPUT_NAMES if name in taken]
    if clash:
        raise ConfigError(
            f"the model already has a tensor named '{clash[0]}' — has NMS been appended already? "
            "Rename it first (modelport.surgery.rename_value)"
        )


def _dims(value: ir.Value, what: str, rank: int) -> list[int | str | None]:
    """Static sizes (int), symbolic names (str) or unknowns (None) of a float32 tensor of ``rank``."""
    if value.shape is None:
        raise ConfigError(f"{what} '{value.name}' has no known shape — run shape inference or annotate it")
    if len(value.shape) != rank:
        raise ConfigError(f"{what} '{value.name}' must be {rank}-D, it has shape {value.shape}")
    if value.dtype is not None and value.dtype != ir.DataType.FLOAT:
        raise ConfigError(f"{what} '{value.name}' has dtype {value.dtype}, NMS works on FLOAT — insert a Cast first")
    return [d if isinstance(d, int) else (d.value if isinstance(d, ir.SymbolicDim) else None) for d in value.shape]


def _same(a: int | str | None, b: int | str | None) -> bool:
    return not (isinstance(a, int) and isinstance(b, int) and a != b)


def _check_classes(static: int | str | None, num_classes: int | None, where: str) -> None:
    if isinstance(static, int) and static < 1:
        raise ConfigError(f"{where} leaves {static} class scores — expected at least 1")
    if num_classes is not None and isinstance(static, int) and static != num_classes:
        raise ConfigError(f"num_classes={num_classes}, but {where} has {static} classes")


def _boxes_scores_inputs(model: ir.Model, boxes: str, scores: str, num_classes: int | None) -> _Inputs:
    box_value = graph_value(model, boxes, infer=True)
    score_value = graph_value(model, scores, infer=True)
    box_dims = _dims(box_value, "boxes", 3)
    score_dims = _dims(score_value, "scores", 3)
    if not _same(box_dims[2], 4):
        raise ConfigError(f"boxes '{boxes}' must end in 4 coordinates, its shape is {box_value.shape}")
    if not (_same(box_dims[0], score_dims[0]) and _same(box_dims[1], score_dims[1])):
        raise ConfigError(f"boxes {box_value.shape} and scores {score_value.shape} disagree on N or B")
    _check_classes(score_dims[2], num_classes, f"scores '{scores}' {score_value.shape}")
    return _Inputs(batch=box_dims[0], count=box_dims[1], boxes=box_value, scores=score_value)


def _raw_inputs(model: ir.Model, head: str, objectness: bool, channels_first: bool, num_classes: int | None) -> _Inputs:
    value = graph_value(model, head, infer=True)
    dims = _dims(value, "head", 3)
    width = dims[1] if channels_first else dims[2]
    extra = 5 if objectness else 4
    classes = width - extra if isinstance(width, int) else None
    layout = f"[N, {extra}+C, B]" if channels_first else f"[N, B, {extra}+C]"
    _check_classes(classes, num_classes, f"head '{head}' {value.shape} read as {layout}")
    return _Inputs(batch=dims[0], count=dims[2] if channels_first else dims[1], head=value)


def _checked_anchors(
    model: ir.Model, anchors: np.ndarray[Any, Any] | str, count: int | str | None
) -> ir.Value | np.ndarray[Any, Any]:
    """The anchors tensor, or the array as float32 [1, B, 4], after checking B against the boxes."""
    if isinstance(anchors, str):
        value = graph_value(model, anchors, infer=True)
        if value.shape is None or len(value.shape) not in (2, 3):
            raise ConfigError(f"anchors '{anchors}' must be [B, 4] or [1, B, 4], it has shape {value.shape}")
        dims = _dims(value, "anchors", len(value.shape))
        result: ir.Value | np.ndarray[Any, Any] = value
    else:
        array = np.asarray(anchors)
        if array.ndim not in (2, 3) or array.shape[-1] != 4 or (array.ndim == 3 and array.shape[0] != 1):
            raise ConfigError(f"anchors must be [B, 4] or [1, B, 4], got an array of shape {array.shape}")
        dims = list(array.shape)
        result = array.reshape(1, -1, 4).astype(np.float32)
    if not _same(dims[-2], count) or not _same(dims[-1], 4):
        raise ConfigError(f"anchors have shape {dims}, but the model predicts {count} boxes of 4 values")
    return result


def _split_head(
    b: _Builder, head: ir.Value, objectness: bool, channels_first: bool, activation: bool
) -> tuple[ir.Value, ir.Value]:
    """Boxes [N,B,4] and class scores [N,B,C] from a raw head."""
    if channels_first:
        head = b.one("Transpose", head, perm=[0, 2, 1])
    boxes = b.slice_last(head, 0, 4)
    first_class = 5 if objectness else 4
    scores = b.slice_last(head, first_class, _INT64_MAX)
    if activation:
        scores = b.one("Sigmoid", scores)
    if objectness:
        obj = b.slice_last(head, 4, 5)
        if activation:
            obj = b.one("Sigmoid", obj)
        scores = b.one("Mul", obj, scores)
    return boxes, scores


def _decode(b: _Builder, deltas: ir.Value, anchors: ir.Value, coding: BoxCoding) -> ir.Value:
    """EfficientNMS's fused box decoder (see the module docstring)."""
    if coding == "corners":
        return b.one("Add", deltas, anchors)
    anchor_xy, anchor_wh = b.slice_last(anchors, 0, 2), b.slice_last(anchors, 2, 4)
    xy = b.one("Add", b.one("Mul", b.slice_last(deltas, 0, 2), anchor_wh), anchor_xy)
    wh = b.one("Mul", anchor_wh, b.one("Exp", b.slice_last(deltas, 2, 4)))
    return b.one("Concat", xy, wh, axis=-1)


def _to_corners(b: _Builder, boxes: ir.Value) -> ir.Value:
    """(cx, cy, w, h) -> (cx - w/2, cy - h/2, cx + w/2, cy + h/2)."""
    xy, wh = b.slice_last(boxes, 0, 2), b.slice_last(boxes, 2, 4)
    half = b.one("Mul", wh, b.const(0.5, np.float32))
    return b.one("Concat", b.one("Sub", xy, half), b.one("Add", xy, half), axis=-1)


def _select(b: _Builder, boxes: ir.Value, scores: ir.Value, o: _Options) -> list[ir.Value]:
    """NonMaxSuppression, then the top ``max_output_boxes`` of each image, zero-padded."""
    i64 = np.int64
    if o.class_agnostic:
        best, best_class = b.op("TopK", scores, b.const([1], i64), axis=2, outputs=2)  # [N,B,1]
        nms_scores = b.one("Transpose", best, perm=[0, 2, 1])  # [N,1,B]
        box_class = b.one("Reshape", best_class, b.const([0, -1], i64))  # [N,B]
    else:
        nms_scores = b.one("Transpose", scores, perm=[0, 2, 1])  # [N,C,B]
    selected = b.one(
        "NonMaxSuppression",
        boxes,
        nms_scores,
        b.const([o.max_output_boxes], i64),
        b.const([o.iou_threshold], np.float32),
        b.const([o.score_threshold], np.float32),
        center_point_box=0,
    )  # [K, 3]: batch, class, box
    batch_box = b.one("Gather", selected, b.const([0, 2], i64), axis=1)  # [K,2]
    kept_scores = b.one("GatherND", nms_scores, selected)  # [K]
    kept_boxes = b.one("GatherND", boxes, batch_box)  # [K,4]
    if o.class_agnostic:
        kept_classes = b.one("GatherND", box_class, batch_box)
    else:
        kept_classes = b.one("Gather", selected, b.const(1, i64), axis=1)  # [K]
    kept_batch = b.one("Gather", selected, b.const(0, i64), axis=1)  # [K]
    return _rank_per_image(b, scores, kept_batch, kept_scores, kept_boxes, kept_classes, o.max_output_boxes)


def _rank_per_image(
    b: _Builder,
    scores: ir.Value,
    kept_batch: ir.Value,
    kept_scores: ir.Value,
    kept_boxes: ir.Value,
    kept_classes: ir.Value,
    top: int,
) -> list[ir.Value]:
    """Spread the K kept detections over an [N, K] score matrix (-inf where another image's),
    pad it by ``top`` columns of -inf so TopK(k=top) always exists, and gather by its indices."""
    i64, f32 = np.int64, np.float32
    batch = b.one("Slice", b.one("Shape", scores), b.const([0], i64), b.const([1], i64))
    images = b.one("Range", b.const(0, i64), b.one("Reshape", batch, b.const([], i64)), b.const(1, i64))
    rows = b.one("Reshape", images, b.const([-1, 1], i64))  # [N,1]
    same = b.one("Equal", rows, b.one("Reshape", kept_batch, b.const([1, -1], i64)))  # [N,K]
    minus_inf = b.const(-np.inf, f32)
    dense = b.one("Where", same, b.one("Reshape", kept_scores, b.const([1, -1], i64)), minus_inf)  # [N,K]
    dense = b.one("Pad", dense, b.const([0, 0, 0, top], i64), minus_inf)  # [N,K+top]
    best, order = b.op("TopK", dense, b.const([top], i64), axis=1, largest=1, sorted=1, outputs=2)  # [N,top]
    valid = b.one("Greater", best, minus_inf)
    det_scores = b.one("Where", valid, best, b.const(0, f32))
    padded_boxes = b.one("Pad", kept_boxes, b.const([0, 0, top, 0], i64))  # [K+top,4]
    valid_3d = b.one("Reshape", valid, b.const([0, 0, 1], i64))
    det_boxes = b.one("Where", valid_3d, b.one("Gather", padded_boxes, order, axis=0), b.const(0, f32))
    padded_classes = b.one("Pad", kept_classes, b.const([0, top], i64))  # [K+top]
    classes = b.one("Where", valid, b.one("Gather", padded_classes, order, axis=0), b.const(0, i64))
    det_classes = b.one("Cast", classes, to=ir.DataType.INT32)
    num = b.reduce_sum(b.one("Cast", valid, to=ir.DataType.INT32), axis=1)
    return [num, det_boxes, det_scores, det_classes]


def _set_outputs(
    model: ir.Model, results: Sequence[ir.Value], batch: int | str | None, top: int, keep_outputs: bool
) -> None:
    n = batch if batch is not None else "batch"
    shapes: list[list[int | str]] = [[n, 1], [n, top, 4], [n, top], [n, top]]
    dtypes = [ir.DataType.INT32, ir.DataType.FLOAT, ir.DataType.FLOAT, ir.DataType.INT32]
    if not keep_outputs:
        model.graph.outputs.clear()
    for value, name, shape, dtype in zip(results, OUTPUT_NAMES, shapes, dtypes, strict=True):
        value.name = name
        value.type = ir.TensorType(dtype)
        value.shape = ir.Shape(shape)
        model.graph.outputs.append(value)
    if not keep_outputs:
        onnx_ir.passes.common.RemoveUnusedNodesPass()(model)
