"""Decoder-only (LLM) rerankers: a causal LM reads a prompt around the pair and its "Yes" logit at
the last position is the score (bge-reranker-v2-gemma style); layer-wise, from the hidden states of
chosen ``cutoff_layers`` (bge-reranker-v2-minicpm-layerwise style).

The input is FlagEmbedding's: ``[bos] + "A: {query}"`` (at most ``query_max_length`` tokens, 3/4 of
``max_length`` by default), then ``"\\n" + "B: {passage}"`` (the passage at most ``max_length``
tokens, the pair cut from the passage's end to ``max_length + len(sep) + len(prompt)``), then
``"\\n"`` and the prompt. The scores equal FlagEmbedding's ``FlagLLMReranker.compute_score`` for the
same folder. Layer-wise scores read an earlier layer through the model's final norm and its LM head
(the logit lens); a checkpoint that ships its own per-layer heads in custom code is not read that way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.models.encoding import EncodeStats, TokenizedChunk, check_pairs, encode_items
from retrievekit.models.single_tower import SingleTowerEncoder, attach_backend
from retrievekit.resolve import resolve_model

__all__ = ["DEFAULT_PROMPT", "LLM_RERANKER_KIND", "LLMReranker", "LLMRerankerConfig", "is_causal_lm_folder",
           "load_llm_reranker"]  # fmt: skip

LLM_RERANKER_KIND = "llm_reranker"
DEFAULT_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query by "
    "providing a prediction of either 'Yes' or 'No'."
)


@dataclass(frozen=True)
class LLMRerankerConfig:
    """FlagEmbedding's settings of a decoder-only reranker: the prompt, the instructions before the
    query and the passage, token budgets, the token whose logit scores, and the layers read
    (``None``: the last)."""

    prompt: str = DEFAULT_PROMPT
    query_instruction: str = "A: "
    passage_instruction: str = "B: "
    max_length: int = 512
    query_max_length: int | None = None
    yes_token: str = "Yes"
    cutoff_layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("max_length", "query_max_length"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.cutoff_layers is not None:
            layers = tuple(self.cutoff_layers)
            if not layers or not all(isinstance(x, int) and not isinstance(x, bool) for x in layers):
                raise ConfigError(f"cutoff_layers must be layer numbers, got {self.cutoff_layers!r}")
            object.__setattr__(self, "cutoff_layers", layers)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_causal_lm_folder(root: Path) -> bool:
    """A Hugging Face causal LM folder (``*ForCausalLM``): read as a decoder-only reranker.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "config.json").write_text('{"architectures": ["Gemma2ForCausalLM"]}')
    >>> is_causal_lm_folder(folder)
    True
    """
    try:
        config = json.loads((root / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    architectures = config.get("architectures") if isinstance(config, dict) else None
    return isinstance(architectures, list) and any(str(a).endswith("ForCausalLM") for a in architectures)


class LLMReranker(SingleTowerEncoder):
    """A decoder-only reranker: :meth:`predict` / :meth:`compute_score` score ``(query, passage)``
    pairs by the "Yes" logit after FlagEmbedding's prompt (one score per cutoff layer when several).
    Usable wherever a cross-encoder is (:class:`~retrievekit.retrieval.rerankers.CrossEncoderReranker`)."""

    family = "cross_encoder"
    kind = LLM_RERANKER_KIND
    config: LLMRerankerConfig

    def __init__(self, tower: Any, config: LLMRerankerConfig, **options: Any) -> None:
        super().__init__(tower, config, **options)
        tokenizer = tower.tokenizer
        ids = tokenizer(config.yes_token, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ConfigError(f"the tokenizer makes no token of {config.yes_token!r}")
        self._prompt = list(tokenizer(config.prompt, add_special_tokens=False)["input_ids"])
        self._sep = list(tokenizer("\n", add_special_tokens=False)["input_ids"])
        bos, pad = tokenizer.bos_token_id, tokenizer.pad_token_id
        self._bos = [int(bos)] if bos is not None and bos != pad else []

    @property
    def num_labels(self) -> int:
        """Scores per pair: one per cutoff layer."""
        return len(self.config.cutoff_layers or (0,))

    @property
    def query_max_length(self) -> int:
        return self.config.query_max_length or self.config.max_length * 3 // 4

    def __repr__(self) -> str:
        c = self.config
        return (f"LLMReranker({self.name!r}, max_length={c.max_length}, cutoff_layers={c.cutoff_layers}, "
                f"backend={self.runtime!r})")  # fmt: skip

    def tokenize(self, pairs: list[tuple[str, str]]) -> TokenizedChunk:
        """FlagEmbedding's input of each pair (see the module docstring); counts the pairs cut."""
        tokenizer, c = self.tower.tokenizer, self.config
        queries = tokenizer([c.query_instruction + q for q, _ in pairs], add_special_tokens=False,
                            truncation=True, max_length=self.query_max_length)["input_ids"]  # fmt: skip
        full = tokenizer([c.passage_instruction + p for _, p in pairs], add_special_tokens=False)["input_ids"]
        budget = c.max_length + len(self._sep) + len(self._prompt)
        rows, truncated = [], 0
        for query, passage in zip(queries, full, strict=True):
            first = self._bos + list(query)
            second = self._sep + list(passage[: c.max_length])
            kept = second[: max(0, budget - len(first))]
            truncated += len(kept) < len(self._sep) + len(passage)
            rows.append(first + kept + self._sep + self._prompt)
        return TokenizedChunk(rows, truncated)

    def logits(
        self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 16, show_progress: bool = False
    ) -> np.ndarray:
        """The "Yes" logits of ``pairs``: ``(n,)``, or ``(n, layers)`` for several cutoff layers."""
        given: Any = pairs
        if isinstance(given, tuple) and len(given) == 2 and all(isinstance(t, str) for t in given):
            given = [given]
        pairs = list(given)
        stats = EncodeStats()
        chunks = list(
            encode_items(
                pairs, check=check_pairs, tokenize=self.tokenize, tokenizer=self.tower.tokenizer,
                runners=self._runners, batch_size=batch_size, max_tokens=None, chunk_size=4096,
                show_progress=show_progress, total=len(pairs), stats=stats, description="Scoring pairs", unit="pair",
                output="score",
            )
        )  # fmt: skip
        if not chunks:
            return np.empty((0,) if self.num_labels == 1 else (0, self.num_labels), dtype=np.float32)
        return np.concatenate([np.asarray(c, dtype=np.float32) for c in chunks])

    def predict(
        self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 16, activation: str | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:  # fmt: skip
        """The raw "Yes" logits (``activation="sigmoid"``: through a sigmoid), float32."""
        from retrievekit.models.cross_encoder import activate

        return activate(
            self.logits(pairs, batch_size=batch_size, show_progress=show_progress), activation or "identity"
        )

    def compute_score(
        self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 16, normalize: bool = False
    ) -> np.ndarray:
        """FlagEmbedding's ``compute_score``: the logits, through a sigmoid with ``normalize``."""
        return self.predict(pairs, batch_size=batch_size, activation="sigmoid" if normalize else None)


def load_llm_reranker(
    name_or_path: str | Path,
    *,
    prompt: str | None = None,
    max_length: int | None = None,
    query_max_length: int | None = None,
    cutoff_layers: Sequence[int] | None = None,
    backend: str = "torch",
    device: str | list[str] | None = None,
    dtype: str = "float32",
    trust_remote_code: bool = False,
) -> LLMReranker:
    """Load a causal LM folder (safetensors) as a decoder-only reranker with FlagEmbedding's
    prompt and budgets (each overridable); ``cutoff_layers``: score from these layers (1 = the
    first transformer layer) instead of the last. ``backend``: ``torch``."""
    from retrievekit.models.heads import LastTokenLogitHead
    from retrievekit.models.spec import TowerSpec
    from retrievekit.models.tower import Tower, load_backbone

    if backend != "torch":
        raise ConfigError(f"backend {backend!r} is not available for LLM rerankers; use 'torch'")
    root = resolve_model(name_or_path)
    overrides: dict[str, Any] = {
        key: value for key, value in (("prompt", prompt), ("max_length", max_length),
                                      ("query_max_length", query_max_length)) if value is not None
    }  # fmt: skip
    if cutoff_layers is not None:
        overrides["cutoff_layers"] = tuple(cutoff_layers)
    config = replace(LLMRerankerConfig(), **overrides)
    backbone, tokenizer = load_backbone(root, states="causal_hidden", trust_remote_code=trust_remote_code)
    model: Any = backbone
    decoder = model.get_decoder()
    num_layers = int(model.config.num_hidden_layers)
    norm = next((getattr(decoder, n) for n in ("norm", "ln_f", "final_layernorm") if hasattr(decoder, n)), None)
    yes = tokenizer(config.yes_token, add_special_tokens=False)["input_ids"]
    if not yes:
        raise ArtifactError(f"{root}: the tokenizer makes no token of {config.yes_token!r}")
    head = LastTokenLogitHead(
        model.get_output_embeddings(), norm, int(yes[0]), layers=list(config.cutoff_layers or (num_layers,)),
        num_layers=num_layers, softcap=getattr(model.config, "final_logit_softcapping", None),
    )  # fmt: skip
    tower = Tower(TowerSpec(backbone=""), backbone, tokenizer, head=head).eval()
    reranker = LLMReranker(tower, config, runners=[], name=str(name_or_path), source=root)
    attach_backend(reranker, backend="torch", device=device, dtype=dtype)
    return reranker
