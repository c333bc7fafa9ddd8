"""``retrievekit search``: query a saved index."""

from __future__ import annotations

import json

import click

from retrievekit.cli._output import console


@click.command()
@click.option(
    "--index",
    "index_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="A folder written by 'retrievekit index build'.",
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
@click.option("--model", "-m", default=None, help="Override the model the index remembers (dense indexes).")
@click.option("--backend", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (torch backend).")
@click.option("--force", is_flag=True, help="Search even if the query model differs from the index's model.")
def search(index_dir, query_texts, queries_file, k, output, as_json, model, backend, device, force) -> None:
    """Search an index with query texts and print ids, scores and titles, or write a TREC run.

    \b
    Examples:
      retrievekit search --index runs/scifact-hnsw -q "vitamin D and bone health" -k 5
      retrievekit search --index runs/scifact-bm25 --queries queries.jsonl -k 100 -o run.trec
    """
    from retrievekit.data.readers import iter_queries
    from retrievekit.data.writers import write_trec_run
    from retrievekit.errors import ConfigError
    from retrievekit.index import load_index
    from retrievekit.index.bm25 import Bm25Index
    from retrievekit.index.vector import VectorIndex
    from retrievekit.retrieval import Bm25Retriever, DenseRetriever, Retriever, run_from_hits

    if bool(query_texts) == bool(queries_file):
        raise click.UsageError("give either --query (one or more) or --queries FILE")
    if queries_file:
        queries = list(iter_queries(queries_file))
        ids, texts = [q.id for q in queries], [q.text for q in queries]
    else:
        ids, texts = [str(i) for i in range(1, len(query_texts) + 1)], list(query_texts)
    index = load_index(index_dir)
    retriever: Retriever
    if isinstance(index, Bm25Index):
        retriever = Bm25Retriever(index)
    elif not isinstance(index, VectorIndex):
        raise ConfigError(f"{index_dir}: searching a {index.index_type} index is not supported by this command yet")
    else:
        from retrievekit.models import load_encoder

        name = model or index.model_name
        if not name:
            raise ConfigError(f"{index_dir} does not record its model; pass --model")
        options = {} if model else index.model_options
        retriever = DenseRetriever(load_encoder(name, backend=backend, device=device, **options), index, force=force)
    hits = retriever.search(texts, k)
    if output:
        write_trec_run(run_from_hits(ids, hits), output)
        console.print(f"wrote {len(ids)} queries x up to {k} results to {output}")
        return
    for qid, text, result in zip(ids, texts, hits, strict=True):
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "query_id": qid,
                        "query": text,
                        "results": [
                            {"id": d, "score": round(float(s), 6), "title": index.titles.get(d, "")}
                            for d, s in zip(result.ids, result.scores, strict=True)
                        ],
                    },
                    ensure_ascii=False,
                )
            )
            continue
        console.print(f"[bold]{qid}[/bold]: {text}")
        for rank, (doc, score) in enumerate(zip(result.ids, result.scores, strict=True), start=1):
            console.print(f"  {rank:>3}. {score:9.4f}  {doc}  {index.titles.get(doc, '')[:90]}")
