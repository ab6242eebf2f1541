"""The built-in example: a ResNet-style CNN with BatchNorm, built in code, no downloads.

Weights are deterministic (seeded He initialisation); every BatchNormalization has non-trivial
running statistics, so folding it into its Conv is a real arithmetic rewrite. The graph looks
like a raw training-framework export: BN kept separate, a Dropout before the classifier, an
Identity on the way out. The calibration set is deterministic smooth "images" normalised like
ImageNet inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir

__all__ = ["EXAMPLE_INPUT", "EXAMPLE_OUTPUT", "example_calibration", "example_model"]

EXAMPLE_INPUT = "image"
EXAMPLE_OUTPUT = "logits"
_OPSET = 17


class _Builder:
    """Appends nodes and seeded weights to one graph."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[ir.Node] = []
        self.initializers: list[ir.Value] = []
        self.count = 0

    def weight(self, name: str, array: np.ndarray[Any, Any]) -> ir.Value:
        tensor = ir.tensor(array.astype(np.float32), name=name)
        value = ir.Value(
            name=name,
            shape=ir.Shape(array.shape),
            type=ir.TensorType(ir.DataType.FLOAT),
            const_value=tensor,
        )
        self.initializers.append(value)
        return value

    def op(self, op_type: str, inputs: list[ir.Value], name: str, **attrs: Any) -> ir.Value:
        node = ir.node(op_type, inputs=inputs, attributes=attrs, name=name)
        node.outputs[0].name = f"{name}_out"
        self.nodes.append(node)
        return node.outputs[0]

    def conv_bn(self, x: ir.Value, cin: int, cout: int, k: int, stride: int, name: str, relu: bool) -> ir.Value:
        fan_in = cin * k * k
        w = self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / fan_in)
        y = self.op(
            "Conv",
            [x, self.weight(f"{name}.weight", w)],
            name,
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[k // 2] * 4,
        )
        bn = [
            self.weight(f"{name}.bn.scale", self.rng.uniform(0.5, 1.5, cout)),
            self.weight(f"{name}.bn.bias", self.rng.normal(0.0, 0.1, cout)),
            self.weight(f"{name}.bn.mean", self.rng.normal(0.0, 0.2, cout)),
            self.weight(f"{name}.bn.var", self.rng.uniform(0.5, 2.0, cout)),
        ]
        y = self.op("BatchNormalization", [y, *bn], f"{name}.bn", epsilon=1e-5)
        return self.op("Relu", [y], f"{name}.relu") if relu else y

    def block(self, x: ir.Value, cin: int, cout: int, stride: int, name: str) -> ir.Value:
        y = self.conv_bn(x, cin, cout, 3, stride, f"{name}.conv1", relu=True)
        y = self.conv_bn(y, cout, cout, 3, 1, f"{name}.conv2", relu=False)
        shortcut = (
            x if stride == 1 and cin == cout else self.conv_bn(x, cin, cout, 1, stride, f"{name}.down", relu=False)
        )
        y = self.op("Add", [y, shortcut], f"{name}.add")
        return self.op("Relu", [y], f"{name}.relu")


def example_model(*, size: int = 96, width: int = 32, classes: int = 10, seed: int = 0) -> ir.Model:
    """The example ResNet-style CNN: input ``image`` [batch, 3, size, size] -> ``logits``."""
    b = _Builder(seed)
    image = ir.Value(
        name=EXAMPLE_INPUT,
        shape=ir.Shape(["batch", 3, size, size]),
        type=ir.TensorType(ir.DataType.FLOAT),
    )
    x = b.conv_bn(image, 3, width, 3, 2, "stem", relu=True)
    channels = [width, width * 2, width * 4, width * 8]
    cin = width
    for i, cout in enumerate(channels):
        x = b.block(x, cin, cout, 1 if i == 0 else 2, f"layer{i + 1}")
        x = b.block(x, cout, cout, 1, f"layer{i + 1}b")
        cin = cout
    x = b.op("GlobalAveragePool", [x], "pool")
    x = b.op("Flatten", [x], "flatten", axis=1)
    x = b.op("Dropout", [x], "dropout")
    fc_w = b.weight("fc.weight", b.rng.standard_normal((classes, cin)) * np.sqrt(0.05 / cin))
    fc_b = b.weight("fc.bias", b.rng.normal(0.0, 0.01, classes))
    x = b.op("Gemm", [x, fc_w, fc_b], "fc", transB=1)
    out = b.op("Identity", [x], "output")
    out.name = EXAMPLE_OUTPUT
    out.shape = ir.Shape(["batch", classes])
    out.type = ir.TensorType(ir.DataType.FLOAT)
    graph = ir.Graph(
        [image],
        [out],
        nodes=b.nodes,
        initializers=b.initializers,
        name="example_resnet",
        opset_imports={"": _OPSET},
    )
    return ir.Model(graph, ir_version=8, producer_name="modelport", producer_version="example")


def example_calibration(count: int = 32, *, size: int = 96, seed: int = 1) -> np.ndarray[Any, Any]:
    """Deterministic smooth images, normalised with ImageNet mean/std: [count, 3, size, size]."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.0, 1.0, (count, 3, 6, 6))
    # Bilinear-ish upsampling by repetition plus a little texture: smooth regions and edges.
    images = np.repeat(np.repeat(coarse, size // 6 + 1, axis=2), size // 6 + 1, axis=3)[:, :, :size, :size]
    images = images + rng.normal(0.0, 0.05, images.shape)
    mean = np.array([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
    normalised: np.ndarray[Any, Any] = ((np.clip(images, 0.0, 1.0) - mean) / std).astype(np.float32)
    return normalised
