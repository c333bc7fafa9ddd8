"""``retrievekit evaluate``: BEIR-style evaluation of one or more retrievers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from retrievekit.cli._engine_options import engine_options, ray_settings
from retrievekit.cli._model_options import load_from_options, model_options, onnx_weights
from retrievekit.cli._output import console, print_table
from retrievekit.cli._variadic import ManyValues
from retrievekit.evaluation.systems import (
    registered_retrievers,
    spec_model_family,
    spec_needs_model,
    spec_second_family,
)
from retrievekit.index.registry import index_types

if TYPE_CHECKING:
    from retrievekit.evaluation.runner import Evaluation

_RETRIEVERS = registered_retrievers()


@click.command()
@model_options
@engine_options
@click.option("--dataset", "-d", default="scifact", show_default=True, help="BEIR dataset name or folder.")
@click.option("--split", default="test", show_default=True, help="Qrels split (qrels/<split>.tsv).")
@click.option(
    "--retriever",
    "-r",
    "retrievers",
    cls=ManyValues,
    choices=tuple(_RETRIEVERS),
    help="Systems to compare (e.g. --retriever dense bm25 hybrid); the first is the baseline of the "
    "significance tests. Default: dense. " + "; ".join(f"{name}: {text}" for name, text in _RETRIEVERS.items()),
)
@click.option(
    "--index-type",
    type=click.Choice(index_types("dense") + index_types("multivector") + index_types("sparse")),
    default=None,
    help="Index for the model's retriever (default: flat for dense models, plaid for ColBERT ones).",
)
@click.option(
    "--second-model",
    default=None,
    help="A model of another family for the hybrids across families (sparse-dense: --model is the SPLADE "
    "model, --second-model the dense one; sparse-colbert: the ColBERT one). Single-family retrievers in the "
    "same run use whichever model is of their family. It is loaded with the same --backend, --device, --dtype.",
)
@click.option(
    "--rerank",
    "rerank_model",
    default=None,
    help="A reranker (sentence-transformers CrossEncoder, sequence-classification or causal LM folder) that reranks "
    "each retriever's top --rerank-top-k; the reranked rows (RETRIEVER>rerank) join the same table and "
    "results.json. Loaded with the same --backend, --device, --dtype.",
)
@click.option(
    "--rerank-top-k", type=click.IntRange(1), default=100, show_default=True, help="Candidates reranked per query."
)
@click.option(
    "--rerank-fusion",
    cls=ManyValues,
    choices=("none", "rrf", "weighted"),
    help="How reranked rows meet their first stage: none (the reranker's order replaces it; the default), "
    "rrf or weighted (fused with it, rows SYSTEM>rerank+rrf). Several values give several rows; the pairs "
    "are scored once.",
)
@click.option("--top-k", type=click.IntRange(1), default=1000, show_default=True, help="Results retrieved per query.")
@click.option(
    "--k-values",
    cls=ManyValues,
    help="Metric cut-offs, e.g. --k-values 1 3 5 10 100 1000 (the default).",
)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False),
    default=None,
    help="Write results.json, results.md, runs, per_query.jsonl and recall_at_k.png here.",
)
@click.option(
    "--keep-identical-ids",
    is_flag=True,
    help="Keep documents whose id equals the query id. They are removed by default, as BEIR does for "
    "collections where queries are also documents (ArguAna, Quora); use this flag for collections that "
    "number queries and documents separately (Cranfield, CISI, NPL), where such a document is a real answer.",
)
@click.option("--no-cache", is_flag=True, help="Neither read nor write cached embeddings and runs.")
@click.option("--no-strict", is_flag=True, help="Warn about qrels naming unknown documents/queries instead of failing.")
def evaluate(
    dataset,
    split,
    retrievers,
    second_model,
    rerank_model,
    rerank_top_k,
    rerank_fusion,
    index_type,
    top_k,
    k_values,
    batch_size,
    output,
    keep_identical_ids,
    no_cache,
    no_strict,
    **model_kwargs,
) -> None:
    """Evaluate retrievers on a BEIR split and print nDCG, Recall, MRR, MAP and Precision.

    Each --retriever name is a registered system (see the list under --retriever), built on the
    dataset's corpus. Corpus embeddings are cached per model and runtime, runs per retriever
    fingerprint (model, index type and settings) and data hashes, in ~/.cache/retrievekit/evaluation:
    a repeated evaluation encodes nothing.

    \b
    Example:
      retrievekit evaluate --dataset scifact --model minilm -r dense -r bm25 -r hybrid -o runs/scifact
      retrievekit evaluate --dataset scifact -r bm25 hybrid --rerank runs/reranker --rerank-top-k 100
    """
    from retrievekit.errors import ConfigError
    from retrievekit.evaluation import evaluate_dataset, write_report

    try:
        ks = sorted({int(k) for k in k_values}) if k_values else [1, 3, 5, 10, 100, 1000]
    except ValueError:
        raise ConfigError(f"--k-values must be integers, got {' '.join(k_values)!r}") from None
    systems = list(retrievers) or ["dense"]
    family, second_family = _families(systems, second_model)
    needs_model = any(spec_needs_model(s) for s in systems)
    ray = ray_settings(model_kwargs)
    encoder = load_from_options(**model_kwargs, family=family) if needs_model else None
    if second_model is not None and needs_model:
        kept = {key: model_kwargs[key] for key in ("backend", "quantize", "device", "dtype", "trust_remote_code")}
        blank = dict.fromkeys(("pooling", "normalize", "query_prompt", "document_prompt", "document_length"))
        second = load_from_options(second_model, **kept, **blank, family=second_family)
        encoder = [encoder, second]
    reranker = None
    if rerank_model is not None:
        from retrievekit.models.cross_encoder import load_reranker

        reranker = load_reranker(
            rerank_model, backend=model_kwargs["backend"], device=model_kwargs["device"], dtype=model_kwargs["dtype"],
            trust_remote_code=model_kwargs["trust_remote_code"],
            quantize=onnx_weights(model_kwargs["backend"], model_kwargs["quantize"]),
        )  # fmt: skip
    result = evaluate_dataset(
        dataset,
        split=split,
        systems=systems,
        encoder=encoder,
        index_type=index_type,
        top_k=top_k,
        k_values=ks,
        ignore_identical_ids=not keep_identical_ids,
        batch_size=batch_size,
        strict=not no_strict,
        cache=not no_cache,
        reranker=reranker,
        rerank_top_k=rerank_top_k,
        rerank_fusion=[None if f == "none" else f for f in (rerank_fusion or ["none"])],
        ray=ray,
    )
    print_evaluation(result)
    if output:
        write_report(result, output)
        console.print(f"wrote {output}/results.json, results.md, per_query.jsonl, recall_at_k.png and runs")


def _families(systems: list[str], second_model: str | None) -> tuple[str | None, str | None]:
    """The family each model is read as: the first from the retrievers that say (a plain masked-LM
    folder is SPLADE for sparse ones), the second from the cross-family hybrid that needs it."""
    from retrievekit.errors import ConfigError

    pairs = {(spec_model_family(s), second) for s in systems if (second := spec_second_family(s)) is not None}
    if len(pairs) > 1:
        raise ConfigError(f"these hybrids need different pairs of model families: {sorted(map(str, pairs))}")
    if pairs:
        first, second = pairs.pop()
        if second_model is None:
            raise ConfigError(f"the {second} model of a hybrid across families is given with --second-model")
        return first, second
    families = {f for s in systems if spec_needs_model(s) and (f := spec_model_family(s)) is not None}
    if len(families) > 1:
        raise ConfigError(
            f"these retrievers need models of different families ({', '.join(sorted(families))}); give the "
            "second with --second-model"
        )
    return next(iter(families), None), None


def print_evaluation(result: Evaluation) -> None:
    """The comparison table every evaluating command prints (the same rows as ``results.md``)."""
    from retrievekit.evaluation.report import results_table

    table = results_table(result)
    print_table(table.title, table.headers, table.rows)
    removed = sum(s.removed_identical for s in result.systems)
    state = "on" if result.settings["ignore_identical_ids"] else "off"
    console.print(f"ignore_identical_ids: {state} ({removed} results removed); peak RSS {result.peak_rss_mib:,.0f} MiB")
    relevant = max((s.removed_relevant for s in result.systems), default=0)
    if relevant:
        console.print(
            f"[yellow]warning:[/yellow] {relevant} removed result(s) were judged relevant for their own query: "
            "this collection numbers queries and documents separately (Cranfield, CISI, NPL style), so BEIR's "
            "rule drops real answers; rerun with --keep-identical-ids"
        )
    unjudged = result.settings["queries_without_judgements"]
    if unjudged:
        console.print(
            f"{unjudged:,} queries of the collection have no judgements in split {result.split}: not evaluated"
        )
