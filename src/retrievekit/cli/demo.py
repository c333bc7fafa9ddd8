"""``retrievekit demo``: the main job on built-in defaults: MiniLM, BM25 and their hybrid on SciFact."""

from __future__ import annotations

import click

from retrievekit.cli._output import console


@click.command()
@click.option("--dataset", default="scifact", show_default=True, help="BEIR dataset name or folder.")
@click.option("--model", "-m", default="minilm", show_default=True, help="Encoder of the dense retriever.")
@click.option(
    "--output", default="runs/demo", show_default=True, type=click.Path(file_okay=False), help="Where the report goes."
)
@click.option(
    "--examples", default=2, show_default=True, type=click.IntRange(0), help="Test queries to show the top results of."
)
def demo(dataset: str, model: str, output: str, examples: int) -> None:
    """Evaluate the bundled all-MiniLM-L6-v2 (dense, exact search), BM25 and their RRF hybrid on the
    SciFact test split, print the table, and write the full report.

    SciFact is found through $RETRIEVEKIT_DATASETS (the Makefile points it at ../shared/data) or the
    cache; otherwise it is downloaded once from BEIR's public archive (progress bar, size and content
    checks) and, offline, the error says what to do. The corpus embeddings are cached, so a second
    run takes seconds.
    """
    from retrievekit.cli.evaluate import print_evaluation
    from retrievekit.data import load_dataset
    from retrievekit.evaluation import evaluate_dataset, write_report
    from retrievekit.models import load_encoder

    beir = load_dataset(dataset)  # found locally, or fetched once from BEIR's public archive into the cache
    console.print(f"[bold]{beir.name}[/bold] from {beir.root}; model {model}")
    encoder = load_encoder(model)
    console.print(repr(encoder))
    result = evaluate_dataset(beir.root, systems=["dense", "bm25", "hybrid"], encoder=encoder)
    print_evaluation(result)
    write_report(result, output)
    console.print(f"report: {output}/results.md, results.json, per_query.jsonl, recall_at_k.png, <retriever>/run.trec")
    split = beir.load("test")
    for query in list(split.queries)[:examples]:
        relevant = split.qrels.relevant(query.id)
        console.print(f"\n[bold]query {query.id}[/bold]: {query.text}")
        for system in result.systems:
            top = system.run[query.id][:3] if query.id in system.run else []
            marks = ", ".join(f"{d.doc_id}{' (relevant)' if d.doc_id in relevant else ''}" for d in top)
            console.print(f"  {system.retriever:>6}: {marks}")
