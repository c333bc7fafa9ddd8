"""Full SciFact dense evaluation: retrievekit against sentence-transformers' InformationRetrievalEvaluator.

    python benchmarks/evaluate.py

Same model (bundled all-MiniLM-L6-v2, max length 256), same data (SciFact test, documents as
title + " " + text), same process. retrievekit runs cold (empty cache) with the torch backend and
with the ONNX int8 backend, then warm (cached corpus embeddings and runs). The peer always encodes,
with its torch backend and, where optimum is installed (the environment `benchmarks/make_peer_env.sh`
builds), its quantised ONNX backend for this CPU (its fastest on a CPU). With --repeats N every cold evaluation runs N times, each round in
the reverse order of the previous one; the best time of each is reported.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from _peer import export_st_quantized, st_quantization_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-peer", action="store_true", help="Only time retrievekit.")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of cold evaluations, alternating order")
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
    best: dict[str, tuple[float, float, float, float]] = {}

    def peer(label: str, backend: str) -> None:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.evaluation import InformationRetrievalEvaluator

        started = time.perf_counter()
        options = {}
        if backend == "onnx":
            plain = SentenceTransformer(str(model_dir), device="cpu", backend="onnx")
            options = {"model_kwargs": {"file_name": export_st_quantized(plain, model_dir)}}
            started = time.perf_counter()  # the one-time export is not part of the evaluation either
        model = SentenceTransformer(str(model_dir), device="cpu", backend=backend, **options)
        evaluator = InformationRetrievalEvaluator(
            queries={q.id: q.text for q in split.queries},
            corpus={d.id: d.full_text for d in split.corpus},
            relevant_docs={qid: split.qrels.relevant(qid) for qid in split.qrels},
            ndcg_at_k=[10], mrr_at_k=[10], accuracy_at_k=[1], precision_recall_at_k=[100], map_at_k=[100],
            batch_size=args.batch_size, show_progress_bar=False, name="scifact",
        )  # fmt: skip
        scores = evaluator(model)
        seconds = time.perf_counter() - started
        get = lambda name: next(v for k, v in scores.items() if k.endswith(name))  # noqa: E731
        keep(label, seconds, get("ndcg@10"), get("recall@100"), get("mrr@10"))

    def keep(label: str, seconds: float, ndcg: float, recall: float, mrr: float) -> None:
        if label not in best or seconds < best[label][0]:
            best[label] = (seconds, ndcg, recall, mrr)

    def cold(label: str, backend: str) -> None:
        shutil.rmtree(workdir / f"cache-{backend}", ignore_errors=True)  # cold: an empty cache each time
        ours(label, backend, workdir / f"cache-{backend}")
        keep(*rows.pop())

    jobs = [
        ("retrievekit cold, torch fp32", lambda: cold("retrievekit cold, torch fp32", "torch")),
        ("retrievekit cold, onnx int8", lambda: cold("retrievekit cold, onnx int8", "onnx")),
    ]
    if not args.skip_peer:
        jobs.insert(
            0, ("peer torch", lambda: peer("sentence-transformers InformationRetrievalEvaluator (torch)", "torch"))
        )
        try:
            import optimum  # noqa: F401  (the peer's ONNX backend needs it)

            jobs.append(
                (
                    "peer onnx",
                    lambda: peer(
                        f"sentence-transformers InformationRetrievalEvaluator (onnx int8 {st_quantization_config()})",
                        "onnx",
                    ),
                )
            )
        except ImportError:
            print(
                "sentence-transformers ONNX not measured: optimum is not installed here (see the encoding table's environment)"
            )
    for repeat in range(args.repeats):
        for name, job in jobs if repeat % 2 == 0 else jobs[::-1]:
            job()
            print(f"round {repeat + 1}: {name} done", flush=True)
    ours("retrievekit warm (cached), torch fp32", "torch", workdir / "cache-torch")
    keep(*rows.pop())
    rows.extend((label, *values) for label, values in best.items())
    peer_s = min((v[0] for k, v in best.items() if k.startswith("sentence-transformers")), default=None)
    torch_cold = best["retrievekit cold, torch fp32"][0]
    onnx_cold = best["retrievekit cold, onnx int8"][0]
    warm = best["retrievekit warm (cached), torch fp32"][0]

    print(
        f"\nSciFact test ({len(split.queries)} queries, {len(split.corpus):,} documents), all-MiniLM-L6-v2, batch {args.batch_size}\n"
    )
    print("| evaluation | wall s | nDCG@10 | Recall@100 | MRR@10 |")
    print("|---|---:|---:|---:|---:|")
    for label, seconds, ndcg, recall, mrr in rows:
        print(f"| {label} | {seconds:.1f} | {ndcg:.4f} | {recall:.4f} | {mrr:.4f} |")
    if peer_s is not None:
        print(
            f"\nagainst the peer's fastest backend: cold, torch: {peer_s / torch_cold:.2f}×; cold, onnx int8: {peer_s / onnx_cold:.2f}×; warm: {peer_s / warm:.1f}×"
        )
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
