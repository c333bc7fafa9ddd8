"""Model families on one encoder engine: a backbone, a head per family (dense now; per-token,
sparse and pair-score heads are in :mod:`retrievekit.models.heads`), and loading by manifest kind."""

from retrievekit.models.dense import DenseEncoder, EncodedFile, EncodeOptions
from retrievekit.models.encoding import EncodeStats
from retrievekit.models.loading import load_encoder
from retrievekit.models.registry import Model, ModelKind, load_model, model_kinds, register_model_kind
from retrievekit.models.spec import EncoderSpec, TowerSpec

__all__ = [
    "DenseEncoder",
    "EncodeOptions",
    "EncodeStats",
    "EncodedFile",
    "EncoderSpec",
    "Model",
    "ModelKind",
    "TowerSpec",
    "load_encoder",
    "load_model",
    "model_kinds",
    "register_model_kind",
]
