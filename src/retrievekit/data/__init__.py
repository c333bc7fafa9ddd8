"""Retrieval data: typed records, streaming readers and writers, BEIR folders."""

from retrievekit.data.beir import BeirDataset, QrelsCheck, RetrievalSplit, check_qrels, load_dataset
from retrievekit.data.readers import (
    iter_documents,
    iter_jsonl,
    iter_queries,
    read_corpus,
    read_qrels,
    read_queries,
    read_trec_run,
)
from retrievekit.data.records import Corpus, Document, Qrels, Queries, Query, Run, ScoredDocument
from retrievekit.data.writers import write_jsonl, write_trec_run

__all__ = [
    "BeirDataset",
    "Corpus",
    "Document",
    "Qrels",
    "QrelsCheck",
    "Queries",
    "Query",
    "RetrievalSplit",
    "Run",
    "ScoredDocument",
    "check_qrels",
    "iter_documents",
    "iter_jsonl",
    "iter_queries",
    "load_dataset",
    "read_corpus",
    "read_qrels",
    "read_queries",
    "read_trec_run",
    "write_jsonl",
    "write_trec_run",
]
