"""The LightningModule: a model, a loss, AdamW with warmup, a resumable data loader."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from retrievekit.training.batches import TrainingBatch, TrainingCollator, TrainingLoader, TrainingSet, make_loader
from retrievekit.training.config import OptimizerConfig
from retrievekit.training.model import BiEncoderModel, CrossEncoderModel
from retrievekit.training.pairs import PairBatch, PairCollator

__all__ = ["RetrievalTrainingModule", "linear_warmup"]

_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def linear_warmup(step: int, warmup_steps: int, total_steps: int) -> float:
    """The learning-rate factor: linear from 0 to 1 over the warmup, then linear down to 0.

    >>> [round(linear_warmup(s, 2, 10), 3) for s in (0, 1, 2, 6, 10)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


class RetrievalTrainingModule(pl.LightningModule):
    """Trains ``model`` with ``loss`` on ``data``; every family plugs in its own model, loss and collator."""

    def __init__(
        self,
        model: BiEncoderModel | CrossEncoderModel,
        loss: nn.Module,
        data: TrainingSet,
        collator: TrainingCollator | PairCollator,
        *,
        batch_size: int,
        optimizer: OptimizerConfig,
        seed: int,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.data = data
        self.collator = collator
        self.batch_size = batch_size
        self.optimizer_config = optimizer
        self.seed = seed
        self._loader: TrainingLoader | None = None
        self._resume_position: dict | None = None
        self.examples_seen = 0

    def train_dataloader(self) -> TrainingLoader:
        trainer = self.trainer
        self._loader = make_loader(
            self.data, self.collator, self.batch_size, seed=self.seed, rank=trainer.global_rank,
            world_size=trainer.world_size,
        )  # fmt: skip
        if self._resume_position is not None:
            # applied here, when the loader is made: Lightning builds it (to count steps) before it
            # restores the loops, and then never hands it the saved loader state
            self._loader.batch_sampler.load_state_dict(self._resume_position)
        return self._loader

    def on_train_epoch_start(self) -> None:
        # Lightning only calls set_epoch on samplers it finds at `loader.sampler`; ours is the batch sampler.
        # This hook runs before the epoch's iterator starts (and not when resuming mid-epoch, where the
        # restored loader state already holds the epoch and the position).
        if self._loader is not None:
            self._loader.batch_sampler.set_epoch(self.current_epoch)

    def on_train_start(self) -> None:
        loss: Any = self.loss
        if hasattr(loss, "total_steps"):  # a regulariser's warm-up spans a share of the run
            loss.total_steps = max(1, int(self.trainer.estimated_stepping_batches))

    def training_step(self, batch: TrainingBatch | PairBatch, batch_idx: int) -> torch.Tensor:
        regularized: Any = self.loss
        if hasattr(regularized, "step"):
            regularized.step = self.global_step  # restored with the checkpoint: a resumed warm-up continues
        loss = self.loss(batch)
        for name, value in getattr(self.loss, "last_stats", {}).items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=False, batch_size=batch.size)
        # the position is recorded here: checkpoint callbacks run before this module's on_train_batch_end
        self.examples_seen += batch.size
        if self._loader is not None:
            self._loader.batch_sampler.mark_trained(self.current_epoch, batch_idx + 1)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=batch.size)
        if isinstance(getattr(self.loss, "log_scale", None), nn.Parameter):
            temperature: Any = self.loss.temperature
            self.log("train/temperature", temperature, on_step=True, on_epoch=False, batch_size=batch.size)
        return loss

    def configure_optimizers(self):
        config = self.optimizer_config
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, parameter in self.named_parameters():
            if parameter.requires_grad:
                (no_decay if any(n in name for n in _NO_DECAY) else decay).append(parameter)
        # the fused kernel updates every tensor in one pass (what Hugging Face's trainer uses by default)
        fused = all(p.device.type in ("cpu", "cuda") for p in decay + no_decay)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.learning_rate,
            fused=fused,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(total * config.warmup_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: linear_warmup(step, warmup, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # the RNG streams (dropout) travel with the checkpoint, so a resumed run draws what the first would have
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng"] = {"torch": torch.get_rng_state(), "examples_seen": self.examples_seen}
        if self._loader is not None:
            checkpoint["data_position"] = self._loader.batch_sampler.state_dict()
        if torch.cuda.is_available():
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("rng") or {}
        if "torch" in state:
            torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(list(state["cuda"]))
        self.examples_seen = int(state.get("examples_seen", 0))
        self._resume_position = checkpoint.get("data_position")
