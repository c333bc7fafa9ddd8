"""Build a ColBERT model from the bundled all-MiniLM-L6-v2, fine-tune it on SciFact train, and
evaluate it on SciFact test with the plaid index, beside BM25 and the dense model.

    python benchmarks/finetune_colbert_scifact.py --output runs/colbert-scifact

No trained ColBERT weights can be had offline, so the model is made here, all through retrievekit's
public API (2 CPU cores: about an hour):
1. a new ColBERT from MiniLM's transformer: [Q]/[D] markers added, a seeded random 384 -> 128
   projection (PyLate's recipe); its zero-shot nDCG@10 is measured with ``--zero-shot``;
2. hard negatives for the 809 training claims mined with the dense MiniLM (ranks --range, --num per
   claim, dropping candidates within --relative-margin of the positive's score);
3. training through the one trainer: InfoNCE over MaxSim scores (in-batch + hard negatives,
   temperature 1 as PyLate's Contrastive loss, which scores raw MaxSim sums), GradCache so the
   batch fits in memory; the model is saved under OUTPUT/train/model (PyLate's layout);
4. SciFact test: dense MiniLM (flat), BM25, and the fine-tuned ColBERT over multivector-flat (exact
   MaxSim) and plaid; PLAID's fidelity to the exact index (recall@10 of its top 10, nDCG@10
   difference) and its size (bytes per token vector against float32).
Prints the tables; writes OUTPUT/summary.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-negatives", type=int, default=3, help="hard negatives per query in a batch")
    parser.add_argument("--learning-rate", type=float, default=3e-5)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--range", default="5-50", help="ranks to sample mined negatives from")
    parser.add_argument("--num", type=int, default=8, help="negatives mined per query")
    parser.add_argument("--relative-margin", type=float, default=0.05)
    parser.add_argument("--document-length", type=int, default=180, help="ColBERT's document_length")
    parser.add_argument("--embedding-size", type=int, default=128)
    parser.add_argument("--mini-batch-size", type=int, default=16, help="texts per forward pass (GradCache)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--zero-shot", action="store_true", help="also evaluate the untrained ColBERT")
    parser.add_argument("--cache", type=Path, default=None, help="evaluation cache (default: OUTPUT/cache)")
    args = parser.parse_args()

    from retrievekit import load_dataset, load_encoder
    from retrievekit.evaluation import evaluate_dataset
    from retrievekit.evaluation.systems import Bm25Spec, DenseSpec, MultiVectorSpec, corpus_token_vectors
    from retrievekit.index.plaid import PlaidIndex
    from retrievekit.models.colbert import build_colbert, load_colbert
    from retrievekit.models.colbert_format import ColbertConfig
    from retrievekit.training import (
        examples_from_split,
        load_config,
        mine_hard_negatives,
        parse_rank_range,
        train,
        write_training_rows,
    )
    from retrievekit.training.mining_sources import dense_corpus_retriever

    started = time.perf_counter()
    args.output.mkdir(parents=True, exist_ok=True)
    cache = args.cache or args.output / "cache"
    beir = load_dataset(args.dataset, download=False)
    timings: dict[str, float] = {}
    colbert_config = ColbertConfig(document_length=args.document_length)
    dense = load_encoder("minilm", device="cpu", max_length=256)

    zero_shot = None
    if args.zero_shot:
        t = time.perf_counter()
        base = build_colbert("minilm", embedding_size=args.embedding_size, seed=args.seed, config=colbert_config)
        result = evaluate_dataset(beir.root, systems=[MultiVectorSpec(base)], cache_root=cache, k_values=[10, 100])
        zero_shot = result.systems[0].metrics.aggregate
        timings["zero-shot"] = time.perf_counter() - t
        print(f"zero-shot ColBERT (plaid): ndcg@10 {zero_shot['ndcg@10']:.4f}", flush=True)

    # 2. mine with the dense model
    t = time.perf_counter()
    train_split = beir.load("train")
    retriever, _ = dense_corpus_retriever(dense, beir.corpus_path, cache_root=cache)
    mined, report = mine_hard_negatives(
        examples_from_split(train_split), retriever, train_split.corpus, rank_range=parse_rank_range(args.range),
        num=args.num, relative_margin=args.relative_margin, seed=args.seed,
    )  # fmt: skip
    data_file = write_training_rows(args.output / "scifact-train-mined.jsonl", mined)
    timings["mine"] = time.perf_counter() - t
    print(f"mined: {report} ({timings['mine']:.0f} s)", flush=True)

    # 3. train
    config = load_config(
        overrides={
            "model": "minilm", "kind": "colbert", "embedding_size": args.embedding_size, "data": [str(data_file)],
            "batch_size": args.batch_size, "num_negatives": args.num_negatives,
            "document_max_length": args.document_length, "learning_rate": args.learning_rate, "epochs": args.epochs,
            "warmup_ratio": 0.1, "temperature": args.temperature, "loss": "cached_infonce",
            "mini_batch_size": args.mini_batch_size, "seed": args.seed, "output": str(args.output / "train"),
            "checkpoint_every": 20, "log_every": 1, "resume": True,
        }
    )  # fmt: skip
    trained = train(config)
    timings["train"] = trained.wall_seconds
    print(
        f"trained: {trained.steps} steps, {trained.examples_per_second:.2f} ex/s, "
        f"peak RSS {trained.peak_rss_mib / 1024:.2f} GiB",
        flush=True,
    )

    # 4. SciFact test
    t = time.perf_counter()
    model = load_colbert(trained.model_dir, device="cpu")
    systems = [
        DenseSpec(dense),
        Bm25Spec(),
        MultiVectorSpec(model, index_type="multivector-flat", name="colbert-flat"),
        MultiVectorSpec(model, index_type="plaid", name="colbert-plaid"),
    ]
    result = evaluate_dataset(beir.root, systems=systems, cache_root=cache, k_values=[10, 100])
    timings["evaluate"] = time.perf_counter() - t
    by_name = {s.retriever: s for s in result.systems}
    flat, plaid = by_name["colbert-flat"], by_name["colbert-plaid"]
    overlaps = [
        len({d.doc_id for d in plaid.run[q][:10]} & {d.doc_id for d in flat.run[q][:10]}) / max(1, min(10, len(flat.run[q])))
        for q in flat.run
    ]  # fmt: skip
    recall_vs_flat = sum(overlaps) / len(overlaps)

    # PLAID's size, rebuilt from the cached token vectors of the corpus
    vectors, _, _ = corpus_token_vectors(model, beir.corpus_path, cache_root=cache, scratch=args.output)
    t = time.perf_counter()
    index = PlaidIndex(model.dimension, nbits=2, model_fingerprint=model.fingerprint)  # the size goal's setting
    index.add(train_split.corpus.ids, vectors)
    timings["plaid build"] = time.perf_counter() - t
    index_dir = index.save(args.output / "plaid-index")
    index_bytes = sum(p.stat().st_size for p in index_dir.rglob("*") if p.is_file())
    tokens = len(vectors.vectors)
    wall = time.perf_counter() - started

    print(
        f"\nSciFact test ({result.num_queries} queries)\n\n| system | ndcg@10 | recall@100 | mrr@10 |\n|---|---:|---:|---:|"
    )
    for label, key in (("dense MiniLM, flat", "dense"), ("BM25", "bm25"), ("ColBERT, multivector-flat", "colbert-flat"),
                       ("ColBERT, plaid", "colbert-plaid")):  # fmt: skip
        m = by_name[key].metrics.aggregate
        print(f"| {label} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} | {m['mrr@10']:.4f} |")
    if zero_shot:
        print(f"| ColBERT before training (plaid) | {zero_shot['ndcg@10']:.4f} | {zero_shot['recall@100']:.4f} | "
              f"{zero_shot['mrr@10']:.4f} |")  # fmt: skip
    ndcg_gap = plaid.metrics.aggregate["ndcg@10"] - flat.metrics.aggregate["ndcg@10"]
    print(
        f"\nPLAID fidelity: recall@10 against multivector-flat {recall_vs_flat:.4f}; nDCG@10 difference {ndcg_gap:+.4f}"
    )
    print(
        f"PLAID size (nbits 2): {index_bytes / 2**20:.1f} MiB for {tokens:,} token vectors = "
        f"{index_bytes / tokens:.1f} B per token vector; float32 vectors: {tokens * model.dimension * 4 / 2**20:.1f} MiB "
        f"({tokens * model.dimension * 4 / index_bytes:.1f}x larger); build {timings['plaid build']:.1f} s"
    )  # fmt: skip
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + f"; total wall {wall:.0f}")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    print(f"settings: {settings}\nmodel: {trained.model_dir}")
    summary = {
        "systems": {k: v.metrics.aggregate for k, v in by_name.items()}, "zero_shot": zero_shot,
        "plaid_recall_at_10_vs_flat": recall_vs_flat, "plaid_ndcg_difference": ndcg_gap,
        "plaid_bytes": index_bytes, "token_vectors": tokens, "bytes_per_token_vector": index_bytes / tokens,
        "timings_s": timings, "wall_s": wall, "settings": settings, "steps": trained.steps,
        "train_peak_rss_mib": trained.peak_rss_mib, "mining": vars(report), "model_dir": str(trained.model_dir),
    }  # fmt: skip
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
