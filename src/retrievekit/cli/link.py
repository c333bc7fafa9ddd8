"""``retrievekit link``: link marked mentions to a knowledge base; ``link evaluate``: acc@k on a data folder."""

from __future__ import annotations

from typing import Any

import click

from retrievekit.cli._model_options import load_from_options, model_options
from retrievekit.cli._output import console, print_table

_MODEL_KEYS = ("model", "pooling", "normalize", "query_prompt", "document_prompt", "backend", "quantize", "device",
               "dtype", "trust_remote_code", "document_length", "model_family")  # fmt: skip

_PROTOCOL_HELP = (
    "biosyn: the papers' protocol (BioSyn/SapBERT): preprocessed mention parts ranked over the names of "
    "BioSyn's test dictionary, composites right only when every part is; comparable with published "
    "numbers. raw: the mention as written, in its context, against entities.jsonl or dictionary.tsv, "
    "ranked over concepts."
)


@click.group(invoke_without_command=True)
@model_options
@click.option("--bm25", is_flag=True, help="Link with BM25 over the entries instead of a model.")
@click.option("--mentions", type=click.Path(exists=True, dir_okay=False),
              help="JSONL mentions: {'text': '... [ENT_START] mention [ENT_END] ...'} or mention/context_left/"
              "context_right rows (BET and BLINK schemas too).")  # fmt: skip
@click.option("--entities", type=click.Path(exists=True),
              help="The knowledge base: JSONL entities (_id, title, text; BET candidates; a ZESHEL documents "
              "folder), one vector per entity.")  # fmt: skip
@click.option("--dictionary", type=click.Path(exists=True, dir_okay=False),
              help="Or a name dictionary (cui<TAB>name, or BioSyn's CUI||name): one vector per name, a concept "
              "scored by its best name.")  # fmt: skip
@click.option("--documents", type=click.Path(exists=True, dir_okay=False),
              help="JSONL documents the mentions come from (document + title/abstract, or text): where a "
              "model whose format expands abbreviations looks for their definitions (else in each mention's "
              "context).")  # fmt: skip
@click.option("--rerank", "rerank_model", default=None,
              help="A cross-encoder that re-scores each mention's best --rerank-top-k entries (BLINK's second "
              "stage).")  # fmt: skip
@click.option("--rerank-top-k", type=click.IntRange(1), default=64, show_default=True)
@click.option("--rerank-fusion", type=click.Choice(["none", "rrf", "weighted"]), default="none", show_default=True,
              help="How the reranker's order meets the first stage's: none (it replaces it, as BLINK), rrf "
              "(reciprocal rank fusion) or weighted (per-mention min-max normalised scores, summed with "
              "--rerank-weights).")  # fmt: skip
@click.option(
    "--rerank-weights",
    type=float,
    nargs=2,
    default=None,
    metavar="FIRST RERANKER",
    help="The weights of the first stage and the reranker in the fusion (default: 1 1).",
)
@click.option("--lexical-weight", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Score entries by BioSyn's dense + WEIGHT * sparse, the sparse part the character 1-2-gram "
              "TF-IDF cosine of the mention alone and the entry (0: dense only; needs the linking extra).")  # fmt: skip
@click.option("-k", "k", type=click.IntRange(1), default=5, show_default=True, help="Entities shown per mention.")
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True)
@click.pass_context
def link(
    ctx, bm25, mentions, entities, dictionary, documents, rerank_model, rerank_top_k, rerank_fusion, rerank_weights,
    lexical_weight, k, batch_size, **model_kwargs,
) -> None:  # fmt: skip
    """Link the marked mentions of a JSONL file to entities and print the top --k of each.

    \b
    Examples:
      retrievekit link --model runs/ncbi/model --mentions mentions.jsonl --entities kb/entities.jsonl
      retrievekit link --model minilm evaluate --data ../shared/data/ncbi-disease --protocol biosyn -o runs/link
    """
    if ctx.invoked_subcommand is not None:
        return
    from retrievekit.linking import EntityIndex, EntityLinker, read_documents, read_entities, read_mentions, read_names

    if not mentions or bool(entities) == bool(dictionary):
        raise click.UsageError("give --mentions and one of --entities or --dictionary (or a subcommand: evaluate)")
    encoder, fmt = _linking_model(bm25, model_kwargs)
    found = read_mentions(mentions, require_labels=False)
    if entities:
        known = read_entities(entities)
        titles = {e.id: e.title for e in known}
        index = EntityIndex.from_entities(encoder, known, fmt, batch_size=batch_size)
    else:
        names = read_names(dictionary)
        titles = {}
        for name in names:
            for concept in name.ids:
                titles.setdefault(concept, name.name)
        index = EntityIndex(encoder, names, max_length=fmt.entity_max_length, batch_size=batch_size)
    linker = EntityLinker(index, fmt, **_second_stage(ctx.params), lexical_weight=lexical_weight)
    texts = read_documents(documents) if documents else None
    linked = linker.link(found, k, group="concepts", batch_size=batch_size, documents=texts)
    for mention, answer in zip(found, linked, strict=True):
        rows = [
            (n, f"{float(score):.4f}", ids[0], titles.get(ids[0], "")[:60], _shown(text, fmt)[:60])
            for n, (ids, score, text) in enumerate(zip(answer.ids, answer.scores, answer.texts, strict=True), start=1)
        ]  # fmt: skip
        gold = f"  (gold: {', '.join(mention.labels)})" if mention.labels else ""
        context = f"...{mention.context_left[-40:]}[{mention.mention}]{mention.context_right[:40]}..."
        print_table(f"{mention.id}: {context}{gold}", ("rank", "score", "id", "title", "matched text"), rows)


def _shown(text: str, fmt: Any) -> str:
    """An entity's text for display: the title marker shown as " | "."""
    return text.replace(f" {fmt.title_marker} ", " | ").replace(fmt.title_marker, " | ") if fmt.title_marker else text


@link.command("evaluate")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
              help="A linking data folder: mentions/SPLIT.jsonl, entities.jsonl, dictionary.tsv, biosyn/.")  # fmt: skip
@click.option("--split", default="test", show_default=True)
@click.option("--protocol", type=click.Choice(["biosyn", "raw"]), default="biosyn", show_default=True,
              help=_PROTOCOL_HELP)  # fmt: skip
@click.option("--entity-vectors", type=click.Choice(["names", "concepts"]), default="names", show_default=True,
              help="raw: one vector per dictionary name (a concept's score is its best name's) or one per "
              "entity (title + description).")  # fmt: skip
@click.option("--dictionary", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Another name dictionary (default: biosyn on test, BioSyn's test dictionary; on dev, its "
              "dev dictionary, rebuilt as the test dictionary less the dev mention strings; raw, "
              "dictionary.tsv).")  # fmt: skip
@click.option("--index-type", default="flat", show_default=True, help="Any dense index type (flat, hnsw, ivfpq).")
@click.option("--aliases-from", "alias_splits", multiple=True, metavar="SPLIT",
              help="raw: the labelled mention strings of this split (repeatable: --aliases-from train "
              "--aliases-from dev) join the names as aliases of their gold concepts, as BioSyn's test "
              "dictionary adds the train and dev mentions.")  # fmt: skip
@click.option("--output", "-o", type=click.Path(file_okay=False), default=None,
              help="Write results.json (metrics, timings, settings) and predictions.jsonl here.")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True)
@click.pass_context
def evaluate_command(
    ctx, data, split, protocol, entity_vectors, dictionary, index_type, alias_splits, output, batch_size
) -> None:
    """acc@1, acc@5, recall@1..64 and BLINK's normalised acc@1 of a model (or --bm25, given to
    `link`) on a data folder's split.

    \b
    Example:
      retrievekit link --model minilm evaluate --data ../shared/data/ncbi-disease --protocol biosyn -o runs/link
    """
    from retrievekit.linking import evaluate_linking

    parent = dict(ctx.parent.params)
    encoder, fmt = _linking_model(parent.pop("bm25"), parent)
    result = evaluate_linking(
        data, split, encoder=encoder, protocol=protocol, fmt=fmt, entity_vectors=entity_vectors,
        dictionary=dictionary, index_type=index_type, batch_size=batch_size,
        **_second_stage(parent), lexical_weight=parent["lexical_weight"], alias_splits=alias_splits,
    )  # fmt: skip
    shown = ["acc@1", "acc@5", "recall@64", "acc@1_normalized"]
    print_table(
        f"{result.system} on {split} ({protocol}, {result.queries} mentions, {result.settings['entries']} entries)",
        ("metric", "value"), [(name, f"{100 * result.metrics[name]:.1f}") for name in shown],
    )  # fmt: skip
    console.print(f"linked {result.timings['mentions_per_second']:.0f} mentions/s; index built in "
                  f"{result.timings['index']:.1f} s")  # fmt: skip
    if output:
        write_linking_report(result, output)
        console.print(f"wrote {output}/results.json and predictions.jsonl")


def _linking_model(bm25: bool, params: dict):
    """The model and its linking format from the group's model options (None and a no-context
    format for --bm25)."""
    from retrievekit.linking.text import LinkingFormat, prepare_linking_model

    if bm25:
        return None, LinkingFormat(context=False)
    options = {key: params[key] for key in _MODEL_KEYS}
    encoder = load_from_options(**options, family="dense")
    return encoder, prepare_linking_model(encoder)


def _second_stage(params: dict) -> dict[str, Any]:
    """The linker's reranker settings from the group's options: the cross-encoder of --rerank, its
    depth and how its order meets the first stage's."""
    from retrievekit.errors import ConfigError
    from retrievekit.retrieval.fusion import check_rerank_fusion

    fusion = None if params["rerank_fusion"] == "none" else params["rerank_fusion"]
    try:  # before the model loads
        weights = check_rerank_fusion(fusion, params["rerank_weights"], has_reranker=bool(params["rerank_model"]))
    except ConfigError as exc:
        raise click.UsageError(f"{exc} (--rerank MODEL, --rerank-fusion, --rerank-weights)") from None
    if params["rerank_model"] is None:
        return {}
    from retrievekit.models.cross_encoder import load_cross_encoder

    return {"reranker": load_cross_encoder(params["rerank_model"]), "rerank_top_k": params["rerank_top_k"],
            "rerank_fusion": fusion, "rerank_weights": weights}  # fmt: skip


def write_linking_report(result, output: str) -> None:
    import json
    from pathlib import Path

    from retrievekit.artifacts import atomic_write_lines, atomic_write_text

    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    summary = {key: value for key, value in result.to_json().items() if key != "predictions"}
    atomic_write_text(folder / "results.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_lines(folder / "predictions.jsonl", (json.dumps(p) for p in result.predictions))
