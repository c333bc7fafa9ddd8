"""The FastAPI application of ``retrievekit serve``: routes over the served models, errors in
OpenAI's shape, bearer-token auth, body limits, one log line per request and Prometheus metrics.
Importing it needs the ``serve`` extra (``retrievekit serve`` checks for it first)."""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

import numpy as np
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from retrievekit.serve.batcher import ModelWorker, QueueFull
from retrievekit.serve.metrics import ServeMetrics
from retrievekit.serve.schemas import (
    EmbeddingsRequest,
    EncodeRequest,
    RerankRequest,
    SearchRequest,
    TeiRerankRequest,
)
from retrievekit.serve.served import SIDES, ServedModels
from retrievekit.serve.settings import ServeSettings

__all__ = ["ApiError", "create_app"]

logger = logging.getLogger("retrievekit.serve")

_OPEN_PATHS = ("/health",)  # answered without the API key
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
          413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error",
          504: "timeout_error"}  # fmt: skip


class ApiError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}`` (OpenAI's shape)."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.headers = status, message, code, param, headers or {}

    def body(self) -> bytes:
        error = {"message": self.message, "type": _TYPES.get(self.status, "invalid_request_error"),
                 "param": self.param, "code": self.code}  # fmt: skip
        return orjson.dumps({"error": error})


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    headers=headers, media_type="application/json")  # fmt: skip


def create_app(served: ServedModels, settings: ServeSettings, metrics: ServeMetrics | None = None) -> Any:
    """The ASGI app over ``served`` (whose workers it stops at shutdown)."""
    metrics = metrics or ServeMetrics()
    for worker in served.workers():
        metrics.watch(worker)

    @asynccontextmanager
    async def lifespan(_: Any) -> Any:
        yield
        await asyncio.to_thread(served.stop)  # in-flight requests are done by now: finish the queues
        logger.info("shut down cleanly")

    app = FastAPI(title="retrievekit", lifespan=lifespan, docs_url="/docs", redoc_url=None)

    @app.exception_handler(ApiError)
    async def api_error(_: Any, exc: ApiError) -> Any:
        return Response(exc.body(), status_code=exc.status, headers=exc.headers, media_type="application/json")

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Any, exc: RequestValidationError) -> Any:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if first.get("type") == "json_invalid":
            message = f"the body is not valid JSON: {first.get('ctx', {}).get('error', first.get('msg', ''))}"
        else:
            message = f"{where or 'body'}: {first.get('msg', 'invalid')}"
        return Response(ApiError(400, message, param=where or None).body(), status_code=400,
                        media_type="application/json")  # fmt: skip

    @app.exception_handler(404)
    async def not_found(request: Request, _: Any) -> Any:
        return Response(ApiError(404, f"no route {request.method} {request.url.path}").body(), status_code=404,
                        media_type="application/json")  # fmt: skip

    @app.exception_handler(405)
    async def wrong_method(request: Request, _: Any) -> Any:
        return Response(ApiError(405, f"{request.method} is not allowed on {request.url.path}").body(),
                        status_code=405, media_type="application/json")  # fmt: skip

    def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")

    auth = [Depends(authorize)]

    async def call(worker: ModelWorker, key: str, items: Sequence[Any], tokens: Sequence[int]) -> list[Any]:
        try:
            future = worker.submit(key, items, tokens)
        except QueueFull as exc:
            raise ApiError(429, str(exc), code="queue_full", headers={"Retry-After": str(exc.retry_after)}) from None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), settings.request_timeout)
        except TimeoutError:
            raise ApiError(504, f"the request took over {settings.request_timeout:g} s (--request-timeout)",
                           code="timeout") from None  # fmt: skip

    def check_batch(n: int, what: str) -> None:
        if n > settings.max_client_batch:
            raise ApiError(413, f"{n} {what} in one request; the limit is {settings.max_client_batch} "
                                "(--max-client-batch): split the request", code="batch_too_large")  # fmt: skip

    def pick(table: dict[str, Any], name: str | None, what: str, param: str) -> Any:
        if not table:
            raise ApiError(404, f"this server serves no {what}s (start it with --{what.replace(' ', '-')})",
                           code=f"{what.replace(' ', '_')}_not_found", param=param)  # fmt: skip
        if name is None:
            return next(iter(table.values()))
        if name not in table:
            raise ApiError(404, f"no {what} named {name!r}; served: {', '.join(sorted(table))}",
                           code="model_not_found" if what != "index" else "index_not_found", param=param)  # fmt: skip
        return table[name]

    async def encode_input(model: Any, given: Any, input_type: str) -> tuple[list[Any], int, int]:
        """The one path of /v1/embeddings and /v1/encode: check ``input``, count its tokens (refusing
        over-long texts under --no-truncate), run it; the outputs, the tokens and the texts cut."""
        texts = _input_texts(given)
        check_batch(len(texts), "inputs")
        side = SIDES[input_type]
        lengths, cut = await asyncio.to_thread(model.count, texts, side)
        if any(cut) and not settings.truncate:
            raise ApiError(413, f"input[{cut.index(True)}] is longer than the model's limit of {model.max_length} "
                                "tokens; shorten it, or start the server with --truncate", param="input",
                           code="input_too_long")  # fmt: skip
        outputs = await call(model.worker, side, texts, lengths)
        return outputs, int(sum(lengths)), sum(cut)

    def truncation_headers(truncated: int) -> dict[str, str]:
        return {"X-Truncated-Inputs": str(truncated)} if truncated else {}

    # ---- routes ----------------------------------------------------------------------------------
    @app.get("/health")
    async def health() -> Any:
        return _json({"status": "ok", "models": sorted(served.embedders), "rerankers": sorted(served.rerankers),
                      "indexes": sorted(served.indexes)})  # fmt: skip

    @app.get("/v1/models", dependencies=auth)
    async def models() -> Any:
        entries = [{"id": name, "object": "model", "created": 0, "owned_by": "retrievekit", **s.describe()}
                   for table in (served.embedders, served.rerankers, served.indexes)
                   for name, s in table.items()]  # fmt: skip
        return _json({"object": "list", "data": entries})

    @app.get("/metrics", dependencies=auth)
    async def prometheus() -> Any:
        data, content_type = metrics.render()
        return Response(data, media_type=content_type)

    @app.post("/v1/embeddings", dependencies=auth)
    async def embeddings(body: EmbeddingsRequest) -> Any:
        if body.model in served.encoders:
            raise ApiError(400, f"model {body.model!r} is a {served.encoders[body.model].family} model: "
                                "/v1/embeddings gives one vector per text; use POST /v1/encode (token vectors, or "
                                "indices and values) or search its index at /v1/search", param="model",
                           code="model_family_not_supported")  # fmt: skip
        embedder = pick(served.embedders, body.model, "model", "model")
        if body.dimensions is not None and body.dimensions > embedder.dimension:
            raise ApiError(400, f"dimensions {body.dimensions} is above the model's {embedder.dimension}",
                           param="dimensions")  # fmt: skip
        rows, tokens, truncated = await encode_input(embedder, body.input, body.input_type)
        from retrievekit.models.dense import matryoshka

        vectors = matryoshka(np.stack(rows), body.dimensions,
                             renormalize=body.dimensions is not None and bool(embedder.encoder.normalizes))  # fmt: skip
        if body.encoding_format == "base64":
            encoded: list[Any] = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
        else:
            encoded = list(vectors)
        data = [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(encoded)]
        return _json({"object": "list", "data": data, "model": embedder.name,
                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
                     headers=truncation_headers(truncated))  # fmt: skip

    @app.post("/v1/encode", dependencies=auth)
    async def encode(body: EncodeRequest) -> Any:
        """retrievekit's extension for every family: a dense model's vector, a ColBERT model's token
        vectors, a sparse model's indices and values."""
        table: dict[str, Any] = {**served.embedders, **served.encoders}
        model = pick(table, body.model, "model", "model")
        outputs, tokens, truncated = await encode_input(model, body.input, body.input_type)
        family = getattr(model, "family", "dense")
        data: list[dict[str, Any]] = []
        for i, output in enumerate(outputs):
            if family == "multivector":
                data.append({"object": "multi_vector", "index": i, "embeddings": np.asarray(output, np.float32)})
            elif family == "sparse":
                indices, values = output
                data.append({"object": "sparse_embedding", "index": i, "indices": np.asarray(indices, np.int64),
                             "values": np.asarray(values, np.float32)})  # fmt: skip
            else:
                data.append({"object": "embedding", "index": i, "embedding": np.asarray(output, np.float32)})
        return _json({"object": "list", "model": model.name, "family": family, "data": data,
                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
                     headers=truncation_headers(truncated))  # fmt: skip

    async def score(name: str | None, query: str, documents: list[str], param: str) -> tuple[Any, np.ndarray, int]:
        reranker = pick(served.rerankers, name, "reranker", param)
        check_batch(len(documents), "documents")
        lengths = await asyncio.to_thread(reranker.count, query, documents)
        logits = await call(reranker.worker, "pairs", [(query, d) for d in documents], lengths)
        return reranker, np.asarray(logits, dtype=np.float32), int(sum(lengths))

    @app.post("/v1/rerank", dependencies=auth)
    async def rerank(body: RerankRequest) -> Any:
        reranker, logits, tokens = await score(body.model, body.query, body.documents, "model")
        scores = reranker.activate(logits)
        order = np.argsort(-scores, kind="stable")[: body.top_n]
        results = [{"index": int(i), "relevance_score": float(scores[i])}
                   | ({"document": body.documents[i]} if body.return_documents else {}) for i in order]  # fmt: skip
        return _json({"object": "rerank", "results": results, "model": reranker.name,
                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})  # fmt: skip

    @app.post("/rerank", dependencies=auth)
    async def tei_rerank(body: TeiRerankRequest) -> Any:
        reranker, logits, _ = await score(body.model, body.query, body.texts, "model")
        scores = logits if body.raw_scores else reranker.activate(logits)
        order = np.argsort(-scores, kind="stable")
        return _json([{"index": int(i), "score": float(scores[i])}
                      | ({"text": body.texts[i]} if body.return_text else {}) for i in order])  # fmt: skip

    @app.post("/v1/search", dependencies=auth)
    async def search(body: SearchRequest) -> Any:
        served_index = pick(served.indexes, body.index, "index", "index")
        if (body.query is None) == (body.queries is None):
            raise ApiError(400, "give either 'query' (a string) or 'queries' (a list of strings)", param="query")
        queries = [body.query] if body.query is not None else list(body.queries or [])
        if not queries:
            raise ApiError(400, "queries must not be empty", param="queries")
        check_batch(len(queries), "queries")
        depth = max(body.k, body.rerank_top_k) if body.rerank else body.k
        costs = [_query_cost(q) for q in queries]
        hits = await call(served_index.worker, "search", [(q, depth) for q in queries], costs)
        if body.rerank:
            hits = await rerank_hits(served_index, queries, hits, body)
        titles = served_index.index.titles
        results = [{"query": q, "hits": [{"id": d, "score": float(s)} | ({"title": titles[d]} if d in titles else {})
                                         for d, s in zip(h.ids[: body.k], h.scores[: body.k], strict=True)]}
                   for q, h in zip(queries, hits, strict=True)]  # fmt: skip
        return _json({"object": "search", "index": served_index.name, "results": results})

    async def rerank_hits(served_index: Any, queries: list[str], hits: list[Any], body: SearchRequest) -> list[Any]:
        from retrievekit.hits import Hits

        if served_index.documents is None:
            raise ApiError(400, f"index {served_index.name!r} has no document texts to rerank with: start the server "
                                f"with --corpus {served_index.name}=CORPUS", param="rerank")  # fmt: skip
        name = body.rerank if isinstance(body.rerank, str) else None
        tops = [h.ids[: body.rerank_top_k] for h in hits]
        texts = served_index.documents
        # every query's pairs are queued at once, so the reranker batches them together
        scored = await asyncio.gather(*(score(name, q, [texts.get(d, "") for d in top], "rerank")
                                        for q, top in zip(queries, tops, strict=True)))  # fmt: skip
        reranked = []
        for top, (reranker, logits, _) in zip(tops, scored, strict=True):
            scores = reranker.activate(logits)
            order = np.argsort(-scores, kind="stable")
            reranked.append(Hits([top[i] for i in order], scores[order].astype(np.float64)))
        return reranked

    return _Gate(app, settings, metrics)


def _input_texts(given: Any) -> list[str]:
    """OpenAI's ``input``: a string or a list of strings; token arrays and other shapes are refused."""
    if isinstance(given, str):
        return [given]
    if not isinstance(given, list):
        raise ApiError(400, f"input must be a string or a list of strings, got {type(given).__name__}", param="input")
    if not given:
        raise ApiError(400, "input must not be an empty list", param="input")
    if all(isinstance(x, int) and not isinstance(x, bool) for x in given) or all(isinstance(x, list) for x in given):
        raise ApiError(400, "token-id arrays are not supported: send the texts as strings", param="input",
                       code="tokens_not_supported")  # fmt: skip
    for position, text in enumerate(given):
        if not isinstance(text, str):
            raise ApiError(400, f"input[{position}] is {type(text).__name__}, expected a string", param="input")
    return given


def _query_cost(query: str) -> int:
    """A search query's share of a batch's token budget (a rough token count: no tokenizer is
    needed for BM25 and search batches are small)."""
    return 2 + len(query) // 4


class _Gate:
    """Pure ASGI middleware: body size limit, one INFO log line and the metrics of each request."""

    def __init__(self, app: Any, settings: ServeSettings, metrics: ServeMetrics) -> None:
        self.app, self.settings, self.metrics = app, settings, metrics

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:  # fmt: skip
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]
        sent = [False]
        limit = self.settings.max_body_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")

        async def answer(error: ApiError) -> None:
            await tracking_send({"type": "http.response.start", "status": error.status,
                                 "headers": [(b"content-type", b"application/json")]})  # fmt: skip
            await tracking_send({"type": "http.response.body", "body": error.body()})

        async def tracking_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0], sent[0] = message["status"], True
            await send(message)

        received = [0]
        more_body = [True]  # the client has more of the body to send

        async def limited_receive() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                received[0] += len(message.get("body", b""))
                more_body[0] = bool(message.get("more_body", False))
                if received[0] > limit:
                    raise _BodyTooLarge
            else:
                more_body[0] = False
            return message

        too_large = ApiError(413, f"the request body is over {limit} bytes (--max-body-bytes)", code="body_too_large")
        try:
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await _drain(receive)
                await answer(too_large)
            else:
                await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not sent[0]:
                if more_body[0]:
                    await _drain(receive)
                await answer(too_large)
        finally:
            seconds = time.perf_counter() - started
            path = scope.get("path", "")
            self.metrics.observe_request(path, status[0], seconds)
            logger.info("%s %s %d %.1f ms", scope.get("method", ""), path, status[0], seconds * 1000)


class _BodyTooLarge(Exception):
    pass


DRAIN_BYTES = 1 << 20  # the most of a refused body read and dropped before answering
DRAIN_SECONDS = 1.0  # and the longest time spent reading it


async def _drain(receive: Callable[[], Awaitable[dict]]) -> None:
    """Read and drop the rest of a refused request body, bounded in bytes and in time, before
    answering. A server that answers and closes with the body still unread makes the kernel reset
    the connection, and the client can lose the answer with it; a client that sends more than the
    bound, or sends slowly, is cut off (the connection closes after the answer either way)."""

    async def read_rest() -> None:
        drained = 0
        while drained <= DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    with suppress(TimeoutError):
        await asyncio.wait_for(read_rest(), DRAIN_SECONDS)
