"""Past one machine: encoding on Ray Data (:func:`encode_with_ray`). The vector-database index
backends (LanceDB, Milvus) are index types in :mod:`retrievekit.index`."""

from retrievekit.scale.ray_encoding import ModelRecipe, RayEncoding, RaySettings, encode_with_ray

__all__ = ["ModelRecipe", "RayEncoding", "RaySettings", "encode_with_ray"]
