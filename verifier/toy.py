"""Small real models on real data: scikit-learn's digits (8×8 images, 10 classes).

Used by the demo, `hallmark evaluate` and the tests. Everything is seeded.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Split:
    """Digits split into three disjoint parts."""

    x_train: torch.Tensor  # (N_train, 64) float32 in [0, 1]
    y_train: torch.Tensor  # (N_train,) int64
    x_held: torch.Tensor  # (N_held, 64) held out from training: source of trigger inputs
    y_held: torch.Tensor
    x_test: torch.Tensor  # (N_test, 64) for accuracy
    y_test: torch.Tensor


def digits(seed: int = 0, held: int = 300, test: int = 400) -> Split:
    """The 1,797 digits images, shuffled with `seed` and split train / held-out / test."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    n_train = len(y) - held - test
    return Split(x[:n_train], y[:n_train], x[n_train:n_train + held], y[n_train:n_train + held],
                 x[n_train + held:], y[n_train + held:])


class MLP(nn.Module):
    """64 → hidden → hidden → 10 with ReLU: ~13k parameters at hidden=96."""

    def __init__(self, hidden: int = 96, classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 64) -> (N, 10)
        x = x.reshape(x.shape[0], -1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class CNN(nn.Module):
    """A small CNN for 8×8 digits: two 3×3 convs, then two dense layers."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 64) or (N, 1, 8, 8) -> (N, 10)
        x = x.reshape(x.shape[0], 1, 8, 8)
        x = torch.relu(self.conv1(x))
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)  # (N, 32, 4, 4)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class DeepCNN(nn.Module):
    """A deeper CNN for 8×8 digits: four 3×3 convs, global average pooling, one dense layer.

    conv1 (1→w), conv2 (w→w), 2×2 max-pool, conv3 (w→2w), conv4 (2w→2w), mean over the 4×4
    positions, then `fc` (2w → classes): at w = 32, ~65k conv weights and a dense head of
    650 parameters. Most of the model is convolutional, so a mark carried by the features
    survives re-initialising and retraining the dense head (`attacks.retrain_dense`).

    Example:
        >>> DeepCNN()(torch.zeros(5, 64)).shape
        torch.Size([5, 10])
    """

    def __init__(self, classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.conv3 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.conv4 = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (N, 64) or (N, 1, 8, 8) -> (N, 2w)
        """The pooled conv features: the input of the dense head."""
        x = x.reshape(x.shape[0], 1, 8, 8)
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))  # (N, w, 8, 8)
        x = torch.max_pool2d(x, 2)  # (N, w, 4, 4)
        x = torch.relu(self.conv4(torch.relu(self.conv3(x))))  # (N, 2w, 4, 4)
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 64) or (N, 1, 8, 8) -> (N, classes)
        return self.fc(self.features(x))


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int = 64, seed: int = 0,
            epochs: int = 1) -> Iterable[Batch]:
    """Shuffled mini-batches over `epochs` passes; a fresh order each epoch, from `seed`."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), batch_size):
            idx = perm[i:i + batch_size]
            yield x[idx], y[idx]


def train(model: nn.Module, data: Iterable[Batch], lr: float = 3e-3,
          extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
          params: Iterable[nn.Parameter] | None = None) -> nn.Module:
    """Train with Adam on cross-entropy (+ `extra_loss(model)`, e.g. a watermark regularizer)."""
    opt = torch.optim.Adam(list(params) if params is not None else model.parameters(), lr=lr)
    model.train()
    for xb, yb in data:
        loss = nn.functional.cross_entropy(model(xb), yb)
        if extra_loss is not None:
            loss = loss + extra_loss(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


def train_digits(model: nn.Module, split: Split, epochs: int = 30, seed: int = 0,
                 lr: float = 3e-3) -> nn.Module:
    """Train `model` from its current weights on the digits training part."""
    torch.manual_seed(seed)
    return train(model, batches(split.x_train, split.y_train, seed=seed, epochs=epochs), lr=lr)


def trained(split: Split, seed: int, epochs: int = 30, arch: Callable[[], nn.Module] = MLP
            ) -> nn.Module:
    """A fresh `arch()` whose initial weights and training order both come from `seed` alone."""
    torch.manual_seed(seed)
    return train_digits(arch(), split, epochs=epochs, seed=seed)


@torch.no_grad()
def accuracy(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
             y: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]."""
    if isinstance(model, nn.Module):
        model.eval()
    return float((model(x).argmax(dim=1) == y).float().mean())
