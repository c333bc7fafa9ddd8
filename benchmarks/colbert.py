"""ColBERT on a CPU: retrievekit against PyLate on the same model, corpus and token vectors, one process.

    benchmarks/make_peer_env.sh        # PyLate pins sentence-transformers 5.3: its own environment
    benchmarks/.venv-peer/bin/python benchmarks/colbert.py --model runs/colbert-scifact/train/model

Measured, each side with the same threads (torch's, --threads):
- encoding: SciFact documents (the first --docs) with PyLate's ``ColBERT.encode`` and retrievekit's
  torch and ONNX int8 backends, in alternating rounds (best of --repeats), token vectors/s;
- indexing: the whole corpus's token vectors (encoded once, by retrievekit's torch backend: both
  indexes get the very same vectors) into PyLate's PLAID index (Stanford backend, ``use_fast=False``:
  fast-plaid's wheels crash with this torch) and retrievekit's plaid index, both with --nbits
  (default 4, PyLate's default);
- searching: the SciFact test queries, k=10, at each index's default settings, alternating order
  (best of --repeats), queries/s; and recall@10 of each against exact MaxSim (retrievekit's
  multivector-flat index over the same vectors), so speed is compared at known recall. retrievekit's
  index is searched three times: with its own defaults, with PyLate's (8 cells probed, centroid
  score threshold 0.35, 8,192 candidates) and with PLAID's paper count for k=10 (256 candidates).
Without --model, a new ColBERT is built from the bundled MiniLM (seeded); its vectors are not
trained, but the speeds and the recall against exact search are measured all the same.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a ColBERT folder (default: a new one from MiniLM)")
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--docs", type=int, default=400, help="documents for the encoding comparison")
    parser.add_argument("--corpus-docs", type=int, default=None, help="index only the first N documents (a quick try)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-peer", action="store_true", help="only time retrievekit")
    parser.add_argument(
        "--nbits", type=int, default=4, choices=[1, 2, 4], help="both PLAID indexes (PyLate's default: 4)"
    )
    parser.add_argument("--skip-encode", action="store_true", help="skip the encoding comparison")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from _timing import best_of_alternating

    from retrievekit import load_dataset, load_index
    from retrievekit.index.multivector import MultiVectorFlatIndex
    from retrievekit.index.plaid import PlaidIndex
    from retrievekit.models.colbert import build_colbert, load_colbert
    from retrievekit.outputs import MultiVectors

    workdir = Path(tempfile.mkdtemp(prefix="rk-colbert-bench-"))
    model_dir = Path(args.model) if args.model else build_colbert("minilm", seed=42).save(workdir / "colbert")
    ours = load_colbert(model_dir, device="cpu")
    ours_onnx = load_colbert(model_dir, backend="onnx", quantize="int8")
    beir = load_dataset(args.dataset, download=False)
    split = beir.load("test")
    corpus_ids, corpus_texts = split.corpus.ids[: args.corpus_docs], split.corpus.texts()[: args.corpus_docs]
    query_texts = split.queries.texts()
    sample = corpus_texts[: args.docs]

    peer = None
    if not args.skip_peer:
        from pylate import indexes, models

        peer = models.ColBERT(str(model_dir), device="cpu")

    # encoding, alternating rounds
    encoders = {
        "retrievekit torch fp32": lambda: ours.encode_documents(sample, batch_size=args.batch_size),
        "retrievekit onnx int8": lambda: ours_onnx.encode_documents(sample, batch_size=args.batch_size),
    }
    if peer is not None:
        encoders["PyLate ColBERT.encode (torch fp32)"] = lambda: peer.encode(
            sample, is_query=False, batch_size=args.batch_size, show_progress_bar=False
        )
    if args.skip_encode:
        encoders = {}
    best, outputs = best_of_alternating(encoders, args.repeats)
    mine = ours.encode_documents(sample[: 0 if args.skip_encode else None], batch_size=args.batch_size)
    token_vectors = len(mine.vectors)
    parity = None
    if peer is not None and not args.skip_encode:
        theirs = list(outputs["PyLate ColBERT.encode (torch fp32)"])  # type: ignore[call-overload]
        parity = max(float(np.abs(np.asarray(t) - m).max()) for t, m in zip(theirs, mine, strict=True))

    # the corpus's token vectors, once, for both indexes
    started = time.perf_counter()
    vectors = MultiVectors.concatenate(list(ours_onnx.encode_chunks(corpus_texts, "documents", batch_size=32)))
    encode_corpus_s = time.perf_counter() - started
    queries = ours.encode_queries(query_texts)
    flat = MultiVectorFlatIndex(ours.dimension)
    flat.add(corpus_ids, vectors)
    exact = [set(h.ids) for h in flat.search(queries, args.k)]

    def recall(found: list[list[str]]) -> float:
        return float(np.mean([len(set(f) & e) / args.k for f, e in zip(found, exact, strict=True)]))

    started = time.perf_counter()
    plaid = PlaidIndex(ours.dimension, nbits=args.nbits)
    plaid.add(corpus_ids, vectors)
    build = {"retrievekit plaid": time.perf_counter() - started}
    plaid_dir = plaid.save(workdir / "plaid")
    sizes = {"retrievekit plaid": sum(p.stat().st_size for p in plaid_dir.rglob("*") if p.is_file())}
    # the same index searched with PyLate's Stanford defaults (8 cells, threshold 0.35, 8,192 candidates)
    wide = load_index(plaid_dir)
    wide.n_ivf_probe, wide.centroid_score_threshold, wide.n_full_scores = 8, 0.35, 8192
    # and with PLAID's paper count for k=10 (256 candidates, 64 decompressed): the fast end
    narrow = load_index(plaid_dir)
    narrow.n_full_scores = 256
    for variant in ("PyLate's search settings", "256 candidates"):
        build[f"retrievekit plaid, {variant}"] = build["retrievekit plaid"]
        sizes[f"retrievekit plaid, {variant}"] = sizes["retrievekit plaid"]
    searchers = {
        "retrievekit plaid": lambda: [h.ids for h in plaid.search(queries, args.k)],
        "retrievekit plaid, PyLate's search settings": lambda: [h.ids for h in wide.search(queries, args.k)],
        "retrievekit plaid, 256 candidates": lambda: [h.ids for h in narrow.search(queries, args.k)],
    }
    if peer is not None:
        started = time.perf_counter()
        theirs_index = indexes.PLAID(
            index_folder=str(workdir / "pylate"), index_name="scifact", override=True, use_fast=False, nbits=args.nbits
        )
        theirs_index.add_documents(documents_ids=corpus_ids, documents_embeddings=list(vectors))
        build["PyLate PLAID (Stanford backend)"] = time.perf_counter() - started
        sizes["PyLate PLAID (Stanford backend)"] = sum(
            p.stat().st_size for p in (workdir / "pylate").rglob("*") if p.is_file()
        )
        query_list = [torch.from_numpy(np.ascontiguousarray(q)) for q in queries]
        searchers["PyLate PLAID (Stanford backend)"] = lambda: [
            [r["id"] for r in result] for result in theirs_index(torch.stack(query_list), k=args.k)
        ]
    search_best, found = best_of_alternating(searchers, args.repeats)

    print(
        f"\n{model_dir}: {ours.dimension}-d token vectors; {len(corpus_ids):,} documents, {len(vectors.vectors):,} "
        f"token vectors (corpus encoded in {encode_corpus_s:.0f} s, onnx int8); {len(queries)} queries; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats}"
    )
    if best:  # not with --skip-encode
        print(f"\nEncoding {len(sample)} documents ({token_vectors:,} token vectors kept)\n")
        print("| encoder | docs/s | token vectors/s | × PyLate |\n|---|---:|---:|---:|")
        reference = best.get("PyLate ColBERT.encode (torch fp32)")
        for name, seconds in best.items():
            ratio = f"{reference / seconds:.2f}×" if reference else "n/a"
            print(f"| {name} | {len(sample) / seconds:.1f} | {token_vectors / seconds:,.0f} | {ratio} |")
    if parity is not None:
        print(f"\nmax |retrievekit torch - PyLate| over the token vectors: {parity:.2e}")
    print(f"\nIndexing and searching (k={args.k}, nbits {args.nbits}, default search settings)\n")
    print("| index | build s | size MiB | B / token vector | queries/s | recall@10 vs exact | × PyLate QPS |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    peer_qps = None
    if "PyLate PLAID (Stanford backend)" in search_best:
        peer_qps = len(queries) / search_best["PyLate PLAID (Stanford backend)"]
    for name, seconds in search_best.items():
        qps = len(queries) / seconds
        ratio = f"{qps / peer_qps:.2f}×" if peer_qps else "n/a"
        print(
            f"| {name} | {build[name]:.1f} | {sizes[name] / 2**20:.1f} | {sizes[name] / len(vectors.vectors):.1f} | "
            f"{qps:.1f} | {recall(found[name]):.4f} | {ratio} |"
        )
    print(f"\nfloat32 token vectors: {len(vectors.vectors) * ours.dimension * 4 / 2**20:.1f} MiB")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
