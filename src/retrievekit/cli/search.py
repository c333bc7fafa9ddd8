"""``retrievekit search``: query a saved index."""

from __future__ import annotations

import json
from typing import Any

import click

from retrievekit.cli._model_options import onnx_weights, quantize_option
from retrievekit.cli._output import console


@click.command()
@click.option(
    "--index",
    "index_dir",
    required=True,
    help="A folder written by 'retrievekit index build', a LanceDB folder, a Milvus Lite file (*.db) or a "
    "Milvus server URI (http://host:19530).",
)
@click.option("--query", "-q", "query_texts", multiple=True, help="A query text (repeatable).")
@click.option(
    "--queries",
    "queries_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Queries as JSONL (_id, text) or TSV (id<TAB>text).",
)
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True, help="Results per query.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    help="Write a TREC run (qid Q0 docid rank score tag) here instead of printing.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per query.")
@click.option(
    "--explain",
    type=click.IntRange(1),
    default=None,
    help="Sparse (SPLADE) indexes: show the query's N heaviest terms (its expansion included) and, per "
    "result, the shared terms that scored it.",
)
@click.option("--model", "-m", default=None, help="Override the model the index remembers (dense and ColBERT indexes).")
@click.option("--backend", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True)
@quantize_option()
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (torch backend).")
@click.option("--force", is_flag=True, help="Search even if the query model differs from the index's model.")
@click.option(
    "--trust-remote-code",
    is_flag=True,
    help="Allow model code shipped with the model (off by default; an index can never switch it on).",
)
def search(
    index_dir,
    query_texts,
    queries_file,
    k,
    output,
    as_json,
    explain,
    model,
    backend,
    quantize,
    device,
    force,
    trust_remote_code,
) -> None:
    """Search an index with query texts and print ids, scores and titles, or write a TREC run.

    A dense or ColBERT index remembers its model: the bundled MiniLM or a model saved inside the index folder
    is loaded as recorded; a model elsewhere must be named with --model (an index someone hands you
    cannot choose what runs). Recorded options are limited to pooling, normalisation, lengths and prompts.

    \b
    Examples:
      retrievekit search --index runs/scifact-hnsw -q "vitamin D and bone health" -k 5
      retrievekit search --index runs/scifact-bm25 --queries queries.jsonl -k 100 -o run.trec
    """
    from retrievekit.data.readers import iter_queries
    from retrievekit.data.writers import write_trec_run
    from retrievekit.errors import ConfigError
    from retrievekit.index import load_index
    from retrievekit.retrieval import run_from_hits
    from retrievekit.retrieval.from_index import retriever_for_index
    from retrievekit.retrieval.retriever import SparseRetriever

    weights = onnx_weights(backend, quantize)
    if bool(query_texts) == bool(queries_file):
        raise click.UsageError("give either --query (one or more) or --queries FILE")
    if queries_file:
        queries = list(iter_queries(queries_file))
        ids, texts = [q.id for q in queries], [q.text for q in queries]
    else:
        ids, texts = [str(i) for i in range(1, len(query_texts) + 1)], list(query_texts)
    index = load_index(index_dir)
    retriever = retriever_for_index(
        index, index_dir, model=model, backend=backend, quantize=weights, device=device,
        force=force, trust_remote_code=trust_remote_code,
    )  # fmt: skip
    hits = retriever.search(texts, k)
    explained: list[tuple[list, list]] = []
    if explain is not None:
        if not isinstance(retriever, SparseRetriever):
            raise ConfigError("--explain is for sparse (SPLADE) indexes: their weights are terms of the vocabulary")
        encoder = retriever.encoder
        for text, result in zip(texts, hits, strict=True):
            query_vector = encoder.encode_queries([text])
            terms = encoder.decode(query_vector, top_k=explain)[0]
            explained.append((terms, encoder.explain(query_vector, retriever.index.vectors_of(result.ids), top_k=3)))
    if output:
        write_trec_run(run_from_hits(ids, hits), output)
        console.print(f"wrote {len(ids)} queries x up to {k} results to {output}")
        return
    for n, (qid, text, result) in enumerate(zip(ids, texts, hits, strict=True)):
        terms, matched = explained[n] if explained else ([], [[] for _ in result.ids])
        if as_json:
            record: dict[str, Any] = {
                "query_id": qid,
                "query": text,
                "results": [
                    {"id": d, "score": round(float(s), 6), "title": index.titles.get(d, "")}
                    | ({"matched_terms": [[t, round(w, 4)] for t, w in why]} if explained else {})
                    for d, s, why in zip(result.ids, result.scores, matched, strict=True)
                ],
            }
            if explained:
                record["query_terms"] = [[t, round(w, 4)] for t, w in terms]
            click.echo(json.dumps(record, ensure_ascii=False))
            continue
        console.print(f"[bold]{qid}[/bold]: {text}")
        if explained:
            console.print(
                "       terms: " + ", ".join(f"{t} {w:.2f}" for t, w in terms), highlight=False, soft_wrap=True
            )
        for rank, (doc, score, why) in enumerate(zip(result.ids, result.scores, matched, strict=True), start=1):
            console.print(f"  {rank:>3}. {score:9.4f}  {doc}  {index.titles.get(doc, '')[:90]}")
            if why:
                console.print("            matched: " + ", ".join(f"{t} {w:.2f}" for t, w in why), highlight=False)
