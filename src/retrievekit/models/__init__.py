"""Model families on one encoder engine: a backbone, a head per family (dense, ColBERT's per-token
vectors, SPLADE's vocabulary weights, BGE-M3's three outputs; the pair-score head is in
:mod:`retrievekit.models.heads`),
and loading by manifest kind."""

from retrievekit.models.colbert import ColbertEncoder, build_colbert, load_colbert
from retrievekit.models.colbert_format import ColbertConfig
from retrievekit.models.cross_encoder import CrossEncoder, load_cross_encoder, load_reranker
from retrievekit.models.dense import DenseEncoder, EncodedFile, EncodeOptions
from retrievekit.models.encoding import EncodeStats
from retrievekit.models.llm_reranker import LLMReranker, load_llm_reranker
from retrievekit.models.loading import load_encoder
from retrievekit.models.m3 import M3Encoder, M3Output, load_m3
from retrievekit.models.m3_format import M3Config
from retrievekit.models.registry import Model, ModelKind, load_model, model_kinds, register_model_kind
from retrievekit.models.sparse import SparseEncoder, load_sparse_encoder
from retrievekit.models.sparse_format import SparseConfig
from retrievekit.models.spec import EncoderSpec, TowerSpec

__all__ = [
    "ColbertConfig",
    "ColbertEncoder",
    "CrossEncoder",
    "DenseEncoder",
    "EncodeOptions",
    "EncodeStats",
    "EncodedFile",
    "EncoderSpec",
    "LLMReranker",
    "M3Config",
    "M3Encoder",
    "M3Output",
    "Model",
    "ModelKind",
    "SparseConfig",
    "SparseEncoder",
    "TowerSpec",
    "build_colbert",
    "load_colbert",
    "load_cross_encoder",
    "load_encoder",
    "load_llm_reranker",
    "load_m3",
    "load_model",
    "load_reranker",
    "load_sparse_encoder",
    "model_kinds",
    "register_model_kind",
]
