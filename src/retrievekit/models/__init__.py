"""Model families on one encoder engine: a backbone, a head per family (dense, ColBERT's per-token
vectors; sparse and pair-score heads are in :mod:`retrievekit.models.heads`), and loading by
manifest kind."""

from retrievekit.models.colbert import ColbertEncoder, build_colbert, load_colbert
from retrievekit.models.colbert_format import ColbertConfig
from retrievekit.models.dense import DenseEncoder, EncodedFile, EncodeOptions
from retrievekit.models.encoding import EncodeStats
from retrievekit.models.loading import load_encoder
from retrievekit.models.registry import Model, ModelKind, load_model, model_kinds, register_model_kind
from retrievekit.models.spec import EncoderSpec, TowerSpec

__all__ = [
    "ColbertConfig",
    "ColbertEncoder",
    "DenseEncoder",
    "EncodeOptions",
    "EncodeStats",
    "EncodedFile",
    "EncoderSpec",
    "Model",
    "ModelKind",
    "TowerSpec",
    "build_colbert",
    "load_colbert",
    "load_encoder",
    "load_model",
    "model_kinds",
    "register_model_kind",
]
