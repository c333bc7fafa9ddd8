"""``retrievekit train`` and ``retrievekit mine-negatives``."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import click

from retrievekit.cli._model_options import load_from_options, model_options
from retrievekit.cli._output import print_table
from retrievekit.training.config import config_fields

_HELP = {
    "model": "Model to start from: folder, 'minilm' or hub id.",
    "kind": "auto (what the folder holds), dense, colbert (a ColBERT model; any other encoder becomes a new "
    "ColBERT with a random projection), or sparse (a SPLADE model: a SparseEncoder or masked-LM folder).",
    "embedding_size": "Width of a new ColBERT model's token vectors.",
    "pooling": "Pooling for a plain Hugging Face folder (cls, mean, max, last_token).",
    "normalize": "L2-normalise embeddings (for a plain Hugging Face folder).",
    "separate_towers": "Untie a shared encoder into query and document towers (BET style).",
    "gradient_checkpointing": "Recompute activations in backward: less memory, more compute.",
    "trust_remote_code": "Allow model code shipped with a hub model.",
    "data": "Training data: JSONL (query/pos/neg[/pos_scores/neg_scores/prompt]), TSV triplets, or a BEIR "
    "split as DATASET[:SPLIT]. Repeat for several datasets; each batch comes from one.",
    "batch_size": "Queries per batch (per device).",
    "num_negatives": "Hard negatives per query in a batch (0: in-batch negatives only).",
    "positives_per_query": "Distinct positives of each query in a batch, up to as many as it has (with --marginal).",
    "query_max_length": "Token limit for queries.",
    "document_max_length": "Token limit for documents (default: the model's).",
    "loss": "infonce (in-batch + hard negatives), cached_infonce (the same with GradCache: big batches, small "
    "memory), margin_mse or kl (distillation from teacher scores).",
    "mini_batch_size": "Texts encoded at once by cached_infonce.",
    "temperature": "Softmax temperature (0.05 = sentence-transformers' scale 20).",
    "learnable_temperature": "Learn the temperature.",
    "symmetric": "Add the document-to-query InfoNCE term.",
    "marginal": "InfoNCE with BioSyn's synonym marginalisation: every column holding one of the query's positives "
    "counts towards it (-log of their summed softmax), each text once.",
    "mask_false_negatives": "Mask in-batch columns holding one of the query's own positives.",
    "gather_across_devices": "Under DDP, use every device's documents as negatives.",
    "teacher_temperature": "Temperature of the teacher's scores (kl).",
    "document_regularizer_weight": "SPLADE: FLOPS regulariser weight on the documents (e.g. 3e-3).",
    "query_regularizer_weight": "SPLADE: the query regulariser's weight (default: the document weight).",
    "query_regularizer": "SPLADE: flops or l1 on the queries.",
    "regularizer_warmup_ratio": "SPLADE: share of the steps over which the regulariser weights rise "
    "quadratically from 0 (SPLADE's schedule).",
    "learning_rate": "Peak AdamW learning rate.",
    "weight_decay": "AdamW weight decay (not on biases and norms).",
    "warmup_ratio": "Fraction of steps with linear warmup.",
    "epochs": "Passes over the data.",
    "max_steps": "Stop after this many optimizer steps (-1: by epochs).",
    "accumulate_grad_batches": "Batches per optimizer step.",
    "max_grad_norm": "Gradient clipping norm (0: off).",
    "output": "Folder for the model, checkpoints, logs and curves.",
    "seed": "Seed for data order, negative sampling and initialisation.",
    "accelerator": "Lightning accelerator: auto, cpu, gpu.",
    "devices": "Lightning devices: auto, a count, or a list like 0,1.",
    "num_nodes": "Machines for multi-node training.",
    "strategy": "Lightning strategy: auto, ddp, fsdp, deepspeed...",
    "precision": "32-true, bf16-mixed or 16-mixed (GPU).",
    "checkpoint_every": "Save a checkpoint every N optimizer steps.",
    "resume": "Continue from the newest checkpoint in OUTPUT when there is one.",
    "log_every": "Log the loss every N steps.",
    "progress": "Show a progress bar.",
    "retain_memory": "Keep freed memory in the process (glibc): far fewer page faults, faster CPU steps; "
    "the process holds its peak memory.",
    "dev_dataset": "BEIR dataset for dev evaluation (early stopping on ndcg@10).",
    "dev_split": "Split of the dev dataset.",
    "eval_every": "Evaluate every N steps (0: at each epoch end).",
    "patience": "Stop after this many evaluations without a better ndcg@10.",
    "eval_batch_size": "Batch size when encoding the dev corpus.",
    "dev_linking": "Entity-linking data folder (mentions/SPLIT.jsonl, dictionary.tsv, entities.jsonl): early "
    "stopping on its dev acc@1 under --dev-linking-protocol.",
    "dev_linking_protocol": "With --dev-linking: raw (mentions in context against dictionary.tsv or entities.jsonl) "
    "or biosyn (mention parts against BioSyn's dev dictionary: its test dictionary less the dev mention strings).",
    "dev_entity_vectors": "With --dev-linking: names (dictionary.tsv, a concept's best name) or concepts "
    "(entities.jsonl).",
}


def _flag(name: str, field, section: str) -> Callable:
    """One flag per config field: ``--name VALUE``, ``--name/--no-name`` for booleans, repeatable for lists.
    Values stay strings here; the config coerces and checks them (the same path as YAML values)."""
    default = field.default_factory() if field.default is dataclasses.MISSING else field.default
    text = f"{_HELP.get(name, '')} [{section}; default: {default}]"
    flag = "--" + name.replace("_", "-")
    hint = str(field.type)
    if hint.startswith("bool"):
        return click.option(f"{flag}/--no-{name.replace('_', '-')}", name, default=None, help=text)
    if hint.startswith("list"):
        return click.option(flag, name, multiple=True, help=text, metavar="TEXT")
    metavar = {"int": "INTEGER", "float": "NUMBER"}.get(hint.split(" ")[0], "TEXT")
    return click.option(flag, name, default=None, help=text, metavar=metavar)


def _config_options(command: Callable) -> Callable:
    for section, fields in reversed(list(config_fields().items())):
        for name, field in reversed(list(fields.items())):
            command = _flag(name, field, section)(command)
    return command


def _quiet_lightning() -> None:
    """Lightning sets its own logger to INFO when imported (hardware lines, tips); without -v the CLI
    shows warnings only, and prints its own summary."""
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        try:
            import lightning.pytorch  # noqa: F401  (importing it is what sets the level we undo)
        except ImportError:
            return  # train() will say which extra to install
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


@click.command("train")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True), help="YAML file with sections "
              "model, data, loss, optimizer, run, evaluation; flags override it.")  # fmt: skip
@_config_options
def train(config_file: str | None, **flags: object) -> None:
    """Fine-tune a dense encoder with contrastive or distillation losses on PyTorch Lightning.

    \b
    Example (SciFact train split, self-mined negatives from `mine-negatives`):
      retrievekit train --model minilm --data mined.jsonl --num-negatives 3 --epochs 2 --output runs/ft
    Every option can also be set in the YAML file given with --config. Writes OUTPUT/model (retrievekit
    and sentence-transformers format), checkpoints (a rerun resumes), logs/metrics.csv and curves.png.
    Multi-GPU and multi-node runs come from Lightning: --devices 4 --strategy ddp --num-nodes 2.
    """
    from retrievekit.training.config import load_config
    from retrievekit.training.trainer import train as run_training

    _quiet_lightning()
    overrides = {k: (list(v) if isinstance(v, tuple) else v) for k, v in flags.items() if v not in (None, ())}
    config = load_config(config_file, overrides)
    result = run_training(config)
    rows = [
        ["model", str(result.model_dir)],
        ["steps", str(result.steps)],
        ["examples", str(result.examples)],
        ["examples/s (training batches)", f"{result.examples_per_second:.2f}"],
        ["final loss", f"{result.final_loss:.4f}" if result.final_loss is not None else "—"],
        ["best dev ndcg@10", f"{result.best_dev:.4f}" if result.best_dev is not None else "—"],
        ["wall seconds", f"{result.wall_seconds:.1f}"],
        ["peak RSS", f"{result.peak_rss_mib / 1024:.2f} GiB"],
    ]
    print_table("training finished", ["", "value"], rows)
    if result.resumed_from is not None:
        click.echo(f"resumed from {result.resumed_from}")
    curves = f"  curves: {result.curves}" if result.curves else "  (too few logged steps for curves)"
    click.echo(f"model: {result.model_dir}{curves}")


@click.command("mine-negatives")
@model_options
@click.option("--data", required=True, help="A BEIR split as DATASET[:SPLIT] (corpus from the dataset), or a "
              "training JSONL/TSV whose positives are texts of --corpus.")  # fmt: skip
@click.option("--corpus", default=None, help="Corpus to mine from (default: the --data dataset's corpus).")
@click.option("--retriever", type=click.Choice(["dense", "bm25"]), default="dense", show_default=True)
@click.option("--range", "rank_range", default="10-100", show_default=True,
              help="Sample negatives from these ranks of the retrieved list (1-based, inclusive).")  # fmt: skip
@click.option("--num", type=click.IntRange(1), default=8, show_default=True, help="Negatives per query.")
@click.option("--margin", type=float, default=None,
              help="Drop candidates scoring above (positive score - MARGIN): likely false negatives.")  # fmt: skip
@click.option("--relative-margin", type=float, default=None,
              help="Drop candidates scoring above positive score x (1 - RELATIVE_MARGIN).")  # fmt: skip
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Training JSONL to write.")
def mine_negatives(data, corpus, retriever, rank_range, num, margin, relative_margin, seed, batch_size, output,
                   **model_kwargs) -> None:  # fmt: skip
    """Mine hard negatives: retrieve, drop positives and likely false negatives, sample, write JSONL.

    \b
    Example:
      retrievekit mine-negatives --model minilm --data scifact:train --retriever dense \\
          --range 10-100 --num 8 --relative-margin 0.05 --output mined.jsonl
    """
    from retrievekit.training.mining import mine_hard_negatives, parse_rank_range, write_training_rows
    from retrievekit.training.mining_sources import mining_inputs

    window = parse_rank_range(rank_range)
    encoder = load_from_options(**model_kwargs) if retriever == "dense" else None
    examples, documents, searcher = mining_inputs(data, corpus, encoder, batch_size=batch_size)
    mined, report = mine_hard_negatives(
        examples, searcher, documents, rank_range=window, num=num, margin=margin, relative_margin=relative_margin,
        seed=seed,
    )  # fmt: skip
    write_training_rows(output, mined)
    print_table("mining", ["", "count"], [[k.replace("_", " "), v] for k, v in vars(report).items()])
    click.echo(f"wrote {len(mined)} training rows to {output}")
