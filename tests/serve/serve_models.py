"""ONNX models for the serving tests, built in code, and a helper that lays them out."""

from __future__ import annotations

from pathlib import Path

import onnx_ir as ir

from modelport.ir.serde import save


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
