"""Tiny nn.Modules for the export tests, built in code with fixed seeds."""

from __future__ import annotations

import torch
from torch import nn

VOCAB = 11


class SmallCNN(nn.Module):
    """Conv + BatchNorm + ReLU + strided Conv + pooling + Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.down = nn.Conv2d(8, 4, 3, stride=2, padding=1)
        self.head = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        y = self.down(y).mean(dim=(2, 3))
        out: torch.Tensor = self.head(y)
        return out


def small_cnn() -> SmallCNN:
    """A SmallCNN whose BatchNorm has running statistics far from (0, 1), left in train mode
    so that an exporter forgetting eval() would use batch statistics and be caught."""
    torch.manual_seed(0)
    model = SmallCNN()
    assert model.bn.running_mean is not None and model.bn.running_var is not None
    with torch.no_grad():
        model.bn.running_mean.copy_(torch.randn(8) * 2.0)
        model.bn.running_var.copy_(torch.rand(8) * 3.0 + 0.5)
        model.bn.weight.copy_(torch.rand(8) + 0.5)
        model.bn.bias.copy_(torch.randn(8))
    return model.train()


class TokenClassifier(nn.Module):
    """int64 token ids -> Embedding -> mean over the sequence -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.embed = nn.Embedding(VOCAB, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.embed(ids).mean(dim=1))
        return out


class MaskedPool(nn.Module):
    """Two keyword inputs: token ids and a float mask over the sequence."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.embed = nn.Embedding(VOCAB, 6)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        embedded: torch.Tensor = self.embed(ids)
        return (embedded * mask.unsqueeze(-1)).sum(dim=1)


class TwoHeads(nn.Module):
    """Two outputs: logits and the features they come from."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.body = nn.Linear(6, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = torch.tanh(self.body(x))
        return self.head(features), features


class BatchScaled(nn.Module):
    """Multiplies by the batch size read as a Python int: the tracer freezes it to the example's
    batch, so the ONNX model is right at batch 1 and wrong at any other batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = int(x.shape[0])
        return x * batch
