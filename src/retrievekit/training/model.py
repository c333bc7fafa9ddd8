"""The trainable view of a dense encoder: its towers as one ``nn.Module`` and its score function."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from retrievekit.models.dense import DenseEncoder
from retrievekit.training.batches import TrainingBatch

__all__ = ["BiEncoderModel", "similarity_matrix"]


def similarity_matrix(queries: torch.Tensor, documents: torch.Tensor, similarity: str) -> torch.Tensor:
    """``(Q, D)`` scores: inner products, of unit vectors when ``similarity == "cosine"``.

    >>> q = torch.tensor([[3.0, 4.0]]); d = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    >>> similarity_matrix(q, d, "dot").tolist(), similarity_matrix(q, d, "cosine").tolist()
    ([[3.0, 8.0]], [[0.6000000238418579, 0.800000011920929]])
    """
    if similarity == "cosine":
        queries, documents = F.normalize(queries, dim=-1), F.normalize(documents, dim=-1)
    return queries @ documents.T


def candidate_scores(
    queries: torch.Tensor, documents: torch.Tensor, num_negatives: int, similarity: str
) -> torch.Tensor:
    """``(B, 1 + k)`` scores of each query against its own positive then its own ``k`` negatives,
    for documents laid out as in :class:`~retrievekit.training.batches.TrainingBatch`."""
    size = queries.shape[0]
    if similarity == "cosine":
        queries, documents = F.normalize(queries, dim=-1), F.normalize(documents, dim=-1)
    positives = (queries * documents[:size]).sum(-1, keepdim=True)
    if not num_negatives:
        return positives
    negatives = documents[size:].view(size, num_negatives, -1)
    return torch.cat([positives, torch.einsum("bd,bkd->bk", queries, negatives)], dim=1)


class BiEncoderModel(nn.Module):
    """The query and document towers of a :class:`DenseEncoder` (one module when shared)."""

    def __init__(self, encoder: DenseEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.query_tower = encoder.query_tower
        self.document_tower = encoder.document_tower  # the same module when shared: parameters() lists it once
        self.similarity = encoder.similarity
        for tower in (self.query_tower, self.document_tower):
            pooler = getattr(tower.backbone, "pooler", None)  # BERT's pooler: never used by our pooling
            if isinstance(pooler, nn.Module):
                pooler.requires_grad_(False)  # DDP would otherwise wait for its gradients

    def encode_queries(self, batch: TrainingBatch) -> torch.Tensor:
        return self.query_tower(batch.query_input_ids, batch.query_attention_mask)

    def encode_documents(self, batch: TrainingBatch) -> torch.Tensor:
        return self.document_tower(batch.document_input_ids, batch.document_attention_mask)

    def export(self, device: torch.device | str = "cpu") -> DenseEncoder:
        """A :class:`DenseEncoder` over the current weights (a fresh fingerprint: caches keyed on the
        starting model do not apply), running on ``device``."""
        source = self.encoder
        encoder = DenseEncoder(
            source.spec, self.query_tower, self.document_tower, runners={}, name=source.name, source=source.source
        )
        return encoder.with_devices([torch.device(device)])

    def gradient_checkpointing_enable(self) -> None:
        for tower in {id(t): t for t in (self.query_tower, self.document_tower)}.values():
            backbone = tower.backbone  # transformers 5 renamed the method; 4.x has only the old name
            if hasattr(backbone, "activation_checkpointing_enable"):
                backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
