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
4. SciFact test, documents read up to --index-document-length tokens: dense MiniLM (flat), BM25,
   and the fine-tuned ColBERT over multivector-flat (exact MaxSim) and plaid (its defaults, nbits
   4); PLAID's fidelity to the exact index (recall@10 of its top 10, in the evaluation and at k=10
   with the default settings; nDCG@10 difference) and its size at nbits 2 and 4 (bytes per token
   vector against float32).
Prints the tables; writes OUTPUT/summary.json.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

from _finetune import finetune_parser, recorded_settings


def main() -> None:
    parser = finetune_parser(__doc__, epochs=3, batch_size=32, learning_rate=3e-5)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--document-length", type=int, default=180, help="ColBERT's document_length")
    parser.add_argument(
        "--index-document-length", type=int, default=512,
        help="tokens per document when SciFact is indexed (its abstracts run past 180; a model trained at 180 "
        "reads them whole at inference, as PyLate's ColBERT(path, document_length=N))",
    )  # fmt: skip
    parser.add_argument("--embedding-size", type=int, default=128)
    parser.add_argument("--mini-batch-size", type=int, default=16, help="texts per forward pass (GradCache)")
    parser.add_argument("--zero-shot", action="store_true", help="also evaluate the untrained ColBERT")
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
        base = build_colbert(
            "minilm", embedding_size=args.embedding_size, seed=args.seed,
            config=replace(colbert_config, document_length=args.index_document_length),
        )  # fmt: skip
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
    model = load_colbert(trained.model_dir, device="cpu", document_length=args.index_document_length)
    systems = [
        DenseSpec(dense),
        Bm25Spec(),
        MultiVectorSpec(model, index_type="multivector-flat", name="colbert-flat"),
        MultiVectorSpec(model, index_type="plaid", name="colbert-plaid"),  # its defaults: nbits 4
    ]
    result = evaluate_dataset(beir.root, systems=systems, cache_root=cache, k_values=[10, 100])
    timings["evaluate"] = time.perf_counter() - t
    by_name = {s.retriever: s for s in result.systems}
    flat, plaid = by_name["colbert-flat"], by_name["colbert-plaid"]
    exact_top10 = {q: [d.doc_id for d in flat.run[q][:10]] for q in flat.run}
    recall_vs_flat = _overlap_at_10({q: [d.doc_id for d in plaid.run[q][:10]] for q in plaid.run}, exact_top10)

    # PLAID's size at nbits 2 (the size goal's setting) and 4 (the default), from the cached token vectors
    vectors, _, _ = corpus_token_vectors(model, beir.corpus_path, cache_root=cache, scratch=args.output)
    tokens = len(vectors.vectors)
    sizes: dict[int, int] = {}
    fidelity_k10: dict[int, float] = {}
    test = beir.load("test")
    query_vectors = model.encode_queries(test.queries.texts())
    for nbits in (2, 4):
        t = time.perf_counter()
        index = PlaidIndex(model.dimension, nbits=nbits, model_fingerprint=model.fingerprint)
        index.add(train_split.corpus.ids, vectors)
        timings[f"plaid build (nbits {nbits})"] = time.perf_counter() - t
        index_dir = index.save(args.output / f"plaid-index-{nbits}bit")
        sizes[nbits] = sum(p.stat().st_size for p in index_dir.rglob("*") if p.is_file())
        # the fidelity goal's setting: k=10 at the default search settings
        top10 = {q: hits.ids for q, hits in zip(test.queries.ids, index.search(query_vectors, 10), strict=True)}
        fidelity_k10[nbits] = _overlap_at_10(top10, exact_top10)
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
        f"\nPLAID fidelity (nbits 4, the default): recall@10 against multivector-flat {recall_vs_flat:.4f} in the "
        f"evaluation (k=1000 settings), {fidelity_k10[4]:.4f} searching k=10 at the default settings "
        f"(nbits 2: {fidelity_k10[2]:.4f}); nDCG@10 difference {ndcg_gap:+.4f}"
    )  # fmt: skip
    float_bytes = tokens * model.dimension * 4
    for nbits, size in sizes.items():
        print(
            f"PLAID size (nbits {nbits}): {size / 2**20:.1f} MiB for {tokens:,} token vectors = "
            f"{size / tokens:.1f} B per token vector; float32 vectors {float_bytes / 2**20:.1f} MiB "
            f"({float_bytes / size:.1f}x larger); build {timings[f'plaid build (nbits {nbits})']:.1f} s"
        )  # fmt: skip
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + f"; total wall {wall:.0f}")
    settings = recorded_settings(args)
    print(f"settings: {settings}\nmodel: {trained.model_dir}")
    summary = {
        "systems": {k: v.metrics.aggregate for k, v in by_name.items()}, "zero_shot": zero_shot,
        "plaid_recall_at_10_vs_flat": recall_vs_flat, "plaid_ndcg_difference": ndcg_gap,
        "plaid_recall_at_10_vs_flat_k10_defaults": {str(n): r for n, r in fidelity_k10.items()},
        "plaid_bytes": {str(n): b for n, b in sizes.items()}, "token_vectors": tokens,
        "bytes_per_token_vector": {str(n): b / tokens for n, b in sizes.items()},
        "timings_s": timings, "wall_s": wall, "settings": settings, "steps": trained.steps,
        "train_peak_rss_mib": trained.peak_rss_mib, "mining": vars(report), "model_dir": str(trained.model_dir),
    }  # fmt: skip
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def _overlap_at_10(run: dict[str, list[str]], exact: dict[str, list[str]]) -> float:
    """Mean share of each query's exact top 10 that ``run``'s top 10 holds (recall@10 against exact)."""
    shares = [len(set(run.get(q, [])[:10]) & set(ids)) / max(1, len(ids)) for q, ids in exact.items()]
    return sum(shares) / max(1, len(shares))


if __name__ == "__main__":
    main()
