"""The capacity plan of docs/scaling.md, computed from the per-document figures benchmarks/scale.py
measured (so it is re-run whenever they change):

    python benchmarks/capacity_plan.py runs/scale/measured.json [--doc-tokens 200] [--node-ram-gb 64]

For 1 M, 10 M and 100 M documents of --doc-tokens tokens, per family: the index bytes, the RAM a
query node needs, encoding hours on one CPU core and on one GPU, and the backend to use. How each
figure is computed (printed under the table too):
- dense float32 / int8 / binary: dimension x 4 / 1 / 1/8 bytes per document (the formats' sizes);
  HNSW and IVF-PQ: the bytes per document of the FAISS files scale.py saved (vectors + graph links;
  PQ codes + ids);
- PLAID (2 bits): tokens kept per document (at most the ColBERT model's document_length) x the
  measured bytes per token (residuals + centroid codes), plus the centroids (ColBERT's rule:
  2^floor(log2(16 sqrt(tokens))) centroids of 128 float32);
- sparse and BM25: the measured bytes per document, scaled by --doc-tokens / the measured mean
  document length (an assumption: posting lists grow with the text);
- encoding: measured core-seconds per token (per document for SPLADE, scaled likewise) x tokens;
  GPU hours divide the core hours by --gpu-speedup, an ESTIMATE (no GPU measured these figures).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

SIZES = (1_000_000, 10_000_000, 100_000_000)


def _bytes(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1e3:.0f} kB"


def _hours(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:,.0f}" if hours >= 10 else f"{hours:.1f}"


def plan(measured: dict[str, Any], *, doc_tokens: int, node_ram_gb: float, gpu_speedup: float) -> list[dict]:
    ram = node_ram_gb * 1e9
    dense = measured["dense"]
    dim = dense["dimension"]
    dense_core_s = doc_tokens * dense["core_seconds_per_token"]
    rows: list[dict] = []
    for n in SIZES:

        def row(family: str, index: float, query_ram: float, core_s: float | None, backend: str, n: int = n) -> None:
            rows.append({"documents": n, "family": family, "index_bytes": index, "query_ram_bytes": query_ram,
                         "core_hours": None if core_s is None else n * core_s / 3600,
                         "gpu_hours_estimate": None if core_s is None else n * core_s / 3600 / gpu_speedup,
                         "backend": backend})  # fmt: skip

        f32, hnsw, ivfpq = n * dim * 4, n * dense["hnsw_bytes_per_document"], n * dense["ivfpq_bytes_per_document"]
        if f32 <= 0.25 * ram:
            dense_backend = "flat or hnsw, in process"
        elif hnsw <= 0.75 * ram:
            dense_backend = "hnsw in process, or lancedb"
        else:
            dense_backend = "lancedb ivf_pq on disk (one node); milvus cluster (RAM)"
        row("dense float32 (flat)", f32, f32, dense_core_s, dense_backend)
        row("dense float32 (hnsw)", hnsw, hnsw, dense_core_s, "hnsw" if hnsw <= 0.75 * ram else "milvus cluster")
        row("dense int8", n * dim, n * dim, dense_core_s, "flat int8 + float32 rescoring")
        row("dense binary", n * dim / 8, n * dim / 8, dense_core_s, "binary + int8 rescoring")
        row("dense ivf-pq (FAISS, in RAM)", ivfpq, ivfpq, dense_core_s, "ivfpq")
        # LanceDB keeps the float32 vectors and its IVF-PQ index on disk; a query reads the probed
        # partitions' codes and rescores refine_factor x k vectors: RAM ~ the codes, if all are cached
        row("dense lancedb ivf_pq (disk)", f32 + ivfpq, ivfpq, dense_core_s, "lancedb")
        colbert = measured["colbert"]
        kept = min(doc_tokens, colbert["document_length"])
        tokens = n * kept
        centroids = 2 ** math.floor(math.log2(16 * math.sqrt(tokens))) * colbert["dimension"] * 4
        plaid = tokens * colbert["bytes_per_token"] + centroids
        row(f"PLAID {colbert['nbits']} bits", plaid, plaid, kept * colbert["core_seconds_per_token"],
            "plaid (memory-mapped)" if plaid <= 0.75 * ram else "plaid shards per node")  # fmt: skip
        if "sparse" in measured:
            sparse = measured["sparse"]
            scale = doc_tokens / sparse["tokens_per_document"]
            size = n * sparse["bytes_per_document"] * scale
            row("sparse (SPLADE)", size, size, sparse["core_seconds_per_document"] * scale,
                "sparse index" if size <= 0.75 * ram else "milvus sparse / shards")  # fmt: skip
        bm25 = n * measured["bm25"]["bytes_per_document"] * doc_tokens / dense["tokens_per_document"]
        row("BM25", bm25, bm25, None, "bm25 (bm25s)" if bm25 <= 0.75 * ram else "shards per node")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("measured", type=Path, help="measured.json written by benchmarks/scale.py")
    parser.add_argument("--doc-tokens", type=int, default=200)
    parser.add_argument("--node-ram-gb", type=float, default=64.0, help="RAM of one query node, for the backend")
    parser.add_argument("--gpu-speedup", type=float, default=150.0,
                        help="ESTIMATE: one GPU's encoding throughput in CPU cores (not measured here)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    measured = json.loads(args.measured.read_text())
    rows = plan(measured, doc_tokens=args.doc_tokens, node_ram_gb=args.node_ram_gb, gpu_speedup=args.gpu_speedup)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"Documents of {args.doc_tokens} tokens; query node of {args.node_ram_gb:g} GB RAM; GPU hours are "
          f"estimates (1 GPU = {args.gpu_speedup:g} CPU cores).\n")  # fmt: skip
    print("| documents | family | index | query-node RAM | encode h / CPU core | encode h / GPU (est.) | backend |")
    print("|---:|---|---:|---:|---:|---:|---|")
    for r in rows:
        core = "-" if r["core_hours"] is None else _hours(r["core_hours"] * 3600)
        gpu = "-" if r["gpu_hours_estimate"] is None else _hours(r["gpu_hours_estimate"] * 3600)
        print(f"| {r['documents'] / 1e6:g} M | {r['family']} | {_bytes(r['index_bytes'])} | "
              f"{_bytes(r['query_ram_bytes'])} | {core} | {gpu} | {r['backend']} |")  # fmt: skip
    d = measured["dense"]
    print(f"\nMeasured on {measured['documents']:,} SciFact documents with {measured['threads']} threads: "
          f"MiniLM {d['core_seconds_per_token'] * 1e6:.0f} core-us/token; HNSW {d['hnsw_bytes_per_document']:.0f} "
          f"B/doc; IVF-PQ {d['ivfpq_bytes_per_document']:.0f} B/doc; PLAID {measured['colbert']['bytes_per_token']:.1f}"
          f" B/token; BM25 {measured['bm25']['bytes_per_document']:.0f} B/doc at {d['tokens_per_document']:.0f} "
          "tokens/doc.")  # fmt: skip


if __name__ == "__main__":
    main()
