"""Load a dense encoder from any supported source, dispatching on what the folder declares.

Order: retrievekit's ``manifest.json``; a sentence-transformers ``modules.json``; a plain Hugging
Face ``config.json`` with explicit options. A folder name is never used to guess anything.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from retrievekit.artifacts import MANIFEST_NAME, Manifest, files_digest, read_manifest
from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.models.dense import CALIBRATION_FILE, DENSE_KIND, DenseEncoder
from retrievekit.models.spec import EncoderSpec, spec_from_hf_directory, spec_from_sentence_transformers
from retrievekit.quantization import Int8Calibration
from retrievekit.resolve import cache_dir, resolve_model

if TYPE_CHECKING:
    from retrievekit.models.tower import Tower

__all__ = ["load_encoder", "read_encoder_spec", "verified_fingerprint"]

logger = logging.getLogger(__name__)


def read_encoder_spec(
    root: Path, *, pooling: str | None = None, normalize: bool | None = None
) -> tuple[EncoderSpec, str | None]:
    """The spec a folder declares, and its manifest's fingerprint once the files are verified against
    the digest recorded at save (``None``: computed from the loaded weights and tokenizer)."""
    if (root / MANIFEST_NAME).is_file():
        manifest = read_manifest(root, expected_kind=DENSE_KIND)
        config = {k: v for k, v in manifest.config.items() if k not in ("dimension", "name", "files_digest")}
        return EncoderSpec.from_dict(config), verified_fingerprint(root, manifest)
    if (root / "modules.json").is_file():
        return spec_from_sentence_transformers(root), None
    if (root / "config.json").is_file():
        return spec_from_hf_directory(root, pooling=pooling, normalize=bool(normalize)), None
    raise ArtifactError(f"{root}: not a model folder (no manifest.json, modules.json or config.json)")


def verified_fingerprint(root: Path, manifest: Manifest) -> str | None:
    """The manifest's fingerprint once the model files under ``root`` are checked against the digest
    recorded at save; ``None`` (compute it from the loaded weights) for folders saved before digests
    were recorded. Files changed since the save are an error."""
    recorded = manifest.config.get("files_digest")
    if not isinstance(recorded, str):
        return None
    from retrievekit.models.tower import model_files

    actual = files_digest(root, model_files(root), cache_file=cache_dir() / "file-digests.json")
    if actual != recorded:
        raise ArtifactError(
            f"{root}: the weights, tokenizer or config files changed since the model was saved (their "
            "digest differs from manifest.json's files_digest); re-save the model, or load it without "
            "manifest.json (as a sentence-transformers or PyLate folder) to fingerprint it afresh"
        )
    return manifest.fingerprint


def load_encoder(
    name_or_path: str | Path,
    *,
    pooling: str | None = None,
    normalize: bool | None = None,
    max_length: int | None = None,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
    backend: str = "torch",
    device: str | list[str] | None = None,
    dtype: str = "float32",
    quantize: str | None = "int8",
    trust_remote_code: bool = False,
) -> DenseEncoder:
    """Load a dense encoder.

    Args:
        name_or_path: a folder (retrievekit, sentence-transformers or Hugging Face), ``minilm``
            (the bundled all-MiniLM-L6-v2), or a hub id (fetched when online).
        pooling, normalize, max_length: tower options. Required/used for plain Hugging Face folders
            (``pooling`` must be given there); for other formats they override what the folder says.
        query_prompt, document_prompt: text prepended to queries / documents (BGE:
            ``"Represent this sentence for searching relevant passages: "`` for queries).
        backend: ``"torch"`` (any device) or ``"onnx"`` (ONNX Runtime on the CPU; the exported graph
            is cached in the model folder).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, or a list of devices (torch backend).
        dtype: ``float32``, or ``float16``/``bfloat16`` for mixed precision (torch backend).
        quantize: for the onnx backend, ``"int8"`` (weights int8 per channel, activations
            quantised on the fly) or ``None`` for float32.
        trust_remote_code: allow model code shipped with a hub model; off by default.
    """
    root = resolve_model(name_or_path)
    spec, fingerprint = read_encoder_spec(root, pooling=pooling, normalize=normalize)
    if spec.source_format != "huggingface":
        overrides = spec.with_towers(pooling=pooling, normalize=normalize, max_length=max_length)
        if overrides != spec:
            fingerprint = None  # the recorded fingerprint describes the folder as saved, not the override
        spec = overrides
    else:
        spec = spec.with_towers(max_length=max_length)
    if query_prompt is not None or document_prompt is not None:
        prompted = replace(
            spec,
            query_prompt=spec.query_prompt if query_prompt is None else query_prompt,
            document_prompt=spec.document_prompt if document_prompt is None else document_prompt,
        )
        if prompted != spec:  # the prompts the folder already has change nothing
            fingerprint = None
        spec = prompted
    from retrievekit.models.tower import load_tower

    query_tower = load_tower(root, spec.query, trust_remote_code=trust_remote_code)
    document_tower = (
        query_tower if spec.shared else load_tower(root, spec.document, trust_remote_code=trust_remote_code)
    )
    encoder = _build(
        spec, query_tower, document_tower, str(name_or_path), fingerprint, root, backend, device, dtype, quantize
    )
    calibration = root / CALIBRATION_FILE
    if calibration.is_file():
        encoder.calibration = Int8Calibration.load(calibration)
    return encoder


def _build(
    spec: EncoderSpec,
    query_tower: Tower,
    document_tower: Tower,
    name: str,
    fingerprint: str | None,
    root: Path,
    backend: str,
    device: str | list[str] | None,
    dtype: str,
    quantize: str | None,
) -> DenseEncoder:
    if backend == "torch":
        from retrievekit.models.backends.torch_runner import parse_devices

        placeholder = DenseEncoder(
            spec, query_tower, document_tower, runners={}, name=name, fingerprint=fingerprint, source=root
        )
        return placeholder.with_devices(parse_devices(device), dtype)
    if backend == "onnx":
        from retrievekit.models.backends.onnx import onnx_runners

        if device not in (None, "cpu"):
            raise ConfigError("the onnx backend runs on the CPU; use backend='torch' for GPUs")
        encoder = DenseEncoder(
            spec, query_tower, document_tower, runners={}, name=name, fingerprint=fingerprint, source=root
        )
        runners = onnx_runners(encoder, root, quantize=quantize)
        return DenseEncoder(
            spec,
            query_tower,
            document_tower,
            runners=runners,
            name=name,
            fingerprint=encoder.fingerprint,
            backend="onnx",
            source=root,
            runtime=f"onnx-{quantize or 'fp32'}",
        )
    raise ConfigError(f"unknown backend {backend!r}; choose 'torch' or 'onnx'")
