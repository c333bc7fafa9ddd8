"""Full SciFact dense evaluation: retrievekit against sentence-transformers' InformationRetrievalEvaluator.

    python benchmarks/evaluate.py

Same model (bundled all-MiniLM-L6-v2, max length 256), same data (SciFact test, documents as
title + " " + text), same process. retrievekit runs cold (empty cache) with the torch backend and
with the ONNX int8 backend, then warm (cached corpus embeddings and runs). The peer always encodes.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-peer", action="store_true", help="Only time retrievekit.")
    args = parser.parse_args()

    from retrievekit import load_dataset, load_encoder, resolve_model
    from retrievekit.evaluation import evaluate_dataset

    beir = load_dataset(args.dataset, download=False)
    split = beir.load("test")
    workdir = Path(tempfile.mkdtemp(prefix="rk-eval-bench-"))
    model_dir = workdir / "minilm"
    shutil.copytree(resolve_model("minilm"), model_dir)
    rows: list[tuple[str, float, float, float, float]] = []

    def ours(label: str, backend: str, cache: Path) -> float:
        started = time.perf_counter()
        encoder = load_encoder(model_dir, backend=backend, device=None if backend == "onnx" else "cpu")
        result = evaluate_dataset(
            beir.root,
            systems=["dense"],
            encoder=encoder,
            cache_root=cache,
            batch_size=args.batch_size,
            k_values=[10, 100],
        )
        seconds = time.perf_counter() - started
        metrics = result.systems[0].metrics.aggregate
        rows.append((label, seconds, metrics["ndcg@10"], metrics["recall@100"], metrics["mrr@10"]))
        return seconds

    load_encoder(model_dir, backend="onnx")  # the one-time ONNX export is not part of an evaluation
    peer_s = None
    if not args.skip_peer:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.evaluation import InformationRetrievalEvaluator

        started = time.perf_counter()
        model = SentenceTransformer(str(model_dir), device="cpu")
        evaluator = InformationRetrievalEvaluator(
            queries={q.id: q.text for q in split.queries},
            corpus={d.id: d.full_text for d in split.corpus},
            relevant_docs={qid: split.qrels.relevant(qid) for qid in split.qrels},
            ndcg_at_k=[10],
            mrr_at_k=[10],
            accuracy_at_k=[1],
            precision_recall_at_k=[100],
            map_at_k=[100],
            batch_size=args.batch_size,
            show_progress_bar=False,
            name="scifact",
        )
        scores = evaluator(model)
        peer_s = time.perf_counter() - started
        get = lambda name: next(v for k, v in scores.items() if k.endswith(name))  # noqa: E731
        rows.append(
            (
                "sentence-transformers InformationRetrievalEvaluator (torch)",
                peer_s,
                get("ndcg@10"),
                get("recall@100"),
                get("mrr@10"),
            )
        )

    torch_cold = ours("retrievekit cold, torch fp32", "torch", workdir / "cache-torch")
    onnx_cold = ours("retrievekit cold, onnx int8", "onnx", workdir / "cache-onnx")
    warm = ours("retrievekit warm (cached), torch fp32", "torch", workdir / "cache-torch")

    print(
        f"\nSciFact test ({len(split.queries)} queries, {len(split.corpus):,} documents), all-MiniLM-L6-v2, batch {args.batch_size}\n"
    )
    print("| evaluation | wall s | nDCG@10 | Recall@100 | MRR@10 |")
    print("|---|---:|---:|---:|---:|")
    for label, seconds, ndcg, recall, mrr in rows:
        print(f"| {label} | {seconds:.1f} | {ndcg:.4f} | {recall:.4f} | {mrr:.4f} |")
    if peer_s is not None:
        print(
            f"\ncold, torch: {peer_s / torch_cold:.2f}× the peer; cold, onnx int8: {peer_s / onnx_cold:.2f}×; warm: {peer_s / warm:.1f}×"
        )
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
