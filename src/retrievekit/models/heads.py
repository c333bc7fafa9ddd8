"""Heads: what turns a backbone's token states into a family's output.

The encoder engine runs ``backbone -> head`` for every family; a head declares which backbone output
it reads (``states``: the last hidden states, or the logits of a masked-LM or classification model)
and what it produces (``output``, one of :data:`~retrievekit.outputs.OUTPUT_KINDS`):

- :class:`PoolingHead` -> ``dense``: one vector per text (pooling, projections, normalisation);
- :class:`TokenVectorsHead` -> ``multivector``: one vector per token (projection, L2 normalisation);
- :class:`SpladeHead` -> ``sparse``: vocabulary-sized weights, ``log(1 + relu(logits))`` pooled by max or sum;
- :class:`ScoreHead` -> ``score``: the logits of a sequence-classification model, one row per text pair.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from retrievekit.errors import ConfigError
from retrievekit.models.modules.pooling import pool
from retrievekit.models.modules.projection import Projection
from retrievekit.outputs import OutputKind

__all__ = ["BackboneStates", "DeferredProjection", "Head", "PoolingHead", "ScoreHead", "SpladeHead", "TokenVectorsHead"]

# what a head reads from the backbone: the base model's last hidden states, or a task model's logits
BackboneStates = Literal["hidden", "masked_lm_logits", "classification_logits"]


class Head(nn.Module):
    """Base of every head: ``forward(states, attention_mask) -> output tensor``."""

    output: ClassVar[OutputKind]
    states: ClassVar[BackboneStates] = "hidden"

    def forward(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class PoolingHead(Head):
    """``(B, L, H)`` -> ``(B, d)``: pooling, then projections, then optional L2 normalisation.

    >>> head = PoolingHead("mean", [], normalize=True)
    >>> head(torch.tensor([[[3.0, 0.0], [0.0, 4.0], [9.0, 9.0]]]), torch.tensor([[1, 1, 0]])).tolist()
    [[0.6000000238418579, 0.800000011920929]]
    """

    output = "dense"

    def __init__(self, pooling: str, projections: list[Projection], *, normalize: bool) -> None:
        super().__init__()
        self.pooling = pooling
        self.projections = nn.ModuleList(projections)
        self.normalize = normalize

    def forward(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        embeddings = pool(states, attention_mask, self.pooling)
        for projection in self.projections:
            embeddings = projection(embeddings)
        if self.normalize:
            embeddings = F.normalize(embeddings, p=2, dim=-1)
        return embeddings


class TokenVectorsHead(Head):
    """``(B, L, H)`` -> ``(B, L, d)``: an optional linear projection (ColBERT's, usually without a
    bias), then L2 normalisation of each token vector. Every position gets a vector, attended to or
    not (ColBERT keeps those of query expansion tokens); which ones are kept is the engine's
    output mask (:class:`~retrievekit.models.encoding.TokenBatch`), not the head's.

    >>> head = TokenVectorsHead(None)
    >>> head(torch.tensor([[[3.0, 4.0], [1.0, 0.0]]]), torch.tensor([[1, 0]])).tolist()
    [[[0.6000000238418579, 0.800000011920929], [1.0, 0.0]]]
    """

    output = "multivector"

    def __init__(self, projection: nn.Linear | None, *, normalize: bool = True) -> None:
        super().__init__()
        self.projection = projection
        self.normalize = normalize

    def forward(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        vectors = self.projection(states) if self.projection is not None else states
        if self.normalize:
            vectors = F.normalize(vectors, p=2, dim=-1)
        return vectors


class DeferredProjection(nn.Module):
    """Stands in for a masked-LM's output projection (its vocabulary decoder): keeps the weight and
    bias under the same names (saves and tied weights are unchanged) but passes the states through,
    so the model returns the LM head's transformed states and :class:`SpladeHead` applies the
    projection itself, a slice of the vocabulary at a time, never holding ``(B, L, V)`` logits."""

    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: nn.Module) -> None:
        super().__init__()
        weight = linear.weight
        if not isinstance(weight, torch.Tensor):
            raise ConfigError(f"the masked-LM's output projection has no weight tensor ({type(linear).__name__})")
        self.weight = weight  # the same Parameter objects: ties and saves see no change
        self.bias = getattr(linear, "bias", None)
        self.in_features = int(self.weight.shape[1])
        self.out_features = int(self.weight.shape[0])

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return states


class SpladeHead(Head):
    """``(B, L, V)`` masked-LM logits -> ``(B, V)`` weights ``pool_t act(logit_t)`` over the real
    tokens, ``act`` = ``log(1 + relu(x))`` (``activation="relu"``) or that once more through ``log1p``
    (``"log1p_relu"``), ``pooling`` ``max`` (SPLADE v2+) or ``sum``. Both activations rise with the
    logit, so max pooling takes the max of the raw logits first: one activation per vocabulary entry
    instead of one per token (the same numbers).

    With ``decoder`` (the :class:`DeferredProjection` put in the model's place), the states are the
    LM head's transformed ``(B, L, H)`` states and the vocabulary projection happens here, in slices
    of the vocabulary of at most ``max_logits`` values: the same numbers in bounded memory.

    >>> logits = torch.tensor([[[0.0, 1.0, -2.0], [3.0, 0.5, 0.0], [9.0, 9.0, 9.0]]])
    >>> [round(w, 4) for w in SpladeHead("max")(logits, torch.tensor([[1, 1, 0]]))[0].tolist()]
    [1.3863, 0.6931, 0.0]
    >>> [round(w, 4) for w in SpladeHead("sum", "log1p_relu")(logits, torch.tensor([[1, 1, 0]]))[0].tolist()]
    [0.8697, 0.867, 0.0]
    """

    output = "sparse"
    states = "masked_lm_logits"

    def __init__(
        self, pooling: str = "max", activation: str = "relu", *, decoder: DeferredProjection | None = None,
        max_logits: int = 1 << 24,
    ) -> None:  # fmt: skip
        super().__init__()
        if pooling not in ("max", "sum"):
            raise ConfigError(f"SPLADE pooling must be 'max' or 'sum', got {pooling!r}")
        if activation not in ("relu", "log1p_relu"):
            raise ConfigError(f"SPLADE activation must be 'relu' or 'log1p_relu', got {activation!r}")
        self.pooling = pooling
        self.activation = activation
        self.max_logits = max_logits
        # the backbone owns the decoder's parameters; a list keeps them out of this head's state_dict
        self._decoder = [decoder] if decoder is not None else []

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        weights = torch.log1p(torch.relu(logits))
        return torch.log1p(weights) if self.activation == "log1p_relu" else weights

    def _pool(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "max":  # padding scores 0, which the relu floor gives anyway
            return self._activate((logits * mask).amax(dim=1))
        return (self._activate(logits) * mask).sum(dim=1)

    def forward(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        if not self._decoder:
            return self._pool(states, mask)
        decoder = self._decoder[0]
        weight: torch.Tensor = decoder.weight
        bias: torch.Tensor | None = decoder.bias
        step = max(256, self.max_logits // max(1, states.shape[0] * states.shape[1]))
        parts = []
        for start in range(0, weight.shape[0], step):
            logits = F.linear(
                states, weight[start : start + step], None if bias is None else bias[start : start + step]
            )
            parts.append(self._pool(logits, mask))
        return torch.cat(parts, dim=1)


class ScoreHead(Head):
    """``(B, labels)`` classification logits, passed through (activations are the reranker's choice,
    applied in float32 after the model)."""

    output = "score"
    states = "classification_logits"

    def forward(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return states
