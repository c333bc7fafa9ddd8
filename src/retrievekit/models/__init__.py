"""Model families. Dense bi-encoders now; multi-vector, sparse and cross-encoders later."""

from retrievekit.models.dense import DenseEncoder, EncodedFile, EncodeOptions
from retrievekit.models.encoding import EncodeStats
from retrievekit.models.loading import load_encoder
from retrievekit.models.spec import EncoderSpec, TowerSpec

__all__ = ["DenseEncoder", "EncodeOptions", "EncodeStats", "EncodedFile", "EncoderSpec", "TowerSpec", "load_encoder"]
