"""Train a cross-encoder from all-MiniLM-L6-v2 on SciFact train; rerank the hybrid's top 100 on SciFact test.

    python benchmarks/finetune_reranker_scifact.py --output runs/reranker-scifact

No trained cross-encoder weights exist offline, so this trains one, all through retrievekit's public API:
1. hard negatives for the 809 training claims from the hybrid (MiniLM dense + BM25, reciprocal rank
   fusion) over the corpus: ranks --range, --num per claim, dropping candidates within
   --relative-margin of the positive's score (likely unlabelled positives);
2. training through the one trainer: MiniLM's transformer under a new one-label head (seeded), each
   claim grouped with its positive and --num-negatives negatives (FlagEmbedding's group softmax
   loss; ``--loss bce`` for a binary cross-entropy per pair), pairs cut to --max-length tokens; the
   reranker is saved under OUTPUT/train/model (sentence-transformers' CrossEncoder layout);
3. SciFact test: bm25 and hybrid as first stages, each reranked at depth --rerank-top-k, alone
   (``FIRST>rerank``) and fused with its first stage by reciprocal rank fusion (``FIRST>rerank+rrf``,
   the same RRF, k=60, as the hybrid; nothing tuned on test), in one table with paired t-tests
   against each row's own first stage; every pair is scored once for both rows.
Prints the table; writes OUTPUT/summary.json, OUTPUT/eval (results.json, runs) and OUTPUT/train/curves.png.
"""

from __future__ import annotations

import json
import time

from _finetune import finetune_parser, recorded_settings


def main() -> None:
    parser = finetune_parser(__doc__, epochs=1, batch_size=8, learning_rate=5e-5)
    parser.set_defaults(range="1-30", num=15, num_negatives=7)
    parser.add_argument("--model", default="minilm", help="the encoder the reranker starts from")
    parser.add_argument("--loss", default="group_softmax", choices=["group_softmax", "bce"])
    parser.add_argument("--max-length", type=int, default=256, help="tokens per (claim, abstract) pair")
    parser.add_argument("--rerank-top-k", type=int, default=100)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--rerank-fusion", nargs="+", default=["none", "rrf"], choices=["none", "rrf", "weighted"],
                        help="reranked rows: none = the reranker's order alone; rrf/weighted = fused with the first stage")  # fmt: skip
    args = parser.parse_args()

    from retrievekit import load_dataset, load_encoder
    from retrievekit.evaluation import evaluate_dataset, write_report
    from retrievekit.evaluation.significance import paired_t_test
    from retrievekit.index.bm25 import Bm25Index
    from retrievekit.models.cross_encoder import load_cross_encoder
    from retrievekit.retrieval import Bm25Retriever, Pipeline
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
    dense_model = load_encoder(args.model)

    # 1. mine with the hybrid
    t = time.perf_counter()
    train_split = beir.load("train")
    dense, _ = dense_corpus_retriever(dense_model, beir.corpus_path, cache_root=cache)
    bm25 = Bm25Index()
    bm25.add(train_split.corpus.ids, train_split.corpus.texts())
    hybrid = Pipeline([dense, Bm25Retriever(bm25)], fusion="rrf", name="hybrid")
    mined, report = mine_hard_negatives(
        examples_from_split(train_split), hybrid, train_split.corpus,
        rank_range=parse_rank_range(args.range), num=args.num, relative_margin=args.relative_margin, seed=args.seed,
    )  # fmt: skip
    data_file = write_training_rows(args.output / "scifact-train-hybrid.jsonl", mined)
    timings["mine"] = time.perf_counter() - t
    print(f"mined: {report} ({timings['mine']:.0f} s)", flush=True)

    # 2. train
    query_tokens = 64
    config = load_config(
        overrides={
            "model": args.model, "kind": "cross_encoder", "data": [str(data_file)], "batch_size": args.batch_size,
            "num_negatives": args.num_negatives, "query_max_length": query_tokens,
            "document_max_length": args.max_length - query_tokens, "learning_rate": args.learning_rate,
            "epochs": args.epochs, "warmup_ratio": 0.1, "loss": args.loss, "seed": args.seed,
            "output": str(args.output / "train"), "checkpoint_every": 20, "log_every": 1, "resume": True,
        }
    )  # fmt: skip
    trained = train(config)
    timings["train"] = trained.wall_seconds
    print(f"trained: {trained.steps} steps, {trained.examples_per_second:.2f} groups/s, "
          f"peak RSS {trained.peak_rss_mib / 1024:.2f} GiB", flush=True)  # fmt: skip

    # 3. rerank the first stages on SciFact test
    t = time.perf_counter()
    reranker = load_cross_encoder(trained.model_dir, max_length=args.max_length)
    result = evaluate_dataset(
        beir.root, systems=["bm25", "hybrid"], encoder=dense_model, cache_root=cache, k_values=[10, 100],
        reranker=reranker, rerank_top_k=args.rerank_top_k, batch_size=args.eval_batch_size,
        rerank_fusion=[None if f == "none" else f for f in args.rerank_fusion],
    )  # fmt: skip
    timings["evaluate"] = time.perf_counter() - t
    write_report(result, args.output / "eval")
    rows = {s.retriever: s for s in result.systems}
    own = {
        name: paired_t_test(rows[name.split(">")[0]].metrics.values("ndcg@10"), row.metrics.values("ndcg@10"),
                            "ndcg@10")
        for name, row in rows.items() if ">" in name
    }  # fmt: skip
    wall = time.perf_counter() - started
    print(f"\nSciFact test, reranking the top {args.rerank_top_k} with the trained cross-encoder\n")
    print("| system | nDCG@10 | Recall@100 | p vs its first stage |\n|---|---:|---:|---:|")
    for name, row in rows.items():
        p = f"{own[name].p_value:.2g}" if name in own else "—"
        print(f"| {name} | {row.metrics.aggregate['ndcg@10']:.4f} | {row.metrics.aggregate['recall@100']:.4f} | {p} |")
    for name in (n for n in rows if n.startswith("hybrid>")):
        gain = rows[name].metrics.aggregate["ndcg@10"] - rows["hybrid"].metrics.aggregate["ndcg@10"]
        print(f"{name} - hybrid: {gain:+.4f} nDCG@10")
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + f"; total wall {wall:.0f}")
    settings = recorded_settings(args)
    print(f"settings: {settings}\nreranker: {trained.model_dir}")
    summary = {
        "ndcg@10": {name: row.metrics.aggregate["ndcg@10"] for name, row in rows.items()},
        "recall@100": {name: row.metrics.aggregate["recall@100"] for name, row in rows.items()},
        "p_vs_first_stage": {name: vars(test) for name, test in own.items()},
        "timings_s": timings, "wall_s": wall, "settings": settings, "steps": trained.steps,
        "train_peak_rss_mib": trained.peak_rss_mib, "mining": vars(report), "model_dir": str(trained.model_dir),
    }  # fmt: skip
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
