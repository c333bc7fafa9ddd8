"""Backends that run a tower on a batch of token ids: torch (any device) and ONNX Runtime (CPU)."""

BACKENDS = ("torch", "onnx")

__all__ = ["BACKENDS"]
