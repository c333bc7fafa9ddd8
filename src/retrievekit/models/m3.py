"""BGE-M3: dense, lexical (sparse) and multi-vector outputs from one forward pass, and their fusion.

An :class:`M3Encoder` is a tower with the :class:`~retrievekit.models.heads.M3Head` run once per
batch by the shared encoding engine; :meth:`M3Encoder.encode` returns an :class:`M3Output` holding
the three records (a float32 matrix, :class:`~retrievekit.outputs.SparseVectors` over the
vocabulary, :class:`~retrievekit.outputs.MultiVectors`). They equal FlagEmbedding's
``BGEM3FlagModel.encode`` (``dense_vecs``, ``lexical_weights``, ``colbert_vecs``) for the same folder.

Scores follow FlagEmbedding: dense dot product, lexical matching (the dot product of the lexical
weights), and multi-vector MaxSim averaged over the query's vectors; the fused modes
``sparse+dense`` and ``colbert+sparse+dense`` are weighted sums divided by the sum of their weights
(:data:`~retrievekit.models.m3_format.M3_MODES`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrievekit.artifacts import Manifest, atomic_directory, files_digest, read_manifest, write_manifest
from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.models.encoding import EncodeStats, TokenLayout, encode_chunks
from retrievekit.models.m3_format import DEFAULT_WEIGHTS, HEAD_FILES, M3_KIND, M3_MODES, M3Config, head_file
from retrievekit.models.single_tower import SingleTowerEncoder, torch_runners
from retrievekit.models.terms import TermWeights
from retrievekit.outputs import MultiVectors, SparseVectors
from retrievekit.resolve import resolve_model
from retrievekit.scoring import maxsim_ragged, sparse_dot

if TYPE_CHECKING:
    from torch import nn

    from retrievekit.models.tower import Tower

__all__ = ["M3Config", "M3Encoder", "M3Output", "check_weights", "fuse_m3_scores", "load_m3"]

logger = logging.getLogger(__name__)

_PARTS = ("dense", "sparse", "colbert")


@dataclass(frozen=True)
class M3Output:
    """What BGE-M3 gives for ``n`` texts: ``dense`` ``(n, H)`` float32, ``sparse`` lexical weights
    (CSR over the vocabulary), ``colbert`` token vectors (``[CLS]`` left out)."""

    dense: np.ndarray
    sparse: SparseVectors
    colbert: MultiVectors

    def __post_init__(self) -> None:
        if not len(self.dense) == len(self.sparse) == len(self.colbert):
            raise ValueError(
                f"M3Output parts disagree: {len(self.dense)} dense, {len(self.sparse)} sparse and "
                f"{len(self.colbert)} multi-vector rows"
            )

    def __len__(self) -> int:
        return len(self.dense)

    @classmethod
    def concatenate(cls, parts: Sequence[M3Output]) -> M3Output:
        return cls(
            np.concatenate([p.dense for p in parts]),
            SparseVectors.concatenate([p.sparse for p in parts]),
            MultiVectors.concatenate([p.colbert for p in parts]),
        )

    def take(self, rows: np.ndarray) -> M3Output:
        rows = np.asarray(rows, dtype=np.int64)
        return M3Output(self.dense[rows], self.sparse.take(rows), self.colbert.take(rows))

    def lexical_weights(self) -> list[dict[str, float]]:
        """FlagEmbedding's form of the sparse part: per text, ``{str(token_id): weight}``."""
        weights = []
        for i in range(len(self.sparse)):
            indices, values = self.sparse.row(i)
            weights.append({str(int(t)): float(v) for t, v in zip(indices, values, strict=True)})
        return weights

    def save(self, directory: str | Path) -> Path:
        """Three ``.npy`` folders under ``directory`` (no pickle), written atomically."""
        with atomic_directory(directory) as staging:
            np.save(staging / "dense.npy", np.ascontiguousarray(self.dense, dtype=np.float32), allow_pickle=False)
            self.sparse.save(staging / "sparse")
            self.colbert.save(staging / "colbert")
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path, *, mmap: bool = True) -> M3Output:
        root = Path(directory)
        try:
            dense = np.load(root / "dense.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{root / 'dense.npy'}: unreadable ({exc})") from exc
        try:
            return cls(
                dense, SparseVectors.load(root / "sparse", mmap=mmap), MultiVectors.load(root / "colbert", mmap=mmap)
            )
        except ValueError as exc:
            raise ArtifactError(f"{root}: {exc}") from exc


def colbert_scores(queries: MultiVectors, documents: MultiVectors) -> np.ndarray:
    """``(Q, D)`` BGE-M3 multi-vector scores: MaxSim divided by the query's number of vectors."""
    docs = list(documents)
    scores = np.zeros((len(queries), len(documents)), dtype=np.float32)
    for row, query in enumerate(queries):
        if len(query):
            scores[row] = maxsim_ragged(np.asarray(query, dtype=np.float32), docs) / len(query)
    return scores


def lexical_scores(queries: SparseVectors, documents: SparseVectors) -> np.ndarray:
    """``(Q, D)`` lexical matching scores: dot products of the weights of the tokens both share."""
    rows = [queries.row(i) for i in range(len(queries))]
    return sparse_dot([r[0] for r in rows], [r[1] for r in rows], documents.indptr, documents.indices, documents.values)


def fuse_m3_scores(
    dense: np.ndarray, sparse: np.ndarray, colbert: np.ndarray, weights: Sequence[float] = DEFAULT_WEIGHTS
) -> dict[str, np.ndarray]:
    """FlagEmbedding's five modes from the three scores: each alone, ``sparse+dense`` =
    ``(w_d·dense + w_s·sparse) / (w_d + w_s)`` and ``colbert+sparse+dense`` =
    ``(w_d·dense + w_s·sparse + w_c·colbert) / (w_d + w_s + w_c)``.

    >>> modes = fuse_m3_scores(np.array([0.8]), np.array([0.2]), np.array([0.5]), (0.4, 0.2, 0.4))
    >>> {name: round(float(value[0]), 4) for name, value in modes.items()}
    {'dense': 0.8, 'sparse': 0.2, 'colbert': 0.5, 'sparse+dense': 0.6, 'colbert+sparse+dense': 0.56}
    """
    w_dense, w_sparse, w_colbert = check_weights(weights)
    fused = {
        "dense": dense,
        "sparse": sparse,
        "colbert": colbert,
        "sparse+dense": (w_sparse * sparse + w_dense * dense) / (w_sparse + w_dense),
        "colbert+sparse+dense": (w_colbert * colbert + w_sparse * sparse + w_dense * dense)
        / (w_dense + w_sparse + w_colbert),
    }
    return {mode: fused[mode] for mode in M3_MODES}


class M3Encoder(TermWeights, SingleTowerEncoder):
    """A BGE-M3 model: :meth:`encode_queries` / :meth:`encode_documents` give an :class:`M3Output`
    (all three outputs from one pass); :meth:`similarity` scores them in any of FlagEmbedding's
    modes and :meth:`compute_score` scores text pairs in all of them; :meth:`decode` names the
    tokens of the lexical weights (FlagEmbedding's ``convert_id_to_token``). Build one with :func:`load_m3`."""

    family = "m3"
    kind = M3_KIND
    config: M3Config

    @property
    def dimension(self) -> int:
        """Width of the dense vector."""
        return int(self.tower.backbone.config.hidden_size)

    @property
    def colbert_dimension(self) -> int:
        return int(self._head.colbert_linear.out_features)

    @property
    def vocab_size(self) -> int:
        return int(self._head.vocab_size)

    @property
    def _head(self) -> Any:
        return self.tower.head

    def token_length(self, side: str) -> int:
        """Tokens read per query (``queries``) or document (``documents``), capped at the model's positions."""
        wanted = self.config.query_max_length if side == "queries" else self.config.document_max_length
        return min(wanted, self.tower.max_length)

    @property
    def max_length(self) -> int:
        return self.token_length("documents")

    def load_options(self) -> dict[str, object]:
        """The :func:`load_m3` options that rebuild this encoder from its source folder."""
        return {
            "query_max_length": self.config.query_max_length,
            "document_max_length": self.config.document_max_length,
        }

    def __repr__(self) -> str:
        c = self.config
        return (
            f"M3Encoder({self.name!r}, dim={self.dimension}, colbert_dim={self.colbert_dimension}, "
            f"vocabulary={self.vocab_size}, max_length=({c.query_max_length}, {c.document_max_length}), "
            f"backend={self.runtime!r})"
        )

    # ---- encoding ----------------------------------------------------------------------------
    def encode_queries(
        self, texts: str | Sequence[str], *, batch_size: int = 32, max_tokens: int | None = None,
        show_progress: bool = False,
    ) -> M3Output:  # fmt: skip
        """Encode queries (``query_prompt`` first; ``query_max_length`` tokens at most)."""
        return self._encode(texts, "queries", batch_size, max_tokens, show_progress)

    def encode_documents(
        self, texts: str | Sequence[str], *, batch_size: int = 32, max_tokens: int | None = None,
        show_progress: bool = False,
    ) -> M3Output:  # fmt: skip
        """Encode documents (``document_max_length`` tokens at most)."""
        return self._encode(texts, "documents", batch_size, max_tokens, show_progress)

    def encode_corpus(self, texts: str | Sequence[str], **options: Any) -> M3Output:
        """FlagEmbedding's name for :meth:`encode_documents`."""
        return self.encode_documents(texts, **options)

    def _encode(
        self, texts: str | Sequence[str], side: str, batch_size: int, max_tokens: int | None, show_progress: bool
    ) -> M3Output:
        rows = [texts] if isinstance(texts, str) else list(texts)
        stats = EncodeStats()
        chunks = list(
            self.encode_chunks(
                rows, side, batch_size=batch_size, max_tokens=max_tokens, show_progress=show_progress,
                total=len(rows), stats=stats,
            )
        )  # fmt: skip
        stats.report(self.token_length(side))
        if not chunks:
            return M3Output(
                np.empty((0, self.dimension), np.float32),
                SparseVectors.empty(self.vocab_size),
                MultiVectors.from_list([], self.colbert_dimension),
            )
        return M3Output.concatenate(chunks)

    def encode_chunks(
        self,
        texts: Iterable[str],
        side: str,
        *,
        batch_size: int = 32,
        max_tokens: int | None = None,
        chunk_size: int = 4096,
        show_progress: bool = False,
        total: int | None = None,
        stats: EncodeStats | None = None,
    ) -> Iterator[M3Output]:
        """Encode ``side`` (``queries`` or ``documents``) chunk by chunk, for streams of any length."""
        if side not in ("queries", "documents"):
            raise ConfigError(f"side must be 'queries' or 'documents', got {side!r}")
        prompt = self.config.query_prompt if side == "queries" else ""
        for chunk in encode_chunks(
            texts, tokenizer=self.tower.tokenizer, runners=self._runners, max_length=self.token_length(side),
            batch_size=batch_size, max_tokens=max_tokens, chunk_size=chunk_size, prompt=prompt,
            show_progress=show_progress, total=total, stats=stats, description=f"Encoding {side}",
            output=self._head.parts, layout=TokenLayout(skip_first=True),
        ):  # fmt: skip
            yield M3Output(chunk["dense"], chunk["sparse"], chunk["multivector"])

    # ---- scoring -----------------------------------------------------------------------------
    def similarity(
        self, queries: M3Output, documents: M3Output, mode: str = "colbert+sparse+dense",
        weights: Sequence[float] | None = None,
    ) -> np.ndarray:  # fmt: skip
        """``(Q, D)`` scores in FlagEmbedding's ``mode`` (one of :data:`M3_MODES`), fused with
        ``weights`` (dense, sparse, colbert; default :data:`DEFAULT_WEIGHTS`)."""
        if mode not in M3_MODES:
            raise ConfigError(f"unknown BGE-M3 mode {mode!r}; choose one of {', '.join(M3_MODES)}")
        parts = self.part_scores(queries, documents, needed=_parts_of(mode))
        return fuse_m3_scores(**parts, weights=DEFAULT_WEIGHTS if weights is None else weights)[mode]

    def part_scores(
        self, queries: M3Output, documents: M3Output, needed: Sequence[str] = _PARTS
    ) -> dict[str, np.ndarray]:
        """``dense``, ``sparse`` and ``colbert`` ``(Q, D)`` scores (zeros for parts not ``needed``)."""
        shape = (len(queries), len(documents))
        zeros = np.zeros(shape, dtype=np.float32)
        return {
            "dense": (queries.dense @ np.asarray(documents.dense).T).astype(np.float32) if "dense" in needed else zeros,
            "sparse": lexical_scores(queries.sparse, documents.sparse) if "sparse" in needed else zeros,
            "colbert": colbert_scores(queries.colbert, documents.colbert) if "colbert" in needed else zeros,
        }

    def compute_score(
        self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 32, weights: Sequence[float] | None = None
    ) -> dict[str, np.ndarray]:
        """Every mode's score of each ``(query, document)`` pair (FlagEmbedding's ``compute_score``)."""
        queries = self.encode_queries([q for q, _ in pairs], batch_size=batch_size)
        documents = self.encode_documents([d for _, d in pairs], batch_size=batch_size)
        diagonal = {}
        for part, scores in self.part_scores(queries, documents).items():
            diagonal[part] = np.diagonal(scores).astype(np.float32)
        return fuse_m3_scores(**diagonal, weights=DEFAULT_WEIGHTS if weights is None else weights)

    def retrained(self, tower: Tower, device: Any = "cpu") -> M3Encoder:
        """An M3 encoder over ``tower`` (new weights, the same settings; a fresh fingerprint)."""
        return M3Encoder(
            tower, self.config, runners=torch_runners(tower, str(device), "float32"), name=self.name,
            source=self.source, runtime="torch-float32",
        )  # fmt: skip

    # ---- saving ------------------------------------------------------------------------------
    def save(self, directory: str | Path, *, overwrite: bool = True) -> Path:
        """Save the backbone and tokenizer (Hugging Face layout) and the two heads as
        ``colbert_linear.safetensors`` / ``sparse_linear.safetensors``, with retrievekit's manifest; atomic."""
        from safetensors.torch import save_file

        from retrievekit.models.tower import model_files

        directory = Path(directory)
        with atomic_directory(directory, overwrite=overwrite) as staging:
            self.tower.backbone.save_pretrained(staging, safe_serialization=True)
            self.tower.tokenizer.save_pretrained(staging)
            for stem in HEAD_FILES:
                linear = getattr(self._head, stem)
                state = {name: t.detach().cpu().contiguous() for name, t in linear.state_dict().items()}
                save_file(state, str(staging / f"{stem}.safetensors"))
            config = {
                "m3": self.config.to_dict(),
                "name": self.name,
                "files_digest": files_digest(staging, model_files(staging)),
            }
            write_manifest(staging, Manifest(kind=M3_KIND, family="m3", config=config, fingerprint=self.fingerprint))
        logger.info("saved %s to %s", self.name or "BGE-M3 model", directory)
        return directory


def check_weights(weights: Sequence[float]) -> tuple[float, float, float]:
    """Three non-negative weights (dense, sparse, colbert) with a positive sum for every fused mode."""
    values = tuple(weights)
    if len(values) != 3 or not all(isinstance(w, int | float) and not isinstance(w, bool) for w in values):
        raise ConfigError(f"weights must be three numbers (dense, sparse, colbert), got {tuple(weights)!r}")
    w_dense, w_sparse, w_colbert = (float(w) for w in values)
    if min(w_dense, w_sparse, w_colbert) < 0 or w_dense + w_sparse <= 0:
        raise ConfigError(f"weights must be non-negative, dense + sparse above 0; got {values!r}")
    return w_dense, w_sparse, w_colbert


def _parts_of(mode: str) -> tuple[str, ...]:
    return tuple(part for part in _PARTS if part in mode.split("+"))


# ---- loading ---------------------------------------------------------------------------------


def _read_linear(root: Path, stem: str, hidden: int) -> nn.Linear:
    """Head ``stem`` as an ``nn.Linear``: from ``.safetensors``, or from FlagEmbedding's ``.pt``
    through torch's ``weights_only`` loader (tensors only: no code runs). Shapes are checked."""
    import pickle

    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = head_file(root, stem)
    if path is None:
        raise ArtifactError(f"{root}: no {stem}.safetensors or {stem}.pt (BGE-M3's {stem} head)")
    try:
        if path.suffix == ".safetensors":
            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, SafetensorError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{path}: not a tensor file readable without running code ({first})") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArtifactError(f"{path}: expected a mapping of tensor names to tensors")
    weight, bias = state.get("weight"), state.get("bias")
    unknown = sorted(set(state) - {"weight", "bias"})
    if weight is None or weight.ndim != 2 or weight.shape[1] != hidden or unknown:
        shape = None if weight is None else tuple(weight.shape)
        raise ArtifactError(
            f"{path}: expected 'weight' of shape (out, {hidden}) and an optional 'bias'; found weight {shape}"
            + (f" and unknown tensors {unknown}" if unknown else "")
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ArtifactError(f"{path}: 'bias' has shape {tuple(bias.shape)}, expected ({weight.shape[0]},)")
    linear = torch.nn.Linear(hidden, int(weight.shape[0]), bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight.float())
        if bias is not None:
            linear.bias.copy_(bias.float())
    return linear


def _ignored_ids(tokenizer: Any) -> list[int]:
    """The ids FlagEmbedding leaves out of the lexical weights: ``[CLS]``, end of sequence, padding, unknown."""
    ids = []
    for name in ("cls_token", "eos_token", "pad_token", "unk_token"):
        token = getattr(tokenizer, name, None)
        if token is not None:
            token_id = tokenizer.convert_tokens_to_ids(str(token))
            if token_id is not None:
                ids.append(int(token_id))
    return ids


def _tower(root: Path, config: M3Config, trust_remote_code: bool) -> Tower:
    from retrievekit.models.heads import M3Head
    from retrievekit.models.spec import TowerSpec
    from retrievekit.models.tower import Tower, load_backbone

    backbone, tokenizer = load_backbone(root, states="hidden", trust_remote_code=trust_remote_code)
    model: Any = backbone
    hidden = int(model.config.hidden_size)
    head = M3Head(
        _read_linear(root, "colbert_linear", hidden), _read_linear(root, "sparse_linear", hidden),
        ignored_ids=_ignored_ids(tokenizer), vocab_size=int(model.config.vocab_size), pooling=config.pooling,
        normalize=config.normalize,
    )  # fmt: skip
    spec = TowerSpec(backbone="", max_length=max(config.query_max_length, config.document_max_length))
    return Tower(spec, backbone, tokenizer, head=head).eval()


def load_m3(
    name_or_path: str | Path,
    *,
    query_max_length: int | None = None,
    document_max_length: int | None = None,
    pooling: str | None = None,
    query_prompt: str | None = None,
    backend: str = "torch",
    device: str | list[str] | None = None,
    dtype: str = "float32",
    trust_remote_code: bool = False,
) -> M3Encoder:
    """Load a BGE-M3 model: FlagEmbedding's folder (``colbert_linear.pt`` / ``sparse_linear.pt``
    beside a Hugging Face encoder) or one saved by retrievekit. The keyword settings override the
    folder's (see :class:`M3Config`); ``backend``: ``torch`` (``device``, ``dtype`` as for dense encoders)."""
    from retrievekit.models.loading import verified_fingerprint

    root = resolve_model(name_or_path)
    fingerprint = None
    config = M3Config()
    if (root / "manifest.json").is_file():
        manifest = read_manifest(root, expected_kind=M3_KIND)
        fingerprint = verified_fingerprint(root, manifest)
        raw = manifest.config.get("m3")
        if not isinstance(raw, dict):
            raise ArtifactError(f"{root / 'manifest.json'}: no 'm3' settings")
        config = M3Config.from_dict(raw, str(root / "manifest.json"))
    overrides: dict[str, Any] = {
        key: value
        for key, value in (
            ("query_max_length", query_max_length),
            ("document_max_length", document_max_length),
            ("pooling", pooling),
            ("query_prompt", query_prompt),
        )
        if value is not None and getattr(config, key) != value
    }
    if overrides:
        config = replace(config, **overrides)
        fingerprint = None
    if backend != "torch":
        raise ConfigError(f"backend {backend!r} is not available for BGE-M3 models; use 'torch'")
    tower = _tower(root, config, trust_remote_code)
    return M3Encoder(
        tower, config, runners=torch_runners(tower, device, dtype), name=str(name_or_path), source=root,
        runtime=f"torch-{dtype}", fingerprint=fingerprint,
    )  # fmt: skip
