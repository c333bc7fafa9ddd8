"""The query side of an inference-free SPLADE model: a static weight per vocabulary entry.

A query's vector is the weights of its distinct tokens (tokenized without special tokens), with no
model run at all: sentence-transformers' ``SparseStaticEmbedding`` behind a ``Router``, whose
document route is a full SPLADE. The table is read from and saved to that module's folder
(``model.safetensors`` holding ``weight``, the tokenizer, ``config.json``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from retrievekit.errors import ArtifactError
from retrievekit.outputs import SparseVectors

__all__ = ["QueryTable"]

_WEIGHTS_FILE = "model.safetensors"


class QueryTable:
    """Static per-token query weights (``(vocabulary,)`` float32) and the tokenizer that reads queries.

    >>> class Tok:
    ...     model_max_length = 8
    ...     def __call__(self, texts, **options):
    ...         return {"input_ids": [[3, 1, 3] for _ in texts]}
    >>> table = QueryTable(np.array([0.0, 0.5, 0.0, 2.0], dtype=np.float32), Tok())
    >>> vectors = table.encode(["any"])
    >>> vectors.indices.tolist(), vectors.values.tolist()
    ([1, 3], [0.5, 2.0])
    """

    def __init__(self, weights: np.ndarray, tokenizer: Any) -> None:
        weights = np.asarray(weights, dtype=np.float32)
        if weights.ndim != 1:
            raise ArtifactError(
                f"a static query table holds one weight per vocabulary entry, got shape {weights.shape}"
            )
        self.weights = weights
        self.tokenizer = tokenizer

    @property
    def vocab_size(self) -> int:
        return len(self.weights)

    def encode(self, texts: list[str], prompt: str = "") -> SparseVectors:
        """Each text's distinct tokens (no special tokens; cut at the tokenizer's ``model_max_length``,
        as sentence-transformers does) weighted by the table; tokens of weight 0 are left out."""
        prepared = [prompt + t for t in texts] if prompt else texts
        rows = self.tokenizer(prepared, truncation=True, add_special_tokens=False)["input_ids"] if texts else []
        indptr = np.zeros(len(texts) + 1, dtype=np.int64)
        indices, values = [], []
        for i, ids in enumerate(rows):
            distinct = np.unique(np.asarray(ids, dtype=np.int64))
            if len(distinct) and (distinct.min() < 0 or distinct.max() >= self.vocab_size):
                raise ArtifactError(
                    f"the query tokenizer gives ids beyond the static table's {self.vocab_size} entries"
                )
            weights = self.weights[distinct]
            kept = weights != 0
            indices.append(distinct[kept].astype(np.int32))
            values.append(weights[kept])
            indptr[i + 1] = indptr[i] + int(kept.sum())
        if not indices:
            return SparseVectors.empty(self.vocab_size)
        return SparseVectors(indptr, np.concatenate(indices), np.concatenate(values), self.vocab_size)

    def digest(self) -> str:
        """A hash of the weights and the query tokenizer (part of the model's fingerprint)."""
        from retrievekit.models.tower import tokenizer_digest

        digest = hashlib.sha256(np.ascontiguousarray(self.weights).tobytes())
        digest.update(tokenizer_digest(self.tokenizer).encode())
        return digest.hexdigest()

    @classmethod
    def load(cls, folder: Path, *, trust_remote_code: bool = False) -> QueryTable:
        """The table of a ``SparseStaticEmbedding`` folder (safetensors only; its own tokenizer)."""
        import transformers
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        from retrievekit.models.tower import TOKENIZER_FILES

        path = folder / _WEIGHTS_FILE
        if not path.is_file():
            raise ArtifactError(
                f"{folder}: no {_WEIGHTS_FILE} for the static query table (retrievekit never unpickles "
                "pytorch_model.bin; an idf.json table is not read either)"
            )
        try:
            tensors = load_file(str(path))
        except (OSError, SafetensorError, ValueError) as exc:
            raise ArtifactError(f"{path}: unreadable ({exc})") from None
        if set(tensors) != {"weight"}:
            raise ArtifactError(f"{path}: expected one tensor named 'weight', found {sorted(tensors)}")
        if not any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise ArtifactError(f"{folder}: no tokenizer files beside the static query table")
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        table = cls(tensors["weight"], tokenizer)
        if len(tokenizer) > table.vocab_size:
            raise ArtifactError(f"{path}: {table.vocab_size} weights for a tokenizer of {len(tokenizer)} tokens")
        return table

    def save(self, folder: Path) -> None:
        """Write the table as sentence-transformers' ``SparseStaticEmbedding`` module folder."""
        import json

        from safetensors.numpy import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file({"weight": np.ascontiguousarray(self.weights)}, str(folder / _WEIGHTS_FILE))
        self.tokenizer.save_pretrained(folder)
        (folder / "config.json").write_text(json.dumps({"frozen": False}, indent=2))
