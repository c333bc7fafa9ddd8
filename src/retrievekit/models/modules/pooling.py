"""The one pooling implementation: token embeddings to one vector per text, attention-mask aware."""

from __future__ import annotations

import torch

from retrievekit.models.spec import POOLING_MODES, PoolingMode

__all__ = ["POOLING_MODES", "PoolingMode", "pool", "pool_span"]


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


def pool_span(
    token_embeddings: torch.Tensor, attention_mask: torch.Tensor, input_ids: torch.Tensor, start_id: int, end_id: int
) -> torch.Tensor:
    """The mean of each text's marked span: its tokens from the first ``start_id`` through the first
    ``end_id`` after it, both markers included (a mention between its markers, its states read in
    context: ELQ's mention representation); a text without ``start_id`` is pooled whole (``mean``),
    and a span whose end marker was cut runs to the text's end. Padding never contributes.

    >>> x = torch.tensor([[[1.0], [2.0], [4.0], [6.0], [8.0]], [[1.0], [3.0], [5.0], [9.0], [9.0]]])
    >>> ids = torch.tensor([[5, 7, 0, 8, 5], [5, 6, 6, 0, 0]])
    >>> m = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    >>> pool_span(x, m, ids, start_id=7, end_id=8).tolist()
    [[4.0], [3.0]]
    """
    # integer arithmetic throughout (no boolean Where: ONNX Runtime's CPU kernels lack it)
    real = (attention_mask > 0).long()
    starts = (input_ids == start_id).long() * real
    opened = (starts.cumsum(dim=1) > 0).long()
    ends = (input_ids == end_id).long() * opened
    closed_before = ((ends.cumsum(dim=1) - ends) > 0).long()  # after the span's end marker
    span = opened * (1 - closed_before) * real
    marked = (starts.sum(dim=1, keepdim=True) > 0).long()
    chosen = (span * marked + real * (1 - marked)).to(token_embeddings.dtype).unsqueeze(-1)
    return (token_embeddings * chosen).sum(dim=1) / chosen.sum(dim=1).clamp(min=1e-9)
