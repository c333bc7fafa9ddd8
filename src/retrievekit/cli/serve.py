"""``retrievekit serve``: embeddings, rerank and search over HTTP."""

from __future__ import annotations

import logging
import sys
import time

import click

from retrievekit.cli._model_options import onnx_weights, quantize_option
from retrievekit.cli._output import console


@click.command()
@click.option("--model", "-m", "models", multiple=True,
              help="A model to serve: PATH, 'minilm', or NAME=PATH (repeatable; clients pick it by NAME in "
              "'model'). Dense models answer on /v1/embeddings, every family on /v1/encode.")  # fmt: skip
@click.option("--reranker", "rerankers", multiple=True,
              help="A reranker (cross-encoder or LLM reranker folder) for /v1/rerank, /rerank and search "
              "reranking: PATH or NAME=PATH (repeatable).")  # fmt: skip
@click.option("--index", "indexes", multiple=True,
              help="A saved index of any family for /v1/search: DIR or NAME=DIR (repeatable). Its model is the "
              "one it recorded: the bundled MiniLM or one saved inside it loads by itself; a model elsewhere must "
              "be given with --model too (an index cannot choose what runs).")  # fmt: skip
@click.option("--corpus", "corpora", multiple=True,
              help="INDEX=CORPUS: the document texts of an index (a corpus file or BEIR folder), needed to "
              "rerank its search results.")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--api-key", envvar="RETRIEVEKIT_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' on every route but /health (or set "
              "RETRIEVEKIT_API_KEY).")  # fmt: skip
@click.option("--backend", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True,
              help="onnx: ONNX Runtime on CPUs, int8 unless --quantize none (exported once and cached beside the "
              "model).")  # fmt: skip
@quantize_option()
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (torch backend).")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code shipped with a hub model.")
@click.option("--max-batch-tokens", type=click.IntRange(1), default=16_384, show_default=True,
              help="Tokens one model batch may hold (summed over its texts), as TEI's option.")  # fmt: skip
@click.option("--batch-wait-ms", type=click.FloatRange(0), default=2.0, show_default=True,
              help="How long a batch's first request waits for others to join it.")  # fmt: skip
@click.option("--max-client-batch", type=click.IntRange(1), default=2048, show_default=True,
              help="Texts one request may send; larger requests get 413 (smaller ones are split into "
              "batches).")  # fmt: skip
@click.option("--max-queue", type=click.IntRange(1), default=16_384, show_default=True,
              help="Texts waiting per model; past it requests get 429 with Retry-After.")  # fmt: skip
@click.option("--request-timeout", type=click.FloatRange(0.001), default=60.0, show_default=True,
              help="Seconds before a request gets 504.")  # fmt: skip
@click.option("--truncate/--no-truncate", default=True, show_default=True,
              help="Cut inputs over the model's token limit (counted in the X-Truncated-Inputs header) or refuse "
              "them with 413.")  # fmt: skip
@click.option("--max-body-bytes", type=click.IntRange(1), default=16 * 1024 * 1024, show_default=True,
              help="Request bodies past this get 413.")  # fmt: skip
@click.option("--server", "http_server", type=click.Choice(["uvicorn", "granian"]), default="uvicorn",
              show_default=True,
              help="The HTTP server: uvicorn, or granian (Rust; install it with pip install granian).")  # fmt: skip
@click.option("--threads", type=click.IntRange(1), default=None,
              help="CPU threads for the models (default: every core this process may use). One batch runs at a "
              "time on them.")  # fmt: skip
def serve(models, rerankers, indexes, corpora, host, port, api_key, backend, quantize, device, trust_remote_code,
          max_batch_tokens, batch_wait_ms, max_client_batch, max_queue, request_timeout, truncate, max_body_bytes,
          http_server, threads) -> None:  # fmt: skip
    """Serve embedding models, rerankers and indexes over HTTP (needs the 'serve' extra).

    \b
    Routes:
      POST /v1/embeddings   OpenAI's schema (float or base64, dimensions); "input_type": "query"
                            encodes with the model's query side
      POST /v1/encode       any family: a vector, ColBERT token vectors, or sparse indices and values
      POST /v1/rerank       Cohere's/infinity's schema (query, documents, top_n, return_documents)
      POST /rerank          text-embeddings-inference's schema (query, texts, raw_scores, return_text)
      POST /v1/search       {"index", "query" | "queries", "k", "rerank", "rerank_top_k"}
      GET  /health, /v1/models, /metrics (Prometheus)
    Concurrent requests are merged into batches of up to --max-batch-tokens tokens.

    \b
    Examples:
      retrievekit serve --model minilm
      retrievekit serve --model minilm --index scifact=runs/scifact-hnsw --reranker runs/reranker/model \\
          --corpus scifact=../shared/data/scifact --api-key "$KEY"
    """
    from retrievekit._optional import require

    weights = onnx_weights(backend, quantize)
    for module in ("fastapi", "orjson", "prometheus_client", "uvicorn"):
        require(module, extra="serve", purpose="retrievekit serve")
    if http_server == "granian":
        require("granian", extra="serve", purpose="--server granian (pip install granian)")
    from retrievekit.serve.app import create_app
    from retrievekit.serve.loading import load_served
    from retrievekit.serve.metrics import ServeMetrics
    from retrievekit.serve.settings import ServeSettings

    started = time.perf_counter()
    settings = ServeSettings(
        max_batch_tokens=max_batch_tokens, batch_wait_ms=batch_wait_ms, max_client_batch=max_client_batch,
        max_queue=max_queue, request_timeout=request_timeout, truncate=truncate, max_body_bytes=max_body_bytes,
        threads=threads, api_key=api_key,
    )  # fmt: skip
    metrics = ServeMetrics()
    served = load_served(models=models, rerankers=rerankers, indexes=indexes, corpora=corpora, settings=settings,
                         metrics=metrics, backend=backend, quantize=weights, device=device,
                         trust_remote_code=trust_remote_code)  # fmt: skip
    request_log = logging.getLogger("retrievekit.serve")
    if not any(getattr(h, "_retrievekit", False) for h in request_log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler._retrievekit = True  # type: ignore[attr-defined]
        request_log.addHandler(handler)
    request_log.setLevel(logging.INFO)
    request_log.propagate = False
    what = [f"{n} (embeddings)" for n in served.embedders] + [f"{n} (rerank)" for n in served.rerankers]
    what += [f"{n} (index)" for n in served.indexes]
    console.print(f"serving {', '.join(what)} on http://{host}:{port} (ready in {time.perf_counter() - started:.1f} s)"
                  + ("; API key required" if api_key else ""), highlight=False)  # fmt: skip
    app = create_app(served, settings, metrics)
    if http_server == "granian":
        _run_granian(app, host, port)
        return
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=int(request_timeout) + 1)  # fmt: skip
    uvicorn.Server(config).run()


def _run_granian(app: object, host: str, port: int) -> None:
    """granian's embedded server in this process (the models are loaded once, here); SIGTERM and
    SIGINT stop it after the requests in flight."""
    import asyncio
    import signal

    from granian.constants import Interfaces
    from granian.server.embed import Server

    async def run() -> None:
        server = Server(app, address=host, port=port, interface=Interfaces.ASGI, log_enabled=False)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.stop)
        await server.serve()

    asyncio.run(run())
