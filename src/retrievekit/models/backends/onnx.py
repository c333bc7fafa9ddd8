"""ONNX Runtime backend: the whole tower (backbone, pooling, projections, normalisation) as one graph.

The graph is exported once and cached beside the model in ``<model>/retrievekit-onnx/`` (``onnx/``
is left to sentence-transformers), or under the user cache when the model folder is read-only, with
a manifest recording the model fingerprint, so a changed model is never served by a stale graph.
``quantize="int8"`` quantises the weight matrices to int8, per output channel, with activations
quantised on the fly (dynamic quantisation) and GELU in its tanh form (ONNX Runtime's ``FastGelu``);
the attention score products stay in float32, which keeps embeddings within ~0.99 cosine of the
float32 ones. The float32 graph computes what the torch model computes.

Attention is exported in its plain form (``eager``: product, mask, softmax, product). The export of
PyTorch's fused ``scaled_dot_product_attention`` guards every softmax with ``IsNaN``/``Where`` nodes
for fully masked rows (which padded batches of real texts never have); in ONNX Runtime those guards
took a fifth of an int8 run.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from retrievekit._optional import require
from retrievekit.artifacts import Manifest, atomic_directory, read_manifest, write_manifest
from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.models.backends.onnx_graph import approximate_gelu, drop_padding_mask
from retrievekit.models.batching import plan_batches
from retrievekit.models.encoding import BatchRunner, TokenBatch
from retrievekit.resolve import cache_dir

if TYPE_CHECKING:
    from retrievekit.models.tower import Tower


class TowerModel(Protocol):
    """What the exporter needs of a model: its towers (the same object when shared), name and fingerprint."""

    name: str

    @property
    def query_tower(self) -> Tower: ...

    @property
    def document_tower(self) -> Tower: ...

    @property
    def fingerprint(self) -> str: ...


__all__ = ["ONNX_KIND", "export_onnx", "onnx_runners"]

logger = logging.getLogger(__name__)

ONNX_KIND = "onnx_export"
_OPSET = 17
# bump when the exported graph changes for the same weights, so cached exports are rebuilt
_EXPORT_VERSION = 3
_QUANTIZE_CHOICES = (None, "int8")
# ONNX Runtime fusions that make this graph slower on the CPU: its SkipLayerNormalization kernel is
# slower than the residual Add plus LayerNormalization it replaces (measurements: benchmarks/README.md).
_SLOWER_FUSIONS = ["SkipLayerNormFusion"]


class OnnxRunner:
    """Runs padded batches ``(input_ids, attention_mask) -> embeddings`` on one ONNX Runtime session.

    Each batch is cut into slices of about ``slice_tokens`` tokens (one long text, or several short
    ones), each slice trimmed to its own longest text, and the slices are run by ``workers`` threads
    (one per CPU core), each with one ONNX Runtime thread, on one shared session: small single-
    threaded products keep their activations in each core's cache and no core waits for the other
    between operators (measurements: benchmarks/README.md). :meth:`run_many` schedules the slices of
    many batches together, so no worker idles at the end of each batch. Slices without padding
    (every long text, and short texts of equal length) run on a second session of the same graph
    without the attention mask
    (:func:`~retrievekit.models.backends.onnx_graph.drop_padding_mask`), which gives the same result.
    """

    def __init__(self, path: Path, workers: int | None = None, slice_tokens: int = 256) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be at least 1, got {workers}")
        self.workers = workers or _usable_cpus()
        self.slice_tokens = slice_tokens
        ort = require("onnxruntime", extra="onnx", purpose="The onnx backend")
        onnx = require("onnx", extra="onnx", purpose="The onnx backend")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1

        def session(graph: str | bytes):
            return ort.InferenceSession(
                graph, options, providers=["CPUExecutionProvider"], disabled_optimizers=_SLOWER_FUSIONS
            )

        self.session = session(str(path))
        self.unpadded_session = self.session
        # a pair-scoring graph (cross-encoder) reads the segment ids of its text pairs
        self.reads_token_types = "token_type_ids" in {i.name for i in self.session.get_inputs()}
        model = onnx.load(str(path))
        if drop_padding_mask(model):
            try:
                self.unpadded_session = session(model.SerializeToString())
            except ValueError as exc:  # beyond protobuf's 2 GB: every slice uses the one graph
                logger.info("no unpadded variant of %s: %s", path.name, exc)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()

    def __call__(self, batch: TokenBatch) -> np.ndarray:
        return self.run_many([batch])[0]

    def run_many(self, batches: Sequence[TokenBatch], on_rows: Callable[[int], None] | None = None) -> list[np.ndarray]:
        """Run several padded batches; ``on_rows(n)`` is called as each slice of ``n`` rows is done.
        Per-token outputs of a slice cut to its own width are padded back to the batch's width."""
        for batch in batches:
            if not self.reads_token_types and batch.token_type_ids is not None and batch.token_type_ids.any():
                raise ConfigError("this ONNX graph takes single texts; text pairs need the torch backend")
        slices = [(b, rows) for b, batch in enumerate(batches) for rows in self._slices(batch.attention_mask)]
        outputs: list[np.ndarray | None] = [None] * len(batches)

        def run(index: int) -> tuple[int, np.ndarray, np.ndarray]:
            b, rows = slices[index]
            full_mask = batches[b].attention_mask
            width = batches[b].used_width(rows)
            cut = batches[b].rows(rows, None if full_mask[rows][:, width:].any() else width)  # drop right padding
            ids, mask = cut.input_ids, cut.attention_mask
            session = self.unpadded_session if mask.all() else self.session
            feed = {"input_ids": ids, "attention_mask": mask}
            if self.reads_token_types:
                types = cut.token_type_ids
                feed["token_type_ids"] = types if types is not None else np.zeros_like(ids)
            result = session.run(None, feed)[0]
            if on_rows is not None:
                on_rows(len(rows))
            return b, rows, result

        done: Iterator[tuple[int, np.ndarray, np.ndarray]]
        if self.workers == 1 or len(slices) == 1:
            done = map(run, range(len(slices)))
        else:
            done = self._executor().map(run, range(len(slices)))
        for b, rows, result in done:
            target = outputs[b]
            if target is None:
                shape = (len(batches[b]), *result.shape[1:])
                if result.ndim == 3:  # per-token output: the batch's full width, zeros past each slice
                    shape = (len(batches[b]), batches[b].attention_mask.shape[1], result.shape[2])
                target = outputs[b] = np.zeros(shape, dtype=np.float32)
            if result.ndim == 3:
                target[rows, : result.shape[1]] = result
            else:
                target[rows] = result
        return [o if o is not None else np.empty((0, 0), dtype=np.float32) for o in outputs]

    def _slices(self, mask: np.ndarray) -> Iterator[np.ndarray]:
        """Row groups of about ``slice_tokens`` padded tokens, texts of similar length together (the
        engine's own batching, with the token budget as the only limit)."""
        lengths = mask.sum(axis=1)
        for rows in plan_batches(lengths.tolist(), batch_size=max(len(lengths), 1), max_tokens=self.slice_tokens):
            yield np.sort(rows)

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():  # a forked child has no pool threads
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="retrievekit-onnx")
                self._pool_pid = os.getpid()
            return self._pool


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _export_tower(tower: Tower, path: Path) -> None:
    """The tower as one graph of ``(input_ids, attention_mask)``, and ``token_type_ids`` for a
    pair-scoring tower whose model reads segment ids (a BERT cross-encoder)."""
    import torch

    pairs = tower.head.output == "score" and tower.accepts_token_types

    class _Graph(torch.nn.Module):
        def __init__(self, inner: Tower) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
        ) -> torch.Tensor:
            output: torch.Tensor = self.inner(input_ids, attention_mask, token_type_ids)
            return output

    example = torch.ones(2, 8, dtype=torch.long)
    inputs = ["input_ids", "attention_mask", *(["token_type_ids"] if pairs else [])]
    was_device = next(tower.parameters()).device
    modes = {module: module.training for module in tower.modules()}
    tower.to("cpu").eval()
    graph = _Graph(tower).eval()  # the exporter puts the wrapper back in its mode, and with it the tower
    with warnings.catch_warnings(), _plain_attention(tower):
        warnings.simplefilter("ignore")  # the exporter's tracer warnings say nothing actionable here
        torch.onnx.export(
            graph,
            tuple([example] * len(inputs)),
            str(path),
            input_names=inputs,
            output_names=["embedding"],
            dynamic_axes={**{name: {0: "batch", 1: "sequence"} for name in inputs}, "embedding": {0: "batch"}},
            opset_version=_OPSET,
            dynamo=False,
        )
    tower.to(was_device)
    for module, training in modes.items():  # exactly the modes it had (a fresh wrapper trains by default)
        module.training = training


@contextmanager
def _plain_attention(tower: Tower) -> Iterator[None]:
    """Give the tower a backbone with eager attention for the export, then its own back.

    transformers 5 switches attention in place; older versions fix it when the model is built, so
    the backbone is rebuilt from its config with eager attention and the same weights.
    """
    backbone = tower.backbone
    before = getattr(getattr(backbone, "config", None), "_attn_implementation", None)
    if before in (None, "eager"):
        yield
        return
    in_place = getattr(backbone, "_can_set_attn_implementation", None)
    if in_place is not None and in_place():
        backbone.set_attn_implementation("eager")
        restore = lambda: backbone.set_attn_implementation(before)  # noqa: E731
    else:
        from transformers import AutoModel

        try:
            eager = AutoModel.from_config(copy.deepcopy(backbone.config), attn_implementation="eager")
            eager.load_state_dict(backbone.state_dict())
        except (ValueError, RuntimeError) as exc:  # no eager path: export the model as it is
            logger.info("exporting with %s attention: %s", before, exc)
            yield
            return
        tower.backbone = eager.eval()
        restore = lambda: setattr(tower, "backbone", backbone)  # noqa: E731
    try:
        yield
    finally:
        restore()


class _DropPreprocessingAdvice(logging.Filter):
    """onnxruntime's quantiser logs advice on the root logger; it does not apply to this graph."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _quantize_int8(source: Path, target: Path) -> None:
    onnx = require("onnx", extra="onnx", purpose="int8 quantisation")
    quantization = require("onnxruntime.quantization", extra="onnx", purpose="int8 quantisation")
    model = onnx.load(str(source))
    constants = {init.name for init in model.graph.initializer}
    # only products with a weight matrix; attention's activation x activation products stay float32
    weight_products = [
        n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and any(i in constants for i in n.input)
    ]
    advice_filter = _DropPreprocessingAdvice()
    logging.getLogger().addFilter(advice_filter)
    try:
        quantization.quantize_dynamic(
            str(source),
            str(target),
            weight_type=quantization.QuantType.QInt8,
            per_channel=True,
            nodes_to_quantize=weight_products,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        logging.getLogger().removeFilter(advice_filter)
    quantized = onnx.load(str(target))
    if approximate_gelu(quantized):
        onnx.save(quantized, str(target))


def _export_folder(root: Path, fingerprint: str) -> Path:
    folder = root / "retrievekit-onnx"
    if os.access(root, os.W_OK):
        return folder
    return cache_dir() / "onnx" / fingerprint.removeprefix("sha256:")[:16]


def export_onnx(encoder: TowerModel, root: Path, *, quantize: str | None = "int8") -> dict[str, Path]:
    """Export (or reuse the cached export of) each tower; return the graph path per side."""
    if quantize not in _QUANTIZE_CHOICES:
        raise ConfigError(f"quantize must be one of {_QUANTIZE_CHOICES}, got {quantize!r}")
    folder = _export_folder(root, encoder.fingerprint)
    towers = {"queries": encoder.query_tower, "documents": encoder.document_tower}
    shared = encoder.query_tower is encoder.document_tower
    names = {side: ("shared" if shared else side) for side in towers}
    variant = quantize or "fp32"
    wanted = {side: folder / f"{names[side]}-{variant}.onnx" for side in towers}
    same_model = _same_model(folder, encoder)
    if same_model and all(p.is_file() for p in wanted.values()):
        return wanted
    logger.info("exporting %s to ONNX (%s) in %s", encoder.name or "the encoder", variant, folder)
    previous = list(folder.glob("*.onnx")) if same_model else []
    with atomic_directory(folder) as staging:
        for old in previous:  # keep the other variants of the same model
            shutil.copy2(old, staging / old.name)
        for side, tower in towers.items():
            target = staging / wanted[side].name
            if target.exists():
                continue
            fp32 = staging / f"{names[side]}-fp32.onnx"
            if not fp32.exists():
                _export_tower(tower, fp32)
            if quantize == "int8":
                _quantize_int8(fp32, target)
        variants = sorted(p.name for p in staging.glob("*.onnx"))
        write_manifest(
            staging,
            Manifest(
                kind=ONNX_KIND,
                family="any",
                config={"opset": _OPSET, "export_version": _EXPORT_VERSION, "graphs": variants},
                fingerprint=encoder.fingerprint,
            ),
        )
    return wanted


def _same_model(folder: Path, encoder: TowerModel) -> bool:
    """True when ``folder`` holds an export of this very model by this exporter (a damaged manifest
    is reported and ignored)."""
    if not (folder / "manifest.json").is_file():
        return False
    try:
        manifest = read_manifest(folder, expected_kind=ONNX_KIND)
    except ArtifactError as exc:
        logger.warning("ignoring the cached ONNX export in %s: %s", folder, exc)
        return False
    return manifest.fingerprint == encoder.fingerprint and manifest.config.get("export_version") == _EXPORT_VERSION


def onnx_runners(
    encoder: TowerModel, root: Path, *, quantize: str | None = "int8", workers: int | None = None
) -> dict[str, list[BatchRunner]]:
    """ONNX Runtime runners for both sides (one session when the tower is shared)."""
    paths = export_onnx(encoder, root, quantize=quantize)
    sessions: dict[Path, OnnxRunner] = {}
    for path in paths.values():
        if path not in sessions:
            sessions[path] = OnnxRunner(path, workers)
    return {side: [sessions[path]] for side, path in paths.items()}
