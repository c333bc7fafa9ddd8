"""Cross-encoder training batches: each example's query paired with its positive and its negatives
(a group), tokenized together by the encoding engine's pair tokenisation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from retrievekit.errors import ConfigError
from retrievekit.models.encoding import pad_batch, tokenize_pairs
from retrievekit.training.batches import SampledExample

__all__ = ["PairBatch", "PairCollator"]


@dataclass
class PairBatch:
    """``B`` groups of ``group_size`` pairs, laid out ``[query 0 with its positive, its negatives...,
    query 1 with its positive, ...]``, with teacher scores ``(B, group_size)`` when every row has them."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    group_size: int
    teacher_scores: torch.Tensor | None
    truncated: int = 0

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0]) // self.group_size


class PairCollator:
    """Turns sampled examples into a :class:`PairBatch`: query first, ``truncation`` (``longest_first``
    by default) at ``max_length`` tokens per pair, the engine's padding."""

    def __init__(self, tokenizer, *, max_length: int, truncation: str = "longest_first") -> None:
        self.tokenizer, self.max_length, self.truncation = tokenizer, max_length, truncation

    def __call__(self, samples: list[SampledExample]) -> PairBatch:
        sizes = {1 + len(s.negatives) for s in samples}
        if len(sizes) != 1:
            raise ConfigError("every example of a batch must bring the same number of negatives")
        firsts = [s.query for s in samples for _ in range(1 + len(s.negatives))]
        seconds = [text for s in samples for text in (s.positive, *s.negatives)]
        tokenized = tokenize_pairs(self.tokenizer, firsts, seconds, self.max_length, self.truncation)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        batch = pad_batch(tokenized.input_ids, pad_id, tokenized.token_type_ids)
        assert batch.token_type_ids is not None
        teacher = None
        if all(s.teacher_scores is not None for s in samples):
            teacher = torch.tensor([s.teacher_scores for s in samples], dtype=torch.float32)
        return PairBatch(
            torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask),
            torch.from_numpy(batch.token_type_ids), sizes.pop(), teacher, tokenized.truncated,
        )  # fmt: skip
