"""Fine-tune all-MiniLM-L6-v2 on SciFact train with self-mined hard negatives; evaluate before/after on SciFact test.

    python benchmarks/finetune_scifact.py --output runs/finetune-scifact

Steps, all through retrievekit's public API, on whatever this machine has (2 CPU cores: ~30 min):
1. evaluate the bundled model on SciFact test (dense, exact search) -> nDCG@10 before;
2. mine hard negatives for the 809 training claims with the model itself (the corpus vectors of
   step 1 are reused from the cache), ranks --range, --num per claim, dropping candidates within
   --relative-margin of the positive's score;
3. train (InfoNCE over in-batch + hard negatives) and save the model under OUTPUT/train/model in
   retrievekit's and sentence-transformers' format;
4. evaluate the fine-tuned model the same way -> nDCG@10 after; check that sentence-transformers
   loads the saved folder and gives the same vectors.
Prints one table; writes OUTPUT/summary.json and OUTPUT/train/curves.png.
"""

from __future__ import annotations

import json
import time

from _finetune import finetune_parser, recorded_settings


def main() -> None:
    parser = finetune_parser(__doc__, epochs=2, batch_size=32, learning_rate=3e-5)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument(
        "--loss", default="cached_infonce", choices=["infonce", "cached_infonce"],
        help="cached_infonce (GradCache): the same gradients as infonce, memory bounded by --mini-batch-size texts",
    )  # fmt: skip
    parser.add_argument("--mini-batch-size", type=int, default=16, help="texts per forward pass with cached_infonce")
    args = parser.parse_args()

    import numpy as np

    from retrievekit import load_dataset, load_encoder
    from retrievekit.evaluation import evaluate_dataset
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

    def test_ndcg(encoder) -> dict[str, float]:
        result = evaluate_dataset(beir.root, split="test", encoder=encoder, cache_root=cache, k_values=[10, 100])
        return result.systems[0].metrics.aggregate

    # 1. before
    t = time.perf_counter()
    base = load_encoder("minilm", device="cpu", max_length=args.max_length)
    before = test_ndcg(base)
    timings["evaluate before"] = time.perf_counter() - t
    print(f"before: ndcg@10 {before['ndcg@10']:.4f}  ({timings['evaluate before']:.0f} s)", flush=True)

    # 2. mine
    t = time.perf_counter()
    train_split = beir.load("train")
    examples = examples_from_split(train_split)
    retriever, cached = dense_corpus_retriever(base, beir.corpus_path, cache_root=cache)
    mined, report = mine_hard_negatives(
        examples, retriever, train_split.corpus, rank_range=parse_rank_range(args.range),
        num=args.num, relative_margin=args.relative_margin, seed=args.seed,
    )  # fmt: skip
    data_file = write_training_rows(args.output / "scifact-train-mined.jsonl", mined)
    timings["mine"] = time.perf_counter() - t
    print(f"mined: {report} (corpus vectors cached: {cached}, {timings['mine']:.0f} s)", flush=True)

    # 3. train
    config = load_config(
        overrides={
            "model": "minilm",
            "data": [str(data_file)],
            "batch_size": args.batch_size,
            "num_negatives": args.num_negatives,
            "query_max_length": 64,
            "document_max_length": args.max_length,
            "learning_rate": args.learning_rate,
            "epochs": args.epochs,
            "warmup_ratio": 0.1,
            "temperature": 0.05,
            "loss": args.loss,
            "mini_batch_size": args.mini_batch_size,
            "seed": args.seed,
            "output": str(args.output / "train"),
            "checkpoint_every": 20,
            "log_every": 1,
            "resume": True,
        }
    )
    result = train(config)
    timings["train"] = result.wall_seconds
    print(
        f"trained: {result.steps} steps, {result.examples} examples, {result.examples_per_second:.2f} ex/s, "
        f"peak RSS {result.peak_rss_mib / 1024:.2f} GiB",
        flush=True,
    )

    # 4. after (torch backend, like before) + sentence-transformers round trip
    t = time.perf_counter()
    tuned = load_encoder(result.model_dir, device="cpu", max_length=args.max_length)
    after = test_ndcg(tuned)
    timings["evaluate after"] = time.perf_counter() - t
    st_diff = None
    try:
        from sentence_transformers import SentenceTransformer

        probe = [d.full_text for d in list(train_split.corpus)[:8]]
        st = SentenceTransformer(str(result.model_dir), device="cpu")
        st_diff = float(np.abs(st.encode(probe) - tuned.encode_documents(probe)).max())
    except ImportError:
        pass
    wall = time.perf_counter() - started

    rows = [("all-MiniLM-L6-v2 (bundled)", before), ("fine-tuned on SciFact train", after)]
    print("\n| model | ndcg@10 | recall@100 | mrr@10 |\n|---|---:|---:|---:|")
    for label, metrics in rows:
        print(f"| {label} | {metrics['ndcg@10']:.4f} | {metrics['recall@100']:.4f} | {metrics['mrr@10']:.4f} |")
    print(f"\nnDCG@10 gain: {after['ndcg@10'] - before['ndcg@10']:+.4f}")
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + f"; total wall {wall:.0f}")
    print(f"peak RSS by the end of training: {result.peak_rss_mib / 1024:.2f} GiB (loss {args.loss})")
    settings = recorded_settings(args)
    print(f"settings: {settings}")
    if st_diff is not None:
        print(f"sentence-transformers loads {result.model_dir}: max |difference| {st_diff:.2e}")
    summary = {
        "before": before, "after": after, "timings_s": timings, "wall_s": wall, "settings": settings,
        "steps": result.steps, "examples_per_second": result.examples_per_second, "mining": vars(report),
        "train_peak_rss_mib": result.peak_rss_mib,
        "sentence_transformers_max_abs_diff": st_diff, "model_dir": str(result.model_dir),
    }  # fmt: skip
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
