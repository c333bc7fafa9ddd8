"""retrievekit serve: the routes' schemas, auth, limits and batching, with the official openai client
against a server on 127.0.0.1 (tiny random models, a few seconds each)."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from retrievekit.serve.batcher import ModelWorker, QueueFull  # noqa: E402
from retrievekit.serve.metrics import ServeMetrics  # noqa: E402
from retrievekit.serve.settings import ServeSettings  # noqa: E402

KEY = "test-key"
TEXTS = ["the cat sat on the mat", "a dog", "protein folding in cells", "", "vitamin d and bone health " * 3]


class Server:
    """uvicorn serving ``app`` on a free loopback port in a thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def request(self, method: str, path: str, body=None, *, key: str | None = KEY, raw: bytes | None = None,
                headers: dict | None = None):  # fmt: skip
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if key is not None:
            req.add_header("Authorization", f"Bearer {key}")
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory) -> Path:
    from conftest import build_tiny_bert
    from retrievekit import load_encoder

    base = build_tiny_bert(tmp_path_factory.mktemp("serve") / "bert", seed=7)
    folder = tmp_path_factory.mktemp("serve") / "dense"
    load_encoder(base, pooling="mean", normalize=True, query_prompt="query: ").save(folder)
    return folder


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory) -> Path:
    from test_cross_encoder import build_cross_encoder

    return build_cross_encoder(tmp_path_factory.mktemp("serve") / "reranker")


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, dense_dir) -> Path:
    from click.testing import CliRunner

    from conftest import TOY_BEIR
    from retrievekit.cli.main import cli

    target = tmp_path_factory.mktemp("serve") / "index"
    result = CliRunner().invoke(cli, ["index", "build", "--corpus", str(TOY_BEIR), "--model", str(dense_dir),
                                      "--type", "flat", "--output", str(target)])  # fmt: skip
    assert result.exit_code == 0, result.output
    return target


def start(settings: ServeSettings | None = None, **what) -> tuple[Server, object]:
    from retrievekit.serve.app import create_app
    from retrievekit.serve.loading import load_served

    settings = settings or ServeSettings(api_key=KEY, batch_wait_ms=5)
    metrics = ServeMetrics()
    served = load_served(settings=settings, metrics=metrics, **what)
    return Server(create_app(served, settings, metrics)), served


@pytest.fixture(scope="module")
def server(dense_dir, reranker_dir, index_dir):
    from conftest import TOY_BEIR

    running, _ = start(models=[f"tiny={dense_dir}"], rerankers=[f"ce={reranker_dir}"], indexes=[f"toy={index_dir}"],
                       corpora=[f"toy={TOY_BEIR}"])  # fmt: skip
    yield running
    running.stop()


@pytest.fixture(scope="module")
def encoder(dense_dir):
    from retrievekit import load_encoder

    return load_encoder(dense_dir)


def client(server: Server, key: str = KEY):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


# ---- /v1/embeddings with the official client --------------------------------------------------------
def test_openai_client_vectors_equal_encode_in_both_formats(server, encoder):
    documents = encoder.encode_documents(TEXTS)
    default = client(server).embeddings.create(input=TEXTS, model="tiny")  # the client asks for base64
    as_float = client(server).embeddings.create(input=TEXTS, model="tiny", encoding_format="float")
    for response in (default, as_float):
        assert [d.index for d in response.data] == list(range(len(TEXTS)))
        got = np.array([d.embedding for d in response.data])
        assert np.abs(got - documents).max() < 1e-6
        assert response.model == "tiny"
    counts, _ = encoder.token_counts(TEXTS, "documents")
    assert default.usage.prompt_tokens == default.usage.total_tokens == sum(counts)
    queries = client(server).embeddings.create(input=TEXTS, model="tiny", extra_body={"input_type": "query"})
    got = np.array([d.embedding for d in queries.data])
    assert np.abs(got - encoder.encode_queries(TEXTS)).max() < 1e-6  # the query prompt applies
    assert np.abs(got - documents).max() > 1e-3


def test_base64_is_little_endian_float32(server, encoder):
    status, _, body = server.request("POST", "/v1/embeddings", {"input": "a dog", "encoding_format": "base64"})
    assert status == 200
    vector = np.frombuffer(base64.b64decode(json.loads(body)["data"][0]["embedding"]), dtype="<f4")
    assert np.abs(vector - encoder.encode_documents(["a dog"])[0]).max() < 1e-6


def test_dimensions_truncate_and_renormalise(server, encoder):
    response = client(server).embeddings.create(input=TEXTS, model="tiny", dimensions=8, encoding_format="float")
    got = np.array([d.embedding for d in response.data])
    assert got.shape == (len(TEXTS), 8)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert np.abs(got - encoder.encode_documents(TEXTS, truncate_dim=8)).max() < 1e-6
    with pytest.raises(openai.BadRequestError, match="above the model"):
        client(server).embeddings.create(input=TEXTS, model="tiny", dimensions=10_000)


def test_concurrent_requests_each_get_their_own_vectors_in_order(server, encoder):
    rng = np.random.default_rng(0)
    words = ["cell", "protein", "bone", "vitamin", "cat", "dog", "mat", "gene", "virus", "health"]
    batches = [[" ".join(rng.choice(words, size=rng.integers(1, 30))) for _ in range(rng.integers(1, 9))]
               for _ in range(24)]  # fmt: skip

    def ask(texts):
        response = client(server).embeddings.create(input=texts, model="tiny", encoding_format="float")
        return np.array([d.embedding for d in response.data])

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, batches))
    for texts, got in zip(batches, answers, strict=True):
        assert np.abs(got - encoder.encode_documents(texts)).max() < 1e-6
    _, _, metrics = server.request("GET", "/metrics")
    merged = [line for line in metrics.decode().splitlines() if line.startswith("retrievekit_batch_texts_count")]
    requests = [line for line in metrics.decode().splitlines()
                if line.startswith('retrievekit_requests_total{route="/v1/embeddings",status="200"}')]  # fmt: skip
    assert merged and requests
    # concurrent requests were merged: fewer model batches than requests
    assert float(merged[0].split()[-1]) < float(requests[0].split()[-1])


# ---- bad inputs get the right status and a JSON error body --------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"input": [], "model": "tiny"}, 400, "empty"),
        ({"input": ["ok", 3], "model": "tiny"}, 400, "input[1] is int"),
        ({"input": [[1, 2, 3]], "model": "tiny"}, 400, "token-id arrays"),
        ({"input": [1, 2, 3], "model": "tiny"}, 400, "token-id arrays"),
        ({"input": {"text": "x"}, "model": "tiny"}, 400, "string or a list"),
        ({"model": "tiny"}, 400, "input"),
        ({"input": "x", "model": "nope"}, 404, "no model named 'nope'"),
        ({"input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
        ({"input": "x", "dimensions": 0}, 400, "dimensions"),
    ],
)
def test_bad_embedding_requests(server, body, status, needle):
    got, _, payload = server.request("POST", "/v1/embeddings", body)
    error = json.loads(payload)["error"]
    assert got == status and needle in error["message"] and error["type"]


def test_malformed_json_and_auth(server):
    status, _, payload = server.request("POST", "/v1/embeddings", raw=b'{"input": ["a",')
    assert status == 400 and "not valid JSON" in json.loads(payload)["error"]["message"]
    for key in (None, "wrong"):
        status, _, payload = server.request("POST", "/v1/embeddings", {"input": "x"}, key=key)
        assert status == 401 and json.loads(payload)["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(server, key="wrong").embeddings.create(input="x", model="tiny")
    assert server.request("GET", "/health", key=None)[0] == 200  # health needs no key
    assert server.request("GET", "/v1/models", key=None)[0] == 401
    status, _, payload = server.request("GET", "/v1/models")
    assert {m["id"] for m in json.loads(payload)["data"]} == {"tiny", "ce", "toy"}


def test_limits_give_413_with_the_limit_named(dense_dir):
    settings = ServeSettings(api_key=KEY, max_client_batch=4, max_body_bytes=2000, truncate=False)
    running, _ = start(settings, models=[f"tiny={dense_dir}"])
    try:
        status, _, payload = running.request("POST", "/v1/embeddings", {"input": ["a"] * 5})
        assert status == 413 and "limit is 4" in json.loads(payload)["error"]["message"]
        status, _, payload = running.request("POST", "/v1/embeddings", {"input": ["word " * 600]})
        assert status == 413 and "body is over 2000 bytes" in json.loads(payload)["error"]["message"]
        status, _, payload = running.request("POST", "/v1/embeddings", {"input": ["cell " * 100]})
        assert status == 413 and "limit of 64 tokens" in json.loads(payload)["error"]["message"]
        status, _, _ = running.request("POST", "/v1/embeddings", {"input": ["a", "b", "c", "d"]})
        assert status == 200
    finally:
        running.stop()


def test_a_refused_body_is_read_before_the_413_so_the_client_gets_it():
    """Answering 413 and closing with the body unread makes the kernel reset the connection, and the
    client can lose the answer: the gate reads the rest of the body (bounded) before answering, both
    when the declared length is over the limit and when a streamed body goes over it."""
    import asyncio

    from retrievekit.serve.app import _Gate
    from retrievekit.serve.metrics import ServeMetrics

    async def app(scope, receive, send):  # reads the whole body, then answers
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    def run(declared: bytes | None) -> tuple[list[str], int]:
        chunks = [{"type": "http.request", "body": b"x" * 600, "more_body": i < 4} for i in range(5)]
        events: list[str] = []

        async def receive():
            events.append("read")
            return chunks.pop(0) if chunks else {"type": "http.disconnect"}

        async def send(message):
            events.append(message["type"])
            if message["type"] == "http.response.start":
                events.append(str(message["status"]))

        headers = [(b"content-length", declared)] if declared else []
        gate = _Gate(app, ServeSettings(api_key=KEY, max_body_bytes=2000), ServeMetrics())
        scope = {"type": "http", "method": "POST", "path": "/v1/embeddings", "headers": headers}
        asyncio.run(gate(scope, receive, send))
        return events, len(chunks)

    for declared in (b"3000", None):  # refused on the header, and refused while streaming
        events, unread = run(declared)
        assert unread == 0 and "413" in events, (declared, events)
        assert events.index("http.response.start") > max(i for i, e in enumerate(events) if e == "read"), events


def test_truncation_is_reported_in_a_header(server, encoder):
    status, headers, payload = server.request("POST", "/v1/embeddings", {"input": ["cell " * 100, "a dog"]})
    assert status == 200 and headers.get("x-truncated-inputs") == "1"
    assert json.loads(payload)["usage"]["prompt_tokens"] == sum(encoder.token_counts(["cell " * 100, "a dog"])[0])


def test_a_full_queue_gives_429_and_a_slow_one_504(dense_dir):
    import threading as th

    from retrievekit import load_encoder
    from retrievekit.serve.app import create_app
    from retrievekit.serve.served import ServedEmbedder, ServedModels

    settings = ServeSettings(api_key=KEY, max_queue=3, request_timeout=0.5, batch_wait_ms=0)
    lock = th.Lock()
    served = ServedModels({"tiny": ServedEmbedder.start("tiny", load_encoder(dense_dir), settings, lock)})
    running = Server(create_app(served, settings))
    try:
        with lock:  # the model is busy: requests wait in the queue
            status, _, _ = running.request("POST", "/v1/embeddings", {"input": ["a", "b", "c"]})
            assert status == 504  # timed out in the queue...
            with ThreadPoolExecutor(2) as pool:
                first = pool.submit(running.request, "POST", "/v1/embeddings", {"input": ["a", "b"]})
                time.sleep(0.2)
                status, headers, payload = running.request("POST", "/v1/embeddings", {"input": ["c", "d"]})
                assert status == 429 and headers.get("retry-after") == "1"
                assert "limit 3" in json.loads(payload)["error"]["message"]
                assert first.result()[0] == 504
        assert served.embedders["tiny"].worker.queued == 0  # ...and its texts left the queue
        assert running.request("POST", "/v1/embeddings", {"input": ["a", "b", "c"]})[0] == 200
    finally:
        running.stop()


# ---- rerank and search ------------------------------------------------------------------------------
def test_rerank_routes_equal_predict(server, reranker_dir):
    from retrievekit.models.cross_encoder import load_cross_encoder

    model = load_cross_encoder(reranker_dir)
    query, docs = "vitamin d", ["bone health and vitamin d", "a cat", "protein folding"]
    scores = model.predict([(query, d) for d in docs])
    logits = model.logits([(query, d) for d in docs])
    body = {"query": query, "documents": docs, "top_n": 2, "return_documents": True}
    status, _, payload = server.request("POST", "/v1/rerank", body)
    assert status == 200
    results = json.loads(payload)["results"]
    order = np.argsort(-scores)
    assert [r["index"] for r in results] == order[:2].tolist()
    assert np.allclose([r["relevance_score"] for r in results], scores[order[:2]], atol=1e-6)
    assert [r["document"] for r in results] == [docs[i] for i in order[:2]]
    status, _, payload = server.request("POST", "/rerank", {"query": query, "texts": docs, "raw_scores": True})
    tei = json.loads(payload)
    assert [r["index"] for r in tei] == order.tolist() and "text" not in tei[0]
    assert np.allclose([r["score"] for r in tei], logits[order], atol=1e-5)


def test_search_equals_the_retriever_and_reranks(server, index_dir, dense_dir, reranker_dir):
    from retrievekit.index import load_index
    from retrievekit.retrieval.from_index import retriever_for_index

    retriever = retriever_for_index(load_index(index_dir), index_dir, model=str(dense_dir))
    queries = ["vitamin d bone", "cat on a mat"]
    expected = retriever.search(queries, 3)
    status, _, payload = server.request("POST", "/v1/search", {"index": "toy", "queries": queries, "k": 3})
    assert status == 200
    results = json.loads(payload)["results"]
    for got, want in zip(results, expected, strict=True):
        assert [h["id"] for h in got["hits"]] == want.ids
        assert np.allclose([h["score"] for h in got["hits"]], want.scores, atol=1e-5)
    from conftest import TOY_BEIR
    from retrievekit.data.readers import iter_documents
    from retrievekit.models.cross_encoder import load_cross_encoder

    texts = {d.id: d.full_text for d in iter_documents(TOY_BEIR / "corpus.jsonl")}
    cross = load_cross_encoder(reranker_dir)
    body = {"queries": queries, "k": 2, "rerank": "ce", "rerank_top_k": 5}
    status, _, payload = server.request("POST", "/v1/search", body)
    assert status == 200
    for query, got, first in zip(queries, json.loads(payload)["results"], retriever.search(queries, 5), strict=True):
        scores = cross.predict([(query, texts[d]) for d in first.ids])
        assert [h["id"] for h in got["hits"]] == [first.ids[i] for i in np.argsort(-scores, kind="stable")[:2]]
    status, _, payload = server.request("POST", "/v1/search", {"index": "nope", "query": "x"})
    assert status == 404 and "no index named 'nope'" in json.loads(payload)["error"]["message"]


# ---- the batcher on its own -------------------------------------------------------------------------
def test_batcher_splits_large_requests_under_the_token_budget_and_keeps_order():
    seen: list[list[int]] = []

    def run(_, items):
        seen.append(list(items))
        return [x * 10 for x in items]

    worker = ModelWorker("m", run, max_batch_tokens=10, batch_wait=0.01, max_queue=100)
    futures = [worker.submit("k", list(range(i * 20, i * 20 + 7)), [3] * 7) for i in range(3)]
    results = [f.result(5) for f in futures]
    worker.stop()
    assert results == [[x * 10 for x in range(i * 20, i * 20 + 7)] for i in range(3)]
    assert all(len(batch) * 3 <= 10 for batch in seen) and sum(map(len, seen)) == 21


def test_batcher_merges_only_the_same_key_and_bounds_its_queue():
    gate, seen = threading.Event(), []

    def run(key, items):
        gate.wait(5)
        seen.append((key, list(items)))
        return list(items)

    worker = ModelWorker("m", run, max_batch_tokens=100, batch_wait=0.05, max_queue=6)
    a = worker.submit("q", [1, 2], [1, 1])
    b = worker.submit("d", [3], [1])
    c = worker.submit("q", [4], [1])
    with pytest.raises(QueueFull, match="limit 6"):
        worker.submit("q", [5, 6, 7, 8], [1] * 4)
    gate.set()
    assert (a.result(5), b.result(5), c.result(5)) == ([1, 2], [3], [4])
    worker.stop()
    assert ("q", [1, 2, 4]) in seen and ("d", [3]) in seen


def test_a_failing_batch_fails_its_requests_and_the_worker_lives_on():
    calls = []

    def run(_, items):
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return items

    worker = ModelWorker("m", run, max_batch_tokens=100, batch_wait=0, max_queue=10)
    with pytest.raises(RuntimeError, match="boom"):
        worker.submit("k", [1], [1]).result(5)
    assert worker.submit("k", [2], [1]).result(5) == [2]
    worker.stop()


# ---- the command: SIGTERM finishes in-flight requests -----------------------------------------------
@pytest.mark.parametrize("http_server", ["uvicorn", "granian"])
def test_sigterm_finishes_in_flight_requests(dense_dir, tmp_path, http_server):
    if http_server == "granian":
        pytest.importorskip("granian")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, RETRIEVEKIT_API_KEY=KEY)
    process = subprocess.Popen(
        [sys.executable, "-m", "retrievekit", "serve", "--model", f"tiny={dense_dir}", "--port", str(port),
         "--batch-wait-ms", "800", "--server", http_server],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
                time.sleep(0.1)
        fake = Server.__new__(Server)
        fake.url = url
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(fake.request, "POST", "/v1/embeddings", {"input": TEXTS})
            time.sleep(0.3)  # the request waits in its batch window
            process.send_signal(signal.SIGTERM)
            status, _, payload = pending.result(30)
        assert status == 200 and len(json.loads(payload)["data"]) == len(TEXTS)
        # uvicorn re-raises the signal once it has shut down, so the status says SIGTERM
        assert process.wait(30) in (0, -signal.SIGTERM)
        output = process.stdout.read()
        assert re.search(r"POST /v1/embeddings 200 [\d.]+ ms", output)  # one line per request, with its latency
        assert output.index("POST /v1/embeddings 200") < output.index("shut down cleanly")
    finally:
        if process.poll() is None:
            process.kill()


def test_multi_vector_and_sparse_models_answer_on_encode_never_with_a_wrong_shape(
    tiny_bert_dir, tiny_mlm_dir, tmp_path, dense_dir, encoder
):
    from retrievekit import build_colbert, load_model
    from retrievekit.models.sparse import load_sparse_encoder

    colbert_dir = build_colbert(tiny_bert_dir, embedding_size=16, seed=3).save(tmp_path / "colbert")
    sparse_dir = load_sparse_encoder(tiny_mlm_dir).save(tmp_path / "sparse")
    running, _ = start(models=[f"late={colbert_dir}", f"splade={sparse_dir}", f"tiny={dense_dir}"])
    try:
        for name in ("late", "splade"):
            status, _, payload = running.request("POST", "/v1/embeddings", {"input": "a cat", "model": name})
            error = json.loads(payload)["error"]
            assert status == 400 and "/v1/encode" in error["message"] and error["code"] == "model_family_not_supported"
        colbert, splade = load_model(colbert_dir), load_model(sparse_dir)
        status, _, payload = running.request("POST", "/v1/encode", {"input": TEXTS, "model": "late",
                                                                     "input_type": "query"})  # fmt: skip
        assert status == 200 and json.loads(payload)["family"] == "multivector"
        expected = colbert.encode_queries(TEXTS)
        for row, want in zip(json.loads(payload)["data"], expected, strict=True):
            assert row["object"] == "multi_vector" and np.abs(np.array(row["embeddings"]) - want).max() < 1e-6
        status, _, payload = running.request("POST", "/v1/encode", {"input": TEXTS, "model": "splade"})
        expected = splade.encode_documents(TEXTS)
        for i, row in enumerate(json.loads(payload)["data"]):
            indices, values = expected.row(i)
            assert row["object"] == "sparse_embedding" and row["indices"] == indices.tolist()
            assert np.abs(np.array(row["values"]) - values).max() < 1e-6
        status, _, payload = running.request("POST", "/v1/encode", {"input": TEXTS, "model": "tiny"})
        got = np.array([row["embedding"] for row in json.loads(payload)["data"]])
        assert np.abs(got - encoder.encode_documents(TEXTS)).max() < 1e-6
    finally:
        running.stop()


@pytest.mark.parametrize("backend", ["lancedb", "milvus"])
def test_search_over_a_database_index(backend, tmp_path, dense_dir, index_dir):
    """``serve --index URI`` with a LanceDB folder or a Milvus Lite file: the same hits as the flat index."""
    pytest.importorskip({"lancedb": "lancedb", "milvus": "pymilvus"}[backend])
    from click.testing import CliRunner

    from conftest import TOY_BEIR
    from retrievekit.cli.main import cli

    uri = str(tmp_path / ("toy.db" if backend == "milvus" else "toy-lance"))
    result = CliRunner().invoke(cli, ["index", "build", "--corpus", str(TOY_BEIR), "--model", str(dense_dir),
                                      "--type", backend, "--uri", uri])  # fmt: skip
    assert result.exit_code == 0, result.output
    running, _ = start(models=[f"tiny={dense_dir}"], indexes=[f"db={uri}", f"flat={index_dir}"])
    try:
        hits = {}
        for name in ("db", "flat"):
            body = {"index": name, "queries": ["vitamin d bone", "cat on a mat"], "k": 3}
            status, _, payload = running.request("POST", "/v1/search", body)
            assert status == 200, payload
            hits[name] = [[(h["id"], round(h["score"], 4)) for h in r["hits"]] for r in json.loads(payload)["results"]]
        assert hits["db"] == hits["flat"] and hits["db"][0]
    finally:
        running.stop()


def test_serve_search_and_rerank_take_the_quantize_option(
    dense_dir, reranker_dir, index_dir, tiny_mlm_dir, tmp_path, monkeypatch
):
    """``--quantize none`` reaches every model that serve, search and rerank load: the float32 graph,
    whose scores are torch's; int8 stays the onnx default; off the onnx backend it is refused; a
    SPLADE model (no onnx graph) is never handed it."""
    from click.testing import CliRunner

    from conftest import TOY_BEIR
    from retrievekit.cli.main import cli
    from retrievekit.models import load_model, load_sparse_encoder
    from retrievekit.serve.loading import load_served

    what = {"models": [f"d={dense_dir}"], "rerankers": [f"ce={reranker_dir}"], "indexes": [f"i={index_dir}"]}
    for quantize, runtime in ((None, "onnx-fp32"), ("int8", "onnx-int8")):
        served = load_served(settings=ServeSettings(), metrics=ServeMetrics(), backend="onnx", quantize=quantize,
                             **what)  # fmt: skip
        try:
            assert served.embedders["d"].encoder.runtime == runtime
            assert served.rerankers["ce"].model.runtime == runtime
            assert served.indexes["i"].retriever.encoder.runtime == runtime
        finally:
            served.stop()
    splade = load_sparse_encoder(tiny_mlm_dir).save(tmp_path / "splade")
    assert load_model(splade, backend="torch", quantize=None).runtime == "torch-float32"

    def scores(*options: str) -> list[float]:
        args = ["search", "--index", str(index_dir), "--model", str(dense_dir), "-q", "alpha beta", "-k", "3", "--json",
                *options]  # fmt: skip
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return [hit["score"] for hit in json.loads(result.output)["results"]]

    np.testing.assert_allclose(scores("--backend", "onnx", "--quantize", "none"), scores(), atol=1e-5)
    refused = CliRunner().invoke(cli, ["search", "--index", str(index_dir), "-q", "alpha", "--quantize", "none"])
    assert refused.exit_code != 0 and "--quantize none applies to the onnx backend" in str(refused.exception)
    import retrievekit.models.cross_encoder as cross_encoder_module

    loaded = []
    real_loader = cross_encoder_module.load_reranker

    def load_reranker(*args, **options):
        model = real_loader(*args, **options)
        loaded.append(model.runtime)
        return model

    monkeypatch.setattr(cross_encoder_module, "load_reranker", load_reranker)
    for options in ((), ("--backend", "onnx"), ("--backend", "onnx", "--quantize", "none")):
        args = ["rerank", "--model", str(reranker_dir), "-q", "alpha beta",
                "--documents", str(TOY_BEIR / "corpus.jsonl"), *options]  # fmt: skip
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0 and "d1" in result.output, result.output
    args = ["evaluate", "--dataset", str(TOY_BEIR), "-r", "bm25", "--rerank", str(reranker_dir), "--rerank-top-k", "3",
            "--no-cache", "--backend", "onnx", "--quantize", "none"]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert loaded == ["torch-float32", "onnx-int8", "onnx-fp32", "onnx-fp32"]  # evaluate's reranker too
