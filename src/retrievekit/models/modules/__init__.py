"""Building blocks of a tower: a transformer backbone, pooling, dense projections, normalisation."""

from retrievekit.models.modules.pooling import POOLING_MODES, PoolingMode, pool
from retrievekit.models.modules.projection import ACTIVATIONS, Projection

__all__ = ["ACTIVATIONS", "POOLING_MODES", "PoolingMode", "Projection", "pool"]
