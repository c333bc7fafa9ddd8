"""Request bodies of the routes (responses are plain dicts written by orjson). Unknown fields are
ignored, as OpenAI's and Cohere's servers ignore them; ``input`` is checked by hand so that each
wrong shape gets its own message."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["EmbeddingsRequest", "EncodeRequest", "RerankRequest", "SearchRequest", "TeiRerankRequest"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class EmbeddingsRequest(_Body):
    """OpenAI's ``POST /v1/embeddings``; ``input_type`` (``document`` by default, or ``query``) is
    retrievekit's extension, as Cohere's and Voyage's APIs have it: which side of the model encodes."""

    input: Any
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None
    input_type: Literal["query", "document"] = "document"


class EncodeRequest(_Body):
    """retrievekit's ``POST /v1/encode``: any family's output for ``input`` (see the route)."""

    input: Any
    model: str | None = None
    input_type: Literal["query", "document"] = "document"


class RerankRequest(_Body):
    """Cohere's and infinity's ``POST /v1/rerank``."""

    query: str
    documents: list[str]
    model: str | None = None
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = False


class TeiRerankRequest(_Body):
    """text-embeddings-inference's ``POST /rerank``."""

    query: str
    texts: list[str]
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool | None = None
    model: str | None = None


class SearchRequest(_Body):
    """``POST /v1/search``: one ``query`` or several ``queries`` against a served index, optionally
    reranked (``rerank``: true for the server's reranker, or a reranker's name)."""

    index: str | None = None
    query: str | None = None
    queries: list[str] | None = None
    k: int = Field(default=10, ge=1, le=10_000)
    rerank: bool | str = False
    rerank_top_k: int = Field(default=100, ge=1, le=10_000)
