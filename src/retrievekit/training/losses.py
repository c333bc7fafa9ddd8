"""Losses: standalone modules that take the model and a :class:`TrainingBatch` and return a scalar.

* :class:`InfoNCELoss` — multiple-negatives ranking over in-batch and hard negatives (BET,
  sentence-transformers' ``MultipleNegativesRankingLoss``, FlagEmbedding), fixed or learnable
  temperature, masking of false in-batch negatives, optional symmetric term, optional gathering
  of documents from every device; or, ``marginal``, BioSyn's synonym marginalisation: every column
  holding one of the query's positives counts towards it.
* :class:`CachedInfoNCELoss` — the same with GradCache, for large batches in small memory.
* :class:`MarginMSELoss` and :class:`KLDivergenceLoss` — distillation from teacher scores
  (``pos_scores`` / ``neg_scores`` of the training rows), for bi-encoders and cross-encoders alike
  (both read the model's ``candidate_scores``).
* :class:`GroupSoftmaxLoss` and :class:`BinaryCrossEntropyLoss` — cross-encoders (rerankers): softmax
  cross-entropy over each query's group of one positive and ``k`` negatives (FlagEmbedding's reranker
  loss), or a binary cross-entropy per pair (sentence-transformers' ``BinaryCrossEntropyLoss``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from retrievekit.errors import ConfigError
from retrievekit.training.batches import TrainingBatch
from retrievekit.training.model import BiEncoderModel, similarity_matrix

__all__ = [
    "LOSSES",
    "BinaryCrossEntropyLoss",
    "CachedInfoNCELoss",
    "GroupSoftmaxLoss",
    "InfoNCELoss",
    "KLDivergenceLoss",
    "MarginMSELoss",
    "false_negative_mask",
    "make_loss",
]


def false_negative_mask(
    positive_hashes: torch.Tensor, column_hashes: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """``(B, N)`` True where column ``c`` holds a text relevant to query ``i`` that is not its own
    positive column ``labels[i]``: such a column must not count as a negative.

    >>> pos = torch.tensor([[7], [7], [9]])  # queries 0 and 1 share the positive text 7
    >>> cols = torch.tensor([7, 7, 9, 5])
    >>> false_negative_mask(pos, cols, torch.tensor([0, 1, 2])).int().tolist()
    [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    """
    return _except_own(_relevant_columns(positive_hashes, column_hashes), labels)


def _relevant_columns(positive_hashes: torch.Tensor, column_hashes: torch.Tensor) -> torch.Tensor:
    """``(B, N)`` True where column ``c`` holds one of query ``i``'s positives."""
    return (column_hashes[None, :, None] == positive_hashes[:, None, :]).any(-1)


def _except_own(relevant: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    own = torch.zeros_like(relevant)
    own[torch.arange(len(labels)), labels] = True
    return relevant & ~own


def _gather(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate ``tensor`` from every process (gradients flow back to each); returns it and this rank."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor, 0
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor), dim=0), dist.get_rank()


class InfoNCELoss(nn.Module):
    """Cross-entropy of each query over every document of the batch, its positive being the target.

    Inputs: a batch of ``B`` queries with documents ``[positives (B) | k hard negatives per query]``
    (``k`` may be 0: in-batch negatives only). Every other query's positive and negatives are
    negatives too. Columns holding a text that is also relevant to the query (the same positive
    appearing twice in a batch, or a hard negative that is in fact one of its positives) are masked.

    Args:
        model: the :class:`BiEncoderModel`.
        temperature: scores are divided by it (0.05 = sentence-transformers' scale 20).
        learnable_temperature: learn it (as a log-scale parameter, clamped to ``[0.01, 1]``).
        symmetric: add the document-to-query term (each positive against every query).
        mask_false_negatives: mask the columns described above.
        marginal: synonym marginalisation (BioSyn, Sung et al. 2020): the probability of a query is
            the sum of its softmax over *every* column holding one of its positives (the batch's
            further positives, from ``positives_per_query``, and other queries' columns alike),
            ``-log sum_{c relevant} p(c)``; a column repeating an earlier one's text is left out,
            so each text counts once. Replaces the masking of those columns.
        gather_across_devices: under DDP, score against the documents of every process.
    """

    def __init__(
        self,
        model: BiEncoderModel,
        *,
        temperature: float = 0.05,
        learnable_temperature: bool = False,
        symmetric: bool = False,
        mask_false_negatives: bool = True,
        gather_across_devices: bool = False,
        marginal: bool = False,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        self.model = model
        self.marginal = marginal
        self.symmetric = symmetric
        self.mask_false_negatives = mask_false_negatives
        self.gather_across_devices = gather_across_devices
        log_scale = torch.tensor(math.log(1.0 / temperature))
        if learnable_temperature:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    @property
    def temperature(self) -> float:
        return float(1.0 / self._scale().detach())

    def _scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(1.0, 100.0)

    def _cross_entropy(self, scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        scores = scores * self._scale()
        if mask is not None:
            scores = scores.masked_fill(mask, torch.finfo(scores.dtype).min)
        return F.cross_entropy(scores, labels)

    def _marginal_cross_entropy(
        self, scores: torch.Tensor, labels: torch.Tensor, positive_hashes: torch.Tensor, hashes: torch.Tensor
    ) -> torch.Tensor:
        """``-log`` of each query's softmax mass on the columns relevant to it, averaged."""
        scores = scores * self._scale()
        earlier = torch.ones(len(hashes), len(hashes), dtype=torch.bool, device=hashes.device).tril(-1)
        repeated = ((hashes[:, None] == hashes[None, :]) & earlier).any(-1)  # an earlier column holds the text
        relevant = _relevant_columns(positive_hashes, hashes)
        relevant[torch.arange(len(labels)), labels] = True
        lowest = torch.finfo(scores.dtype).min
        kept = scores.masked_fill(repeated[None, :], lowest)
        return (kept.logsumexp(-1) - kept.masked_fill(~relevant, lowest).logsumexp(-1)).mean()

    def forward(self, batch: TrainingBatch) -> torch.Tensor:
        return self.loss_from_embeddings(self.model.encode_queries(batch), self.model.encode_documents(batch), batch)

    def loss_from_embeddings(
        self, queries: torch.Tensor, documents: torch.Tensor, batch: TrainingBatch
    ) -> torch.Tensor:
        """The loss given the batch's query and document embeddings (in the batch's layout)."""
        hashes, positive_hashes = batch.document_hashes, batch.positive_hashes
        size, local_docs, rank = batch.size, documents.shape[0], 0
        all_documents, all_queries = documents, queries
        if self.gather_across_devices:
            all_documents, rank = _gather(documents)
            all_queries, _ = _gather(queries)
            hashes, _ = _gather(hashes)
            all_positive_hashes, _ = _gather(positive_hashes)
        else:
            all_positive_hashes = positive_hashes
        similarity = self.model.similarity
        labels = rank * local_docs + torch.arange(size, device=queries.device)
        scores = similarity_matrix(queries, all_documents, similarity)
        if self.marginal:
            loss = self._marginal_cross_entropy(scores, labels, positive_hashes, hashes)
        else:
            mask = false_negative_mask(positive_hashes, hashes, labels) if self.mask_false_negatives else None
            loss = self._cross_entropy(scores, labels, mask)
        if not self.symmetric:
            return loss
        # each positive document against every query of the batch (and of every device)
        query_labels = rank * size + torch.arange(size, device=queries.device)
        reverse_mask = None
        if self.mask_false_negatives:
            own_hashes = batch.document_hashes[:size]
            reverse_mask = _rows_relevant_to(own_hashes, all_positive_hashes, query_labels)
        reverse = self._cross_entropy(
            similarity_matrix(documents[:size], all_queries, similarity), query_labels, reverse_mask
        )
        return (loss + reverse) / 2


class CachedInfoNCELoss(InfoNCELoss):
    """:class:`InfoNCELoss` with GradCache (Gao et al., 2021): the same loss and gradients, with memory
    bounded by ``mini_batch_size`` texts instead of the whole batch, so large batches (many in-batch
    negatives) fit in small memory.

    Embeddings are first computed without a graph, chunk by chunk; the loss and its gradient with
    respect to the embeddings are computed once; when the trainer calls ``backward``, each chunk is
    encoded again with a graph (with the random state it first had, so dropout is replayed) and
    the cached gradient is pushed through it. Not combinable with ``gather_across_devices``.
    """

    def __init__(self, model: BiEncoderModel, *, mini_batch_size: int = 16, **options) -> None:
        super().__init__(model, **options)
        if mini_batch_size < 1:
            raise ConfigError(f"mini_batch_size must be at least 1, got {mini_batch_size}")
        if self.gather_across_devices:
            raise ConfigError("the cached loss does not gather across devices; use the plain infonce loss")
        self.mini_batch_size = mini_batch_size

    def _chunks(
        self, ids: torch.Tensor, mask: torch.Tensor, kept: torch.Tensor | None
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        step = self.mini_batch_size
        return [
            (ids[i : i + step], mask[i : i + step], None if kept is None else kept[i : i + step])
            for i in range(0, ids.shape[0], step)
        ]

    def _embed_without_graph(self, side: str, chunks) -> tuple[torch.Tensor, list[dict]]:
        states, outputs = [], []
        with torch.no_grad():
            for ids, mask, kept in chunks:
                states.append(_random_state())
                outputs.append(self.model.encode(side, ids, mask, kept))
        return torch.cat(outputs), states

    def forward(self, batch: TrainingBatch) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return super().forward(batch)
        towers = ("queries", "documents")
        chunks = (
            self._chunks(batch.query_input_ids, batch.query_attention_mask, batch.query_output_mask),
            self._chunks(batch.document_input_ids, batch.document_attention_mask, batch.document_output_mask),
        )
        embedded = [self._embed_without_graph(t, c) for t, c in zip(towers, chunks, strict=True)]
        leaves = [e.detach().requires_grad_() for e, _ in embedded]
        loss = self.loss_from_embeddings(leaves[0], leaves[1], batch)
        own_parameters = [p for p in self.parameters(recurse=False) if p.requires_grad]  # a learnable temperature
        gradients = torch.autograd.grad(loss, [*leaves, *own_parameters])
        result = loss.detach().requires_grad_()

        def replay(grad_output: torch.Tensor) -> None:
            for parameter, gradient in zip(own_parameters, gradients[2:], strict=True):
                parameter.grad = (
                    gradient * grad_output if parameter.grad is None else parameter.grad + gradient * grad_output
                )
            for tower, tower_chunks, (_, states), gradient in zip(towers, chunks, embedded, gradients[:2], strict=True):
                offset = 0
                for (ids, mask, kept), state in zip(tower_chunks, states, strict=True):
                    with torch.random.fork_rng(devices=state["devices"]), torch.enable_grad():
                        _set_random_state(state)
                        output = self.model.encode(tower, ids, mask, kept)
                    piece = gradient[offset : offset + output.shape[0]]
                    offset += output.shape[0]
                    torch.autograd.backward(output, piece * grad_output)

        result.register_hook(replay)
        return result


def _random_state() -> dict:
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    return {
        "cpu": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(d) for d in devices],
        "devices": devices,
    }


def _set_random_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    for device, cuda_state in zip(state["devices"], state["cuda"], strict=True):
        torch.cuda.set_rng_state(cuda_state, device)


def _rows_relevant_to(
    document_hashes: torch.Tensor, query_positive_hashes: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """``(B, Q)`` True where document ``i`` is also a positive of query ``j`` (other than its own query)."""
    return _except_own((document_hashes[:, None, None] == query_positive_hashes[None, :, :]).any(-1), labels)


def _student_and_teacher(model: nn.Module, batch: Any, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, 1 + k)`` student scores of each query's own candidates, and the teacher's."""
    if batch.teacher_scores is None:
        raise ConfigError(
            f"the {loss} loss needs teacher scores: give 'pos_scores' and 'neg_scores' in every training row"
        )
    student = _candidates(model, batch, loss)
    return student, batch.teacher_scores


def _candidates(model: nn.Module, batch: Any, loss: str) -> torch.Tensor:
    """The model's ``(B, 1 + k)`` candidate scores, at least one negative per query."""
    if getattr(batch, "group_size", 1 + getattr(batch, "num_negatives", 0)) < 2:
        raise ConfigError(f"the {loss} loss needs at least one negative per query (num_negatives >= 1)")
    scores: torch.Tensor = model.candidate_scores(batch)  # type: ignore[operator]
    return scores


class GroupSoftmaxLoss(nn.Module):
    """Cross-entropy of each query's group ``[positive, k negatives]`` with the positive as target,
    ``softmax(scores / temperature)`` (FlagEmbedding's reranker loss over ``train_group_size`` pairs).

    >>> class Fixed(nn.Module):
    ...     def candidate_scores(self, batch): return torch.tensor([[2.0, 0.0, 0.0]])
    >>> round(GroupSoftmaxLoss(Fixed())(type("Batch", (), {"group_size": 3})()).item(), 4)
    0.2395
    """

    def __init__(self, model: nn.Module, *, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        self.model, self.temperature = model, temperature

    def forward(self, batch: Any) -> torch.Tensor:
        scores = _candidates(self.model, batch, "group softmax") / self.temperature
        return F.cross_entropy(scores, torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device))


class BinaryCrossEntropyLoss(nn.Module):
    """Binary cross-entropy on each pair's logit: 1 for the positive, 0 for each negative;
    ``pos_weight`` (default: the number of negatives per positive) balances the two, as
    sentence-transformers' ``BinaryCrossEntropyLoss`` lets one.

    >>> class Fixed(nn.Module):
    ...     def candidate_scores(self, batch): return torch.tensor([[0.0, 0.0]])
    >>> round(BinaryCrossEntropyLoss(Fixed())(type("Batch", (), {"group_size": 2})()).item(), 4)
    0.6931
    """

    def __init__(self, model: nn.Module, *, pos_weight: float | None = None) -> None:
        super().__init__()
        self.model, self.pos_weight = model, pos_weight

    def forward(self, batch: Any) -> torch.Tensor:
        scores = _candidates(self.model, batch, "binary cross-entropy")
        labels = torch.zeros_like(scores)
        labels[:, 0] = 1.0
        weight = self.pos_weight if self.pos_weight is not None else float(scores.shape[1] - 1)
        return F.binary_cross_entropy_with_logits(
            scores, labels, pos_weight=torch.tensor(weight, device=scores.device, dtype=scores.dtype)
        )


class MarginMSELoss(nn.Module):
    """Mean squared error between the student's and the teacher's margins ``s(q, p) - s(q, n)``
    (Hofstätter et al.), over each query's own positive and ``k`` negatives.

    Inputs: a batch with ``teacher_scores`` ``(B, 1 + k)`` (positive first) and ``k >= 1``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> torch.Tensor:
        student, teacher = _student_and_teacher(self.model, batch, "MarginMSE")
        return F.mse_loss(student[:, :1] - student[:, 1:], teacher[:, :1] - teacher[:, 1:])


class KLDivergenceLoss(nn.Module):
    """KL divergence from the teacher's distribution over each query's ``1 + k`` candidates to the
    student's (FlagEmbedding's distillation), ``softmax(scores / temperature)`` on both sides.

    Inputs: a batch with ``teacher_scores`` ``(B, 1 + k)`` and ``k >= 1``.
    """

    def __init__(self, model: nn.Module, *, temperature: float = 0.05, teacher_temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0 or teacher_temperature <= 0:
            raise ConfigError("temperatures must be positive")
        self.model = model
        self.temperature = temperature
        self.teacher_temperature = teacher_temperature

    def forward(self, batch: Any) -> torch.Tensor:
        student, teacher = _student_and_teacher(self.model, batch, "KL divergence")
        log_student = F.log_softmax(student / self.temperature, dim=-1)
        log_teacher = F.log_softmax(teacher / self.teacher_temperature, dim=-1)
        return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")


LOSSES = ("infonce", "cached_infonce", "margin_mse", "kl", "group_softmax", "bce")
# the losses of each kind of model: a bi-encoder's (in-batch negatives) or a cross-encoder's (its groups)
BI_ENCODER_LOSSES = ("infonce", "cached_infonce", "margin_mse", "kl")
CROSS_ENCODER_LOSSES = ("group_softmax", "bce", "margin_mse", "kl")


def make_loss(name: str, model: nn.Module, **options) -> nn.Module:
    """Build a loss by name (one of :data:`LOSSES`) with its own options; a cross-encoder takes
    ``group_softmax``, ``bce``, ``margin_mse`` or ``kl``, a bi-encoder the others."""
    cross = not isinstance(model, BiEncoderModel)
    allowed = CROSS_ENCODER_LOSSES if cross else BI_ENCODER_LOSSES
    if name in LOSSES and name not in allowed:
        kind = "a cross-encoder (reranker)" if cross else "a bi-encoder"
        raise ConfigError(f"the {name} loss does not train {kind}; choose one of {', '.join(allowed)}")
    if name == "group_softmax":
        return GroupSoftmaxLoss(model, temperature=options.get("temperature", 1.0))
    if name == "bce":
        return BinaryCrossEntropyLoss(model)
    infonce_options = {k: v for k, v in options.items() if k not in ("teacher_temperature", "mini_batch_size")}
    if name == "infonce" and isinstance(model, BiEncoderModel):
        return InfoNCELoss(model, **infonce_options)
    if name == "cached_infonce" and isinstance(model, BiEncoderModel):
        return CachedInfoNCELoss(model, mini_batch_size=options.get("mini_batch_size", 16), **infonce_options)
    if name == "margin_mse":
        return MarginMSELoss(model)
    if name == "kl":
        return KLDivergenceLoss(
            model, **{k: v for k, v in options.items() if k in ("temperature", "teacher_temperature")}
        )
    raise ConfigError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
