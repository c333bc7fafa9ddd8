"""Reranking on a CPU: retrievekit's cross-encoder against sentence-transformers' CrossEncoder, one process.

    benchmarks/make_peer_env.sh
    benchmarks/.venv-peer/bin/python benchmarks/rerank.py --model runs/reranker-scifact/train/model

The pairs: the first stage's (BM25) top --top-k for the first --queries SciFact test queries (300 x
100 = 30,000 pairs by default), each (claim, title + abstract). Every engine scores the same pairs
with the same torch threads (--threads), cut to --max-length tokens (longest_first), batch
--batch-size; alternating rounds, best of --repeats, after one untimed warm-up on a few pairs:
- sentence-transformers ``CrossEncoder.predict`` with torch (its default);
- its ONNX backends where ``optimum-onnx`` is installed (the peers' environment): fp32, and the
  dynamically quantised model ``export_dynamic_quantized_onnx_model`` builds for this CPU;
- retrievekit ``CrossEncoder.predict``: torch fp32 and ONNX Runtime int8;
- with --rescore-top-k N, retrievekit's cascade (``CascadeReranker``, ``rerank --rescore-top-k``):
  the int8 graph orders each query's candidates, the float32 graph re-scores its best N.
Printed: pairs/s and the ratio to the peer's torch and to its fastest backend, the largest score
difference from sentence-transformers' torch scores, and nDCG@10 of each engine's reranked run
(pytrec_eval) with its difference from the float32 one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("runs/reranker-scifact/train/model"),
                        help="a cross-encoder folder (benchmarks/finetune_reranker_scifact.py writes one)")  # fmt: skip
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--rescore-top-k",
        type=int,
        nargs="*",
        default=[],
        metavar="N",
        help="add a cascade row per N: int8 for every pair, float32 for each query's best N",
    )
    parser.add_argument("--without", nargs="*", default=[], metavar="TEXT",
                        help="leave out the engines whose name contains TEXT (e.g. 'onnx fp32': the peer's "
                        "slowest ONNX row, to fit a full run in a session)")  # fmt: skip
    args = parser.parse_args()

    import torch
    from _timing import best_of_alternating
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from retrievekit import load_dataset
    from retrievekit.data.records import Qrels, Run
    from retrievekit.evaluation.metrics import compute_metrics
    from retrievekit.index.bm25 import Bm25Index
    from retrievekit.models.cross_encoder import load_cross_encoder
    from retrievekit.retrieval import Bm25Retriever, CascadeReranker, CrossEncoderReranker

    torch.set_num_threads(args.threads)
    split = load_dataset(args.dataset, download=False).load("test")
    texts = dict(zip(split.corpus.ids, split.corpus.texts(), strict=True))
    query_ids, query_texts = split.queries.ids[: args.queries], split.queries.texts()[: args.queries]
    bm25 = Bm25Index()
    bm25.add(split.corpus.ids, split.corpus.texts())
    first = Bm25Retriever(bm25).search(query_texts, args.top_k)
    pairs = [(q, texts[d]) for q, hits in zip(query_texts, first, strict=True) for d in hits.ids]
    print(
        f"{len(pairs):,} pairs: the BM25 top {args.top_k} of {len(query_ids)} {args.dataset} test queries", flush=True
    )

    # every model is a copy, so exports never touch the given folder
    scratch = Path(tempfile.mkdtemp(prefix="rerank-bench-"))
    ours_dir, peer_dir = scratch / "ours", scratch / "peer"
    for target in (ours_dir, peer_dir):
        shutil.copytree(args.model, target, ignore=shutil.ignore_patterns("retrievekit-onnx", "onnx"))
    theirs = STCrossEncoder(str(peer_dir), device="cpu", max_length=args.max_length)
    ours = load_cross_encoder(ours_dir, max_length=args.max_length)
    ours_int8 = load_cross_encoder(ours_dir, max_length=args.max_length, backend="onnx", quantize="int8")
    engines = {
        "sentence-transformers CrossEncoder.predict torch fp32": lambda: theirs.predict(
            pairs, batch_size=args.batch_size
        ),
        "retrievekit torch fp32": lambda: ours.predict(pairs, batch_size=args.batch_size),
        "retrievekit onnx int8": lambda: ours_int8.predict(pairs, batch_size=args.batch_size),
    }
    cascade_top_k: dict[str, int] = {}  # each cascade row's N
    if args.rescore_top_k:
        ours_fp32_graph = load_cross_encoder(ours_dir, max_length=args.max_length, backend="onnx", quantize=None)
        fast = CrossEncoderReranker(ours_int8, texts, batch_size=args.batch_size)
        exact = CrossEncoderReranker(ours_fp32_graph, texts, batch_size=args.batch_size)
        position = {(qi, d): offset for offset, (qi, d) in enumerate(
            (qi, d) for qi, hits in enumerate(first) for d in hits.ids)}  # fmt: skip

        def cascade(top_k: int) -> np.ndarray:
            """The cascade's scores back in pair order (they give its order)."""
            reranked = CascadeReranker(fast, exact, top_k=top_k).rerank(query_texts, first, args.top_k)
            values = np.empty(len(pairs), dtype=np.float64)
            for qi, hits in enumerate(reranked):
                values[[position[qi, d] for d in hits.ids]] = hits.scores
            return values

        for top_k in args.rescore_top_k:
            name = f"retrievekit cascade: onnx int8, then float32 graph on the best {top_k}"
            engines[name] = lambda top_k=top_k: cascade(top_k)
            cascade_top_k[name] = top_k
    peer_onnx: dict[str, Any] = {}
    try:
        from _peer import st_onnx_models

        peer_onnx = st_onnx_models(
            lambda **options: STCrossEncoder(str(peer_dir), device="cpu", max_length=args.max_length, **options),
            peer_dir,
        )
        for name, peer in peer_onnx.items():
            engines[f"sentence-transformers {name}"] = lambda peer=peer: peer.predict(pairs, batch_size=args.batch_size)
    except Exception as exc:  # the peer's optional backend: its absence is reported, not hidden
        print(f"no sentence-transformers ONNX rows: {type(exc).__name__}: {str(exc)[:200]}")
    for name in [n for n in engines if any(text in n for text in args.without)]:
        if name.startswith("sentence-transformers CrossEncoder"):
            raise SystemExit(f"{name!r} is the reference of the ratios and cannot be left out")
        del engines[name]
    # warm-up on a few pairs (the timing loop's own warm-up would score every pair once more)
    warm = pairs[: args.batch_size]
    for model in (theirs, ours, ours_int8, *peer_onnx.values()):
        model.predict(warm, batch_size=args.batch_size)
    if args.rescore_top_k:
        ours_fp32_graph.predict(warm, batch_size=args.batch_size)
    started = time.perf_counter()
    best, scores = best_of_alternating(engines, args.repeats, warm_up=False)
    wall = time.perf_counter() - started

    def ndcg(values: np.ndarray) -> float:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        run, offset = {}, 0
        for qid, hits in zip(query_ids, first, strict=True):
            run[qid] = {d: float(values[offset + i]) for i, d in enumerate(hits.ids) if d != qid}
            offset += len(hits)
        judged = Qrels({qid: split.qrels[qid] for qid in query_ids})  # the measured queries only
        return compute_metrics(judged, Run.from_scores(run), [10]).aggregate["ndcg@10"]

    reference_name = "sentence-transformers CrossEncoder.predict torch fp32"
    reference = np.asarray(scores[reference_name], dtype=np.float64).reshape(-1)
    # float32's nDCG: ours, or the peer's torch (the same model: scores within 1e-5) when ours is left out
    fp32_ndcg = ndcg(scores.get("retrievekit torch fp32", scores[reference_name]))
    peer_best = min(v for k, v in best.items() if k.startswith("sentence-transformers"))
    print(f"\n{len(pairs):,} pairs, max_length {args.max_length}, batch {args.batch_size}, {torch.get_num_threads()} "
          f"threads, best of {args.repeats} alternating rounds ({wall:.0f} s); first stage BM25 nDCG@10 "
          f"{ndcg(np.concatenate([h.scores for h in first])):.4f}\n")  # fmt: skip
    print("| engine | pairs/s | × ST torch | × ST fastest | max abs diff vs ST torch | nDCG@10 | vs fp32 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, seconds in best.items():
        values = np.asarray(scores[name], dtype=np.float64).reshape(-1)
        value = ndcg(values)
        # a cascade's difference is over the pairs the float32 graph scored (the rest keep int8 scores, shifted)
        own = _heads(values, first, cascade_top_k.get(name))
        compared = values[own] - reference[own]
        print(
            f"| {name} | {len(pairs) / seconds:,.0f} | {best[reference_name] / seconds:.2f}× | {peer_best / seconds:.2f}× "
            f"| {np.abs(compared).max():.2e} | {value:.4f} | {value - fp32_ndcg:+.4f} |"
        )
    shutil.rmtree(scratch, ignore_errors=True)


def _heads(values: np.ndarray, first, top_k: int | None) -> np.ndarray:
    """The pairs a row scored with its own model: every pair, or each query's best ``top_k``."""
    if top_k is None:
        return np.ones(len(values), dtype=bool)
    chosen, offset = np.zeros(len(values), dtype=bool), 0
    for hits in first:
        own = values[offset : offset + len(hits)]
        chosen[offset + np.argsort(-own, kind="stable")[:top_k]] = True
        offset += len(hits)
    return chosen


if __name__ == "__main__":
    main()
