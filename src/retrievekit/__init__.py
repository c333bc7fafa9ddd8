"""retrievekit: train, encode, index, search, rerank and evaluate text-embedding retrieval models."""

from retrievekit._version import __version__
from retrievekit.artifacts import Manifest, atomic_directory, read_manifest, write_manifest
from retrievekit.data import (
    BeirDataset,
    Corpus,
    Document,
    Qrels,
    Queries,
    Query,
    RetrievalSplit,
    Run,
    ScoredDocument,
    load_dataset,
    read_qrels,
    read_trec_run,
    write_trec_run,
)
from retrievekit.errors import (
    ArtifactError,
    ConfigError,
    DataFormatError,
    DatasetNotFoundError,
    MissingExtraError,
    ModelNotFoundError,
    RetrievekitError,
)
from retrievekit.models import DenseEncoder, EncodedFile, EncoderSpec, EncodeStats, TowerSpec, load_encoder
from retrievekit.quantization import Int8Calibration, quantize
from retrievekit.resolve import resolve_dataset, resolve_model

__all__ = [
    "ArtifactError",
    "BeirDataset",
    "ConfigError",
    "Corpus",
    "DataFormatError",
    "DatasetNotFoundError",
    "DenseEncoder",
    "Document",
    "EncodeStats",
    "EncodedFile",
    "EncoderSpec",
    "Int8Calibration",
    "Manifest",
    "MissingExtraError",
    "ModelNotFoundError",
    "Qrels",
    "Queries",
    "Query",
    "RetrievalSplit",
    "RetrievekitError",
    "Run",
    "ScoredDocument",
    "TowerSpec",
    "__version__",
    "atomic_directory",
    "load_dataset",
    "load_encoder",
    "quantize",
    "read_manifest",
    "read_qrels",
    "read_trec_run",
    "resolve_dataset",
    "resolve_model",
    "write_manifest",
    "write_trec_run",
]
