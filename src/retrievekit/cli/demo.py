"""``retrievekit demo``: the main job on built-in defaults (bundled MiniLM on SciFact)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from retrievekit.cli._output import console, print_table


@click.command()
@click.option("--dataset", default="scifact", show_default=True, help="BEIR dataset name or folder.")
@click.option("--model", "-m", default="minilm", show_default=True, help="Encoder to use.")
@click.option(
    "--output",
    default="runs/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the embeddings go.",
)
@click.option(
    "--examples",
    default=3,
    show_default=True,
    type=click.IntRange(0),
    help="How many test queries to show results for.",
)
def demo(dataset: str, model: str, output: str, examples: int) -> None:
    """Validate a BEIR dataset, encode its corpus and test queries, and show the nearest documents.

    With the defaults: SciFact (found through $RETRIEVEKIT_DATASETS) and the bundled
    all-MiniLM-L6-v2, entirely offline.
    """
    import numpy as np

    from retrievekit.data import load_dataset
    from retrievekit.embeddings import encode_to_directory
    from retrievekit.models import load_encoder

    beir = load_dataset(dataset, download=False)
    split = beir.load("test")
    console.print(f"[bold]{beir.name}[/bold] from {beir.root}")
    print_table(
        "Dataset (every line validated)",
        ["corpus documents", "test queries", "test judgements", "splits"],
        [(len(split.corpus), len(split.queries), split.qrels.num_pairs, ", ".join(beir.splits))],
    )
    encoder = load_encoder(model)
    console.print(repr(encoder))
    out = Path(output)
    rows = []
    for side, source in (("documents", beir.root), ("queries", None)):
        started = time.perf_counter()
        if side == "documents":
            result = encode_to_directory(encoder, source, out / "corpus", side="documents")
        else:
            vectors = encoder.encode_queries(split.queries.texts(), show_progress=True)
        seconds = time.perf_counter() - started
        count = len(result.ids) if side == "documents" else len(vectors)
        rows.append((side, count, f"{seconds:.1f}", f"{count / seconds:.1f}"))
    print_table("Encoding (torch, CPU)", ["side", "texts", "seconds", "texts/s"], rows)
    corpus_vectors = np.asarray(result.vectors)
    console.print(f"corpus embeddings: {out / 'corpus'} {corpus_vectors.shape} {corpus_vectors.dtype}")
    scores = vectors[:examples] @ corpus_vectors.T
    for row, query in zip(scores, list(split.queries)[:examples], strict=False):
        relevant = split.qrels.relevant(query.id)
        console.print(f"\n[bold]query {query.id}[/bold]: {query.text}")
        for rank, index in enumerate(np.argsort(-row)[:3], start=1):
            doc = split.corpus[result.ids[index]]
            mark = "[green]relevant[/green]" if doc.id in relevant else ""
            console.print(f"  {rank}. {row[index]:.3f}  {doc.id}  {doc.title[:80]}  {mark}")
