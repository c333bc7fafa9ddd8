"""The trainable view of a model: a bi-encoder's towers (dense, ColBERT or SPLADE) or a
cross-encoder's one tower, as one ``nn.Module``, and the scores of each query's candidates
(:meth:`candidate_scores`: ``(B, 1 + k)``, positive first), which the losses read."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from retrievekit.errors import ConfigError
from retrievekit.models.dense import DenseEncoder
from retrievekit.scoring import pairwise_scores, similarity_matrix
from retrievekit.training.batches import TrainingBatch

__all__ = ["BiEncoderModel", "CrossEncoderModel", "candidate_scores", "similarity_matrix"]


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
    # each query repeated once per negative (its token vectors too, for per-token scores)
    negatives = documents[size : size * (1 + num_negatives)]  # further positives, if any, come after
    repeated = queries.repeat_interleave(num_negatives, dim=0)
    scores = pairwise_scores(repeated, negatives, similarity)
    return torch.cat([positives, scores.view(size, num_negatives)], dim=1)


class BiEncoderModel(nn.Module):
    """The query and document towers of a :class:`DenseEncoder` or a ColBERT encoder (one module when
    shared), with the encoder's score function (``similarity``: dot, cosine, l2 or maxsim)."""

    def __init__(self, encoder: Any) -> None:
        super().__init__()
        self.encoder = encoder
        self.query_tower = encoder.query_tower
        self.document_tower = encoder.document_tower  # the same module when shared: parameters() lists it once
        self.similarity = encoder.similarity_fn_name
        # a regulariser on the embeddings themselves (SPLADE's FLOPS) reads the last ones encoded
        self.keep_outputs = False
        self.last_outputs: dict[str, torch.Tensor] = {}
        for tower in (self.query_tower, self.document_tower):
            pooler = getattr(tower.backbone, "pooler", None)  # BERT's pooler: never used by our pooling
            if isinstance(pooler, nn.Module):
                pooler.requires_grad_(False)  # DDP would otherwise wait for its gradients

    def encode(
        self, side: str, input_ids: torch.Tensor, attention_mask: torch.Tensor, output_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One side's embeddings: ``(n, d)`` vectors, or ``(n, L, d)`` token vectors whose dropped
        tokens (``output_mask`` 0: padding, ColBERT's punctuation) are zero, which is how MaxSim
        (:func:`~retrievekit.scoring.token_mask`) tells them apart."""
        tower = self.query_tower if side == "queries" else self.document_tower
        output: torch.Tensor = tower(input_ids, attention_mask)
        if output_mask is not None:
            output = output * output_mask[..., None].to(output.dtype)
        if self.keep_outputs:
            self.last_outputs[side] = output
        return output

    def encode_queries(self, batch: TrainingBatch) -> torch.Tensor:
        return self.encode("queries", batch.query_input_ids, batch.query_attention_mask, batch.query_output_mask)

    def encode_documents(self, batch: TrainingBatch) -> torch.Tensor:
        return self.encode(
            "documents", batch.document_input_ids, batch.document_attention_mask, batch.document_output_mask
        )

    def candidate_scores(self, batch: TrainingBatch) -> torch.Tensor:
        """``(B, 1 + k)``: each query against its own positive, then its own ``k`` negatives."""
        return candidate_scores(
            self.encode_queries(batch), self.encode_documents(batch), batch.num_negatives, self.similarity
        )

    def export(self, device: torch.device | str = "cpu") -> Any:
        """The family's encoder over the current weights (a fresh fingerprint: caches keyed on the
        starting model do not apply), running on ``device``: a :class:`DenseEncoder`, or a
        :class:`~retrievekit.models.colbert.ColbertEncoder`."""
        source = self.encoder
        if getattr(source, "family", "dense") in ("multivector", "sparse"):
            return source.retrained(self.document_tower, device)
        encoder = DenseEncoder(
            source.spec, self.query_tower, self.document_tower, runners={}, name=source.name, source=source.source
        )
        encoder.carried = dict(source.carried)  # task settings (linking.json) travel with the trained copy
        return encoder.with_devices([torch.device(device)])

    def gradient_checkpointing_enable(self) -> None:
        for tower in {id(t): t for t in (self.query_tower, self.document_tower)}.values():
            checkpoint_activations(tower.backbone)


class CrossEncoderModel(nn.Module):
    """A cross-encoder's tower: each pair of a :class:`~retrievekit.training.pairs.PairBatch` gets one
    logit, ``(B, group_size)`` per batch (positive first), which the losses read as candidate scores."""

    def __init__(self, encoder: Any) -> None:
        super().__init__()
        if encoder.num_labels != 1:
            raise ConfigError(
                f"training a reranker needs one label (a score per pair); {encoder.name!r} has {encoder.num_labels}"
            )
        self.encoder = encoder
        self.tower = encoder.tower

    def candidate_scores(self, batch: Any) -> torch.Tensor:
        logits: torch.Tensor = self.tower(batch.input_ids, batch.attention_mask, batch.token_type_ids)
        return logits.view(-1, batch.group_size)

    def export(self, device: torch.device | str = "cpu") -> Any:
        """A :class:`~retrievekit.models.cross_encoder.CrossEncoder` over the current weights."""
        return self.encoder.retrained(self.tower, device)

    def gradient_checkpointing_enable(self) -> None:
        checkpoint_activations(self.tower.backbone)


def checkpoint_activations(backbone: Any) -> None:
    """Recompute a transformers model's activations in the backward pass (less memory, more compute);
    transformers 5 renamed the method, 4.x has only the old name."""
    if hasattr(backbone, "activation_checkpointing_enable"):
        backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
