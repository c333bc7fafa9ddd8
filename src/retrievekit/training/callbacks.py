"""Lightning callbacks: dev-split evaluation with early stopping, and training throughput."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["DevEvaluation", "StepCheckpoint", "Throughput"]

logger = logging.getLogger(__name__)


class DevEvaluation(pl.Callback):
    """Every ``every`` optimizer steps (0: at each epoch end) evaluate the current model on a dev
    split through :func:`~retrievekit.evaluation.evaluate_dataset`, log ``dev/<metric>``, save the
    best model to ``best_dir`` and stop after ``patience`` evaluations without a better ``ndcg@10``.
    A cross-encoder is evaluated reranking the top ``rerank_top_k`` of ``first_stage``'s run.
    ``scorer`` replaces the dataset evaluation for other tasks: it gets the current model and
    returns ``metric``'s value (entity linking's dev acc@1).
    """

    def __init__(
        self,
        dataset: str | None,
        split: str,
        best_dir: Path,
        save_model: Callable[[Path], None],
        *,
        every: int = 0,
        patience: int = 3,
        batch_size: int = 64,
        metric: str = "ndcg@10",
        first_stage: str = "bm25",
        rerank_top_k: int = 100,
        scorer: Callable[[Any], float] | None = None,
    ) -> None:
        self.first_stage, self.rerank_top_k, self.scorer = first_stage, rerank_top_k, scorer
        self.dataset = dataset
        self.split = split
        self.best_dir = best_dir
        self.save_model = save_model
        self.every = every
        self.patience = patience
        self.batch_size = batch_size
        self.metric = metric
        self.best: float | None = None
        self.best_step: int | None = None
        self.stale = 0
        self.history: list[tuple[int, float]] = []
        self._last_step = -1

    def evaluate(self, trainer: pl.Trainer, module) -> float:
        from retrievekit.evaluation.runner import evaluate_dataset

        module.model.eval()
        try:
            encoder = module.model.export(module.device)
            family = getattr(encoder, "family", "dense")
            if self.scorer is not None:
                return float(self.scorer(encoder))
            if self.dataset is None:
                raise ValueError("a dev evaluation needs a dataset or a scorer")
            if family == "cross_encoder":  # the first stage's run is cached; only the reranking is new
                result = evaluate_dataset(
                    self.dataset, split=self.split, batch_size=self.batch_size, k_values=(10, 100),
                    systems=[self.first_stage], reranker=encoder, rerank_top_k=self.rerank_top_k,
                )  # fmt: skip
            else:
                system, index_type = {"multivector": ("colbert", "multivector-flat"), "sparse": ("sparse", None)}.get(
                    family, ("dense", None)
                )
                result = evaluate_dataset(
                    self.dataset, split=self.split, encoder=encoder, batch_size=self.batch_size, cache=False,
                    k_values=(10, 100), systems=[system], index_type=index_type,
                )  # fmt: skip
        finally:
            module.model.train()
        metrics = result.systems[-1].metrics.aggregate
        return float(metrics[self.metric])

    def _run(self, trainer: pl.Trainer, module) -> None:
        """Every rank calls this; rank 0 evaluates and saves; the stop decision is shared by all ranks."""
        step = trainer.global_step
        if step == self._last_step:  # accumulated micro-batches share a step: evaluate once
            return
        self._last_step = step
        stop = self._evaluate_and_record(trainer, module, step) if trainer.is_global_zero else False
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            trainer.should_stop = True

    def _evaluate_and_record(self, trainer: pl.Trainer, module, step: int) -> bool:
        value = self.evaluate(trainer, module)
        self.history.append((step, value))
        for logger_ in trainer.loggers:
            logger_.log_metrics({f"dev/{self.metric}": value}, step=step)
        if self.best is None or value > self.best:
            self.best, self.best_step, self.stale = value, step, 0
            self.save_model(self.best_dir)
            logger.info("step %d: dev %s %.4f (best so far, saved)", step, self.metric, value)
            return False
        self.stale += 1
        logger.info("step %d: dev %s %.4f (best %.4f at step %d)", step, self.metric, value, self.best, self.best_step)
        if self.stale >= self.patience:
            logger.info("early stopping: %d evaluations without improvement", self.stale)
            return True
        return False

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.every and trainer.global_step and trainer.global_step % self.every == 0:
            self._run(trainer, module)

    def on_train_epoch_end(self, trainer, module) -> None:
        if not self.every:
            self._run(trainer, module)

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "stale": self.stale, "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_step, self.stale = state["best"], state["best_step"], state["stale"]
        self.history = [tuple(h) for h in state["history"]]


class StepCheckpoint(ModelCheckpoint):
    """Lightning's step checkpoints, except that a step ending an epoch is saved once the epoch has
    closed: Lightning resumes cleanly from there, while a checkpoint taken on an epoch's last batch
    would make it skip the next epoch."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        every = self._every_n_train_steps
        if every and trainer.global_step % every == 0 and not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_epoch_end(trainer, pl_module)


class Throughput(pl.Callback):
    """Seconds spent in training batches (forward, backward, optimizer; not evaluation) and examples seen."""

    def __init__(self) -> None:
        self.batch_seconds: list[float] = []
        self.examples = 0
        self._started = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.batch_seconds.append(time.perf_counter() - self._started)
        self.examples += batch.size

    @property
    def seconds(self) -> float:
        return sum(self.batch_seconds)

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds else 0.0
