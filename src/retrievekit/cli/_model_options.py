"""The model-loading options shared by every command that loads an encoder."""

from __future__ import annotations

import functools
from collections.abc import Callable

import click

from retrievekit.models.spec import POOLING_MODES


def model_options(command: Callable) -> Callable:
    """Add --model, --pooling, --normalize, --query-prompt, --document-prompt, --backend, --device, --dtype,
    --trust-remote-code and --document-length."""
    options = [
        click.option(
            "--model",
            "-m",
            default="minilm",
            show_default=True,
            help="Model folder, 'minilm' (bundled all-MiniLM-L6-v2), or a hub id.",
        ),
        click.option(
            "--pooling",
            type=click.Choice(POOLING_MODES),
            help="Pooling for a plain Hugging Face folder (required there), or an override.",
        ),
        click.option(
            "--normalize/--no-normalize", default=None, help="L2-normalise embeddings (default: what the model says)."
        ),
        click.option(
            "--query-prompt",
            default=None,
            help="Text prepended to queries, e.g. BGE's 'Represent this sentence for searching relevant passages: '.",
        ),
        click.option("--document-prompt", default=None, help="Text prepended to documents."),
        click.option(
            "--backend",
            type=click.Choice(["torch", "onnx"]),
            default="torch",
            show_default=True,
            help="torch (any device) or onnx (fast CPU, int8; exported once and cached in the model folder).",
        ),
        click.option(
            "--device",
            default=None,
            help="cpu, cuda, cuda:1 or a comma-separated list (torch backend). Default: cuda if available.",
        ),
        click.option(
            "--dtype",
            type=click.Choice(["float32", "float16", "bfloat16"]),
            default="float32",
            show_default=True,
            help="Compute precision of the torch backend.",
        ),
        click.option(
            "--trust-remote-code", is_flag=True, help="Allow model code shipped with a hub model (off by default)."
        ),
        click.option(
            "--document-length",
            type=click.IntRange(min=1),
            default=None,
            help="ColBERT models: tokens kept per document, overriding the model's document_length (as PyLate's "
            "ColBERT(path, document_length=N)); part of the model's fingerprint, so give the same value to every "
            "command that uses an index built with it.",
        ),
    ]

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        return command(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def load_from_options(
    model: str,
    pooling,
    normalize,
    query_prompt,
    document_prompt,
    backend,
    device,
    dtype,
    trust_remote_code,
    document_length: int | None = None,
):
    from retrievekit.models import load_encoder
    from retrievekit.models.registry import detect_model_kind
    from retrievekit.resolve import resolve_model

    if detect_model_kind(resolve_model(model)) == "colbert_encoder":
        from retrievekit.errors import ConfigError
        from retrievekit.models.colbert import load_colbert

        given = [n for n, v in (("--pooling", pooling), ("--normalize", normalize)) if v is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} do not apply to ColBERT models (one vector per token)")
        return load_colbert(
            model, backend=backend, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
            document_length=document_length,
        )  # fmt: skip
    if document_length is not None:
        from retrievekit.errors import ConfigError

        raise ConfigError("--document-length applies to ColBERT models; this is a single-vector model")
    return load_encoder(
        model,
        pooling=pooling,
        normalize=normalize,
        query_prompt=query_prompt,
        document_prompt=document_prompt,
        backend=backend,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
