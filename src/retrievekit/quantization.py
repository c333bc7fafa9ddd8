"""Embedding precisions, named and computed as sentence-transformers' ``quantize_embeddings`` does:
``float32``, ``float16``, ``int8`` / ``uint8`` (scalar quantisation with per-dimension ranges) and
``binary`` / ``ubinary`` (sign bits packed eight to a byte, as int8 offset by -128 or as uint8).

Scalar codes need ranges that queries and documents share: they come from an
:class:`Int8Calibration` fitted on a representative sample (the corpus) and stored with the model or
the embeddings, never from the few texts being encoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from retrievekit.errors import ArtifactError, ConfigError

__all__ = ["PRECISIONS", "SCALAR_PRECISIONS", "Int8Calibration", "Precision", "quantize"]

Precision = Literal["float32", "float16", "int8", "uint8", "binary", "ubinary"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
SCALAR_PRECISIONS = ("int8", "uint8")  # the precisions that need calibration ranges


@dataclass(frozen=True)
class Int8Calibration:
    """Per-dimension ranges for scalar codes: bucket ``floor((x - lower) / step)`` clipped to 0..255,
    ``step = (upper - lower) / 255``; ``int8`` codes are the bucket minus 128.

    Fit it on a representative sample (the corpus itself is the natural choice) and keep it with the
    codes, so queries are quantised the same way and codes can be mapped back to floats.

    >>> cal = Int8Calibration.fit(np.array([[0.0, -255.0], [255.0, 255.0]], dtype=np.float32))
    >>> cal.quantize(np.array([[0.0, -255.0], [255.0, 255.0]], dtype=np.float32)).tolist()
    [[-128, -128], [127, 127]]
    >>> cal.quantize(np.array([[127.5, 0.0], [300.0, -300.0]], dtype=np.float32), "uint8").tolist()
    [[127, 127], [255, 0]]
    """

    lower: np.ndarray
    upper: np.ndarray

    def __post_init__(self) -> None:
        if self.lower.shape != self.upper.shape or self.lower.ndim != 1:
            raise ArtifactError("int8 calibration ranges must be two 1-d arrays of the same length")
        if not (np.isfinite(self.lower).all() and np.isfinite(self.upper).all()):
            raise ArtifactError("int8 calibration ranges contain NaN or infinite values")
        if (self.upper < self.lower).any():
            raise ArtifactError("int8 calibration ranges have an upper bound below the lower one")

    @classmethod
    def fit(cls, embeddings: np.ndarray) -> Int8Calibration:
        if embeddings.ndim != 2 or len(embeddings) < 2:
            raise ConfigError(
                "int8 calibration needs at least two embeddings (a representative sample, e.g. the corpus)"
            )
        return cls(embeddings.min(axis=0).astype(np.float32), embeddings.max(axis=0).astype(np.float32))

    @property
    def ranges(self) -> np.ndarray:
        """``(2, dim)``: the ``ranges`` argument of sentence-transformers' ``quantize_embeddings``."""
        return np.stack([self.lower, self.upper])

    @property
    def step(self) -> np.ndarray:
        step = (self.upper - self.lower) / 255
        return np.where(step == 0, 1, step).astype(np.float32)

    def quantize(self, embeddings: np.ndarray, precision: str = "int8") -> np.ndarray:
        if embeddings.shape[-1] != len(self.lower):
            raise ConfigError(f"calibration is for {len(self.lower)}-d vectors, got {embeddings.shape[-1]}-d ones")
        buckets = np.clip(np.floor((embeddings - self.lower) / self.step), 0, 255)
        if precision == "uint8":
            return buckets.astype(np.uint8)
        return (buckets - 128).astype(np.int8)

    def dequantize(self, codes: np.ndarray) -> np.ndarray:
        buckets = codes.astype(np.float32) + (128 if codes.dtype == np.int8 else 0)
        return (buckets * self.step + self.lower).astype(np.float32)

    def save(self, path: str | Path) -> None:
        np.save(Path(path), self.ranges, allow_pickle=False)

    @classmethod
    def load(cls, path: str | Path) -> Int8Calibration:
        try:
            ranges = np.load(Path(path), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{path}: unreadable calibration ranges ({exc})") from exc
        if ranges.ndim != 2 or ranges.shape[0] != 2:
            raise ArtifactError(f"{path}: calibration ranges must have shape (2, dim), got {ranges.shape}")
        return cls(ranges[0].astype(np.float32), ranges[1].astype(np.float32))


def quantize(embeddings: np.ndarray, precision: str, calibration: Int8Calibration | None = None) -> np.ndarray:
    """Convert float32 embeddings to ``precision`` (sentence-transformers' names and formulas).

    ``int8``/``uint8`` need ``calibration``; ``binary`` packs the sign bits (x > 0) as int8 minus 128,
    ``ubinary`` as plain uint8 (dimension / 8 columns), the codes Hamming-distance indexes expect.

    >>> x = np.array([[0.5, -0.1, 0.2, 0.0, 1.0, -1.0, 0.3, 0.4]], dtype=np.float32)
    >>> quantize(x, "ubinary").tolist(), quantize(x, "binary").tolist()
    ([[171]], [[43]])
    """
    if precision == "float32":
        return embeddings.astype(np.float32, copy=False)
    if precision == "float16":
        return embeddings.astype(np.float16)
    if precision in SCALAR_PRECISIONS:
        if calibration is None:
            raise ConfigError(
                f"{precision} codes need calibration ranges shared by queries and documents: pass "
                "calibration=Int8Calibration.fit(corpus_vectors), or calibrate the model once with "
                "encoder.calibrate(corpus_texts) (saved with it)"
            )
        return calibration.quantize(embeddings, precision)
    if precision == "ubinary":
        return np.packbits(embeddings > 0, axis=-1)
    if precision == "binary":
        return (np.packbits(embeddings > 0, axis=-1).astype(np.int16) - 128).astype(np.int8)
    raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
