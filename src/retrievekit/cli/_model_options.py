"""The model-loading options shared by every command that loads an encoder."""

from __future__ import annotations

from collections.abc import Callable

import click

from retrievekit.cli._option_group import option_group
from retrievekit.models.spec import POOLING_MODES


def quantize_option() -> Callable:
    """``--quantize int8|none``: the onnx backend's weights (every command that loads a model)."""
    return click.option(
        "--quantize",
        type=click.Choice(["int8", "none"]),
        default=None,
        help="onnx backend: int8 weights (the default, fastest) or none (float32: torch's scores to float "
        "precision, for tasks int8 costs accuracy).",
    )


def onnx_weights(backend: str, quantize: str | None) -> str | None:
    """The loaders' ``quantize`` for ``--quantize``: ``"int8"`` unless ``none`` (float32); refused off
    the onnx backend, where it would silently do nothing.

    >>> onnx_weights("onnx", None), onnx_weights("onnx", "none"), onnx_weights("torch", None)
    ('int8', None, 'int8')
    """
    from retrievekit.errors import ConfigError

    if quantize is not None and backend != "onnx":
        raise ConfigError(f"--quantize {quantize} applies to the onnx backend: add --backend onnx")
    return None if quantize == "none" else "int8"


def model_options(command: Callable) -> Callable:
    """Add --model, --pooling, --normalize, --query-prompt, --document-prompt, --backend, --quantize, --device,
    --dtype, --trust-remote-code, --document-length and --model-family."""
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
        quantize_option(),
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
            "ColBERT(path, document_length=N)); BGE-M3 models: tokens read per document (default 512). Part of "
            "the model's fingerprint, so give the same value to every "
            "command that uses an index built with it.",
        ),
        click.option(
            "--model-family",
            type=click.Choice(["dense", "colbert", "sparse", "m3"]),
            default=None,
            help="Read the model as this family when its folder does not say: a plain masked-LM folder (naver's "
            "SPLADE checkpoints) is read as dense unless --model-family sparse. Sparse indexes and retrievers "
            "imply it.",
        ),
    ]
    return option_group(options)(command)


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
    model_family: str | None = None,
    family: str | None = None,
    quantize: str | None = None,
):
    """The model the options name. ``family`` (what the command needs: ``sparse`` for a sparse index
    or retriever) or ``--model-family`` reads a plain masked-LM folder as SPLADE; otherwise the
    folder's own layout decides."""
    from retrievekit.errors import ConfigError

    wanted = {"colbert": "multivector"}.get(model_family or "", model_family)
    if family is not None and wanted is not None and wanted != family:
        raise ConfigError(f"--model-family {model_family} does not fit this command, which needs a {family} model")
    family = family or wanted
    weights = onnx_weights(backend, quantize)
    from retrievekit.models import load_encoder
    from retrievekit.models.registry import detect_model_kind
    from retrievekit.resolve import resolve_model

    kind = detect_model_kind(resolve_model(model))
    if family == "m3" or kind == "m3_encoder":
        from retrievekit.models.m3 import load_m3

        if kind != "m3_encoder":
            raise ConfigError(f"{model}: not a BGE-M3 folder (colbert_linear and sparse_linear heads beside the model)")
        given = [n for n, v in (("--pooling", pooling), ("--normalize", normalize), ("--document-prompt",
                 document_prompt), ("--quantize", quantize)) if v is not None]  # fmt: skip
        if given:
            raise ConfigError(f"{', '.join(given)} do not apply to BGE-M3 models")
        return load_m3(
            model, backend=backend, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
            document_max_length=document_length, query_prompt=query_prompt,
        )  # fmt: skip
    if family == "sparse" or kind == "sparse_encoder":
        from retrievekit.models.sparse import load_sparse_encoder

        given = [n for n, v in (("--pooling", pooling), ("--normalize", normalize), ("--document-length",
                 document_length), ("--quantize", quantize)) if v is not None]  # fmt: skip
        if given:
            raise ConfigError(f"{', '.join(given)} do not apply to sparse (SPLADE) models")
        return load_sparse_encoder(
            model, backend=backend, device=device, dtype=dtype, trust_remote_code=trust_remote_code
        )
    if kind == "colbert_encoder":
        from retrievekit.models.colbert import load_colbert

        given = [n for n, v in (("--pooling", pooling), ("--normalize", normalize)) if v is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} do not apply to ColBERT models (one vector per token)")
        return load_colbert(
            model, backend=backend, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
            document_length=document_length, quantize=weights,
        )  # fmt: skip
    if family == "multivector":
        raise ConfigError(f"{model}: not a ColBERT model folder (PyLate, Stanford or retrievekit)")
    if document_length is not None:
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
        quantize=weights,
    )
