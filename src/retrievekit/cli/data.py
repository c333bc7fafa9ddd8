"""``retrievekit data``: inspect and fetch BEIR datasets."""

from __future__ import annotations

import statistics

import click

from retrievekit.cli._output import console, print_table


@click.group()
def data() -> None:
    """Inspect and fetch BEIR-format datasets."""


@data.command("inspect")
@click.argument("dataset")
@click.option("--no-strict", is_flag=True, help="Warn about qrels naming unknown documents/queries instead of failing.")
def inspect(dataset: str, no_strict: bool) -> None:
    """Validate DATASET (a name or a BEIR folder) and print its size per split.

    Every line of every file is read and checked: malformed JSON, missing fields, duplicate ids,
    bad encodings and qrels that name unknown documents or queries are reported with file and line.
    """
    from retrievekit.data import check_qrels, load_dataset

    beir = load_dataset(dataset)
    corpus, queries = beir.corpus(), beir.queries()
    rows = []
    for split in beir.splits:
        qrels, check = check_qrels(
            beir.qrels(split), corpus, queries, source=beir.qrels_path(split), strict=not no_strict
        )
        rows.append((split, len(qrels), qrels.num_pairs, check.unknown_documents, check.unknown_queries))
    words = [len(d.full_text.split()) for d in corpus]
    console.print(f"[bold]{beir.name}[/bold]  {beir.root}")
    console.print(
        f"{len(corpus):,} documents (median {statistics.median(words):.0f} words, "
        f"{sum(1 for d in corpus if d.title):,} with titles), {len(queries):,} queries"
    )
    print_table("Splits", ["split", "judged queries", "judgements", "unknown docs", "unknown queries"], rows)


@data.command("fetch")
@click.argument("name")
def fetch(name: str) -> None:
    """Make dataset NAME available locally (downloads the public BEIR zip when not found) and print its folder."""
    from retrievekit import resolve_dataset

    click.echo(resolve_dataset(name))
