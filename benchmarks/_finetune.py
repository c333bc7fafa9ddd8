"""What the SciFact fine-tuning benchmarks share: their common options and how settings are recorded."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def finetune_parser(description: str, *, epochs: int, batch_size: int, learning_rate: float) -> argparse.ArgumentParser:
    """The options every fine-tuning benchmark takes (output, data, batch, mining, seed, cache), with
    the script's own defaults for the training schedule; each script adds its family's options."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--num-negatives", type=int, default=3, help="hard negatives per query in a batch")
    parser.add_argument("--learning-rate", type=float, default=learning_rate)
    parser.add_argument(
        "--range", default="5-50", help="ranks of the mining retriever's results to sample negatives from"
    )
    parser.add_argument("--num", type=int, default=8, help="negatives mined per query")
    parser.add_argument("--relative-margin", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cache", type=Path, default=None, help="evaluation cache (default: OUTPUT/cache)")
    return parser


def recorded_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options as JSON-ready values (paths as strings), for the printout and summary.json."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
