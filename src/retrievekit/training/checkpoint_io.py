"""Training checkpoints without pickle: every tensor in one safetensors file, the rest as JSON in its
metadata. Lightning's checkpoint dictionary (weights, optimizer and scheduler states, loop
progress, callback states, RNG states) round-trips exactly; anything else is refused by name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import CheckpointIO

from retrievekit.errors import ArtifactError

__all__ = ["SafetensorsCheckpointIO", "decode_checkpoint", "encode_checkpoint"]

_SKELETON_KEY = "retrievekit.checkpoint"


def encode_checkpoint(value: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested structure into a JSON-able skeleton and named tensors.

    >>> skeleton, tensors = encode_checkpoint({"w": torch.ones(2), "state": {0: (1, "a")}})
    >>> skeleton
    {'w': {'__tensor__': 't0'}, 'state': {'__items__': [[0, {'__tuple__': [1, 'a']}]]}}
    >>> decode_checkpoint(skeleton, tensors)["state"]
    {0: (1, 'a')}
    """
    tensors: dict[str, torch.Tensor] = {}
    seen: dict[tuple[Any, ...], str] = {}  # one copy of a tensor that appears under several names

    def walk(item: Any, where: str) -> Any:
        if isinstance(item, torch.Tensor):
            key = (item.device, item.data_ptr(), item.dtype, tuple(item.shape), tuple(item.stride()))
            if key not in seen:
                seen[key] = f"t{len(tensors)}"
                tensors[seen[key]] = item.detach().cpu().contiguous().clone()
            return {"__tensor__": seen[key]}
        if isinstance(item, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in item):
                return {k: walk(v, f"{where}.{k}") for k, v in item.items()}
            return {"__items__": [[walk(k, where), walk(v, f"{where}[{k!r}]")] for k, v in item.items()]}
        if isinstance(item, tuple):
            return {"__tuple__": [walk(v, f"{where}[{i}]") for i, v in enumerate(item)]}
        if isinstance(item, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(item)]
        if isinstance(item, Path):
            return str(item)
        if item is None or isinstance(item, bool | int | float | str):
            return item
        raise TypeError(f"checkpoint entry {where} is a {type(item).__name__}, which cannot be stored without pickle")

    return walk(value, "checkpoint"), tensors


def decode_checkpoint(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode_checkpoint`."""
    if isinstance(skeleton, list):
        return [decode_checkpoint(v, tensors) for v in skeleton]
    if not isinstance(skeleton, dict):
        return skeleton
    if "__tensor__" in skeleton:
        return tensors[skeleton["__tensor__"]]
    if "__tuple__" in skeleton:
        return tuple(decode_checkpoint(v, tensors) for v in skeleton["__tuple__"])
    if "__items__" in skeleton:
        return {decode_checkpoint(k, tensors): decode_checkpoint(v, tensors) for k, v in skeleton["__items__"]}
    return {k: decode_checkpoint(v, tensors) for k, v in skeleton.items()}


class SafetensorsCheckpointIO(CheckpointIO):
    """Lightning checkpoint I/O that writes safetensors files atomically (temporary file + rename)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        skeleton, tensors = encode_checkpoint(checkpoint)
        partial = path.with_name(f".{path.name}.partial")
        save_file(tensors, str(partial), metadata={_SKELETON_KEY: json.dumps(skeleton)})
        os.replace(partial, path)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"{path}: checkpoint not found")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        except Exception as exc:  # safetensors raises its own error types for truncated/foreign files
            raise ArtifactError(f"{path}: not a readable retrievekit checkpoint ({exc})") from exc
        if _SKELETON_KEY not in metadata:
            raise ArtifactError(f"{path}: a safetensors file, but not a retrievekit training checkpoint")
        return decode_checkpoint(json.loads(metadata[_SKELETON_KEY]), tensors)

    def remove_checkpoint(self, path: str | Path) -> None:
        Path(path).unlink(missing_ok=True)


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest complete checkpoint in ``directory`` (by step number in ``step=N.ckpt``), if any."""
    candidates = []
    for path in Path(directory).glob("step=*.ckpt"):
        try:
            candidates.append((int(path.stem.split("=", 1)[1]), path))
        except ValueError:
            continue
    return max(candidates)[1] if candidates else None
