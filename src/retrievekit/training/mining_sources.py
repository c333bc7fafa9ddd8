"""What ``mine-negatives`` mines from: the examples, the corpus and a retriever over it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retrievekit.artifacts import scratch_directory
from retrievekit.data.beir import collection_file, load_dataset
from retrievekit.data.readers import read_corpus
from retrievekit.data.records import Corpus
from retrievekit.errors import ConfigError
from retrievekit.models.dense import DenseEncoder
from retrievekit.retrieval.retriever import Bm25Retriever, DenseRetriever, Retriever
from retrievekit.training.data import TrainingExample, load_training_source

__all__ = ["dense_corpus_retriever", "mining_inputs"]


def dense_corpus_retriever(
    encoder: DenseEncoder, corpus_path: Path, *, cache_root: Path | None = None, batch_size: int = 32
) -> tuple[DenseRetriever, bool]:
    """An exact-search retriever over a corpus file, its vectors from evaluation's cache
    (``cache_root``, default ``~/.cache/retrievekit/evaluation``) or encoded into it. Returns the
    retriever and whether the vectors came from the cache."""
    from retrievekit.evaluation.systems import corpus_embeddings
    from retrievekit.index.build import default_metric, fill_index
    from retrievekit.index.exact import ExactIndex
    from retrievekit.resolve import cache_dir

    index = ExactIndex(encoder.dimension, default_metric(encoder), model_fingerprint=encoder.fingerprint)
    with scratch_directory("mine") as scratch:
        vectors, _, cached = corpus_embeddings(
            encoder, corpus_path, cache_root=cache_root or cache_dir() / "evaluation", scratch=scratch,
            batch_size=batch_size,
        )  # fmt: skip
        fill_index(index, vectors.ids, vectors.vectors)
    return DenseRetriever(encoder, index, batch_size=batch_size), cached


def mining_inputs(
    data: str, corpus: str | None, encoder: Any, *, batch_size: int = 32
) -> tuple[list[TrainingExample], Corpus, Retriever]:
    """Load the examples (a file or ``DATASET[:SPLIT]``) and the corpus (``corpus`` or the
    dataset's), and build a retriever over it: dense with a dense ``encoder``, exact MaxSim with a
    ColBERT one, BM25 when it is None."""
    _, examples = load_training_source(data)
    if corpus is not None:
        corpus_path = collection_file(corpus, "documents")
    elif Path(data).is_file():
        raise ConfigError("mining from a training file needs --corpus (the documents to draw negatives from)")
    else:
        corpus_path = load_dataset(data.rpartition(":")[0] if ":" in data else data).corpus_path
    documents = read_corpus(corpus_path)
    if encoder is not None and getattr(encoder, "family", "dense") == "multivector":
        from retrievekit.index.build import build_index
        from retrievekit.retrieval.retriever import MultiVectorRetriever

        index = build_index(corpus_path, "multivector-flat", encoder=encoder, batch_size=batch_size)
        return examples, documents, MultiVectorRetriever(encoder, index, batch_size=batch_size)  # type: ignore[arg-type]
    if encoder is not None:
        return examples, documents, dense_corpus_retriever(encoder, corpus_path, batch_size=batch_size)[0]
    from retrievekit.index.bm25 import Bm25Index

    index = Bm25Index()
    index.add(documents.ids, documents.texts())
    return examples, documents, Bm25Retriever(index)
