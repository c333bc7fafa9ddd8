"""Run a tower with PyTorch on one device, under ``torch.inference_mode``."""

from __future__ import annotations

import numpy as np
import torch

from retrievekit.errors import ConfigError
from retrievekit.models.encoding import BatchOutput, TokenBatch
from retrievekit.models.tower import Tower

__all__ = ["TorchRunner", "parse_devices"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_devices(device: str | list[str] | None) -> list[torch.device]:
    """``None`` picks ``cuda`` when available, else ``cpu``; a list (or ``"cuda:0,cuda:1"``) gives several."""
    if device is None:
        return [torch.device("cuda" if torch.cuda.is_available() else "cpu")]
    names = device.split(",") if isinstance(device, str) else list(device)
    devices = []
    for name in names:
        try:
            parsed = torch.device(name.strip())
        except RuntimeError as exc:
            raise ConfigError(f"invalid device {name!r}: {exc}") from exc
        if parsed.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} was asked for but CUDA is not available on this machine")
        devices.append(parsed)
    if not devices:
        raise ConfigError("no device given")
    return devices


class TorchRunner:
    """Callable ``TokenBatch -> float32 head output`` for one tower on one device."""

    def __init__(self, tower: Tower, device: torch.device, dtype: str = "float32") -> None:
        if dtype not in _DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        if dtype == "float16" and device.type == "cpu":
            raise ConfigError("float16 is for GPUs; on the CPU use float32 or bfloat16")
        self.tower = tower.to(device)
        self.device = device
        self.autocast = dtype != "float32"
        self.dtype = _DTYPES[dtype]

    def __call__(self, batch: TokenBatch) -> BatchOutput:
        ids = torch.from_numpy(batch.input_ids).to(self.device, non_blocking=True)
        mask = torch.from_numpy(batch.attention_mask).to(self.device, non_blocking=True)
        types = None
        if batch.token_type_ids is not None:
            types = torch.from_numpy(batch.token_type_ids).to(self.device, non_blocking=True)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast):
            out = self.tower(ids, mask, types)
        # activations (sigmoid, ...) go after this, in float32
        if isinstance(out, dict):  # a head with several parts
            return {name: part.float().cpu().numpy() for name, part in out.items()}
        result: np.ndarray = out.float().cpu().numpy()
        return result
