"""Losses: standalone modules that take the model and a :class:`TrainingBatch` and return a scalar.

* :class:`InfoNCELoss` — multiple-negatives ranking over in-batch and hard negatives (BET,
  sentence-transformers' ``MultipleNegativesRankingLoss``, FlagEmbedding), fixed or learnable
  temperature, masking of false in-batch negatives, optional symmetric term, optional gathering
  of documents from every device.
* :class:`MarginMSELoss` and :class:`KLDivergenceLoss` — distillation from teacher scores
  (``pos_scores`` / ``neg_scores`` of the training rows).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from retrievekit.errors import ConfigError
from retrievekit.training.batches import TrainingBatch
from retrievekit.training.model import BiEncoderModel, candidate_scores, similarity_matrix

__all__ = ["LOSSES", "InfoNCELoss", "KLDivergenceLoss", "MarginMSELoss", "false_negative_mask", "make_loss"]


def false_negative_mask(positive_hashes: torch.Tensor, column_hashes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(B, N)`` True where column ``c`` holds a text relevant to query ``i`` that is not its own
    positive column ``labels[i]``: such a column must not count as a negative.

    >>> pos = torch.tensor([[7], [7], [9]])  # queries 0 and 1 share the positive text 7
    >>> cols = torch.tensor([7, 7, 9, 5])
    >>> false_negative_mask(pos, cols, torch.tensor([0, 1, 2])).int().tolist()
    [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    """
    return _except_own((column_hashes[None, :, None] == positive_hashes[:, None, :]).any(-1), labels)


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
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        self.model = model
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

    def forward(self, batch: TrainingBatch) -> torch.Tensor:
        queries = self.model.encode_queries(batch)
        documents = self.model.encode_documents(batch)
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
        mask = false_negative_mask(positive_hashes, hashes, labels) if self.mask_false_negatives else None
        loss = self._cross_entropy(similarity_matrix(queries, all_documents, similarity), labels, mask)
        if not self.symmetric:
            return loss
        # each positive document against every query of the batch (and of every device)
        query_labels = rank * size + torch.arange(size, device=queries.device)
        reverse_mask = None
        if self.mask_false_negatives:
            own_hashes = batch.document_hashes[:size]
            reverse_mask = _rows_relevant_to(own_hashes, all_positive_hashes, query_labels)
        reverse = self._cross_entropy(similarity_matrix(documents[:size], all_queries, similarity), query_labels, reverse_mask)
        return (loss + reverse) / 2


def _rows_relevant_to(document_hashes: torch.Tensor, query_positive_hashes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(B, Q)`` True where document ``i`` is also a positive of query ``j`` (other than its own query)."""
    return _except_own((document_hashes[:, None, None] == query_positive_hashes[None, :, :]).any(-1), labels)


def _teacher_scores(batch: TrainingBatch, loss: str) -> torch.Tensor:
    if batch.teacher_scores is None:
        raise ConfigError(
            f"the {loss} loss needs teacher scores: give 'pos_scores' and 'neg_scores' in every training row"
        )
    if batch.num_negatives < 1:
        raise ConfigError(f"the {loss} loss needs at least one negative per query (num_negatives >= 1)")
    return batch.teacher_scores


class MarginMSELoss(nn.Module):
    """Mean squared error between the student's and the teacher's margins ``s(q, p) - s(q, n)``
    (Hofstätter et al.), over each query's own positive and ``k`` negatives.

    Inputs: a batch with ``teacher_scores`` ``(B, 1 + k)`` (positive first) and ``k >= 1``.
    """

    def __init__(self, model: BiEncoderModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: TrainingBatch) -> torch.Tensor:
        teacher = _teacher_scores(batch, "MarginMSE")
        student = candidate_scores(
            self.model.encode_queries(batch), self.model.encode_documents(batch), batch.num_negatives,
            self.model.similarity,
        )  # fmt: skip
        return F.mse_loss(student[:, :1] - student[:, 1:], teacher[:, :1] - teacher[:, 1:])


class KLDivergenceLoss(nn.Module):
    """KL divergence from the teacher's distribution over each query's ``1 + k`` candidates to the
    student's (FlagEmbedding's distillation), ``softmax(scores / temperature)`` on both sides.

    Inputs: a batch with ``teacher_scores`` ``(B, 1 + k)`` and ``k >= 1``.
    """

    def __init__(self, model: BiEncoderModel, *, temperature: float = 0.05, teacher_temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0 or teacher_temperature <= 0:
            raise ConfigError("temperatures must be positive")
        self.model = model
        self.temperature = temperature
        self.teacher_temperature = teacher_temperature

    def forward(self, batch: TrainingBatch) -> torch.Tensor:
        teacher = _teacher_scores(batch, "KL divergence")
        student = candidate_scores(
            self.model.encode_queries(batch), self.model.encode_documents(batch), batch.num_negatives,
            self.model.similarity,
        )  # fmt: skip
        log_student = F.log_softmax(student / self.temperature, dim=-1)
        log_teacher = F.log_softmax(teacher / self.teacher_temperature, dim=-1)
        return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")


LOSSES = ("infonce", "margin_mse", "kl")


def make_loss(name: str, model: BiEncoderModel, **options) -> nn.Module:
    """Build a loss by name (``infonce``, ``margin_mse``, ``kl``) with its own options."""
    if name == "infonce":
        return InfoNCELoss(model, **options)
    if name == "margin_mse":
        return MarginMSELoss(model)
    if name == "kl":
        return KLDivergenceLoss(model, **{k: v for k, v in options.items() if k in ("temperature", "teacher_temperature")})
    raise ConfigError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
