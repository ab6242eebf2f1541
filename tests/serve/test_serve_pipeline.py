"""Serving pipelines: config parsing, each stage against an independent numpy/Pillow computation,
NMS on hand-made boxes, python stages by entry point, every error path, and the whole pipeline
around a real ONNX Runtime session."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pydantic
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from modelport.errors import (
    BackendError,
    InputDtypeError,
    InputError,
    InputShapeError,
    RepositoryError,
    UnknownInputError,
)
from modelport.ir.specs import TensorSpec
from modelport.serve.pipeline import (
    ClassificationStage,
    DetectionStage,
    ImageGeometry,
    ImageStage,
    Pipeline,
    PipelineConfig,
    PipelineContext,
    PythonStage,
    Staged,
    allowed_keys,
    non_max_suppression,
)

Array = np.ndarray[Any, Any]
F32 = np.dtype(np.float32)
HERE = Path(__file__).parent
BILINEAR = Image.Resampling.BILINEAR

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


# helpers ----------------------------------------------------------------------------------------


def spec(name: str, shape: tuple[int | str | None, ...] | None, dtype: Any = np.float32) -> TensorSpec:
    return TensorSpec(name=name, dtype=np.dtype(dtype), shape=shape)


PIXELS = spec("pixel_values", ("batch", 3, 8, 8))
LOGITS = spec("logits", ("batch", 4))


def config(**sections: Any) -> PipelineConfig:
    return PipelineConfig.model_validate(sections)


def build(
    sections: dict[str, Any],
    inputs: list[TensorSpec] | None = None,
    outputs: list[TensorSpec] | None = None,
    base_dir: Path = HERE,
) -> Pipeline:
    return Pipeline.build(
        config(**sections), inputs or [PIXELS], outputs or [LOGITS], base_dir=base_dir, label="model 'm' version 1"
    )


def image(height: int, width: int, seed: int = 0) -> Array:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def encode(pixels: Array, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def as_bytes(*items: object) -> Array:
    array = np.empty(len(items), dtype=object)
    array[:] = list(items)
    return array


def pil_resize(pixels: Array, width: int, height: int) -> Array:
    """Pillow's bilinear resize as float32 — the resampling the stage documents."""
    return np.asarray(Image.fromarray(pixels).resize((width, height), BILINEAR), dtype=np.float32)


def normalise(
    hwc: Array, scale: float = 1 / 255, mean: list[float] | None = None, std: list[float] | None = None
) -> Array:
    """Reference normalisation of float [H, W, C] 0-255 pixels, written the long way round."""
    mean, std = mean or [0.0, 0.0, 0.0], std or [1.0, 1.0, 1.0]
    out = np.empty_like(hwc, dtype=np.float64)
    for c in range(3):
        out[..., c] = (hwc[..., c].astype(np.float64) * scale - mean[c]) / std[c]
    return out


def nchw(*hwc: Array) -> Array:
    return np.stack([h.transpose(2, 0, 1) for h in hwc])


def preprocess(pipeline: Pipeline, feeds: dict[str, Array]) -> Array:
    staged = pipeline.preprocess(feeds)
    assert list(staged.feeds) == ["pixel_values"]
    return staged.feeds["pixel_values"]


# python stage entry points (loaded by module path, as a config names them) -------------------------


def raw_to_pixels(feeds: dict[str, Array]) -> dict[str, Array]:
    raw = feeds["raw"]
    return {"pixel_values": (raw.astype(np.float32) / 255.0).transpose(0, 3, 1, 2).copy()}


def add_one(feeds: dict[str, Array]) -> dict[str, Array]:
    return {name: value + 1 for name, value in feeds.items()}


def argmax_output(outputs: dict[str, Array]) -> dict[str, Array]:
    return {**outputs, "best": outputs["logits"].argmax(axis=1).astype(np.int64)}


def boom(feeds: dict[str, Array]) -> dict[str, Array]:
    raise ValueError("pixels out of range")


def returns_list(feeds: dict[str, Array]) -> list[Array]:
    return list(feeds.values())


def returns_non_array(feeds: dict[str, Array]) -> dict[str, Any]:
    return {"pixel_values": [1.0, 2.0]}


def returns_int_key(feeds: dict[str, Array]) -> dict[Any, Array]:
    return {0: np.zeros(1)}


def returns_float64(feeds: dict[str, Array]) -> dict[str, Array]:
    return {"pixel_values": np.zeros((1, 3, 8, 8))}


def ep(function: str) -> str:
    return f"{__name__}:{function}"


# configuration ----------------------------------------------------------------------------------


def test_config_parses_the_documented_yaml() -> None:
    text = """
    preprocess:
      - kind: image
        input: image
        target: pixel_values
        size: [224, 224]
        resize: letterbox
        pad_value: 0
        color: bgr
        layout: nchw
        scale: 0.00392156862745098
        mean: [0.485, 0.456, 0.406]
        std: [0.229, 0.224, 0.225]
      - kind: python
        entry_point: package.module:function
    postprocess:
      - kind: classification
        output: logits
        top_k: 5
        labels: labels.txt
      - kind: detection
        score_threshold: 0.25
        iou_threshold: 0.45
        max_detections: 100
      - kind: python
        entry_point: package.module:function
    """
    parsed = PipelineConfig.model_validate(yaml.safe_load(text))
    first = parsed.preprocess[0]
    assert isinstance(first, ImageStage)
    assert (first.size, first.resize, first.pad_value, first.color, first.layout) == (
        [224, 224],
        "letterbox",
        0.0,
        "bgr",
        "nchw",
    )
    assert isinstance(parsed.preprocess[1], PythonStage)
    kinds = [type(s) for s in parsed.postprocess]
    assert kinds == [ClassificationStage, DetectionStage, PythonStage]
    detection = parsed.postprocess[1]
    assert isinstance(detection, DetectionStage)
    assert (detection.layout, detection.box_format, detection.class_agnostic) == (None, "cxcywh", False)
    defaults = ImageStage(kind="image")
    assert (defaults.input, defaults.target, defaults.size, defaults.layout) == ("image", None, None, None)
    assert defaults.scale == pytest.approx(1 / 255, rel=1e-12)
    assert (defaults.mean, defaults.std) == ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"preprocess": [{"kind": "audio"}]}, r"Input tag 'audio' found using 'kind' does not match .*'image'"),
        ({"preprocess": [{"kind": "image", "sise": [8, 8]}]}, r"preprocess\.0\.image\.sise\n  Extra inputs"),
        ({"postprocess": [{"kind": "classification", "topk": 3}]}, r"classification\.topk\n  Extra inputs"),
        ({"preprocess": [{"kind": "image", "mean": [0.5, 0.5]}]}, r"mean has 2 values; give 1 .* or 3"),
        ({"preprocess": [{"kind": "image", "std": [1, 0, 1]}]}, r"std \[1\.0, 0\.0, 1\.0\] contains 0"),
        ({"preprocess": [{"kind": "image", "size": [8, 8, 3]}]}, r"size\n  List should have at most 2 items"),
        ({"preprocess": [{"kind": "image", "size": "8x8"}]}, r"size\n  Input should be a valid list"),
        ({"preprocess": [{"kind": "image", "pad_value": 0}]}, r"pad_value applies only to resize: letterbox"),
        ({"preprocess": [{"kind": "image", "crop_fraction": 0.9}]}, r"crop_fraction applies only to resize: center"),
        ({"preprocess": [{"kind": "image", "layout": "NCHW"}]}, r"layout\n  Input should be 'nchw' or 'nhwc'"),
        ({"preprocess": [{"kind": "python", "entry_point": "nocolon"}]}, r"entry_point 'nocolon' should have the"),
        ({"preprocess": [{"kind": "python"}]}, r"entry_point\n  Field required"),
        (
            {"preprocess": [{"kind": "python", "entry_point": "a:b", "inputs": [{"name": "x", "datatype": "F32"}]}]},
            r"unknown datatype 'F32' — use one of BOOL, .*FP32",
        ),
        (
            {
                "preprocess": [
                    {
                        "kind": "python",
                        "entry_point": "a:b",
                        "outputs": [
                            {"name": "x", "datatype": "FP32", "shape": [-1]},
                            {"name": "x", "datatype": "FP32", "shape": [-1]},
                        ],
                    }
                ]
            },
            r"outputs names 'x' more than once",
        ),
        ({"postprocess": [{"kind": "classification", "top_k": 0}]}, r"top_k\n  Input should be greater than or eq"),
        ({"postprocess": [{"kind": "detection", "iou_threshold": 0}]}, r"iou_threshold\n  Input should be greater"),
        ({"postprocess": [{"kind": "detection", "max_detections": "10"}]}, r"max_detections\n  Input should be a"),
        ({}, r"the pipeline has no stages — add preprocess or postprocess stages, or remove 'pipeline'"),
        ({"preprocess": [], "postprocess": [], "stages": []}, r"stages\n  Extra inputs are not permitted"),
    ],
)
def test_config_errors(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        PipelineConfig.model_validate(raw)


def test_config_is_frozen() -> None:
    parsed = config(preprocess=[{"kind": "image"}])
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        stage = parsed.preprocess[0]
        assert isinstance(stage, ImageStage)
        stage.input = "other"


def test_allowed_keys_follow_the_error_location() -> None:
    assert allowed_keys([]) == ["preprocess", "postprocess"]
    assert "crop_fraction" in allowed_keys(["preprocess", 0, "image"])
    assert allowed_keys(["postprocess", 1, "python"]) == ["kind", "entry_point", "inputs", "outputs"]
    assert allowed_keys(["postprocess", 1, "python", "outputs", 0]) == ["name", "datatype", "shape"]
    assert "iou_threshold" in allowed_keys(["postprocess", "0", "detection"])


# image stage: numerics --------------------------------------------------------------------------


def test_stretch_resizes_bilinearly_and_normalises_per_channel() -> None:
    pipeline = build({"preprocess": [{"kind": "image", "mean": MEAN, "std": STD}]})
    a, b = image(12, 10, seed=1), image(12, 10, seed=2)
    got = preprocess(pipeline, {"image": np.stack([a, b])})
    want = nchw(normalise(pil_resize(a, 8, 8), mean=MEAN, std=STD), normalise(pil_resize(b, 8, 8), mean=MEAN, std=STD))
    assert got.dtype == np.float32 and got.shape == (2, 3, 8, 8) and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_uint8_at_the_model_size_skips_resampling() -> None:
    pipeline = build({"preprocess": [{"kind": "image", "scale": 1.0, "mean": [10.0], "std": [2.0]}]})
    pixels = image(8, 8, seed=3)
    got = preprocess(pipeline, {"image": pixels[None]})
    np.testing.assert_allclose(got, nchw((pixels.astype(np.float64) - 10.0) / 2.0), rtol=0, atol=1e-5)


def test_letterbox_keeps_the_aspect_ratio_and_pads_centred() -> None:
    pipeline = build({"preprocess": [{"kind": "image", "resize": "letterbox", "pad_value": 7, "scale": 1.0}]})
    wide = image(4, 8, seed=4)  # same width as the model: placed unresized in rows 2..5
    got = preprocess(pipeline, {"image": wide[None]})[0].transpose(1, 2, 0)
    np.testing.assert_array_equal(got[2:6], wide.astype(np.float32))
    np.testing.assert_array_equal(got[:2], 7.0)
    np.testing.assert_array_equal(got[6:], 7.0)

    tall = image(12, 6, seed=5)  # ratio 8/12: resized to 4 wide x 8 high, columns 2..5
    got = preprocess(pipeline, {"image": tall[None]})[0].transpose(1, 2, 0)
    np.testing.assert_allclose(got[:, 2:6], pil_resize(tall, 4, 8), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got[:, :2], 7.0)
    np.testing.assert_array_equal(got[:, 6:], 7.0)


def test_center_crop_covers_then_cuts_the_centre() -> None:
    cover = build({"preprocess": [{"kind": "image", "resize": "center_crop", "crop_fraction": 1.0, "scale": 1.0}]})
    wide = image(8, 16, seed=6)  # already covers 8x8 at scale 1: columns 4..11
    got = preprocess(cover, {"image": wide[None]})[0].transpose(1, 2, 0)
    np.testing.assert_array_equal(got, wide[:, 4:12].astype(np.float32))

    default = build({"preprocess": [{"kind": "image", "resize": "center_crop", "scale": 1.0}]})
    small = image(7, 14, seed=7)  # 8 / 0.875 = 9.14 high: resized to 9 x 18 (h, w), cut at row 0/1, col 5
    got = preprocess(default, {"image": small[None]})[0].transpose(1, 2, 0)
    np.testing.assert_allclose(got, pil_resize(small, 18, 9)[0:8, 5:13], rtol=0, atol=1e-6)


def test_bgr_reverses_channels_before_mean_and_std() -> None:
    rgb = build({"preprocess": [{"kind": "image", "scale": 1.0}]})
    bgr = build({"preprocess": [{"kind": "image", "color": "bgr", "mean": MEAN, "std": STD}]})
    pixels = image(8, 8, seed=8)
    got = preprocess(bgr, {"image": pixels[None]})
    want = nchw(normalise(pixels[..., ::-1].astype(np.float32), mean=MEAN, std=STD))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(preprocess(rgb, {"image": pixels[None]})[0, 0], pixels[..., 0])


def test_nhwc_layout_is_inferred_and_matches_nchw() -> None:
    nhwc_model = spec("pixel_values", (1, 8, 8, 3))
    nhwc = build({"preprocess": [{"kind": "image", "mean": MEAN, "std": STD}]}, inputs=[nhwc_model])
    chw = build({"preprocess": [{"kind": "image", "mean": MEAN, "std": STD}]})
    pixels = image(10, 6, seed=9)[None]
    got = preprocess(nhwc, {"image": pixels})
    assert got.shape == (1, 8, 8, 3) and got.flags.c_contiguous
    np.testing.assert_array_equal(got.transpose(0, 3, 1, 2), preprocess(chw, {"image": pixels}))


def test_png_and_jpeg_bytes_decode_like_pillow_and_keep_their_own_geometry() -> None:
    pipeline = build({"preprocess": [{"kind": "image", "resize": "letterbox", "mean": MEAN, "std": STD}]})
    first, second = image(8, 8, seed=10), image(16, 8, seed=11)
    png, jpeg = encode(first, "PNG"), encode(second, "JPEG")
    staged = pipeline.preprocess({"image": as_bytes(png, jpeg)})
    decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    padded = np.full((8, 8, 3), 114.0)
    padded[:, 2:6] = pil_resize(decoded, 4, 8)
    want = nchw(normalise(first.astype(np.float32), mean=MEAN, std=STD), normalise(padded, mean=MEAN, std=STD))
    np.testing.assert_allclose(staged.feeds["pixel_values"], want, rtol=0, atol=1e-5)
    assert isinstance(staged.context, PipelineContext)
    assert staged.context.geometry["image"] == (
        ImageGeometry(width=8, height=8, scale_x=1.0, scale_y=1.0, offset_x=0.0, offset_y=0.0),
        ImageGeometry(width=8, height=16, scale_x=0.5, scale_y=0.5, offset_x=2.0, offset_y=0.0),
    )
    assert list(staged.seconds) == ["preprocess.image"] and staged.seconds["preprocess.image"] >= 0


def test_fixed_width_bytes_arrays_and_grayscale_png_decode() -> None:
    pipeline = build({"preprocess": [{"kind": "image", "scale": 1.0}]})
    gray = np.random.default_rng(12).integers(0, 256, size=(8, 8), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="PNG")
    got = preprocess(pipeline, {"image": np.array([buffer.getvalue()])})  # dtype S, as np.array makes it
    for c in range(3):
        np.testing.assert_array_equal(got[0, c], gray)


def test_uint8_target_gets_rounded_pixels() -> None:
    model_input = spec("frame", ("n", 8, 8, 3), np.uint8)
    pipeline = build({"preprocess": [{"kind": "image", "target": "frame", "size": [8, 8]}]}, inputs=[model_input])
    pixels = image(16, 16, seed=13)
    got = pipeline.preprocess({"image": pixels[None]}).feeds["frame"]
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got[0], np.rint(pil_resize(pixels, 8, 8)).astype(np.uint8))


def test_inputs_pass_through_and_the_image_input_is_listed_as_bytes() -> None:
    scale = spec("scale", ("batch", 1))
    pipeline = build(
        {"preprocess": [{"kind": "image", "input": "jpeg", "target": "pixel_values"}]}, inputs=[PIXELS, scale]
    )
    assert pipeline.inputs == [spec("jpeg", ("batch",), object), scale]
    assert pipeline.outputs == [LOGITS]
    factor = np.ones((1, 1), dtype=np.float32)
    staged = pipeline.preprocess({"jpeg": image(8, 8)[None], "scale": factor})
    assert staged.feeds["scale"] is factor
    assert set(staged.feeds) == {"pixel_values", "scale"}


def test_dynamic_model_input_takes_the_configured_size() -> None:
    dynamic = spec("pixel_values", ("batch", 3, "h", "w"))
    pipeline = build({"preprocess": [{"kind": "image", "size": [4, 6]}]}, inputs=[dynamic])
    assert preprocess(pipeline, {"image": image(8, 8)[None]}).shape == (1, 3, 4, 6)


# image stage: errors ---------------------------------------------------------------------------


@pytest.fixture
def image_pipeline() -> Pipeline:
    return build({"preprocess": [{"kind": "image"}]})


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (
            as_bytes(encode(image(8, 8), "PNG"), b"not an image"),
            InputError,
            r"stage 'preprocess\.image': element 1 of input 'image' \(12 bytes, starting b'not an i'\) is not a "
            r"decodable JPEG or PNG image: .* send the bytes of a complete JPEG or PNG file",
        ),
        (
            as_bytes(encode(image(8, 8), "PNG")[:40]),
            InputError,
            r"element 0 of input 'image' .* is not a decodable JPEG or PNG image",
        ),
        (as_bytes(encode(image(8, 8), "GIF")), InputError, r"element 0 .* starting b'GIF8"),
        (as_bytes("abc"), InputDtypeError, r"element 0 of input 'image' is a str, not bytes — send the encoded"),
        (
            np.zeros((1, 8, 8, 3), dtype=np.float32),
            InputDtypeError,
            r"input 'image' has dtype float32 \(shape \[1, 8, 8, 3\]\), but it takes encoded images \(BYTES \[N\]",
        ),
        (
            np.zeros((8, 8, 3), dtype=np.uint8),
            InputShapeError,
            r"input 'image' is UINT8 with shape \[8, 8, 3\], but pixel images come as \[N, H, W, 3\]",
        ),
        (
            np.zeros((1, 0, 8, 3), dtype=np.uint8),
            InputShapeError,
            r"UINT8 with shape \[1, 0, 8, 3\], but pixel images come as \[N, H, W, 3\] \(height, width > 0",
        ),
        (
            np.zeros((1, 8, 8, 4), dtype=np.uint8),
            InputShapeError,
            r"UINT8 with shape \[1, 8, 8, 4\].* convert the images to RGB",
        ),
        (
            as_bytes(b"a", b"b").reshape(2, 1),
            InputShapeError,
            r"input 'image' is BYTES with shape \[2, 1\], but encoded images come as a 1-D BYTES tensor",
        ),
        ([b"abc"], InputDtypeError, r"input 'image' is a list, not a numpy array"),
    ],
)
def test_bad_image_data_fails_the_request(image_pipeline: Pipeline, value: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        image_pipeline.preprocess({"image": value})


def test_images_over_max_pixels_are_refused_before_decoding() -> None:
    pipeline = build({"preprocess": [{"kind": "image", "max_pixels": 100}]})
    assert preprocess(pipeline, {"image": as_bytes(encode(image(10, 10), "PNG"))}).shape == (1, 3, 8, 8)
    with pytest.raises(
        InputShapeError,
        match=r"element 0 of input 'image' is 11 x 10 pixels, more than the stage's max_pixels 100 — send a smaller",
    ):
        pipeline.preprocess({"image": as_bytes(encode(image(10, 11), "JPEG"))})


def test_request_names_are_checked(image_pipeline: Pipeline) -> None:
    with pytest.raises(UnknownInputError, match=r"the request lacks 'image' — the model's pipeline takes 'image'"):
        image_pipeline.preprocess({})
    with pytest.raises(
        UnknownInputError, match=r"the request has 'pixel_values', which the model's pipeline does not take"
    ):
        image_pipeline.preprocess({"image": image(8, 8)[None], "pixel_values": np.zeros(1)})


@pytest.mark.parametrize(
    ("stage", "inputs", "message"),
    [
        (
            {},
            [PIXELS, spec("mask", ("batch", 3, 8, 8))],
            r"pipeline stage 'preprocess\.image' of model 'm' version 1: cannot choose the image input: it must be "
            r"the only 4-D float input, but 'pixel_values', 'mask' are .* set 'target'",
        ),
        ({}, [spec("ids", ("batch", 16), np.int64)], r"but none is \(inputs: 'ids' int64 \[batch, 16\]\)"),
        ({"target": "pixels"}, [PIXELS], r"target 'pixels' is not an input of the next step \(inputs: 'pixel_val"),
        (
            {},
            [spec("pixel_values", ("batch", 3, "h", "w"))],
            r"target 'pixel_values' \[batch, 3, h, w\] has no static height and width — set 'size: \[height, width\]'",
        ),
        ({"size": [8, 9]}, [PIXELS], r"size \[8, 9\] gives width 9, but target .* fixes it to 8 — set 'size'"),
        (
            {},
            [spec("pixel_values", ("batch", 3, 8, 3))],
            r"cannot infer the layout of target 'pixel_values' \[batch, 3, 8, 3\] .* set 'layout: nchw'",
        ),
        ({"target": "pixel_values"}, [spec("pixel_values", None)], r"cannot infer the layout .*\[unknown rank\]"),
        (
            {"layout": "nhwc"},
            [PIXELS],
            r"layout nhwc puts channels on axis 3, but target 'pixel_values' .* has 8 there .* fix 'layout'",
        ),
        (
            {"target": "x"},
            [spec("x", ("batch", 3, 8, 8), np.int32)],
            r"target 'x' has dtype int32; an image stage feeds float or uint8 inputs",
        ),
        (
            {"target": "x", "scale": 1.0, "mean": [0.0]},
            [spec("x", ("batch", 8, 8, 3), np.uint8)],
            r"target 'x' is uint8, so pixels go to it as 0-255 and mean, scale cannot apply — remove them",
        ),
        (
            {"target": "x"},
            [spec("x", (3, 8, 8))],
            r"target 'x' has shape \[3, 8, 8\], but images go to a 4-D input",
        ),
        (
            {"input": "extra"},
            [PIXELS, spec("extra", ("batch", 2))],
            r"input 'extra' is also an input of the next step — name the image input differently",
        ),
    ],
)
def test_image_stage_build_errors(stage: dict[str, Any], inputs: list[TensorSpec], message: str) -> None:
    with pytest.raises(RepositoryError, match=message):
        build({"preprocess": [{"kind": "image", **stage}]}, inputs=inputs)


def test_explicit_layout_and_size_fit_an_unknown_rank_input() -> None:
    pipeline = build(
        {"preprocess": [{"kind": "image", "target": "pixel_values", "layout": "nhwc", "size": [4, 4]}]},
        inputs=[spec("pixel_values", None)],
    )
    assert pipeline.inputs == [spec("image", (None,), object)]
    assert preprocess(pipeline, {"image": image(6, 6)[None]}).shape == (1, 4, 4, 3)


# classification ---------------------------------------------------------------------------------


def softmax_reference(logits: Array) -> Array:
    exp = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))
    result: Array = exp / exp.sum(axis=1, keepdims=True)
    return result


def test_classification_softmax_top_k_and_labels_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("cat\ndog\n bird \nfish\n\n", encoding="utf-8")
    pipeline = build(
        {"postprocess": [{"kind": "classification", "top_k": 3, "labels": "labels.txt"}]}, base_dir=tmp_path
    )
    assert pipeline.outputs == [
        spec("scores", ("batch", 3)),
        spec("indices", ("batch", 3), np.int64),
        spec("labels", ("batch", 3), object),
    ]
    logits = np.array([[1.0, 3.0, 2.0, 0.5], [0.0, -1.0, 4.0, 4.5]], dtype=np.float32)
    staged = pipeline.postprocess({"logits": logits}, None)
    probabilities = softmax_reference(logits)
    np.testing.assert_array_equal(staged.feeds["indices"], [[1, 2, 0], [3, 2, 0]])
    np.testing.assert_allclose(
        staged.feeds["scores"], np.take_along_axis(probabilities, staged.feeds["indices"], axis=1), rtol=1e-6, atol=0
    )
    assert staged.feeds["scores"].dtype == np.float32 and staged.feeds["indices"].dtype == np.int64
    assert staged.feeds["labels"].tolist() == [[b"dog", b"bird", b"cat"], [b"fish", b"bird", b"cat"]]
    assert staged.context is None and list(staged.seconds) == ["postprocess.classification"]


def test_classification_without_softmax_with_inline_labels_and_a_prefix() -> None:
    stage = {"kind": "classification", "softmax": False, "top_k": 2, "labels": ["a", "b", "c", "d"], "prefix": "cls_"}
    extra = spec("embedding", ("batch", 2))
    pipeline = build({"postprocess": [{**stage, "output": "logits"}]}, outputs=[extra, LOGITS])
    assert [s.name for s in pipeline.outputs] == ["embedding", "cls_scores", "cls_indices", "cls_labels"]
    probabilities = np.array([[0.1, 0.2, 0.6, 0.1]], dtype=np.float32)
    embedding = np.ones((1, 2), dtype=np.float32)
    out = pipeline.postprocess({"embedding": embedding, "logits": probabilities}, None).feeds
    assert list(out) == ["embedding", "cls_scores", "cls_indices", "cls_labels"]
    np.testing.assert_array_equal(out["cls_scores"], probabilities[:, [2, 1]])
    np.testing.assert_array_equal(out["cls_indices"], [[2, 1]])
    assert out["cls_labels"].tolist() == [[b"c", b"b"]]
    assert out["embedding"] is embedding


def test_classification_ties_keep_the_lower_index_and_dynamic_classes_clamp_k() -> None:
    pipeline = build({"postprocess": [{"kind": "classification", "top_k": 5}]}, outputs=[spec("logits", ("n", "c"))])
    assert pipeline.outputs[0] == spec("scores", ("n", None))
    out = pipeline.postprocess({"logits": np.zeros((1, 3), dtype=np.float32)}, None).feeds
    np.testing.assert_array_equal(out["indices"], [[0, 1, 2]])
    np.testing.assert_allclose(out["scores"], np.full((1, 3), 1 / 3), rtol=1e-6, atol=0)


def test_classification_default_top_k_shrinks_to_the_classes_an_explicit_one_does_not() -> None:
    pipeline = build({"postprocess": [{"kind": "classification"}]})  # top_k 5 by default, 4 classes
    assert pipeline.outputs[1] == spec("indices", ("batch", 4), np.int64)
    out = pipeline.postprocess({"logits": np.array([[0.0, 3.0, 1.0, 2.0]], dtype=np.float32)}, None).feeds
    np.testing.assert_array_equal(out["indices"], [[1, 3, 2, 0]])


def test_classification_is_stable_for_large_logits() -> None:
    pipeline = build({"postprocess": [{"kind": "classification", "top_k": 1}]})
    out = pipeline.postprocess({"logits": np.array([[1000.0, 999.0, -1000.0, 0.0]], dtype=np.float32)}, None).feeds
    np.testing.assert_allclose(out["scores"], [[1 / (1 + np.exp(-1.0))]], rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("stage", "outputs", "message"),
    [
        ({"top_k": 5}, [LOGITS], r"top_k 5 is more than the 4 classes of 'logits' — lower it"),
        ({"labels": ["a", "b"]}, [LOGITS], r"2 labels were given for the 4 classes of 'logits' — one per class"),
        ({"labels": "missing.txt", "top_k": 1}, [LOGITS], r"cannot read labels file '.*missing\.txt'.*one label per"),
        ({"output": "probs", "top_k": 1}, [LOGITS], r"output 'probs' does not exist; the outputs so far are 'logits'"),
        (
            {"top_k": 1},
            [LOGITS, spec("other", ("batch", 4))],
            r"the model has several outputs \('logits' float32 \[batch, 4\], 'other' .*\) — set 'output'",
        ),
        (
            {"top_k": 1},
            [spec("logits", ("batch", 2, 2))],
            r"output 'logits' is float32 \[batch, 2, 2\], but the stage ",
        ),
        ({"top_k": 1}, [spec("logits", ("batch", 4), np.int64)], r"output 'logits' is int64 .* rank-2 float"),
        (
            {"output": "logits", "top_k": 1},
            [LOGITS, spec("scores", ("batch",))],
            r"its result 'scores' would hide a model output — set 'prefix'",
        ),
    ],
)
def test_classification_build_errors(stage: dict[str, Any], outputs: list[TensorSpec], message: str) -> None:
    with pytest.raises(RepositoryError, match=r"pipeline stage 'postprocess\.classification' of model 'm' version 1: "):
        build({"postprocess": [{"kind": "classification", **stage}]}, outputs=outputs)
    with pytest.raises(RepositoryError, match=message):
        build({"postprocess": [{"kind": "classification", **stage}]}, outputs=outputs)


@pytest.mark.parametrize(
    ("text", "message"),
    [("a\n\nb\nc\nd\n", r"line 2 is blank — give one non-empty label per line"), ("\n\n", r"it is empty")],
)
def test_labels_file_errors(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "labels.txt").write_text(text, encoding="utf-8")
    with pytest.raises(RepositoryError, match=message):
        build({"postprocess": [{"kind": "classification", "labels": "labels.txt", "top_k": 1}]}, base_dir=tmp_path)


def test_classification_runtime_errors() -> None:
    dynamic = build(
        {"postprocess": [{"kind": "classification", "top_k": 1, "labels": ["a", "b"]}]},
        outputs=[spec("logits", None)],
    )
    with pytest.raises(BackendError, match=r"has 2 labels, but output 'logits' has 3 classes — give one label"):
        dynamic.postprocess({"logits": np.zeros((1, 3), dtype=np.float32)}, None)
    with pytest.raises(BackendError, match=r"needs output 'logits' as a rank-2 float tensor, but the model returned"):
        dynamic.postprocess({"logits": np.zeros((1, 2, 1), dtype=np.float32)}, None)
    with pytest.raises(BackendError, match=r"reads output 'logits', but the model gave only 'x' float32 \[1\] — run"):
        dynamic.postprocess({"x": np.zeros(1, dtype=np.float32)}, None)


# NMS and detection ------------------------------------------------------------------------------


def test_nms_suppresses_overlaps_within_a_class_only() -> None:
    boxes = np.array(
        [
            [0, 0, 10, 10],  # 0: best
            [1, 1, 11, 11],  # 1: IoU 81/119 = 0.68 with 0 -> dropped
            [0, 0, 10, 10],  # 2: same box, other class -> kept per class
            [20, 20, 30, 30],  # 3: disjoint -> kept
            [0, 0, 10, 5],  # 4: IoU 0.5 with 0 -> kept at threshold 0.5, dropped at 0.45
        ],
        dtype=np.float32,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5], dtype=np.float32)
    classes = np.array([0, 0, 1, 0, 0])
    np.testing.assert_array_equal(non_max_suppression(boxes, scores, 0.5, classes=classes), [0, 2, 3, 4])
    np.testing.assert_array_equal(non_max_suppression(boxes, scores, 0.45, classes=classes), [0, 2, 3])
    np.testing.assert_array_equal(non_max_suppression(boxes, scores, 0.5), [0, 3, 4])
    np.testing.assert_array_equal(non_max_suppression(boxes, scores, 0.5, classes=classes, max_output=2), [0, 2])
    assert non_max_suppression(np.zeros((0, 4)), np.zeros(0), 0.5, classes=np.zeros(0)).shape == (0,)


def test_nms_matches_a_brute_force_reference_on_random_boxes() -> None:
    rng = np.random.default_rng(14)
    xy = rng.uniform(0, 50, size=(200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 20, size=(200, 2))], axis=1)
    scores = rng.uniform(size=200)
    classes = rng.integers(0, 3, size=200)

    def iou(a: Array, b: Array) -> float:
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))

    kept: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if all(classes[j] != classes[i] or iou(boxes[i], boxes[j]) <= 0.3 for j in kept):
            kept.append(int(i))
    np.testing.assert_array_equal(non_max_suppression(boxes, scores, 0.3, classes=classes), kept)


def yolo_rows(*rows: tuple[float, float, float, float, list[float]]) -> Array:
    """[1, boxes, 4 + classes] from (cx, cy, w, h, class scores) rows."""
    return np.array([[[cx, cy, w, h, *scores] for cx, cy, w, h, scores in rows]], dtype=np.float32)


ROWS = yolo_rows(
    (10, 10, 10, 10, [0.9, 0.1]),  # kept: class 0
    (11, 11, 10, 10, [0.8, 0.0]),  # overlaps the first (IoU 0.68), same class: suppressed
    (10, 10, 10, 10, [0.0, 0.7]),  # same box, class 1: kept
    (40, 40, 4, 4, [0.2, 0.1]),  # below the threshold
    (30, 30, 6, 8, [0.3, 0.26]),  # kept: class 0
    *[(0, 0, 0, 0, [0.0, 0.0])] * 15,  # empty rows, so that there are more boxes than values per box
)
DETECTIONS = spec("preds", (1, 20, 6))  # boxes first: inferred from 20 boxes > 6 values


def test_detection_decodes_suppresses_and_pads() -> None:
    pipeline = build({"postprocess": [{"kind": "detection", "max_detections": 4}]}, outputs=[DETECTIONS])
    assert pipeline.outputs == [
        spec("boxes", (1, 4, 4)),
        spec("scores", (1, 4)),
        spec("classes", (1, 4), np.int64),
        spec("num_detections", (1,), np.int64),
    ]
    out = pipeline.postprocess({"preds": ROWS}, None).feeds
    np.testing.assert_array_equal(out["num_detections"], [3])
    np.testing.assert_allclose(
        out["boxes"][0], [[5, 5, 15, 15], [5, 5, 15, 15], [27, 26, 33, 34], [0, 0, 0, 0]], rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(out["scores"][0], [0.9, 0.7, 0.3, 0.0], rtol=0, atol=1e-7)
    np.testing.assert_array_equal(out["classes"][0], [0, 1, 0, -1])
    assert out["boxes"].dtype == np.float32 and out["classes"].dtype == np.int64


def test_detection_thresholds_max_detections_and_class_agnostic() -> None:
    strict = build({"postprocess": [{"kind": "detection", "score_threshold": 0.65}]}, outputs=[DETECTIONS])
    out = strict.postprocess({"preds": ROWS}, None).feeds
    np.testing.assert_array_equal(out["num_detections"], [2])  # 0.9 and 0.7; 0.8 is suppressed by 0.9
    np.testing.assert_allclose(out["scores"][0, :3], [0.9, 0.7, 0.0], rtol=0, atol=1e-7)
    np.testing.assert_array_equal(out["classes"][0, :3], [0, 1, -1])

    loose = build({"postprocess": [{"kind": "detection", "iou_threshold": 0.7}]}, outputs=[DETECTIONS])
    out = loose.postprocess({"preds": ROWS}, None).feeds
    np.testing.assert_allclose(out["scores"][0, :5], [0.9, 0.8, 0.7, 0.3, 0.0], rtol=0, atol=1e-7)

    capped = build({"postprocess": [{"kind": "detection", "max_detections": 1}]}, outputs=[DETECTIONS])
    out = capped.postprocess({"preds": ROWS}, None).feeds
    assert out["boxes"].shape == (1, 1, 4)
    np.testing.assert_array_equal(out["num_detections"], [1])

    agnostic = build({"postprocess": [{"kind": "detection", "class_agnostic": True}]}, outputs=[DETECTIONS])
    out = agnostic.postprocess({"preds": ROWS}, None).feeds
    np.testing.assert_array_equal(out["num_detections"], [2])  # the class-1 copy of the best box is suppressed
    np.testing.assert_allclose(out["scores"][0, :2], [0.9, 0.3], rtol=0, atol=1e-7)


def test_channels_first_layout_is_inferred_and_equals_boxes_first() -> None:
    boxes_first = build({"postprocess": [{"kind": "detection"}]}, outputs=[DETECTIONS])
    channels_first = build({"postprocess": [{"kind": "detection"}]}, outputs=[spec("preds", (1, 6, 20))])
    explicit = build(
        {"postprocess": [{"kind": "detection", "layout": "channels_first"}]}, outputs=[spec("preds", ("n", 6, "b"))]
    )
    want = boxes_first.postprocess({"preds": ROWS}, None).feeds
    transposed = np.ascontiguousarray(ROWS.transpose(0, 2, 1))
    for pipeline in (channels_first, explicit):
        got = pipeline.postprocess({"preds": transposed}, None).feeds
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])


def test_objectness_and_xyxy_boxes() -> None:
    rows = np.array(
        [[[0, 0, 10, 10, 0.5, 0.9, 0.2], [0, 0, 10, 10, 1.0, 0.1, 0.6], [50, 50, 60, 60, 0.2, 1.0, 0.0]]],
        dtype=np.float32,
    )
    pipeline = build(
        {"postprocess": [{"kind": "detection", "objectness": True, "box_format": "xyxy", "layout": "boxes_first"}]},
        outputs=[spec("preds", (1, 3, 7))],
    )
    out = pipeline.postprocess({"preds": rows}, None).feeds
    np.testing.assert_array_equal(out["num_detections"], [2])
    np.testing.assert_allclose(out["scores"][0, :2], [0.6, 0.45], rtol=1e-6, atol=0)  # 1.0*0.6, 0.5*0.9
    np.testing.assert_array_equal(out["classes"][0, :2], [1, 0])
    np.testing.assert_allclose(out["boxes"][0, :2], [[0, 0, 10, 10], [0, 0, 10, 10]], rtol=0, atol=0)


def test_detection_boxes_map_back_through_the_letterbox() -> None:
    pixels = spec("pixel_values", (1, 3, 16, 16))
    pipeline = build(
        {
            "preprocess": [{"kind": "image", "resize": "letterbox"}],
            "postprocess": [{"kind": "detection", "layout": "boxes_first"}],
        },
        inputs=[pixels],
        outputs=[spec("preds", (1, 2, 5))],
    )
    assert pipeline.stage_names == ["preprocess.image", "postprocess.detection"]
    staged = pipeline.preprocess({"image": image(20, 40)[None]})  # ratio 0.4: 16 x 8, rows 4..11
    model_rows = np.array([[[8, 8, 8, 4, 0.9], [15, 5, 10, 10, 0.8]]], dtype=np.float32)
    out = pipeline.postprocess({"preds": model_rows}, staged.context).feeds
    # (4, 6, 12, 10) in the model -> x / 0.4, (y - 4) / 0.4; (10, 0, 20, 10) -> clipped to the image
    np.testing.assert_allclose(out["boxes"][0, :2], [[10, 5, 30, 15], [25, 0, 40, 15]], rtol=0, atol=1e-5)


def test_detection_boxes_map_back_through_stretch_per_image() -> None:
    pipeline = build(
        {"preprocess": [{"kind": "image"}], "postprocess": [{"kind": "detection", "layout": "boxes_first"}]},
        inputs=[spec("pixel_values", ("batch", 3, 16, 16))],
        outputs=[spec("preds", ("batch", 1, 5))],
    )
    small, large = encode(image(8, 32), "PNG"), encode(image(64, 16), "PNG")
    staged = pipeline.preprocess({"image": as_bytes(small, large)})
    rows = np.array([[[8, 8, 8, 8, 0.9]], [[8, 8, 8, 8, 0.9]]], dtype=np.float32)
    boxes = pipeline.postprocess({"preds": rows}, staged.context).feeds["boxes"][:, 0]
    np.testing.assert_allclose(boxes, [[8, 2, 24, 6], [4, 16, 12, 48]], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("stage", "outputs", "message"),
    [
        (
            {},
            [spec("preds", ("n", "b", 6))],
            r"cannot infer whether output 'preds' \[n, b, 6\] is \[N, boxes, 4\+classes\] or .* set 'layout: boxes_f",
        ),
        ({}, [spec("preds", (1, 6, 6))], r"cannot infer whether output 'preds' \[1, 6, 6\]"),
        ({"layout": "boxes_first"}, [spec("preds", (1, 6))], r"output 'preds' is float32 \[1, 6\], but the stage"),
        (
            {"layout": "boxes_first", "image_input": "photo"},
            [spec("preds", (1, 2, 6))],
            r"image_input 'photo' is not the input of an image stage \(none\)",
        ),
    ],
)
def test_detection_build_errors(stage: dict[str, Any], outputs: list[TensorSpec], message: str) -> None:
    with pytest.raises(RepositoryError, match=r"pipeline stage 'postprocess\.detection' of model 'm' version 1: "):
        build({"postprocess": [{"kind": "detection", **stage}]}, outputs=outputs)
    with pytest.raises(RepositoryError, match=message):
        build({"postprocess": [{"kind": "detection", **stage}]}, outputs=outputs)


def test_several_image_stages_need_image_input() -> None:
    inputs = [spec("left", (1, 3, 8, 8)), spec("right", (1, 3, 8, 8))]
    stages = [{"kind": "image", "input": "a", "target": "left"}, {"kind": "image", "input": "b", "target": "right"}]
    outputs = [spec("preds", (1, 2, 6))]
    with pytest.raises(RepositoryError, match=r"several image stages \(a, b\) — set 'image_input' to the one boxes"):
        build({"preprocess": stages, "postprocess": [{"kind": "detection", "layout": "boxes_first"}]}, inputs, outputs)
    detection = {"kind": "detection", "layout": "boxes_first", "image_input": "b"}
    pipeline = build({"preprocess": stages, "postprocess": [detection]}, inputs, outputs)
    assert pipeline.stage_names == ["preprocess.image", "preprocess.image.2", "postprocess.detection"]
    assert [s.name for s in pipeline.inputs] == ["a", "b"]
    staged = pipeline.preprocess({"a": image(8, 8)[None], "b": image(16, 16)[None]})
    rows = np.array([[[4, 4, 4, 4, 0.9, 0.0], [0, 0, 0, 0, 0.0, 0.0]]], dtype=np.float32)
    out = pipeline.postprocess({"preds": rows}, staged.context).feeds
    np.testing.assert_allclose(out["boxes"][0, 0], [4, 4, 12, 12], rtol=0, atol=1e-6)  # scaled by b's 2x


def test_detection_runtime_errors() -> None:
    pipeline = build(
        {"preprocess": [{"kind": "image"}], "postprocess": [{"kind": "detection", "layout": "boxes_first"}]},
        outputs=[spec("preds", ("batch", "b", "c"))],
    )
    rows = np.zeros((1, 3, 6), dtype=np.float32)
    with pytest.raises(BackendError, match=r"the request's context has no geometry for it — pass the Staged\.cont"):
        pipeline.postprocess({"preds": rows}, None)
    with pytest.raises(BackendError, match=r"postprocess\(\) got a dict as context — pass the Staged\.context"):
        pipeline.postprocess({"preds": rows}, {"geometry": {}})
    context = pipeline.preprocess({"image": np.zeros((2, 8, 8, 3), dtype=np.uint8)}).context
    with pytest.raises(BackendError, match=r"output 'preds' has 1 images, but the request sent 2 to input 'image'"):
        pipeline.postprocess({"preds": rows}, context)
    with pytest.raises(BackendError, match=r"has 4 values per box, but decoding needs 4 box values and at least one"):
        pipeline.postprocess({"preds": np.zeros((2, 3, 4), dtype=np.float32)}, context)


# python stages ----------------------------------------------------------------------------------


def test_python_preprocess_with_declared_tensors() -> None:
    stage = {
        "kind": "python",
        "entry_point": ep("raw_to_pixels"),
        "inputs": [{"name": "raw", "datatype": "UINT8", "shape": [-1, 8, 8, 3]}],
        "outputs": [{"name": "pixel_values", "datatype": "FP32", "shape": [-1, 3, 8, 8]}],
    }
    pipeline = build({"preprocess": [stage]})
    assert pipeline.inputs == [spec("raw", (None, 8, 8, 3), np.uint8)]
    assert pipeline.stage_names == ["preprocess.python"]
    raw = image(8, 8)[None]
    staged = pipeline.preprocess({"raw": raw})
    np.testing.assert_allclose(staged.feeds["pixel_values"], raw.transpose(0, 3, 1, 2) / 255.0, rtol=1e-6, atol=0)
    assert staged.context is None and list(staged.seconds) == ["preprocess.python"]


def test_python_stages_chain_with_built_in_ones() -> None:
    pipeline = build(
        {
            "preprocess": [{"kind": "image", "scale": 1.0}, {"kind": "python", "entry_point": ep("add_one")}],
            "postprocess": [
                {
                    "kind": "python",
                    "entry_point": ep("argmax_output"),
                    "inputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 4]}],
                    "outputs": [
                        {"name": "logits", "datatype": "FP32", "shape": [-1, 4]},
                        {"name": "best", "datatype": "INT64", "shape": [-1]},
                    ],
                },
                {"kind": "classification", "output": "logits", "top_k": 2},
                {"kind": "python", "entry_point": ep("add_one")},
            ],
        }
    )
    assert pipeline.stage_names == [
        "preprocess.image",
        "preprocess.python",
        "postprocess.python",
        "postprocess.classification",
        "postprocess.python.2",
    ]
    assert [s.name for s in pipeline.outputs] == ["scores", "indices", "best"]
    pixels = image(8, 8)
    np.testing.assert_array_equal(preprocess(pipeline, {"image": pixels[None]}), nchw(pixels + 1.0))
    logits = np.array([[0.0, 2.0, 1.0, 0.0]], dtype=np.float32)
    out = pipeline.postprocess({"logits": logits}, None)
    np.testing.assert_array_equal(out.feeds["best"], [2])  # argmax 1, plus one
    np.testing.assert_array_equal(out.feeds["indices"], [[2, 3]])
    assert list(out.seconds) == ["postprocess.python", "postprocess.classification", "postprocess.python.2"]


@pytest.mark.parametrize(
    ("function", "error", "message"),
    [
        (
            "boom",
            InputError,
            r"stage 'preprocess\.python' \(entry point '.*:boom'\) raised ValueError: pixels out of range — it was "
            r"given 'pixel_values' float32 \[1, 3, 8, 8\]; fix the request or the function",
        ),
        ("returns_list", BackendError, r"entry point '.*:returns_list' returned a list, not a dict of numpy arrays"),
        ("returns_non_array", BackendError, r"returned 'pixel_values' as a list, not a numpy array — wrap it"),
        ("returns_int_key", BackendError, r"returned a dict with key 0 \(int\); keys are names"),
    ],
)
def test_python_stage_runtime_errors(function: str, error: type, message: str) -> None:
    pipeline = build({"preprocess": [{"kind": "python", "entry_point": ep(function)}]})
    with pytest.raises(error, match=message):
        pipeline.preprocess({"pixel_values": np.zeros((1, 3, 8, 8), dtype=np.float32)})


def test_python_stage_results_are_checked_against_declarations() -> None:
    declared = {
        "kind": "python",
        "entry_point": ep("returns_float64"),
        "outputs": [{"name": "pixel_values", "datatype": "FP32", "shape": [-1, 3, 8, 8]}],
    }
    feeds = {"pixel_values": np.zeros((1, 3, 8, 8), dtype=np.float32)}
    with pytest.raises(BackendError, match=r"returned 'pixel_values' as float64, but its 'outputs' declare float32"):
        build({"preprocess": [declared]}).preprocess(feeds)
    renamed = {**declared, "entry_point": ep("add_one"), "inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}
    with pytest.raises(BackendError, match=r"returned 'x', but its 'outputs' declare 'pixel_values' — make the"):
        build({"preprocess": [renamed]}).preprocess({"x": np.zeros(1, dtype=np.float32)})
    undeclared = build({"preprocess": [{"kind": "python", "entry_point": ep("returns_int_key")}]})
    with pytest.raises(BackendError, match="keys are names"):
        undeclared.preprocess(feeds)


def test_preprocess_result_must_be_exactly_the_model_inputs() -> None:
    pipeline = build({"preprocess": [{"kind": "python", "entry_point": ep("argmax_output")}]})
    with pytest.raises(InputError, match=r"raised KeyError: 'logits'"):
        pipeline.preprocess({"pixel_values": np.zeros((1, 3, 8, 8), dtype=np.float32)})
    adds = build({"preprocess": [{"kind": "python", "entry_point": ep("raw_to_pixels")}]}, inputs=[spec("raw", None)])
    with pytest.raises(
        UnknownInputError,
        match=r"the result of stage 'preprocess\.python' has 'pixel_values', which the model does not take and lacks "
        r"'raw' — the model takes 'raw', exactly",
    ):
        adds.preprocess({"raw": image(8, 8)[None]})


@pytest.mark.parametrize(
    ("section", "stage", "message"),
    [
        (
            "preprocess",
            {"entry_point": "modelport_no_such_module:f"},
            r"cannot import module 'modelport_no_such_module' for pipeline stage 'preprocess\.python' of model 'm' "
            r"version 1: entry point .* PYTHONPATH",
        ),
        ("postprocess", {"entry_point": f"{__name__}:missing"}, r"has no attribute 'missing' \(pipeline stage 'post"),
        ("postprocess", {"entry_point": f"{__name__}:MEAN"}, r"is a list, not a function — name a function fn\(outp"),
        (
            "preprocess",
            {"entry_point": ep("add_one"), "outputs": [{"name": "other", "datatype": "FP32", "shape": [-1]}]},
            r"its 'outputs' lack 'pixel_values', which the next step needs \(it needs 'pixel_values'\)",
        ),
        (
            "postprocess",
            {"entry_point": ep("add_one"), "inputs": [{"name": "probs", "datatype": "FP32", "shape": [-1]}]},
            r"its 'inputs' name 'probs', but the outputs so far are 'logits' — declare only tensors it is given",
        ),
    ],
)
def test_python_stage_build_errors(section: str, stage: dict[str, Any], message: str) -> None:
    with pytest.raises(RepositoryError, match=message):
        build({section: [{"kind": "python", **stage}]})


def test_python_stage_before_an_image_stage_needs_declared_inputs_to_rename() -> None:
    stage = {
        "kind": "python",
        "entry_point": ep("add_one"),
        "inputs": [{"name": "image", "datatype": "UINT8", "shape": [-1, 8, 8, 3]}],
    }
    pipeline = build({"preprocess": [stage, {"kind": "image", "scale": 1.0}]})
    assert pipeline.inputs == [spec("image", (None, 8, 8, 3), np.uint8)]
    pixels = image(8, 8, seed=20) // 2
    np.testing.assert_array_equal(preprocess(pipeline, {"image": pixels[None]}), nchw(pixels + 1.0))


# end to end over ONNX Runtime -------------------------------------------------------------------


def classifier(weights: Array, bias: Array) -> bytes:
    """logits = flatten(pixel_values) @ weights + bias, for pixel_values float [batch, 3, 8, 8]."""
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["pixel_values"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "weights"], ["product"]),
            helper.make_node("Add", ["product", "bias"], ["logits"]),
        ],
        "classifier",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    data: bytes = model.SerializeToString()
    return data


def detector(predictions: Array) -> bytes:
    """Ignores the pixels' values; returns ``predictions`` ([1, 4 + classes, boxes]) for every image."""
    graph = helper.make_graph(
        [
            helper.make_node("Shape", ["pixel_values"], ["batch"], start=0, end=1),
            helper.make_node("Concat", ["batch", "rest"], ["shape"], axis=0),
            helper.make_node("Expand", ["predictions", "shape"], ["preds"]),
        ],
        "detector",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("preds", TensorProto.FLOAT, ["batch", *predictions.shape[1:]])],
        [
            numpy_helper.from_array(predictions, "predictions"),
            numpy_helper.from_array(np.array(predictions.shape[1:], dtype=np.int64), "rest"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    data: bytes = model.SerializeToString()
    return data


def load(data: bytes) -> tuple[ort.InferenceSession, list[TensorSpec], list[TensorSpec]]:
    import onnx
    import onnx_ir as ir

    from modelport.ir.specs import specs_of

    model = ir.from_proto(onnx.load_model_from_string(data))
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session, specs_of(model.graph.inputs), specs_of(model.graph.outputs)


def serve(pipeline: Pipeline, session: ort.InferenceSession, feeds: dict[str, Array]) -> Staged:
    staged = pipeline.preprocess(feeds)
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(names, staged.feeds), strict=True))
    return pipeline.postprocess(outputs, staged.context)


def test_classifier_end_to_end_equals_a_hand_computed_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(21)
    weights = rng.standard_normal((192, 4)).astype(np.float32) * 0.1
    bias = np.array([0.1, -0.2, 0.3, 0.0], dtype=np.float32)
    session, inputs, outputs = load(classifier(weights, bias))
    (tmp_path / "labels.txt").write_text("w\nx\ny\nz\n", encoding="utf-8")
    sections = {
        "preprocess": [{"kind": "image", "resize": "letterbox", "pad_value": 0, "mean": MEAN, "std": STD}],
        "postprocess": [{"kind": "classification", "top_k": 3, "labels": "labels.txt"}],
    }
    pipeline = Pipeline.build(config(**sections), inputs, outputs, base_dir=tmp_path)
    assert pipeline.inputs == [spec("image", ("batch",), object)]
    photos = [image(16, 16, seed=22), image(6, 12, seed=23)]
    result = serve(pipeline, session, {"image": as_bytes(encode(photos[0], "PNG"), encode(photos[1], "JPEG"))})

    first = pil_resize(photos[0], 8, 8)
    second = np.zeros((8, 8, 3))
    decoded = np.asarray(Image.open(io.BytesIO(encode(photos[1], "JPEG"))).convert("RGB"))
    second[2:6] = pil_resize(decoded, 8, 4)
    pixels = nchw(normalise(first, mean=MEAN, std=STD), normalise(second, mean=MEAN, std=STD))
    logits = pixels.reshape(2, -1) @ weights.astype(np.float64) + bias
    probabilities = softmax_reference(logits)
    order = np.argsort(-probabilities, axis=1)[:, :3]
    np.testing.assert_array_equal(result.feeds["indices"], order)
    np.testing.assert_allclose(
        result.feeds["scores"], np.take_along_axis(probabilities, order, axis=1), rtol=1e-5, atol=1e-6
    )
    assert result.feeds["labels"].tolist() == [[b"wxyz"[i : i + 1] for i in row] for row in order]
    assert list(result.feeds) == ["scores", "indices", "labels"]


def test_detector_end_to_end_maps_boxes_to_each_original_image() -> None:
    rows = np.array(
        [
            [8, 8, 8, 4],  # cx of boxes 0..3
            [8, 8, 8, 4],  # cy
            [9, 9, 9, 10],  # w
            [2, 12, 4, 4],  # h
            [0.9, 0.8, 0.1, 0.1],  # class 0
            [0.1, 0.7, 0.95, 0.2],  # class 1
        ],
        dtype=np.float32,
    )[None]  # channels first: [1, 4 + 2 classes, 4 boxes]
    session, inputs, outputs = load(detector(rows))
    sections = {
        "preprocess": [{"kind": "image", "resize": "letterbox"}],
        "postprocess": [{"kind": "detection", "layout": "channels_first", "max_detections": 3}],
    }
    pipeline = Pipeline.build(config(**sections), inputs, outputs, base_dir=HERE)
    assert pipeline.outputs[0] == spec("boxes", ("batch", 3, 4))
    photos = np.stack([image(8, 32, seed=24), image(8, 32, seed=25)])  # letterbox: ratio 0.5, rows 6..9
    result = serve(pipeline, session, {"image": photos}).feeds

    # by hand: box 0 is class 0 (0.9) at (3.5, 7, 12.5, 9); box 1 class 0 (0.8 beats 0.7) at (3.5, 2, 12.5, 14),
    # IoU 18/108 with box 0, kept; box 2 class 1 (0.95) at (3.5, 6, 12.5, 10); box 3 (0.2) is under 0.25.
    # Letterbox 8 x 32 -> 16 x 16: ratio 0.5, rows 6..9, so x / 0.5 and (y - 6) / 0.5, clipped to 32 x 8.
    want_boxes = [[7, 0, 25, 8], [7, 2, 25, 6], [7, 0, 25, 8]]
    for i in range(2):
        np.testing.assert_array_equal(result["num_detections"][i], 3)
        np.testing.assert_allclose(result["scores"][i], [0.95, 0.9, 0.8], rtol=1e-6, atol=0)
        np.testing.assert_array_equal(result["classes"][i], [1, 0, 0])
        np.testing.assert_allclose(result["boxes"][i], want_boxes, rtol=0, atol=1e-5)
