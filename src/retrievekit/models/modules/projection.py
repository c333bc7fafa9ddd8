"""A dense projection head (sentence-transformers' ``Dense`` module), stored as safetensors."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from retrievekit.errors import ArtifactError

__all__ = ["ACTIVATIONS", "Projection"]

# Activations are chosen from this table by name; nothing is imported from a string in a file.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "torch.nn.modules.linear.Identity": nn.Identity,
    "torch.nn.modules.activation.Tanh": nn.Tanh,
    "torch.nn.modules.activation.ReLU": nn.ReLU,
    "torch.nn.modules.activation.GELU": nn.GELU,
    "torch.nn.modules.activation.Sigmoid": nn.Sigmoid,
    "torch.nn.modules.activation.SiLU": nn.SiLU,
}
_CONFIG = "config.json"
_WEIGHTS = "model.safetensors"


class Projection(nn.Module):
    """``activation(linear(x))``; saves ``config.json`` + ``model.safetensors`` in the sentence-transformers layout."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        activation: str = "torch.nn.modules.activation.Tanh",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ArtifactError(f"unsupported activation {activation!r}; supported: {', '.join(sorted(ACTIVATIONS))}")
        self.in_features, self.out_features, self.bias, self.activation_name = (
            in_features,
            out_features,
            bias,
            activation,
        )
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x))

    def config(self) -> dict[str, object]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias,
            "activation_function": self.activation_name,
        }

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / _CONFIG).write_text(json.dumps(self.config(), indent=2))
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items() if k.startswith("linear.")},
            directory / _WEIGHTS,
        )

    @classmethod
    def load(cls, directory: Path) -> Projection:
        config_path = directory / _CONFIG
        if not config_path.is_file():
            raise ArtifactError(f"{directory}: a Dense module needs {_CONFIG}")
        config = json.loads(config_path.read_text())
        module = cls(
            int(config["in_features"]),
            int(config["out_features"]),
            bias=bool(config.get("bias", True)),
            activation=config.get("activation_function", "torch.nn.modules.activation.Tanh"),
        )
        weights = directory / _WEIGHTS
        if not weights.is_file():
            raise ArtifactError(f"{directory}: no {_WEIGHTS} (pytorch_model.bin is refused: it would be unpickled)")
        module.load_state_dict(load_file(weights), strict=True)
        return module
