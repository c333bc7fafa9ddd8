"""A tower: tokenizer + transformer backbone + a head (:mod:`retrievekit.models.heads`).

The backbone gives token states; the head turns them into the family's output (a pooled vector for
dense towers, per-token vectors, sparse weights or a pair score). Dense towers are built from a
:class:`~retrievekit.models.spec.TowerSpec` and saved back in the sentence-transformers folder
layout, so the same files serve retrievekit and sentence-transformers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple, cast

import torch
from torch import nn

from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.models.heads import BackboneStates, Head, PoolingHead
from retrievekit.models.modules.projection import Projection
from retrievekit.models.spec import SPAN_POOLING, TowerSpec

__all__ = [
    "BACKBONE_CLASSES",
    "TOKENIZER_FILES",
    "SavedTower",
    "Tower",
    "load_backbone",
    "load_tower",
    "model_files",
    "tokenizer_digest",
]

# which transformers class loads the backbone a head reads from; chosen here, never named by a file
BACKBONE_CLASSES: dict[str, str] = {
    "hidden": "AutoModel",
    "masked_lm_logits": "AutoModelForMaskedLM",
    "classification_logits": "AutoModelForSequenceClassification",
    "causal_hidden": "AutoModelForCausalLM",
}

# ours -> sentence-transformers' legacy boolean pooling keys (read by every sentence-transformers version)
_ST_POOLING_KEYS = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "max": "pooling_mode_max_tokens",
    "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
    "last_token": "pooling_mode_lasttoken",
}


class SavedTower(NamedTuple):
    """Where a saved tower's modules went: its spec (paths relative to the root) and the
    ``(sentence-transformers module name, folder)`` list in order."""

    spec: TowerSpec
    modules: tuple[tuple[str, str], ...]


class Tower(nn.Module):
    """Maps token ids to the head's output: ``backbone -> token states -> head``.

    ``head`` defaults to the dense :class:`PoolingHead` the spec describes (``projections`` then
    become its projection layers)."""

    def __init__(
        self,
        spec: TowerSpec,
        backbone: nn.Module,
        tokenizer: Any,
        projections: list[Projection] | None = None,
        *,
        head: Head | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.backbone: Any = backbone  # a transformers PreTrainedModel (config, save_pretrained, ...)
        self.tokenizer = tokenizer
        if head is None:
            head = PoolingHead(
                spec.pooling, list(projections or []), normalize=spec.normalize, span_ids=span_ids(tokenizer, spec)
            )
        elif projections:
            raise ConfigError("pass projections inside the head, not beside it")
        self.head = head
        self._accepts_token_types = "token_type_ids" in getattr(tokenizer, "model_input_names", [])

    @property
    def accepts_token_types(self) -> bool:
        """The tokenizer makes segment ids and the model reads them (BERT; not RoBERTa-style models)."""
        return self._accepts_token_types

    @property
    def projections(self) -> nn.ModuleList:
        """The dense head's projection layers (empty for other heads)."""
        return self.head.projections if isinstance(self.head, PoolingHead) else nn.ModuleList()

    @property
    def max_length(self) -> int:
        limit = int(self.spec.max_length or getattr(self.tokenizer, "model_max_length", 512) or 512)
        positions = getattr(self.backbone.config, "max_position_embeddings", None)
        limit = min(limit, 10**6)
        return min(limit, int(positions)) if positions else limit

    @property
    def dimension(self) -> int:
        """Width of a dense or per-token output vector."""
        if len(self.projections):
            last: Any = self.projections[-1]
            return int(last.out_features)
        projection = getattr(self.head, "projection", None)
        if isinstance(projection, nn.Linear):
            return int(projection.out_features)
        return int(self.backbone.config.hidden_size)

    def tokenizer_digest(self) -> str:
        """See :func:`tokenizer_digest` (computed once: tokenizers are not changed after loading)."""
        if getattr(self, "_tokenizer_digest", None) is None:
            self._tokenizer_digest = tokenizer_digest(self.tokenizer)
        return str(self._tokenizer_digest)

    def digest(self) -> str:
        """A hash of every weight (backbone and projections): the same model gives the same digest
        whatever folder layout it was loaded from."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.removeprefix("head.").encode())  # the names before heads existed
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def token_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The backbone output the head reads: last hidden states ``(B, L, H)`` or logits."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self._accepts_token_types:
            inputs["token_type_ids"] = token_type_ids
        if self.head.states == "causal_hidden":  # the decoder's hidden states of the layers the head reads
            output = self.backbone.get_decoder()(**inputs, output_hidden_states=True)
            layers: list[int] = getattr(self.head, "layers", [])
            return torch.stack([output.hidden_states[layer] for layer in layers])
        output = self.backbone(**inputs)
        states: torch.Tensor = output.last_hidden_state if self.head.states == "hidden" else output.logits
        return states

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> Any:
        """The head's output: a tensor, or ``part -> tensor`` for a head with several parts."""
        return self.head(self.token_states(input_ids, attention_mask, token_type_ids), attention_mask, input_ids)

    def save(self, root: Path, prefix: str = "") -> SavedTower:
        """Write this dense tower under ``root`` in sentence-transformers layout; return the paths used.

        With ``prefix`` (two-tower models) the module folders are named ``{prefix}_{i}_{Module}``, the
        names sentence-transformers' Router gives them.
        """

        if not isinstance(self.head, PoolingHead):
            raise ConfigError(f"{type(self.head).__name__} towers are saved by their family, not as a dense tower")

        def folder(index: int, name: str) -> str:
            return f"{prefix}_{index}_{name}" if prefix else ("" if index == 0 else f"{index}_{name}")

        backbone_dir = folder(0, "Transformer")
        target = root / backbone_dir
        target.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(target, safe_serialization=True)
        self.tokenizer.save_pretrained(target)
        (target / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": self.max_length, "do_lower_case": self.spec.do_lower_case}, indent=2)
        )
        pooling_dir = folder(1, "Pooling")
        (root / pooling_dir).mkdir(parents=True, exist_ok=True)
        pooling_config = {"word_embedding_dimension": int(self.backbone.config.hidden_size)}
        # sentence-transformers has no span pooling: it reads a "mention" tower as mean pooling
        written = "mean" if self.spec.pooling == SPAN_POOLING else self.spec.pooling
        pooling_config.update({key: written == mode for mode, key in _ST_POOLING_KEYS.items()})
        (root / pooling_dir / "config.json").write_text(json.dumps(pooling_config, indent=2))
        projection_dirs = []
        projection: Any
        for offset, projection in enumerate(self.projections):
            rel = folder(2 + offset, "Dense")
            projection.save(root / rel)
            projection_dirs.append(rel)
        layout = [("Transformer", backbone_dir), ("Pooling", pooling_dir)] + [("Dense", p) for p in projection_dirs]
        if self.spec.normalize:
            rel = folder(2 + len(projection_dirs), "Normalize")
            (root / rel).mkdir(parents=True, exist_ok=True)
            layout.append(("Normalize", rel))
        spec = TowerSpec(
            backbone=backbone_dir,
            pooling=self.spec.pooling,
            normalize=self.spec.normalize,
            max_length=self.max_length,
            projections=tuple(projection_dirs),
            do_lower_case=self.spec.do_lower_case,
            span_markers=self.spec.span_markers,
        )
        return SavedTower(spec, tuple(layout))

    def pool_spans(self, start_marker: str, end_marker: str) -> None:
        """Pool the tokens of the span between ``start_marker`` and ``end_marker`` (included) instead
        of the whole text (texts without the start marker are still pooled whole): entity linking's
        mention representation. Both markers must be single tokens of the tokenizer."""
        if not isinstance(self.head, PoolingHead):
            raise ConfigError(f"span pooling applies to dense towers, not {type(self.head).__name__}")
        spec = replace(self.spec, pooling=SPAN_POOLING, span_markers=(start_marker, end_marker))
        ids = span_ids(self.tokenizer, spec)  # checked before anything changes
        projections = cast(list[Projection], list(self.head.projections))  # the same layers, kept
        # a new head through the one constructor (which pairs the pooling with its marker ids)
        self.head = PoolingHead(SPAN_POOLING, projections, normalize=self.head.normalize, span_ids=ids)
        self.spec = spec


def span_ids(tokenizer: Any, spec: TowerSpec) -> tuple[int, int] | None:
    """The token ids of a "mention" tower's span markers (None for other poolings); each marker must
    be one token of the vocabulary."""
    if spec.pooling != SPAN_POOLING:
        return None
    ids = []
    for marker in spec.span_markers:
        token_id = tokenizer.convert_tokens_to_ids(marker)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ConfigError(f"span marker {marker!r} is not a token of the tokenizer; add it first (add_markers)")
        ids.append(int(token_id))
    return ids[0], ids[1]


# files without which a tokenizer cannot be rebuilt from a folder (one of them must be there)
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


def tokenizer_digest(tokenizer: Any) -> str:
    """A hash of what the tokenizer does (its full serialisation for fast tokenizers: vocabulary,
    added tokens, normaliser, but not the truncation and padding the last caller set; the vocabulary
    and special tokens otherwise), so the fingerprint of a model changes with its tokenizer as with
    its weights."""
    engine = getattr(tokenizer, "backend_tokenizer", None)
    if engine is not None and hasattr(engine, "to_str"):
        content: Any = json.loads(engine.to_str())
        for setting in ("truncation", "padding"):  # what the last call asked for, not what the tokenizer is
            content.pop(setting, None)
    else:
        content = sorted(tokenizer.get_vocab().items())
    special = {k: str(v) for k, v in sorted(getattr(tokenizer, "special_tokens_map", {}).items())}
    return hashlib.sha256(json.dumps([type(tokenizer).__name__, content, special]).encode()).hexdigest()


def load_backbone(
    directory: Path, *, states: BackboneStates = "hidden", trust_remote_code: bool = False,
    num_labels: int | None = None,
) -> tuple[nn.Module, Any]:  # fmt: skip
    """The tokenizer and the transformers model under ``directory`` (safetensors weights only), of
    the class that gives the ``states`` a head reads (:data:`BACKBONE_CLASSES`); ``num_labels``: a
    classification head of that width (new weights where the folder has none)."""
    import transformers

    if not (directory / "config.json").is_file():
        raise ArtifactError(f"{directory}: no config.json for the transformer backbone")
    if not any(directory.glob("*.safetensors")):
        raise ArtifactError(
            f"{directory}: no .safetensors weights. retrievekit never unpickles pytorch_model.bin; "
            "convert the model to safetensors first"
        )
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise ArtifactError(
            f"{directory}: no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); a model is never "
            "loaded with a fallback tokenizer. Save the tokenizer beside the weights"
        )
    model_class = getattr(transformers, BACKBONE_CLASSES[states])
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory, trust_remote_code=trust_remote_code)
    options: dict[str, Any] = {} if num_labels is None else {"num_labels": num_labels}
    backbone = model_class.from_pretrained(
        directory, trust_remote_code=trust_remote_code, use_safetensors=True, **options
    )
    backbone.eval()
    return backbone, tokenizer


def load_tower(root: Path, spec: TowerSpec, *, head: Head | None = None, trust_remote_code: bool = False) -> Tower:
    """Build a tower from the files under ``root`` that ``spec`` points to. Without ``head``, the
    dense head the spec describes (its projections loaded from their folders)."""
    states: BackboneStates = head.states if head is not None else "hidden"
    backbone, tokenizer = load_backbone(root / spec.backbone, states=states, trust_remote_code=trust_remote_code)
    if head is not None:
        return Tower(spec, backbone, tokenizer, head=head).eval()
    projections = [Projection.load(root / rel) for rel in spec.projections]
    return Tower(spec, backbone, tokenizer, projections).eval()  # inference mode until a trainer says otherwise


def model_files(root: Path) -> list[Path]:
    """The files that decide what a model folder computes: weights (safetensors, ``.npy``), configs
    and tokenizer files; not the manifest, hidden files or exported ONNX graphs."""
    suffixes = {".safetensors", ".json", ".txt", ".model", ".npy"}
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file()
        and path.suffix in suffixes
        and path.name != "manifest.json"
        and not any(part.startswith(".") or part == "retrievekit-onnx" for part in path.relative_to(root).parts)
    )
