"""What ``mine-negatives`` mines from: the examples, the corpus and a retriever over it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from retrievekit.data.beir import collection_file, load_dataset
from retrievekit.data.readers import read_corpus
from retrievekit.data.records import Corpus
from retrievekit.errors import ConfigError
from retrievekit.retrieval.retriever import Bm25Retriever, DenseRetriever, Retriever
from retrievekit.training.data import TrainingExample, load_training_source

__all__ = ["mining_inputs"]


def mining_inputs(
    data: str, corpus: str | None, retriever: str, model: str, *, batch_size: int = 32
) -> tuple[list[TrainingExample], Corpus, Retriever]:
    """Load the examples (a file or ``DATASET[:SPLIT]``), the corpus (``corpus`` or the dataset's)
    and build a dense (exact index, corpus vectors cached like evaluation's) or BM25 retriever."""
    _, examples = load_training_source(data)
    if corpus is not None:
        corpus_path = collection_file(corpus, "documents")
    elif Path(data).is_file():
        raise ConfigError("mining from a training file needs --corpus (the documents to draw negatives from)")
    else:
        corpus_path = load_dataset(data.rpartition(":")[0] if ":" in data else data).corpus_path
    documents = read_corpus(corpus_path)
    if retriever == "bm25":
        from retrievekit.index.bm25 import Bm25Index

        index = Bm25Index()
        index.add(documents.ids, documents.texts())
        return examples, documents, Bm25Retriever(index)
    if retriever != "dense":
        raise ConfigError(f"unknown retriever {retriever!r}; choose dense or bm25")
    from retrievekit.evaluation.runner import corpus_embeddings
    from retrievekit.index.exact import ExactIndex
    from retrievekit.models.loading import load_encoder
    from retrievekit.resolve import cache_dir

    encoder = load_encoder(model)
    with tempfile.TemporaryDirectory(prefix="retrievekit-mine-") as scratch:
        vectors, _, _ = corpus_embeddings(
            encoder, corpus_path, cache_root=cache_dir() / "evaluation", scratch=Path(scratch), batch_size=batch_size
        )
        index = ExactIndex(encoder.dimension, "ip" if encoder.normalizes else "cosine",
                           model_fingerprint=encoder.fingerprint)  # fmt: skip
        index.add(vectors.ids, np.array(vectors.vectors))
    return examples, documents, DenseRetriever(encoder, index, batch_size=batch_size)
