"""What a test may see of a suspect model: its weights, its predict function, or both."""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

PredictFn = Callable[[torch.Tensor], torch.Tensor]  # (N, ...) inputs -> (N, C) logits


class NoAccess(LookupError):
    """The suspect does not offer the access (weights or predict) a scheme asked for."""


class Suspect:
    """A model under test, seen through white-box and/or black-box access.

    White-box access is a mapping of named float tensors (a state dict, ONNX initializers,
    a PEFT adapter). Black-box access is a batch predict function returning logits; every
    input sent through it is counted in `queries`, so reports can state the query budget.

    Example:
        >>> s = Suspect.from_module(torch.nn.Linear(4, 3))
        >>> s.has_weights and s.has_predict
        True
        >>> _ = s.predict(torch.zeros(5, 4)); s.queries
        5
    """

    def __init__(self, weights: Mapping[str, torch.Tensor] | None = None,
                 predict: PredictFn | None = None, *, description: str = "") -> None:
        self._weights = weights  # a Mapping as is: lazy weights (range reads) stay lazy
        self._predict = predict
        self.description = description  # e.g. "onnx model", "safetensors weights"
        self.queries = 0  # inputs sent through predict so far

    @classmethod
    def from_module(cls, module: nn.Module) -> Suspect:
        """White-box and black-box access to an in-memory torch module (evaluated in eval mode)."""
        weights = {k: v.detach() for k, v in module.state_dict().items()}

        @torch.no_grad()
        def predict(x: torch.Tensor) -> torch.Tensor:
            was_training = module.training
            module.eval()
            try:
                return module(x)
            finally:
                module.train(was_training)

        return cls(weights, predict, description=f"torch module {type(module).__name__}")

    @classmethod
    def from_weights(cls, named_tensors: Mapping[str, torch.Tensor]) -> Suspect:
        """White-box access only: named weights, e.g. from a safetensors file."""
        return cls(named_tensors, None, description="weights")

    @classmethod
    def from_predict(cls, batch_fn: PredictFn) -> Suspect:
        """Black-box access only: a function from a batch of inputs to a batch of logits."""
        return cls(None, batch_fn, description="predict function")

    def fresh(self) -> Suspect:
        """The same access with the query counter at zero (one per test, sharing the model)."""
        return Suspect(self._weights, self._predict, description=self.description)

    @property
    def has_weights(self) -> bool:
        return self._weights is not None

    @property
    def has_predict(self) -> bool:
        return self._predict is not None

    @property
    def weights(self) -> Mapping[str, torch.Tensor]:
        """The named weights; raises NoAccess for a black-box-only suspect."""
        if self._weights is None:
            raise NoAccess("this suspect offers no weights (black-box access only)")
        return self._weights

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of inputs; raises NoAccess for a weights-only suspect."""
        if self._predict is None:
            raise NoAccess("this suspect offers no predict function (white-box access only)")
        self.queries += int(x.shape[0])
        out = self._predict(x)
        return torch.as_tensor(out).detach().float()
