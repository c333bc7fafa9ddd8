"""``train(config)``: load the model and data, fit with Lightning, save the model in both formats.

Everything goes under ``config.run.output``::

    model/            the trained encoder (retrievekit manifest + sentence-transformers files)
    best-model/       the best model on the dev split (when a dev split is given)
    checkpoints/      step=N.ckpt (safetensors), the newest kept; a rerun resumes from it
    metrics.csv       step, loss, learning rate, dev metrics (Lightning's CSV logger)
    curves.png        loss and dev metric against step
    train_config.json the full configuration
"""

from __future__ import annotations

import copy
import json
import logging
import resource
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from retrievekit._optional import require
from retrievekit.artifacts import atomic_write_text, fingerprint_json
from retrievekit.errors import ConfigError
from retrievekit.models.dense import DenseEncoder
from retrievekit.models.loading import load_encoder
from retrievekit.training.allocator import retained_freed_memory
from retrievekit.training.batches import TrainingCollator, TrainingSet
from retrievekit.training.config import TrainConfig
from retrievekit.training.data import TrainingExample, load_training_source
from retrievekit.training.losses import make_loss
from retrievekit.training.model import BiEncoderModel, CrossEncoderModel
from retrievekit.training.pairs import PairCollator
from retrievekit.training.regularizers import SparseRegularizedLoss

__all__ = ["TrainResult", "train"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    model_dir: Path
    best_model_dir: Path | None
    steps: int
    examples: int
    train_seconds: float
    wall_seconds: float
    examples_per_second: float
    batch_seconds: tuple[float, ...]
    final_loss: float | None
    best_dev: float | None
    resumed_from: Path | None
    curves: Path | None = None  # curves.png, when a logged step gave something to plot
    peak_rss_mib: float = 0.0  # the process's peak resident memory by the end of training


def untie_towers(encoder: DenseEncoder) -> DenseEncoder:
    """A two-tower copy of a shared-tower encoder: queries and documents get their own weights."""
    if not encoder.spec.shared:
        return encoder
    document_tower = copy.deepcopy(encoder.document_tower)
    untied = DenseEncoder(
        replace(encoder.spec, shared=False), encoder.query_tower, document_tower, runners={}, name=encoder.name,
        source=encoder.source,
    )  # fmt: skip
    untied.carried = dict(encoder.carried)
    return untied


def _data_fingerprint(name: str, examples: list[TrainingExample]) -> str:
    return fingerprint_json([name, [(e.query, e.positives, e.negatives, e.positive_scores, e.negative_scores,
                                     e.prompt) for e in examples]])  # fmt: skip


def _devices(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _progress_bar(config: TrainConfig) -> list[Any]:
    """A run bounded by steps gets a bar without an epoch count (Lightning's rich bar shows
    'Epoch 0/-2' there, from max_epochs=-1)."""
    if not config.run.progress or config.optimizer.max_steps < 1:
        return []
    from lightning.pytorch.callbacks import TQDMProgressBar

    return [TQDMProgressBar()]


def _starting_model(config: TrainConfig) -> Any:
    """The model ``config.model`` names: a dense encoder, or a ColBERT model (loaded, or built from
    any encoder when ``kind`` is ``colbert``)."""
    from retrievekit.models.colbert import build_colbert, load_colbert
    from retrievekit.models.registry import detect_model_kind
    from retrievekit.resolve import resolve_model

    options = config.model
    detected = detect_model_kind(resolve_model(options.model))
    if options.kind == "cross_encoder" or detected == "cross_encoder":
        from retrievekit.models.cross_encoder import build_cross_encoder, load_cross_encoder

        if options.kind not in ("auto", "cross_encoder"):
            raise ConfigError(f"{options.model} is a cross-encoder; train it with kind: cross_encoder (or auto)")
        if options.pooling is not None or options.normalize is not None or options.separate_towers:
            raise ConfigError("pooling, normalize and separate_towers are for dense models, not cross-encoders")
        trust = options.trust_remote_code
        if detected == "cross_encoder":
            return load_cross_encoder(options.model, device="cpu", trust_remote_code=trust)
        return build_cross_encoder(options.model, seed=config.run.seed, device="cpu", trust_remote_code=trust)
    if options.kind == "sparse" or detected == "sparse_encoder":
        from retrievekit.models.sparse import load_sparse_encoder

        if options.kind not in ("auto", "sparse"):
            raise ConfigError(f"{options.model} is a sparse (SPLADE) model; train it with kind: sparse (or auto)")
        if options.pooling is not None or options.normalize is not None or options.separate_towers:
            raise ConfigError("pooling, normalize and separate_towers are for dense models, not SPLADE ones")
        sparse = load_sparse_encoder(options.model, device="cpu", trust_remote_code=options.trust_remote_code)
        if sparse.inference_free:
            raise ConfigError(
                f"{options.model} is an inference-free SPLADE (a static query table): training one is not supported "
                "yet; train the full SPLADE it was built from, whose queries go through the model"
            )
        return sparse
    is_colbert = detected == "colbert_encoder"
    if options.kind == "dense" and is_colbert:
        raise ConfigError(f"{options.model} is a ColBERT model; train it with kind: colbert (or auto)")
    if is_colbert or options.kind == "colbert":
        if options.pooling is not None or options.normalize is not None or options.separate_towers:
            raise ConfigError("pooling, normalize and separate_towers are for dense models, not ColBERT ones")
        if config.loss.gather_across_devices:
            raise ConfigError("gather_across_devices is not supported for ColBERT models (token counts differ)")
        trust = options.trust_remote_code
        if is_colbert:
            return load_colbert(options.model, device="cpu", trust_remote_code=trust)
        return build_colbert(
            options.model, embedding_size=options.embedding_size, seed=config.run.seed, device="cpu",
            trust_remote_code=trust,
        )  # fmt: skip
    return load_encoder(
        options.model, pooling=options.pooling, normalize=options.normalize,
        trust_remote_code=options.trust_remote_code, device="cpu",
    )  # fmt: skip


def _collator(encoder: Any, config: TrainConfig) -> TrainingCollator | PairCollator:
    """The family's collator: a dense model's lengths and prompts, ColBERT's token layouts, or a
    cross-encoder's pairs."""
    if getattr(encoder, "family", "dense") == "cross_encoder":
        limit = encoder.max_length
        if config.data.document_max_length:
            limit = min(limit, config.data.query_max_length + config.data.document_max_length)
        return PairCollator(encoder.tower.tokenizer, max_length=limit, truncation=encoder.config.truncation)
    if getattr(encoder, "family", "dense") == "multivector":
        document_length = encoder.token_length("documents")
        return TrainingCollator(
            encoder.tower.tokenizer,
            encoder.tower.tokenizer,
            query_max_length=encoder.token_length("queries"),
            document_max_length=min(config.data.document_max_length or document_length, document_length),
            query_prompt=encoder.config.query_prompt,
            document_prompt=encoder.config.document_prompt,
            query_layout=encoder.token_layout("queries"),
            document_layout=encoder.token_layout("documents"),
        )
    if getattr(encoder, "family", "dense") == "sparse":
        tokenizer, length = encoder.tower.tokenizer, encoder.max_length
        return TrainingCollator(
            tokenizer, tokenizer, query_max_length=min(config.data.query_max_length, length),
            document_max_length=min(config.data.document_max_length or length, length),
            query_prompt=encoder.config.query_prompt, document_prompt=encoder.config.document_prompt,
        )  # fmt: skip
    document_max_length = min(config.data.document_max_length or encoder.max_length, encoder.document_tower.max_length)
    return TrainingCollator(
        encoder.query_tower.tokenizer,
        encoder.document_tower.tokenizer,
        query_max_length=min(config.data.query_max_length, encoder.query_tower.max_length),
        document_max_length=document_max_length,
        query_prompt=encoder.spec.query_prompt,
        document_prompt=encoder.spec.document_prompt,
        lowercase=encoder.spec.document.do_lower_case,
    )


def train(config: TrainConfig, *, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Fine-tune a dense encoder as ``config`` says; see the module docstring for the outputs.

    ``callbacks``: extra Lightning callbacks (your own logging, profiling, ...)."""
    pl = require("lightning.pytorch", extra="train", purpose="Training")
    from lightning.pytorch.loggers import CSVLogger

    from retrievekit.training.callbacks import DevEvaluation, StepCheckpoint, Throughput
    from retrievekit.training.checkpoint_io import SafetensorsCheckpointIO, latest_checkpoint
    from retrievekit.training.curves import keep_earlier_log, plot_curves, read_log
    from retrievekit.training.module import RetrievalTrainingModule

    started = time.perf_counter()
    if not config.data.data:
        raise ConfigError("no training data: give --data FILE or --data DATASET:SPLIT (several allowed)")
    output = Path(config.run.output)
    checkpoints = output / "checkpoints"
    resume_from = latest_checkpoint(checkpoints) if checkpoints.is_dir() else None
    if resume_from is not None and not config.run.resume:
        raise ConfigError(f"{checkpoints} holds checkpoints; pass --resume to continue or choose another --output")
    output.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(config.run.seed, workers=True, verbose=False)

    datasets: dict[str, list[TrainingExample]] = {}
    for position, source in enumerate(config.data.data):
        name, examples = load_training_source(source)
        datasets[f"{name}-{position}" if name in datasets else name] = examples  # two files may share a stem
    fingerprints = {name: _data_fingerprint(name, examples) for name, examples in datasets.items()}
    encoder = _starting_model(config)
    if config.model.separate_towers:
        encoder = untie_towers(encoder)
    cross = getattr(encoder, "family", "dense") == "cross_encoder"
    model: BiEncoderModel | CrossEncoderModel = CrossEncoderModel(encoder) if cross else BiEncoderModel(encoder)
    if config.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    loss_options = {
        "temperature": config.loss.temperature or (1.0 if cross else 0.05),
        "learnable_temperature": config.loss.learnable_temperature,
        "symmetric": config.loss.symmetric,
        "marginal": config.loss.marginal,
        "mask_false_negatives": config.loss.mask_false_negatives,
        "gather_across_devices": config.loss.gather_across_devices,
        "teacher_temperature": config.loss.teacher_temperature,
        "mini_batch_size": config.loss.mini_batch_size,
    }
    loss = make_loss(config.loss.loss, model, **loss_options)
    if getattr(encoder, "family", "dense") == "sparse":
        if config.loss.loss == "cached_infonce":
            raise ConfigError(
                "SPLADE's regularisers need the batch's embeddings at once: use infonce, margin_mse or kl"
            )
        document_weight = config.loss.document_regularizer_weight
        query_weight = config.loss.query_regularizer_weight
        loss = SparseRegularizedLoss(
            loss, model, document_weight=document_weight,
            query_weight=document_weight if query_weight is None else query_weight,
            query_regularizer=config.loss.query_regularizer, warmup_ratio=config.loss.regularizer_warmup_ratio,
        )  # fmt: skip
    collator = _collator(encoder, config)
    module = RetrievalTrainingModule(
        model,
        loss,
        TrainingSet(
            datasets, num_negatives=config.data.num_negatives, positives_per_query=config.data.positives_per_query
        ),
        collator,
        batch_size=config.data.batch_size,
        optimizer=config.optimizer,
        seed=config.run.seed,
    )
    record = {"config": config.to_dict(), "data_fingerprints": fingerprints, "base_model": encoder.fingerprint}

    def save_model(directory: Path) -> None:
        model.export(module.device).save(directory, training=record)

    throughput = Throughput()
    all_callbacks: list = [
        *_progress_bar(config),
        throughput,
        *callbacks,
        StepCheckpoint(dirpath=checkpoints, filename="{step}", every_n_train_steps=config.run.checkpoint_every,
                       save_top_k=1, save_last=False),
    ]  # fmt: skip
    dev = None
    if config.evaluation.dev_linking:
        from retrievekit.linking.training import LinkingDevScore

        scorer = LinkingDevScore(config.evaluation.dev_linking, config.evaluation.dev_split,
                                 protocol=config.evaluation.dev_linking_protocol,
                                 entity_vectors=config.evaluation.dev_entity_vectors,
                                 batch_size=config.evaluation.eval_batch_size)  # fmt: skip
        dev = DevEvaluation(
            None, config.evaluation.dev_split, output / "best-model", save_model, every=config.evaluation.eval_every,
            patience=config.evaluation.patience, metric="acc@1", scorer=scorer,
        )  # fmt: skip
        all_callbacks.append(dev)
    elif config.evaluation.dev_dataset:
        dev = DevEvaluation(
            config.evaluation.dev_dataset, config.evaluation.dev_split, output / "best-model", save_model,
            every=config.evaluation.eval_every, patience=config.evaluation.patience,
            batch_size=config.evaluation.eval_batch_size, first_stage=config.evaluation.first_stage,
            rerank_top_k=config.evaluation.rerank_top_k,
        )  # fmt: skip
        all_callbacks.append(dev)
    trainer = pl.Trainer(
        accelerator=config.run.accelerator,
        devices=_devices(config.run.devices),
        num_nodes=config.run.num_nodes,
        strategy=config.run.strategy,
        precision=config.run.precision,
        max_epochs=config.optimizer.epochs if config.optimizer.max_steps < 1 else -1,
        max_steps=config.optimizer.max_steps,
        accumulate_grad_batches=config.optimizer.accumulate_grad_batches,
        gradient_clip_val=config.optimizer.max_grad_norm or None,
        callbacks=all_callbacks,
        logger=CSVLogger(output, name="", version="logs"),
        log_every_n_steps=config.run.log_every,  # shorter runs still log: metrics are logged on_step
        enable_progress_bar=config.run.progress,
        enable_model_summary=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        plugins=[SafetensorsCheckpointIO()],
        deterministic=False,
        default_root_dir=output,
    )
    if resume_from is not None:
        logger.info("resuming from %s", resume_from)
        keep_earlier_log(output / "logs", resume_from)
    model.train()  # towers are loaded in eval mode; training uses dropout, as sentence-transformers does
    atomic_write_text(output / "train_config.json", json.dumps(record, indent=2, default=str) + "\n")
    with retained_freed_memory(config.run.retain_memory), warnings.catch_warnings():
        # Lightning warns when an epoch has fewer batches than the logging interval; the loss is
        # logged on every step (on_step=True), so nothing is lost and the warning only alarms
        warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
        trainer.fit(module, ckpt_path=str(resume_from) if resume_from else None)

    model_dir = output / "model"
    curves = None
    if trainer.is_global_zero:
        save_model(model_dir)
        if (output / "logs" / "metrics.csv").is_file() and read_log(output / "logs"):
            curves = plot_curves(output / "logs", output / "curves.png")
    final_loss = trainer.callback_metrics.get("train/loss")
    return TrainResult(
        model_dir=model_dir,
        best_model_dir=(output / "best-model") if dev and dev.best is not None else None,
        steps=trainer.global_step,
        examples=module.examples_seen,
        train_seconds=throughput.seconds,
        wall_seconds=time.perf_counter() - started,
        examples_per_second=throughput.examples_per_second,
        batch_seconds=tuple(throughput.batch_seconds),
        final_loss=float(final_loss) if final_loss is not None else None,
        best_dev=dev.best if dev else None,
        resumed_from=resume_from,
        curves=curves,
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
