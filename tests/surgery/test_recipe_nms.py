from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

from modelport.errors import ConfigError
from modelport.runners.onnxruntime import OrtRunner
from modelport.surgery.recipes import OUTPUT_NAMES, RECIPES, append_nms
from modelport.surgery.recipes.nms import BoxCoding

Array = np.ndarray[Any, Any]
F32 = np.float32

N, B, C = 2, 48, 3
TOP = 12


# --- numpy reference ---------------------------------------------------------------------------


def _iou(a: Array, b: Array) -> float:
    """IoU of two corner boxes (x1, y1, x2, y2), in float64."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union)


def _greedy(boxes: Array, scores: Array, score_thr: float, iou_thr: float, limit: int) -> list[int]:
    """Indices kept by greedy NMS: score > score_thr, best first, drop IoU > iou_thr."""
    kept: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if scores[i] <= score_thr or len(kept) == limit:
            break
        if all(_iou(boxes[i], boxes[j]) <= iou_thr for j in kept):
            kept.append(int(i))
    return kept


def reference_nms(
    boxes: Array, scores: Array, score_thr: float, iou_thr: float, top: int, agnostic: bool
) -> dict[str, Array]:
    """EfficientNMS outputs for corner boxes [N,B,4] and scores [N,B,C]."""
    n = boxes.shape[0]
    out = {
        "num_detections": np.zeros((n, 1), np.int32),
        "detection_boxes": np.zeros((n, top, 4), F32),
        "detection_scores": np.zeros((n, top), F32),
        "detection_classes": np.zeros((n, top), np.int32),
    }
    for image in range(n):
        s = scores[image]
        if agnostic:
            groups = [(s.max(axis=1), s.argmax(axis=1))]
        else:
            groups = [(s[:, c], np.full(s.shape[0], c)) for c in range(s.shape[1])]
        found = []
        for group_scores, group_classes in groups:
            for i in _greedy(boxes[image], group_scores, score_thr, iou_thr, top):
                found.append((group_scores[i], group_classes[i], boxes[image, i]))
        found.sort(key=lambda d: -d[0])
        found = found[:top]
        out["num_detections"][image, 0] = len(found)
        for k, (score, cls, box) in enumerate(found):
            out["detection_scores"][image, k] = score
            out["detection_classes"][image, k] = cls
            out["detection_boxes"][image, k] = box
    return out


def _corners(cxcywh: Array) -> Array:
    half = cxcywh[..., 2:] * F32(0.5)
    return np.concatenate([cxcywh[..., :2] - half, cxcywh[..., :2] + half], axis=-1)


def _decode(deltas: Array, anchors: Array, coding: str) -> Array:
    """EfficientNMS's fused decoder, in float32 like the graph."""
    if coding == "corners":
        return deltas + anchors
    xy = deltas[..., :2] * anchors[..., 2:] + anchors[..., :2]
    wh = anchors[..., 2:] * np.exp(deltas[..., 2:])
    return np.concatenate([xy, wh], axis=-1)


def _sigmoid(x: Array) -> Array:
    return (1 / (1 + np.exp(-x.astype(np.float64)))).astype(F32)


# --- random detector outputs -------------------------------------------------------------------


@dataclass
class Case:
    """Boxes (corners) and distinct scores for N images; coordinates normalized to [0, 1]."""

    corners: Array
    scores: Array


def _case(seed: int, n: int = N) -> Case:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 0.7, (n, B, 2))
    wh = rng.uniform(0.1, 0.3, (n, B, 2))
    corners = np.concatenate([xy, xy + wh], axis=-1).astype(F32)
    # Distinct scores, so that the order of detections is defined.
    scores = ((rng.permutation(n * B * C) + 1) / (n * B * C + 1)).reshape(n, B, C).astype(F32)
    return Case(corners, scores)


def _center_size(corners: Array) -> Array:
    return np.concatenate([(corners[..., :2] + corners[..., 2:]) / 2, corners[..., 2:] - corners[..., :2]], -1)


def _anchors(coding: str) -> Array:
    rng = np.random.default_rng(7)
    xy = rng.uniform(0.1, 0.6, (B, 2))
    wh = rng.uniform(0.1, 0.3, (B, 2))
    anchors = np.concatenate([xy, xy + wh] if coding == "corners" else [xy + wh / 2, wh], axis=-1)
    return anchors.astype(F32)


def _model(inputs: dict[str, str]) -> ir.Model:
    """A stand-in detector whose outputs are its inputs, passed through Identity."""
    args = ", ".join(f"{t} {name}_in" for name, t in inputs.items())
    outs = ", ".join(f"{t} {name}" for name, t in inputs.items())
    body = "\n".join(f"  {name} = Identity({name}_in)" for name in inputs)
    return ir.from_onnx_text(f'<ir_version: 8, opset_import: ["" : 17]>\ng ({args}) => ({outs}) {{\n{body}\n}}')


def _run(model: ir.Model, feeds: dict[str, Array]) -> dict[str, Array]:
    with OrtRunner(model, graph_optimization="disable") as runner:
        return runner.infer(feeds)


def _assert_matches(got: dict[str, Array], expected: dict[str, Array]) -> None:
    assert list(got) == list(OUTPUT_NAMES)
    for name in ("num_detections", "detection_classes"):
        assert got[name].dtype == np.int32
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    for name in ("detection_boxes", "detection_scores"):
        assert got[name].dtype == F32
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-6, err_msg=name)


# --- boxes + scores mode -----------------------------------------------------------------------


@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize("coding", ["corners", "center_size"])
def test_boxes_scores_mode_matches_reference(coding: BoxCoding, agnostic: bool) -> None:
    model = _model({"boxes": "float[N, 48, 4]", "scores": "float[N, 48, 3]"})
    append_nms(
        model, box_coding=coding, score_threshold=0.3, iou_threshold=0.4, max_output_boxes=TOP, class_agnostic=agnostic
    )
    assert [v.name for v in model.graph.outputs] == list(OUTPUT_NAMES)
    assert [str(d) for d in model.graph.outputs[1].shape or []] == ["N", str(TOP), "4"]
    assert "NonMaxSuppression" in [n.op_type for n in model.graph]
    for n in (2, 1):  # one model, dynamic batch
        case = _case(seed=n, n=n)
        boxes = case.corners if coding == "corners" else _center_size(case.corners)
        got = _run(model, {"boxes_in": boxes, "scores_in": case.scores})
        expected = reference_nms(
            _corners(boxes) if coding == "center_size" else boxes, case.scores, 0.3, 0.4, TOP, agnostic
        )
        assert (expected["num_detections"] == TOP).any()  # the cap is exercised
        _assert_matches(got, expected)


def test_fewer_detections_than_max_are_zero_padded() -> None:
    model = _model({"boxes": "float[N, 48, 4]", "scores": "float[N, 48, 3]"})
    append_nms(model, score_threshold=0.9, iou_threshold=0.5, max_output_boxes=40)
    case = _case(seed=3)
    got = _run(model, {"boxes_in": case.corners, "scores_in": case.scores})
    expected = reference_nms(case.corners, case.scores, 0.9, 0.5, 40, False)
    assert 0 < expected["num_detections"].max() < 40
    _assert_matches(got, expected)
    nothing = _run(model, {"boxes_in": case.corners, "scores_in": case.scores * F32(0.5)})
    assert not nothing["num_detections"].any() and not nothing["detection_boxes"].any()


@pytest.mark.parametrize("coding", ["corners", "center_size"])
def test_fused_box_decoder_with_anchors(coding: BoxCoding) -> None:
    model = _model({"boxes": "float[N, 48, 4]", "scores": "float[N, 48, 3]"})
    anchors = _anchors(coding)
    append_nms(model, anchors=anchors, box_coding=coding, score_threshold=0.2, iou_threshold=0.5, max_output_boxes=TOP)
    case = _case(seed=4)
    deltas = np.random.default_rng(5).uniform(-0.1, 0.1, (N, B, 4)).astype(F32)
    decoded = _decode(deltas, anchors, coding)
    expected = reference_nms(
        _corners(decoded) if coding == "center_size" else decoded, case.scores, 0.2, 0.5, TOP, False
    )
    _assert_matches(_run(model, {"boxes_in": deltas, "scores_in": case.scores}), expected)


# --- raw head mode -----------------------------------------------------------------------------


@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize("objectness", [False, True])
def test_raw_yolo_head_center_size(objectness: bool, agnostic: bool) -> None:
    """YOLOv5 style: [N, B, 5+C] already decoded (cx, cy, w, h), score = obj * cls."""
    width = 5 + C if objectness else 4 + C
    model = _model({"output0": f"float[N, 48, {width}]"})
    append_nms(
        model,
        mode="raw",
        objectness=objectness,
        box_coding="center_size",
        score_threshold=0.6,
        iou_threshold=0.45,
        max_output_boxes=40,
        class_agnostic=agnostic,
    )
    case = _case(seed=6)
    boxes = _center_size(case.corners)
    obj = np.random.default_rng(8).uniform(0.5, 1, (N, B, 1)).astype(F32)
    head = np.concatenate([boxes, obj, case.scores] if objectness else [boxes, case.scores], axis=-1)
    scores = obj * case.scores if objectness else case.scores
    expected = reference_nms(_corners(boxes), scores, 0.6, 0.45, 40, agnostic)
    assert expected["num_detections"].min() > 0
    _assert_matches(_run(model, {"output0_in": head}), expected)


@pytest.mark.parametrize("coding", ["corners", "center_size"])
def test_raw_head_with_anchors_channels_first_and_sigmoid(coding: BoxCoding) -> None:
    """[N, 4+C, B] logits against anchors: transpose, decode, sigmoid, NMS."""
    model = _model({"head": f"float[N, {4 + C}, 48]"})
    anchors = _anchors(coding)
    append_nms(
        model,
        mode="raw",
        head="head",
        anchors=anchors,
        channels_first=True,
        num_classes=C,
        box_coding=coding,
        score_activation=True,
        score_threshold=0.3,
        iou_threshold=0.5,
        max_output_boxes=TOP,
    )
    rng = np.random.default_rng(9)
    deltas = rng.uniform(-0.1, 0.1, (N, B, 4)).astype(F32)
    logits = rng.permutation(N * B * C).reshape(N, B, C).astype(F32) / F32(N * B * C / 8) - F32(4)
    head = np.concatenate([deltas, logits], axis=-1).transpose(0, 2, 1).copy()
    decoded = _decode(deltas, anchors, coding)
    corners = _corners(decoded) if coding == "center_size" else decoded
    expected = reference_nms(corners, _sigmoid(logits), 0.3, 0.5, TOP, False)
    _assert_matches(_run(model, {"head_in": head}), expected)


def test_keep_outputs_and_anchors_from_a_model_tensor() -> None:
    model = _model({"boxes": "float[N, 48, 4]", "scores": "float[N, 48, 3]", "anchors": "float[48, 4]"})
    append_nms(model, anchors="anchors", score_threshold=0.2, max_output_boxes=TOP, keep_outputs=True)
    assert [v.name for v in model.graph.outputs] == ["boxes", "scores", "anchors", *OUTPUT_NAMES]
    case, anchors = _case(seed=10), _anchors("corners")
    deltas = np.random.default_rng(11).uniform(-0.1, 0.1, (N, B, 4)).astype(F32)
    got = _run(model, {"boxes_in": deltas, "scores_in": case.scores, "anchors_in": anchors})
    np.testing.assert_array_equal(got["scores"], case.scores)
    expected = reference_nms(deltas + anchors, case.scores, 0.2, 0.45, TOP, False)
    _assert_matches({k: got[k] for k in OUTPUT_NAMES}, expected)


def test_opset_11_model_uses_the_attribute_forms() -> None:
    model = _model({"boxes": "float[N, 48, 4]", "scores": "float[N, 48, 3]"})
    model.opset_imports[""] = 11
    append_nms(model, score_threshold=0.3, max_output_boxes=TOP)
    case = _case(seed=12)
    expected = reference_nms(case.corners, case.scores, 0.3, 0.45, TOP, False)
    _assert_matches(_run(model, {"boxes_in": case.corners, "scores_in": case.scores}), expected)


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "kwargs", "message"),
    [
        ({}, {"boxes": "nope"}, "no tensor named 'nope'"),
        ({"boxes": "float[N, 48]"}, {}, "boxes 'boxes' must be 3-D"),
        ({"boxes": "float[N, 48, 5]"}, {}, "must end in 4 coordinates"),
        ({"scores": "float[N, 47, 3]"}, {}, "disagree on N or B"),
        ({}, {"num_classes": 5}, r"num_classes=5, but scores 'scores' .* has 3 classes"),
        ({"scores": "float16[N, 48, 3]"}, {}, "has dtype FLOAT16, NMS works on FLOAT"),
        ({}, {"anchors": np.zeros((40, 4))}, r"anchors have shape \[40, 4\], but the model predicts 48 boxes"),
        ({}, {"anchors": np.zeros((2, 48, 4))}, r"anchors must be \[B, 4\] or \[1, B, 4\]"),
        ({}, {"mode": "yolo"}, "mode must be 'boxes_scores' or 'raw'"),
        ({}, {"box_coding": "xywh"}, "box_coding must be"),
        ({}, {"iou_threshold": 1.5}, r"iou_threshold must be in \[0, 1\]"),
        ({}, {"max_output_boxes": 0}, "max_output_boxes must be an integer >= 1"),
        ({}, {"mode": "raw", "head": "boxes", "objectness": True}, "leaves -1 class scores"),
        ({}, {"mode": "raw", "head": "scores"}, r"head 'scores' .* read as \[N, B, 4\+C\] leaves -1 class"),
        ({}, {"mode": "raw", "head": "boxes", "num_classes": 2}, "leaves 0 class scores"),
    ],
)
def test_append_nms_errors(inputs: dict[str, str], kwargs: dict[str, Any], message: str) -> None:
    model = _model({"boxes": "float[N, 48, 4]", "scores": "float[N, 48, 3]", **inputs})
    with pytest.raises(ConfigError, match=message):
        append_nms(model, **kwargs)
    # Validation happens before any change.
    assert [n.op_type for n in model.graph] == ["Identity"] * len(model.graph.outputs)
    assert not model.graph.initializers


def test_errors_for_old_opsets_and_a_second_append() -> None:
    model = _model({"boxes": "float[N, 48, 4]", "scores": "float[N, 48, 3]"})
    model.opset_imports[""] = 10
    with pytest.raises(ConfigError, match="needs opset >= 11, the model has opset 10"):
        append_nms(model)
    model.opset_imports[""] = 17
    append_nms(model)
    with pytest.raises(ConfigError, match="already has a tensor named 'num_detections'"):
        append_nms(model)


def test_registry() -> None:
    assert RECIPES["nms"] is append_nms
