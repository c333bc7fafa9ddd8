"""Heads: what turns a backbone's token states into a family's output.

The encoder engine runs ``backbone -> head`` for every family; a head declares which backbone output
it reads (``states``: the last hidden states, or the logits of a masked-LM or classification model)
and what it produces (``output``, one of :data:`~retrievekit.outputs.OUTPUT_KINDS`):

- :class:`PoolingHead` -> ``dense``: one vector per text (pooling, projections, normalisation);
- :class:`TokenVectorsHead` -> ``multivector``: one vector per token (projection, L2 normalisation);
- :class:`SpladeHead` -> ``sparse``: vocabulary-sized weights, ``log(1 + relu(logits))`` pooled by max or sum;
- :class:`ScoreHead` -> ``score``: the logits of a sequence-classification model, one row per text pair;
- :class:`LastTokenLogitHead` -> ``score``: a decoder-only reranker's "Yes" logit at the last position,
  from the last or earlier (layer-wise) layers of a causal LM;
- :class:`M3Head` -> several outputs from one pass (BGE-M3's dense, lexical and multi-vector ones):
  a head with ``parts`` returns a dict, ``part name -> tensor``, each part of the kind ``parts`` names.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from retrievekit.errors import ConfigError
from retrievekit.models.modules.pooling import pool, pool_span
from retrievekit.models.modules.projection import Projection
from retrievekit.models.spec import SPAN_POOLING
from retrievekit.outputs import OutputKind

__all__ = [
    "BackboneStates",
    "DeferredProjection",
    "Head",
    "LastTokenLogitHead",
    "M3Head",
    "PoolingHead",
    "ScoreHead",
    "SpladeHead",
    "TokenVectorsHead",
]

# what a head reads from the backbone: the base model's last hidden states, a task model's logits, or
# a causal LM's hidden states of chosen layers
BackboneStates = Literal["hidden", "masked_lm_logits", "classification_logits", "causal_hidden"]


class Head(nn.Module):
    """Base of every head: ``forward(states, attention_mask, input_ids) -> output tensor`` (a dict of
    them, one per entry of ``parts``, for a head with several outputs)."""

    output: ClassVar[OutputKind]
    states: ClassVar[BackboneStates] = "hidden"
    parts: ClassVar[dict[str, OutputKind] | None] = None

    def forward(self, states: torch.Tensor, attention_mask: torch.Tensor, input_ids: torch.Tensor | None = None) -> Any:
        raise NotImplementedError


class PoolingHead(Head):
    """``(B, L, H)`` -> ``(B, d)``: pooling, then projections, then optional L2 normalisation.

    >>> head = PoolingHead("mean", [], normalize=True)
    >>> head(torch.tensor([[[3.0, 0.0], [0.0, 4.0], [9.0, 9.0]]]), torch.tensor([[1, 1, 0]])).tolist()
    [[0.6000000238418579, 0.800000011920929]]
    """

    output = "dense"

    def __init__(
        self,
        pooling: str,
        projections: list[Projection],
        *,
        normalize: bool,
        span_ids: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if (pooling == SPAN_POOLING) != (span_ids is not None):
            raise ConfigError("pooling 'mention' and the span's marker ids go together")
        self.pooling = pooling
        self.span_ids = span_ids  # (start, end) marker token ids for pooling "mention"
        self.projections = nn.ModuleList(projections)
        self.normalize = normalize

    def forward(
        self, states: torch.Tensor, attention_mask: torch.Tensor, input_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.span_ids is not None:
            if input_ids is None:
                raise ConfigError("pooling 'mention' reads the token ids: pass input_ids")
            embeddings = pool_span(states, attention_mask, input_ids, *self.span_ids)
        else:
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

    def forward(
        self, states: torch.Tensor, attention_mask: torch.Tensor, input_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
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

    def forward(
        self, states: torch.Tensor, attention_mask: torch.Tensor, input_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
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

    def forward(
        self, states: torch.Tensor, attention_mask: torch.Tensor, input_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        return states


class M3Head(Head):
    """BGE-M3's three outputs from one pass over ``(B, L, H)`` hidden states, as FlagEmbedding
    computes them:

    - ``dense`` ``(B, H)``: the ``[CLS]`` state (``pooling="cls"``; or ``mean``), L2-normalised;
    - ``sparse`` ``(B, V)``: each token's weight ``relu(sparse_linear(h))``, the largest per
      vocabulary id over the text, the ids of ``ignored_ids`` (``[CLS]``, ``</s>``, padding, unknown)
      at zero;
    - ``multivector`` ``(B, L, d)``: ``colbert_linear(h)`` of every position, L2-normalised, padding
      at zero; the ``[CLS]`` position is dropped by the engine (the model's token layout skips the
      first position), so a text keeps its other real tokens' vectors, ``</s>`` included.

    >>> head = M3Head(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False), ignored_ids=[0], vocab_size=4)
    >>> _ = head.sparse_linear.weight.data.copy_(torch.tensor([[1.0, 0.0]]))
    >>> out = head(torch.tensor([[[3.0, 4.0], [2.0, 0.0], [5.0, 1.0]]]), torch.tensor([[1, 1, 1]]),
    ...            torch.tensor([[0, 2, 2]]))
    >>> out["dense"].tolist(), out["sparse"].tolist()
    ([[0.6000000238418579, 0.800000011920929]], [[0.0, 0.0, 5.0, 0.0]])
    """

    output = "dense"  # the part an encoder reads when it wants one vector per text
    parts: ClassVar[dict[str, OutputKind] | None] = {"dense": "dense", "sparse": "sparse", "multivector": "multivector"}
    ignored_ids: torch.Tensor

    def __init__(
        self, colbert_linear: nn.Linear, sparse_linear: nn.Linear, *, ignored_ids: list[int], vocab_size: int,
        pooling: str = "cls", normalize: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ConfigError(f"BGE-M3 pooling must be 'cls' or 'mean', got {pooling!r}")
        if sparse_linear.out_features != 1:
            raise ConfigError(f"the sparse head must give one weight per token, not {sparse_linear.out_features}")
        self.colbert_linear = colbert_linear
        self.sparse_linear = sparse_linear
        self.pooling = pooling
        self.normalize = normalize
        self.vocab_size = vocab_size
        self.register_buffer("ignored_ids", torch.tensor(sorted(set(ignored_ids)), dtype=torch.long), persistent=False)

    def forward(
        self, states: torch.Tensor, attention_mask: torch.Tensor, input_ids: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        if input_ids is None:
            raise ConfigError("BGE-M3's lexical weights need the token ids")
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        dense = states[:, 0] if self.pooling == "cls" else (states * mask).sum(1) / mask.sum(1).clamp(min=1)
        token_weights = torch.relu(self.sparse_linear(states)).squeeze(-1) * attention_mask.to(states.dtype)
        sparse = torch.zeros(states.shape[0], self.vocab_size, dtype=token_weights.dtype, device=states.device)
        sparse = sparse.scatter_reduce(1, input_ids, token_weights, reduce="amax").index_fill(1, self.ignored_ids, 0.0)
        vectors = self.colbert_linear(states) * mask
        if self.normalize:
            dense = F.normalize(dense, dim=-1)
            vectors = F.normalize(vectors, dim=-1)
        return {"dense": dense, "sparse": sparse, "multivector": vectors}


class LastTokenLogitHead(Head):
    """A decoder-only reranker's score: the logit of one vocabulary token (``"Yes"``) at each text's
    last position, read from the hidden states of ``layers`` of a causal LM (``(n, B, L, H)``, as
    :class:`~retrievekit.models.tower.Tower` stacks them). The last layer's states are the model's
    own (normalised); an earlier layer's go through the model's final norm first (layer-wise
    scoring, the logit lens). Only that token's row of the LM head is computed, never ``(B, V)``.
    Returns ``(B,)`` for one layer, ``(B, len(layers))`` for several. Rows are right-padded."""

    output = "score"
    states = "causal_hidden"

    def __init__(
        self, lm_head: nn.Module, norm: nn.Module | None, token_id: int, *, layers: list[int], num_layers: int,
        softcap: float | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if not layers or any(not 1 <= layer <= num_layers for layer in layers):
            raise ConfigError(f"cutoff layers must be between 1 and {num_layers}, got {layers}")
        if norm is None and any(layer != num_layers for layer in layers):
            raise ConfigError("this model has no final norm to read an earlier layer through; use its last layer")
        self.layers, self.num_layers, self.token_id, self.softcap = list(layers), num_layers, token_id, softcap
        self._modules_of_model = [lm_head, norm]  # the backbone owns them: kept out of this head's state_dict

    def forward(
        self, states: torch.Tensor, attention_mask: torch.Tensor, input_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        lm_head: Any = self._modules_of_model[0]
        norm = self._modules_of_model[1]
        last = attention_mask.sum(dim=1) - 1
        rows = torch.arange(states.shape[1], device=states.device)
        weight: torch.Tensor = lm_head.weight[self.token_id]
        bias = getattr(lm_head, "bias", None)
        scores = []
        for position, layer in enumerate(self.layers):
            hidden = states[position, rows, last]
            if layer != self.num_layers:
                assert norm is not None
                hidden = norm(hidden)
            logit = hidden @ weight + (bias[self.token_id] if bias is not None else 0.0)
            if self.softcap:
                logit = torch.tanh(logit / self.softcap) * self.softcap
            scores.append(logit)
        return scores[0] if len(scores) == 1 else torch.stack(scores, dim=1)
