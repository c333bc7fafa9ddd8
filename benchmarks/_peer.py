"""What the benchmarks share about the peers: which of sentence-transformers' quantised ONNX
builds is the fastest on this CPU, and the peer's ONNX models."""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any


def st_quantization_config() -> str:
    """The ``export_dynamic_quantized_onnx_model`` config for this CPU: its fastest one
    (``avx512_vnni`` where the CPU has VNNI, then ``avx512``, ``avx2``; ``arm64`` on ARM)."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    try:
        flags = next(
            set(line.split(":", 1)[1].split())
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        )
    except (OSError, StopIteration):
        return "avx2"
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    return "avx512" if "avx512f" in flags else "avx2"


def export_st_quantized(model: Any, folder: Path) -> str:
    """Export sentence-transformers' dynamically quantised ONNX model for this CPU into ``folder``
    (as ``export_dynamic_quantized_onnx_model`` names it: ``onnx/model_qint8_avx512_vnni.onnx``,
    ``onnx/model_quint8_avx2.onnx``, ...) and return that file name, relative to ``folder``.
    ``model``: a ``SentenceTransformer`` or ``CrossEncoder`` on the ONNX backend."""
    from sentence_transformers import export_dynamic_quantized_onnx_model

    config = st_quantization_config()
    export_dynamic_quantized_onnx_model(model, config, str(folder))
    (path,) = sorted((folder / "onnx").glob(f"model_*int8_{config}.onnx"))
    return str(path.relative_to(folder))


def st_onnx_models(load: Callable[..., Any], folder: Path) -> dict[str, Any]:
    """The peer's ONNX backends of the model in ``folder``, by name: ``onnx fp32`` and its int8
    export for this CPU (``onnx qint8_avx512_vnni``, ...). ``load(**options)`` builds one with the
    caller's settings (a ``SentenceTransformer`` or a ``CrossEncoder`` on ``folder``); it gets
    ``backend="onnx"`` and, for the int8 model, ``model_kwargs``. Raises where optimum is missing."""
    fp32 = load(backend="onnx")
    quantized = export_st_quantized(fp32, folder)
    name = f"onnx {Path(quantized).stem.removeprefix('model_')}"
    return {"onnx fp32": fp32, name: load(backend="onnx", model_kwargs={"file_name": quantized})}
