"""INT8 on a network trained in the test: scikit-learn's bundled digits, test accuracy within 0.5 points.

The issue's done-when criterion, on real data that ships inside scikit-learn (nothing is downloaded):
a small CNN is trained on the 8x8 digits with a fixed seed, exported with modelport's exporter,
calibrated on training images and quantized to static INT8 (QDQ) with modelport, and both models are
scored on the held-out test images. Each image is scored by both models, so the report also lists
which test images changed prediction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

from modelport.export.torch_export import export_torch  # noqa: E402  (after the importorskips)
from modelport.ir.serde import load  # noqa: E402
from modelport.ir.specs import TensorSpec  # noqa: E402
from modelport.quantize.int8 import qat_summary, quantize_static  # noqa: E402
from modelport.runners.onnxruntime import OrtRunner  # noqa: E402
from modelport.verify.accuracy import AccuracyReport, TopK, compare_accuracy  # noqa: E402
from modelport.verify.dataset import Dataset  # noqa: E402

pytestmark = pytest.mark.torch

Array = np.ndarray[Any, Any]
Feeds = dict[str, Array]

SEED = 0
TEST_FRACTION = 0.25
EPOCHS = 12
CALIBRATION = 200
#: The issue's bar: INT8 test top-1 within half a percentage point of FP32.
MAX_POINTS = 0.5


def _split() -> tuple[Array, Array, Array, Array]:
    """Digits as float32 images in [0, 1] (pixels are 0..16), shuffled once with a fixed seed."""
    digits = sklearn_datasets.load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # [N, 1, 8, 8]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(images))
    test = int(len(images) * TEST_FRACTION)
    return images[order[test:]], labels[order[test:]], images[order[:test]], labels[order[:test]]


def _train(images: Array, labels: Array) -> Any:
    """A two-conv CNN, Adam, a dozen epochs: about 98 % test accuracy in a second or two on 2 cores."""
    from torch import nn

    torch.manual_seed(SEED)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(EPOCHS):
        for batch in torch.split(torch.randperm(len(x), generator=generator), 64):
            optimizer.zero_grad()
            torch.autograd.backward(nn.functional.cross_entropy(model(x[batch]), y[batch]))
            optimizer.step()
    return model.eval()


def _samples(images: Array) -> list[Feeds]:
    return [{"image": images[i : i + 1]} for i in range(len(images))]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[AccuracyReport, Any]:
    train_x, train_y, test_x, test_y = _split()
    module = _train(train_x, train_y)
    path = Path(tmp_path_factory.mktemp("digits")) / "digits.onnx"
    exported = export_torch(
        module,
        path,
        inputs=[TensorSpec("image", np.dtype(np.float32), ("batch", 1, 8, 8))],
        example_inputs=torch.from_numpy(train_x[:1]),
        output_names=["logits"],
        dynamic_axes={"logits": {0: "batch"}},
    )
    exported.raise_for_mismatch()
    fp32 = load(path)
    int8 = quantize_static(fp32, _samples(train_x[:CALIBRATION]), method="minmax")
    test_set = Dataset(_samples(test_x), [int(y) for y in test_y], [f"test {i}" for i in range(len(test_x))], "digits")
    with OrtRunner(int8, name="int8") as cand, OrtRunner(fp32, name="fp32") as ref:
        result = compare_accuracy(cand, ref, test_set, TopK(1), batch_size=64)
    return result, int8


def test_int8_keeps_digits_test_accuracy_within_half_a_point(report: tuple[AccuracyReport, Any]) -> None:
    result, _ = report
    assert result.samples == 449
    assert result.labelled
    assert result.reference_score > 0.95  # FP32 itself learned the task
    drop_points = 100 * (result.reference_score - result.candidate_score)
    assert abs(drop_points) <= MAX_POINTS + 1e-9, (
        f"INT8 top-1 {result.candidate_score:.4f} vs FP32 {result.reference_score:.4f}: "
        f"{len(result.regressions)} regressions {[c.name for c in result.regressions]}"
    )
    # The per-sample lists account exactly for the change of the mean.
    net = len(result.improvements) - len(result.regressions)
    assert result.delta == pytest.approx(net / result.samples, abs=1e-12)


def test_the_digits_model_really_runs_in_int8(report: tuple[AccuracyReport, Any]) -> None:
    _, int8 = report
    summary = qat_summary(int8)
    assert summary.kind == "QDQ"
    assert summary.problems == []
    convs = {node.name for node in int8.graph if node.op_type in ("Conv", "Gemm", "MatMul")}
    assert convs and convs <= set(summary.quantized_nodes)  # every Conv/Gemm reads dequantized int8
    assert summary.per_axis > 0  # per-channel weights
