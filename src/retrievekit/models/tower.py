"""A tower: tokenizer + transformer backbone + pooling + projections + optional normalisation.

Towers are built from a :class:`~retrievekit.models.spec.TowerSpec` and saved back in the
sentence-transformers folder layout, so the same files serve retrievekit and sentence-transformers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from retrievekit.errors import ArtifactError
from retrievekit.models.modules.pooling import pool
from retrievekit.models.modules.projection import Projection
from retrievekit.models.spec import TowerSpec

__all__ = ["SavedTower", "Tower", "load_tower"]

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
    """Maps token ids to one embedding per text."""

    def __init__(self, spec: TowerSpec, backbone: nn.Module, tokenizer, projections: list[Projection]) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.projections = nn.ModuleList(projections)
        self._accepts_token_types = "token_type_ids" in getattr(tokenizer, "model_input_names", [])

    @property
    def max_length(self) -> int:
        limit = self.spec.max_length or getattr(self.tokenizer, "model_max_length", 512)
        positions = getattr(self.backbone.config, "max_position_embeddings", None)
        limit = min(limit, 10**6)
        return min(limit, positions) if positions else limit

    @property
    def dimension(self) -> int:
        if len(self.projections):
            return self.projections[-1].out_features
        return int(self.backbone.config.hidden_size)

    def digest(self) -> str:
        """A hash of every weight (backbone and projections): the same model gives the same digest
        whatever folder layout it was loaded from."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self._accepts_token_types:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.backbone(**inputs).last_hidden_state
        embeddings = pool(hidden, attention_mask, self.spec.pooling)
        for projection in self.projections:
            embeddings = projection(embeddings)
        if self.spec.normalize:
            embeddings = F.normalize(embeddings, p=2, dim=-1)
        return embeddings

    def save(self, root: Path, prefix: str = "") -> SavedTower:
        """Write this tower under ``root`` in sentence-transformers layout; return the paths used.

        With ``prefix`` (two-tower models) the module folders are named ``{prefix}_{i}_{Module}``, the
        names sentence-transformers' Router gives them.
        """

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
        pooling_config.update({key: self.spec.pooling == mode for mode, key in _ST_POOLING_KEYS.items()})
        (root / pooling_dir / "config.json").write_text(json.dumps(pooling_config, indent=2))
        projection_dirs = []
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
        )
        return SavedTower(spec, tuple(layout))


def load_tower(root: Path, spec: TowerSpec, *, trust_remote_code: bool = False) -> Tower:
    """Build a tower from the files under ``root`` that ``spec`` points to (safetensors weights only)."""
    from transformers import AutoModel, AutoTokenizer

    backbone_dir = root / spec.backbone
    if not (backbone_dir / "config.json").is_file():
        raise ArtifactError(f"{backbone_dir}: no config.json for the transformer backbone")
    if not any(backbone_dir.glob("*.safetensors")):
        raise ArtifactError(
            f"{backbone_dir}: no .safetensors weights. retrievekit never unpickles pytorch_model.bin; "
            "convert the model to safetensors first"
        )
    tokenizer = AutoTokenizer.from_pretrained(backbone_dir, trust_remote_code=trust_remote_code)
    backbone = AutoModel.from_pretrained(backbone_dir, trust_remote_code=trust_remote_code, use_safetensors=True)
    backbone.eval()
    projections = [Projection.load(root / rel) for rel in spec.projections]
    for projection in projections:
        projection.eval()
    return Tower(spec, backbone, tokenizer, projections)
