"""ONNX models for the serving tests, built in code, and a helper that lays them out."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
from PIL import Image

from modelport.ir.serde import save

#: The image classifier's weights (3 channels -> 4 classes) and its labels.
WEIGHTS = np.array([[1.0, -1.0, 0.5, 0.0], [0.0, 2.0, -0.5, 1.0], [-1.0, 0.0, 1.0, 0.5]], np.float32)
LABELS = ["cat", "dog", "fox", "owl"]


def classifier() -> ir.Model:
    """[N, 3, 8, 8] -> mean over H, W -> [N, 3] @ W [3, 4] -> logits [N, 4]."""
    weights = ", ".join(f"{v:.1f}" for v in WEIGHTS.reshape(-1))
    return ir.from_onnx_text(
        f"""
        <ir_version: 10, opset_import: ["" : 21]>
        net (float[N, 3, 8, 8] pixels) => (float[N, 4] logits)
        {{
            axes = Constant<value = int64[2] {{2, 3}}>()
            pooled = ReduceMean<keepdims = 0>(pixels, axes)
            w = Constant<value = float[3, 4] {{{weights}}}>()
            logits = MatMul(pooled, w)
        }}
        """
    )


def png(pixels: np.ndarray[Any, Any]) -> bytes:
    """``pixels`` (H x W x 3 uint8) encoded as a PNG file's bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def expected_top(pixels: np.ndarray[Any, Any], k: int) -> tuple[np.ndarray[Any, Any], list[str]]:
    """The classifier's image pipeline computed independently: bilinear resize to 8x8, /255, the model,
    softmax, top-k."""
    resized = np.asarray(Image.fromarray(pixels).resize((8, 8), Image.Resampling.BILINEAR), np.float32) / 255
    logits = resized.mean(axis=(0, 1)) @ WEIGHTS
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    order = np.argsort(-probabilities)[:k]
    return probabilities[order], [LABELS[i] for i in order]


def mixed_model(offset: int = 1) -> ir.Model:
    """Two inputs of different dtypes with a dynamic batch; three outputs (FP32, INT64, BOOL)."""
    return ir.from_onnx_text(
        f"""
        <ir_version: 10, opset_import: ["" : 21]>
        mixed (float[batch, 3] x, int64[batch] k) => (float[batch, 3] y, int64[batch] k_next,
                                                      bool[batch] positive)
        {{
            axes = Constant<value = int64[1] {{1}}>()
            kf = Cast<to = 1>(k)
            kcol = Unsqueeze(kf, axes)
            y = Add(x, kcol)
            offset = Constant<value = int64 {{{offset}}}>()
            k_next = Add(k, offset)
            zero = Constant<value = int64 {{0}}>()
            positive = Greater(k, zero)
        }}
        """
    )


def text_model() -> ir.Model:
    """A string tensor in, the same string tensor out."""
    return ir.from_onnx_text(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        text (string[n] s) => (string[n] t)
        {
            t = Identity(s)
        }
        """
    )


def fixed_model() -> ir.Model:
    """A static-shape FP32 model: y = x * 2 on [1, 4]."""
    return ir.from_onnx_text(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        fixed (float[1, 4] x) => (float[1, 4] y)
        {
            y = Add(x, x)
        }
        """
    )


def write_version(repo: Path, name: str, version: int | str, model: ir.Model) -> Path:
    return save(model, repo / name / str(version) / "model.onnx")
