"""Models, repositories and inputs for the batch inference tests, built in code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from modelport.batch.arrow import parquet, pyarrow
from modelport.ir.serde import save
from serve.serve_models import LABELS, classifier, png


def affine_model() -> ir.Model:
    """One input: y = 2x + 1 on float[N, 3] (elementwise, so any batching gives the same bits)."""
    return ir.from_onnx_text(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        affine (float[N, 3] x) => (float[N, 3] y)
        {
            two = Constant<value = float {2.0}>()
            one = Constant<value = float {1.0}>()
            scaled = Mul(x, two)
            y = Add(scaled, one)
        }
        """
    )


def mixed_model() -> ir.Model:
    """Two inputs of different dtypes; three outputs (FP32, INT64, BOOL)."""
    return ir.from_onnx_text(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        mixed (float[N, 2, 3] x, int64[N] k) => (float[N, 2, 3] y, int64[N] k_next, bool[N] positive)
        {
            kf = Cast<to = 1>(k)
            axes = Constant<value = int64[2] {1, 2}>()
            kcol = Unsqueeze(kf, axes)
            y = Add(x, kcol)
            one = Constant<value = int64 {1}>()
            k_next = Add(k, one)
            zero = Constant<value = int64 {0}>()
            positive = Greater(k, zero)
        }
        """
    )


def fixed_batch_model() -> ir.Model:
    """Axis 0 fixed to 4: no batch axis batch-infer can use."""
    return ir.from_onnx_text(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        fixed (float[4, 3] x) => (float[4, 3] y)
        {
            y = Add(x, x)
        }
        """
    )


def write_repository(root: Path) -> Path:
    """REPO/affine, REPO/mixed (max batch 4) and REPO/classify (image pipeline, top-2 with labels)."""
    save(affine_model(), root / "affine" / "1" / "model.onnx")
    save(mixed_model(), root / "mixed" / "1" / "model.onnx")
    (root / "mixed" / "config.yaml").write_text("max_batch_size: 4\n", encoding="utf-8")
    save(classifier(), root / "classify" / "1" / "model.onnx")
    (root / "classify" / "labels.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    (root / "classify" / "config.yaml").write_text(
        "max_batch_size: 8\n"
        "pipeline:\n"
        "  preprocess:\n"
        "    - {kind: image, input: image, size: [8, 8], resize: stretch}\n"
        "  postprocess:\n"
        "    - {kind: classification, top_k: 2, labels: labels.txt}\n",
        encoding="utf-8",
    )
    return root


def write_images(folder: Path, count: int, seed: int = 0) -> dict[str, np.ndarray[Any, Any]]:
    """``count`` PNG files of assorted sizes; returns their pixels by file name."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    pictures = {}
    for index in range(count):
        height, width = int(rng.integers(6, 20)), int(rng.integers(6, 20))
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        name = f"img{index:03d}.png"
        (folder / name).write_bytes(png(pixels))
        pictures[name] = pixels
    return pictures


def write_npy(folder: Path, count: int, seed: int = 0) -> dict[str, np.ndarray[Any, Any]]:
    """``count`` .npy files, one float32 [3] sample each; returns them by file name."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    samples = {}
    for index in range(count):
        name = f"s{index:03d}.npy"
        samples[name] = rng.standard_normal(3).astype(np.float32)
        np.save(folder / name, samples[name])
    return samples


def mixed_rows(count: int, seed: int = 0) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Inputs of the mixed model: x float32 [count, 2, 3], k int64 [count]."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((count, 2, 3)).astype(np.float32)
    k = rng.integers(-5, 6, size=count).astype(np.int64)
    return x, k


def write_mixed_parquet(
    path: Path, ids: list[Any], x: np.ndarray[Any, Any], k: np.ndarray[Any, Any], *, nested: bool = True
) -> None:
    """x as nested lists [[a, b, c], [d, e, f]] per row, or flattened [a .. f]; k as a plain column."""
    pa, pq = pyarrow(), parquet()
    cells = x.tolist() if nested else x.reshape(len(x), -1).tolist()
    column = pa.array(cells, pa.list_(pa.list_(pa.float32())) if nested else pa.list_(pa.float32()))
    pq.write_table(pa.table({"id": pa.array(ids), "x": column, "k": pa.array(k)}), path)
