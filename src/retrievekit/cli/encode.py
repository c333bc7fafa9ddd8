"""``retrievekit encode``: texts to an embeddings folder."""

from __future__ import annotations

import time

import click

from retrievekit.cli._engine_options import engine_options, ray_settings
from retrievekit.cli._model_options import load_from_options, model_options
from retrievekit.cli._output import console, print_table
from retrievekit.quantization import PRECISIONS


@click.command()
@model_options
@engine_options
@click.option(
    "--input",
    "-i",
    "source",
    required=True,
    help="JSONL (_id, text, optional title) or TSV file, or a BEIR folder / dataset name.",
)
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder to write embeddings.npy (ColBERT models: vectors/), ids.json and manifest.json into.",
)
@click.option(
    "--side",
    type=click.Choice(["documents", "queries"]),
    default="documents",
    show_default=True,
    help="Encode as documents (title + text, document prompt) or queries (query prompt).",
)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option(
    "--max-length",
    type=click.IntRange(2),
    default=None,
    help="Truncate texts to this many tokens (default: the model's).",
)
@click.option(
    "--truncate-dim", type=click.IntRange(1), default=None, help="Keep the first N dimensions (Matryoshka models)."
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="float32",
    show_default=True,
    help="Stored precision; int8 keeps its calibration in calibration.npy.",
)
@click.option("--limit", type=click.IntRange(1), default=None, help="Encode only the first N records.")
def encode(source, output, side, batch_size, max_length, truncate_dim, precision, limit, **model_kwargs) -> None:
    """Encode documents or queries into OUTPUT with a progress bar.

    \b
    Examples:
      retrievekit encode --model minilm --input scifact --output runs/scifact-minilm
      retrievekit encode --model minilm --input scifact --output runs/scifact-shards --engine ray --replicas 2
    """
    from retrievekit.embeddings import encode_rows_to_directory, encode_to_directory

    settings = ray_settings(model_kwargs)
    started = time.perf_counter()
    encoder = load_from_options(**model_kwargs)
    loaded = time.perf_counter()
    family = getattr(encoder, "family", "dense")
    if settings is not None:
        _encode_on_ray(encoder, source, output, side, batch_size, settings, model_kwargs["trust_remote_code"],
                       unsupported={"--max-length": max_length, "--truncate-dim": truncate_dim, "--limit": limit,
                                    "--precision": None if precision == "float32" else precision})  # fmt: skip
        return
    if family in ("multivector", "sparse"):
        from retrievekit.errors import ConfigError

        if max_length is not None or truncate_dim is not None or precision != "float32":
            raise ConfigError(
                "--max-length, --truncate-dim and --precision are for dense models; a ColBERT model's lengths "
                "are its query_length and document_length (--document-length), a SPLADE model's its max_length"
            )
        config = encode_rows_to_directory(encoder, source, output, side=side, batch_size=batch_size, limit=limit)
        elapsed = time.perf_counter() - loaded
        stats = config["stats"]
        sizes = (
            [("token vectors", f"{config['token_vectors']:,}"), ("dimension", config["dimension"])]
            if family == "multivector"
            else [("non-zeros per text", f"{config['nonzeros'] / max(1, config['count']):.1f}"),
                  ("vocabulary", config["dimension"])]
        )  # fmt: skip
        rows = [
            ("texts", stats["texts"]),
            *sizes,
            ("tokens", stats["tokens"]),
            ("truncated texts", stats["truncated"]),
            ("texts/s", f"{stats['texts'] / max(elapsed, 1e-9):.1f}"),
            ("encode s", f"{elapsed:.1f}"),
        ]
        print_table(f"Encoded {side} with {encoder.name} ({encoder.backend})", ["", "value"], rows)
        layout = "token vectors + offsets" if family == "multivector" else "CSR: indptr, indices, values"
        console.print(f"wrote {output}/vectors ({layout}), ids.json, manifest.json")
        return
    result = encode_to_directory(
        encoder,
        source,
        output,
        side=side,
        precision=precision,
        batch_size=batch_size,
        max_length=max_length,
        truncate_dim=truncate_dim,
        limit=limit,
    )
    elapsed = time.perf_counter() - loaded
    stats = result.manifest.config["stats"]
    dimension = result.manifest.config["dimension"]
    rows = [
        ("texts", stats["texts"]),
        ("dimension", dimension),
        ("precision", precision),
        ("tokens", stats["tokens"]),
        ("truncated texts", stats["truncated"]),
        ("empty texts", stats["empty"]),
        ("texts/s", f"{stats['texts'] / max(elapsed, 1e-9):.1f}"),
        ("model load s", f"{loaded - started:.1f}"),
        ("encode s", f"{elapsed:.1f}"),
    ]
    print_table(f"Encoded {side} with {encoder.name} ({encoder.backend})", ["", "value"], rows)
    console.print(f"wrote {output}/embeddings.npy, ids.json, manifest.json")


def _encode_on_ray(encoder, source, output, side, batch_size, settings, trust_remote_code, unsupported) -> None:
    from retrievekit.errors import ConfigError
    from retrievekit.scale import encode_with_ray

    given = [name for name, value in unsupported.items() if value is not None]
    if given:
        raise ConfigError(f"{', '.join(given)}: not with --engine ray (shards hold the model's float32 output)")
    result = encode_with_ray(
        encoder, source, output, side=side, settings=settings, batch_size=batch_size,
        trust_remote_code=trust_remote_code,
    )  # fmt: skip
    config = result.config
    rows = [
        ("texts", config["count"]),
        ("shards", len(config["shards"])),
        ("replicas", f"{settings.replicas} x {settings.cpus_per_replica} CPU"
         + (f" + {settings.gpus_per_replica:g} GPU" if settings.gpus_per_replica else "")),
        ("texts/s", f"{config['count'] / max(result.seconds, 1e-9):.1f}"),
        ("encode s", f"{result.seconds:.1f}"),
    ]  # fmt: skip
    print_table(f"Encoded {side} with {encoder.name} on Ray", ["", "value"], rows)
    console.print(f"wrote {output}/shard-*/ and one manifest.json (index build --embeddings {output} reads them)")
