"""The one pooling implementation: token embeddings to one vector per text, attention-mask aware."""

from __future__ import annotations

import torch

from retrievekit.models.spec import POOLING_MODES, PoolingMode

__all__ = ["POOLING_MODES", "PoolingMode", "pool"]


def pool(token_embeddings: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool ``(batch, seq, dim)`` token embeddings into ``(batch, dim)``; padding never contributes.

    ``last_token`` takes the last non-padding token and works with left or right padding.

    >>> x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])
    >>> m = torch.tensor([[1, 1, 0]])
    >>> pool(x, m, "mean").tolist(), pool(x, m, "max").tolist(), pool(x, m, "cls").tolist()
    ([[2.0, 3.0]], [[3.0, 4.0]], [[1.0, 2.0]])
    >>> pool(x, m, "last_token").tolist()
    [[3.0, 4.0]]
    """
    mask = attention_mask.to(token_embeddings.dtype).unsqueeze(-1)
    if mode == "cls":
        return token_embeddings[:, 0]
    if mode in ("mean", "mean_sqrt_len"):
        summed = (token_embeddings * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        return summed / (counts if mode == "mean" else counts.sqrt())
    if mode == "max":
        floor = torch.finfo(token_embeddings.dtype).min
        return token_embeddings.masked_fill(mask == 0, floor).max(dim=1).values
    if mode == "last_token":
        seq_len = attention_mask.shape[1]
        # index of the last 1 in each row: position of the max of (mask * position)
        positions = torch.arange(seq_len, device=attention_mask.device).expand_as(attention_mask)
        last = (positions * attention_mask).argmax(dim=1)
        return token_embeddings[torch.arange(token_embeddings.shape[0], device=last.device), last]
    raise ValueError(f"unknown pooling mode {mode!r}; choose one of {', '.join(POOLING_MODES)}")
