"""The trainable view of a dense encoder: its towers as one ``nn.Module`` and its score function."""

from __future__ import annotations

import torch
from torch import nn

from retrievekit.models.dense import DenseEncoder
from retrievekit.scoring import pairwise_scores, similarity_matrix
from retrievekit.training.batches import TrainingBatch

__all__ = ["BiEncoderModel", "candidate_scores", "similarity_matrix"]


def candidate_scores(
    queries: torch.Tensor, documents: torch.Tensor, num_negatives: int, similarity: str
) -> torch.Tensor:
    """``(B, 1 + k)`` scores of each query against its own positive then its own ``k`` negatives,
    for documents laid out as in :class:`~retrievekit.training.batches.TrainingBatch`.

    >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]]); d = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [5.0, 4.0]])
    >>> candidate_scores(q, d, 1, "dot").tolist()
    [[2.0, 1.0], [3.0, 4.0]]
    """
    size = queries.shape[0]
    positives = pairwise_scores(queries, documents[:size], similarity)[:, None]
    if not num_negatives:
        return positives
    negatives = documents[size:].view(size, num_negatives, -1)
    repeated = queries[:, None, :].expand_as(negatives)
    scores = pairwise_scores(
        repeated.reshape(-1, queries.shape[1]), negatives.reshape(-1, queries.shape[1]), similarity
    )
    return torch.cat([positives, scores.view(size, num_negatives)], dim=1)


class BiEncoderModel(nn.Module):
    """The query and document towers of a :class:`DenseEncoder` (one module when shared)."""

    def __init__(self, encoder: DenseEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.query_tower = encoder.query_tower
        self.document_tower = encoder.document_tower  # the same module when shared: parameters() lists it once
        self.similarity = encoder.similarity_fn_name
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
