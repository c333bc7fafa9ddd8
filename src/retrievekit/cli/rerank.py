"""``retrievekit rerank``: score documents for queries with a cross-encoder, or rerank a TREC run."""

from __future__ import annotations

from typing import Any

import click

from retrievekit.cli._model_options import onnx_weights, quantize_option
from retrievekit.cli._output import console, print_table


@click.command()
@click.option("--model", "-m", required=True, help="A reranker: sentence-transformers CrossEncoder or Hugging Face "
              "sequence-classification folder (bge-reranker style), a retrievekit save, or a causal LM folder "
              "(a decoder-only reranker: FlagEmbedding's prompt, the 'Yes' logit).")  # fmt: skip
@click.option("--query", "-q", "query_texts", multiple=True, help="A query text (repeatable).")
@click.option(
    "--documents",
    type=click.Path(exists=True, dir_okay=False),
    help="With --query: the documents to rank, a corpus file (JSONL _id/title/text or TSV id<TAB>text) or "
    "plain text, one document per line.",
)
@click.option("--queries", "queries_file", type=click.Path(exists=True, dir_okay=False),
              help="With --run: the queries, JSONL (_id, text) or TSV (id<TAB>text).")  # fmt: skip
@click.option(
    "--run", "run_file", type=click.Path(exists=True, dir_okay=False),
    help="A TREC run (qid Q0 docid rank score tag) whose top --rerank-top-k per query are reranked.",
)  # fmt: skip
@click.option("--corpus", help="With --run: the corpus with the texts (a file, a BEIR folder or a dataset name).")
@click.option("--rerank-top-k", type=click.IntRange(1), default=100, show_default=True,
              help="Candidates of the run reranked per query.")  # fmt: skip
@click.option("--fusion", type=click.Choice(["none", "rrf", "weighted"]), default="none", show_default=True,
              help="With --run: fuse the reranker's order with the run's (reciprocal rank fusion, k=60, or "
              "min-max normalised scores summed) instead of replacing it.")  # fmt: skip
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True, help="Results kept per query.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write a TREC run here instead of printing.")
@click.option("--max-length", type=click.IntRange(2), default=None, help="Tokens per pair (default: the model's).")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option(
    "--backend",
    type=click.Choice(["torch", "onnx"]),
    default="torch",
    show_default=True,
    help="torch (any device) or onnx (CPU, int8 unless --quantize none; exported once beside the model).",
)
@quantize_option()
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (torch backend).")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32", show_default=True,
              help="How the model runs; the activation after it is always float32.")  # fmt: skip
@click.option("--rescore-top-k", type=click.IntRange(1), default=None,
              help="With --backend onnx and --run: the int8 graph orders every candidate, then the float32 graph "
              "re-scores and orders the best N per query (N/candidates of a float32 pass for a float32 top; "
              "see benchmarks/README.md).")  # fmt: skip
@click.option("--trust-remote-code", is_flag=True, help="Allow model code shipped with a hub model (off by default).")
def rerank(
    model, query_texts, documents, queries_file, run_file, corpus, rerank_top_k, fusion, k, output, max_length,
    batch_size, backend, quantize, device, dtype, rescore_top_k, trust_remote_code,
) -> None:  # fmt: skip
    """Rerank with a cross-encoder: rank a documents file for one or more --query, or rerank the top
    of a TREC --run (with its --queries and --corpus) and write the reranked run.

    \b
    Examples:
      retrievekit rerank --model runs/reranker -q "vitamin D and bone health" --documents docs.txt -k 5
      retrievekit rerank --model runs/reranker --queries queries.jsonl --run bm25.trec --corpus scifact -o reranked.trec
    """
    from retrievekit.models.cross_encoder import load_reranker

    if bool(query_texts) == bool(run_file):
        raise click.UsageError("give either --query (with --documents) or --run (with --queries and --corpus)")
    if query_texts and not documents:
        raise click.UsageError("--query needs --documents")
    if run_file and not (queries_file and corpus):
        raise click.UsageError("--run needs --queries and --corpus")
    if rescore_top_k is not None and not (backend == "onnx" and quantize != "none" and run_file):
        raise click.UsageError(
            "--rescore-top-k goes with --backend onnx (int8) and --run (the int8 graph's best re-scored)"
        )
    cross_encoder = load_reranker(
        model, max_length=max_length, backend=backend, quantize=onnx_weights(backend, quantize), device=device,
        dtype=dtype, trust_remote_code=trust_remote_code,
    )  # fmt: skip
    if run_file:
        method = None if fusion == "none" else fusion
        rescore = None
        if rescore_top_k is not None:
            from retrievekit.models.cross_encoder import load_cross_encoder

            float32 = load_cross_encoder(model, max_length=max_length, backend="onnx", quantize=None)
            rescore = (float32, rescore_top_k)
        _rerank_run(cross_encoder, queries_file, run_file, corpus, rerank_top_k, method, k, output, batch_size,
                    rescore=rescore)  # fmt: skip
        return
    ids, texts = _read_documents(documents)
    for query in query_texts:
        scores = cross_encoder.predict([(query, text) for text in texts], batch_size=batch_size)
        ranked = sorted(range(len(ids)), key=lambda i: -float(scores[i]))[:k]
        rows = [(n, f"{float(scores[i]):.4f}", ids[i], texts[i][:80]) for n, i in enumerate(ranked, start=1)]
        print_table(f"{query}", ("rank", "score", "id", "text"), rows)


def _read_documents(path: str) -> tuple[list[str], list[str]]:
    """A corpus file's ids and texts; a plain text file's lines (ids: line numbers from 1)."""
    from pathlib import Path

    from retrievekit.data.readers import iter_documents

    if Path(path).suffix in (".jsonl", ".tsv"):
        docs = list(iter_documents(path))
        return [d.id for d in docs], [d.full_text for d in docs]
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    numbered = [(str(n), line) for n, line in enumerate(lines, start=1) if line]
    return [i for i, _ in numbered], [t for _, t in numbered]


def _rerank_run(
    model,
    queries_file: str,
    run_file: str,
    corpus: str,
    top_k: int,
    fusion: str | None,
    k: int,
    output: str | None,
    batch_size: int,
    *,
    rescore: tuple[Any, int] | None = None,
) -> None:
    """``rescore``: a float32 model and N, re-scoring the best N of ``model``'s order (a cascade)."""
    from retrievekit.data.beir import collection_file
    from retrievekit.data.readers import iter_documents, iter_queries, read_trec_run
    from retrievekit.data.writers import write_trec_run
    from retrievekit.errors import ConfigError
    from retrievekit.hits import Hits
    from retrievekit.retrieval import Reranker, run_from_hits
    from retrievekit.retrieval.fusion import fuse
    from retrievekit.retrieval.rerankers import CascadeReranker, CrossEncoderReranker

    run = read_trec_run(run_file)
    queries = {q.id: q.text for q in iter_queries(queries_file)}
    missing = [qid for qid in run if qid not in queries]
    if missing:
        raise ConfigError(
            f"{run_file}: {len(missing)} queries of the run are not in {queries_file} (first: {missing[0]!r})"
        )
    wanted = {doc.doc_id for qid in run for doc in run[qid][:top_k]}
    texts = {d.id: d.full_text for d in iter_documents(collection_file(corpus)) if d.id in wanted}
    reranker: Reranker = CrossEncoderReranker(model, texts, batch_size=batch_size)
    if rescore is not None:
        exact, top_k_exact = rescore
        reranker = CascadeReranker(
            reranker, CrossEncoderReranker(exact, texts, batch_size=batch_size), top_k=top_k_exact
        )
    qids = list(run)
    candidates = [Hits.from_pairs([(d.doc_id, d.score) for d in run[qid][:top_k]]) for qid in qids]
    reranked = reranker.rerank([queries[qid] for qid in qids], candidates, top_k if fusion else k)
    if fusion:
        reranked = [fuse([c, r], method=fusion, k=k) for c, r in zip(candidates, reranked, strict=True)]
    if output:
        write_trec_run(run_from_hits(qids, reranked), output, tag=f"rerank+{fusion}" if fusion else "rerank")
        console.print(f"wrote {len(qids)} queries x up to {k} reranked results to {output}")
        return
    for qid, hits in zip(qids, reranked, strict=True):
        scored = zip(hits.ids, hits.scores.tolist(), strict=True)
        rows = [(n, f"{score:.4f}", doc, texts[doc][:80]) for n, (doc, score) in enumerate(scored, start=1)]
        print_table(f"{qid}: {queries[qid]}", ("rank", "score", "id", "text"), rows)
