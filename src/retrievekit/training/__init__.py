"""Training: data, batches, losses, hard-negative mining and the Lightning trainer.

Needs the ``train`` extra (``pip install 'retrievekit[train]'``) for :func:`train`; the data,
mining and loss modules only need the core dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retrievekit.training.batches import DatasetBatchSampler, TrainingBatch, TrainingCollator, TrainingSet
    from retrievekit.training.config import TrainConfig, load_config
    from retrievekit.training.data import TrainingExample, examples_from_split, load_training_source, read_training_file
    from retrievekit.training.losses import InfoNCELoss, KLDivergenceLoss, MarginMSELoss, make_loss
    from retrievekit.training.mining import (
        MiningReport,
        mine_hard_negatives,
        parse_rank_range,
        write_training_rows,
    )
    from retrievekit.training.model import BiEncoderModel

# torch-backed names are imported on first use, so ``retrievekit.training.config`` (read by the CLI
# to build its options) does not pull torch into ``retrievekit --help``
_LAZY = {
    "DatasetBatchSampler": "batches",
    "TrainingBatch": "batches",
    "TrainingCollator": "batches",
    "TrainingSet": "batches",
    "TrainConfig": "config",
    "load_config": "config",
    "TrainingExample": "data",
    "examples_from_split": "data",
    "load_training_source": "data",
    "read_training_file": "data",
    "InfoNCELoss": "losses",
    "KLDivergenceLoss": "losses",
    "MarginMSELoss": "losses",
    "make_loss": "losses",
    "MiningReport": "mining",
    "mine_hard_negatives": "mining",
    "parse_rank_range": "mining",
    "write_training_rows": "mining",
    "BiEncoderModel": "model",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"retrievekit.training.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'retrievekit.training' has no attribute {name!r}")


__all__ = [
    "BiEncoderModel",
    "DatasetBatchSampler",
    "InfoNCELoss",
    "KLDivergenceLoss",
    "MarginMSELoss",
    "MiningReport",
    "TrainConfig",
    "TrainingBatch",
    "TrainingCollator",
    "TrainingExample",
    "TrainingSet",
    "examples_from_split",
    "load_config",
    "load_training_source",
    "make_loss",
    "mine_hard_negatives",
    "parse_rank_range",
    "read_training_file",
    "train",
    "write_training_rows",
]


def train(config: TrainConfig, **options: Any) -> Any:
    """Fine-tune as ``config`` says (see :func:`retrievekit.training.trainer.train`); imports Lightning lazily."""
    from retrievekit.training.trainer import train as _train

    return _train(config, **options)
