"""Embedding precision: float16, calibrated int8 and packed binary codes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

__all__ = ["PRECISIONS", "Int8Calibration", "Precision", "quantize"]

Precision = Literal["float32", "float16", "int8", "binary"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


@dataclass(frozen=True)
class Int8Calibration:
    """Per-dimension ranges mapping floats to int8: ``q = round((x - lower) / step) - 128``.

    Fit it on a representative sample (the corpus itself is the natural choice) and keep it with the
    codes, so queries are quantised the same way and codes can be mapped back to floats.

    >>> cal = Int8Calibration.fit(np.array([[0.0, -1.0], [1.0, 1.0]], dtype=np.float32))
    >>> cal.quantize(np.array([[0.0, -1.0], [1.0, 1.0]], dtype=np.float32)).tolist()
    [[-128, -128], [127, 127]]
    """

    lower: np.ndarray
    upper: np.ndarray

    @classmethod
    def fit(cls, embeddings: np.ndarray) -> Int8Calibration:
        if embeddings.ndim != 2 or len(embeddings) == 0:
            raise ValueError("int8 calibration needs a non-empty 2-d array of embeddings")
        return cls(embeddings.min(axis=0).astype(np.float32), embeddings.max(axis=0).astype(np.float32))

    @property
    def step(self) -> np.ndarray:
        return np.maximum(self.upper - self.lower, 1e-12) / 255.0

    def quantize(self, embeddings: np.ndarray) -> np.ndarray:
        codes = np.rint((embeddings - self.lower) / self.step) - 128
        return np.clip(codes, -128, 127).astype(np.int8)

    def dequantize(self, codes: np.ndarray) -> np.ndarray:
        return ((codes.astype(np.float32) + 128) * self.step + self.lower).astype(np.float32)

    def save(self, path: str | Path) -> None:
        np.save(Path(path), np.stack([self.lower, self.upper]), allow_pickle=False)

    @classmethod
    def load(cls, path: str | Path) -> Int8Calibration:
        ranges = np.load(Path(path), allow_pickle=False)
        return cls(ranges[0], ranges[1])


def quantize(embeddings: np.ndarray, precision: str, calibration: Int8Calibration | None = None) -> np.ndarray:
    """Convert float32 embeddings to ``precision``.

    ``binary`` packs the sign bits (x > 0) eight to a byte (``uint8``, dimension / 8 columns), the
    codes Hamming-distance indexes expect. ``int8`` uses ``calibration`` (fitted on these embeddings
    when none is given).
    """
    if precision == "float32":
        return embeddings.astype(np.float32, copy=False)
    if precision == "float16":
        return embeddings.astype(np.float16)
    if precision == "int8":
        return (calibration or Int8Calibration.fit(embeddings)).quantize(embeddings)
    if precision == "binary":
        return np.packbits(embeddings > 0, axis=-1)
    raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
