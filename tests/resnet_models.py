"""ResNet-like CNNs built with onnx.helper and seeded numpy weights (no torch, fast to build).

BasicBlocks of Conv-BatchNorm-Relu with residual Adds and a 1x1 downsample where the width or
stride changes, then global pooling and a Gemm: the structure of ResNet-18 at any width and depth.
BatchNorm running statistics are non-trivial so folding them changes real numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

__all__ = ["conv_names", "resnet"]


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def _init(self, name: str, array: np.ndarray[Any, Any]) -> str:
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int) -> str:
        name = self._name("conv")
        fan_in = cin * k * k
        w = self._init(f"{name}.weight", self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / fan_in))
        out = f"{name}_out"
        self.nodes.append(
            helper.make_node(
                "Conv", [x, w], [out], name=name, kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4
            )
        )
        return out

    def bn(self, x: str, c: int) -> str:
        name = self._name("bn")
        scale = self._init(f"{name}.scale", self.rng.uniform(0.75, 1.25, c))
        bias = self._init(f"{name}.bias", self.rng.standard_normal(c) * 0.1)
        mean = self._init(f"{name}.mean", self.rng.standard_normal(c) * 0.1)
        var = self._init(f"{name}.var", self.rng.uniform(0.75, 1.25, c))
        out = f"{name}_out"
        self.nodes.append(helper.make_node("BatchNormalization", [x, scale, bias, mean, var], [out], name=name))
        return out

    def op(self, op: str, inputs: list[str], **attrs: Any) -> str:
        name = self._name(op.lower())
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def block(self, x: str, cin: int, cout: int, stride: int) -> str:
        y = self.op("Relu", [self.bn(self.conv(x, cin, cout, 3, stride), cout)])
        y = self.bn(self.conv(y, cout, cout, 3, 1), cout)
        skip = x if stride == 1 and cin == cout else self.bn(self.conv(x, cin, cout, 1, stride), cout)
        return self.op("Relu", [self.op("Add", [y, skip])])


def resnet(
    *, widths: tuple[int, ...] = (8, 16), blocks: int = 1, size: int = 32, classes: int = 10, seed: int = 0
) -> ir.Model:
    """A ResNet-like model ``image[batch, 3, size, size] -> logits[batch, classes]``.

    ``widths=(64, 128, 256, 512), blocks=2, size=224`` is ResNet-18's layout.
    """
    b = _Builder(seed)
    x = b.op("Relu", [b.bn(b.conv("image", 3, widths[0], 7, 2), widths[0])])
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = widths[0]
    for stage, cout in enumerate(widths):
        for i in range(blocks):
            x = b.block(x, cin, cout, 2 if stage > 0 and i == 0 else 1)
            cin = cout
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])])
    fc_w = b._init("fc.weight", b.rng.standard_normal((classes, cin)) * np.sqrt(1.0 / cin))
    fc_b = b._init("fc.bias", b.rng.standard_normal(classes) * 0.01)
    b.nodes.append(helper.make_node("Gemm", [x, fc_w, fc_b], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(
        b.nodes,
        "resnet",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        b.inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return ir.serde.deserialize_model(proto)


def conv_names(model: ir.Model) -> list[str]:
    return [n.name or "" for n in model.graph if n.op_type == "Conv"]
