"""``retrievekit model``: inspect and convert models."""

from __future__ import annotations

import click

from retrievekit.cli._model_options import load_from_options, model_options
from retrievekit.cli._output import console, print_table


@click.group()
def model() -> None:
    """Inspect and convert models (dense and ColBERT)."""


@model.command("info")
@model_options
def info(**model_kwargs) -> None:
    """Load a model and print how it encodes (pooling, dimension, prompts, towers, fingerprint)."""
    encoder = load_from_options(**model_kwargs)
    if getattr(encoder, "family", "dense") == "multivector":
        _colbert_info(encoder)
        return
    spec = encoder.spec
    rows = []
    for side, tower, prompt in (
        ("queries", spec.query, spec.query_prompt),
        ("documents", spec.document, spec.document_prompt),
    ):
        rows.append(
            (
                side,
                tower.pooling,
                str(tower.normalize),
                str(encoder.max_length),
                str(len(tower.projections)),
                repr(prompt),
            )
        )
    console.print(f"[bold]{encoder.name}[/bold]  {encoder.source}  ({spec.source_format} format)")
    console.print(
        f"dimension {encoder.dimension}, similarity {encoder.similarity_fn_name}, "
        f"{'shared tower' if spec.shared else 'two towers'}, backend {encoder.runtime}"  # onnx-int8, torch-float16
    )
    print_table("Towers", ["side", "pooling", "normalize", "max length", "projections", "prompt"], rows)
    console.print(f"fingerprint {encoder.fingerprint}")


def _colbert_info(model) -> None:
    c = model.config
    console.print(f"[bold]{model.name}[/bold]  {model.source}  (ColBERT, late interaction)")
    console.print(f"dimension {model.dimension} per token, similarity MaxSim, backend {model.backend}")
    expansion = "yes" if c.do_query_expansion else "no"
    attended = "yes" if c.attend_to_expansion_tokens else "no"
    rows = [
        (
            "queries",
            repr(c.query_prefix),
            str(model.token_length("queries")),
            expansion,
            attended,
            repr(c.query_prompt),
        ),
        ("documents", repr(c.document_prefix), str(model.token_length("documents")), "", "", repr(c.document_prompt)),
    ]
    print_table("Token layout", ["side", "marker", "length", "[MASK] expansion", "attended", "prompt"], rows)
    console.print(f"skiplist: {len(c.skiplist_words)} words; fingerprint {model.fingerprint}")


@model.command("save")
@model_options
@click.argument("output", type=click.Path(file_okay=False))
def save(output: str, **model_kwargs) -> None:
    """Save a model (with any option overrides) in retrievekit's format, also loadable by sentence-transformers."""
    encoder = load_from_options(**model_kwargs)
    encoder.save(output)
    console.print(f"saved {encoder.name} to {output}")
