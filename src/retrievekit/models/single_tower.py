"""What the single-tower families share (ColBERT, SPLADE): one tower reads queries and documents,
settings in a family config, a content fingerprint, torch runners per device, and the JSON files
their sentence-transformers-style saves write."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from retrievekit.artifacts import fingerprint_json
from retrievekit.errors import ConfigError
from retrievekit.models.encoding import BatchRunner

if TYPE_CHECKING:
    from retrievekit.models.tower import Tower

__all__ = ["SingleTowerEncoder", "attach_backend", "package_version", "torch_runners", "write_json"]


class SingleTowerEncoder:
    """The state and identity of an encoder whose queries and documents share ``tower``: ``config``
    (the family's settings, with ``to_dict``), the batch ``runners``, where it came from, and a
    fingerprint of weights, tokenizer, settings and ``kind`` (computed once, unless the loader
    passes one verified from a manifest)."""

    kind: ClassVar[str]

    def __init__(
        self,
        tower: Tower,
        config: Any,
        *,
        runners: Sequence[BatchRunner],
        name: str = "",
        source: Path | None = None,
        backend: str = "torch",
        runtime: str | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.tower = tower
        self.config = config
        self._runners = list(runners)
        self.name = name
        self.source = source
        self.backend = backend
        self.runtime = runtime or backend
        self._fingerprint = fingerprint

    # the exporter and the trainer see the one shared tower on both sides
    @property
    def query_tower(self) -> Tower:
        return self.tower

    @property
    def document_tower(self) -> Tower:
        return self.tower

    @property
    def fingerprint(self) -> str:
        """A content hash of the weights, the tokenizer and the family's settings."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint_json(
                {
                    "weights": [self.tower.digest()],
                    "tokenizers": [self.tower.tokenizer_digest()],
                    "config": self.config.to_dict(),
                    "kind": self.kind,
                    **self._fingerprint_parts(),
                }
            )
        return self._fingerprint

    def _fingerprint_parts(self) -> dict[str, str]:
        """What else a family's outputs depend on beyond the tower and settings (none by default)."""
        return {}


def attach_backend(
    encoder: SingleTowerEncoder,
    *,
    backend: str,
    device: str | list[str] | None = None,
    dtype: str = "float32",
    quantize: str | None = "int8",
) -> SingleTowerEncoder:
    """Give ``encoder`` its batch runners: ``torch`` (one per device of ``device``, in ``dtype``) or
    ``onnx`` (ONNX Runtime on the CPU, the tower exported once beside the model folder it came from,
    ``quantize="int8"`` or ``None``). Returns the same encoder."""
    if backend == "torch":
        encoder._runners, encoder.backend, encoder.runtime = (
            torch_runners(encoder.tower, device, dtype),
            "torch",
            f"torch-{dtype}",
        )
        return encoder
    if backend != "onnx":
        raise ConfigError(f"unknown backend {backend!r}; choose 'torch' or 'onnx'")
    from retrievekit.models.backends.onnx import onnx_runners

    if device not in (None, "cpu"):
        raise ConfigError("the onnx backend runs on the CPU; use backend='torch' for GPUs")
    if encoder.source is None:
        raise ConfigError("the onnx backend needs a saved model folder (save the model first)")
    runners = onnx_runners(encoder, encoder.source, quantize=quantize)["documents"]
    encoder._runners, encoder.backend, encoder.runtime = runners, "onnx", f"onnx-{quantize or 'fp32'}"
    return encoder


def torch_runners(tower: Tower, device: str | list[str] | None, dtype: str) -> list[BatchRunner]:
    """One torch runner per device of ``device`` (the first on ``tower`` itself, the others on copies)."""
    from retrievekit.models.backends.torch_runner import TorchRunner, parse_devices

    devices = parse_devices(device)
    replicas = [tower] + [copy.deepcopy(tower) for _ in devices[1:]]
    return [TorchRunner(t, d, dtype) for t, d in zip(replicas, devices, strict=True)]


def write_json(path: Path, value: Any) -> None:
    """A config file as sentence-transformers and PyLate write them (indented, UTF-8 kept)."""
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False))


def package_version() -> str:
    from retrievekit._version import __version__

    return __version__
