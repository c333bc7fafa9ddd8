"""The trainer end to end on tiny random models: the loss falls, resume is exact, DDP runs with
two CPU processes, saved models load in sentence-transformers, two towers and distillation train."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from retrievekit import load_encoder
from retrievekit.cli.main import cli
from retrievekit.training import load_config, train
from retrievekit.training.checkpoint_io import latest_checkpoint
from retrievekit.training.curves import read_log

pytest.importorskip("lightning")

# a toy task: each query must find the sentence that shares its topic word
TOPICS = ["protein", "immune", "sleep", "coffee", "bacteria", "vitamin", "memory", "heart"]


def _toy_rows(path: Path, *, scores: bool = False) -> Path:
    rows = []
    for i, topic in enumerate(TOPICS):
        other = TOPICS[(i + 3) % len(TOPICS)]
        row = {"query": f"what about {topic}", "pos": [f"{topic} {topic} study"], "neg": [f"{other} {other} study"]}
        if scores:
            row |= {"pos_scores": [5.0], "neg_scores": [1.0]}
        rows.append(json.dumps(row))
    path.write_text("\n".join(rows) + "\n")
    return path


def _config(tmp_path: Path, model: Path, data: Path, **overrides):
    values = {
        "model": str(model), "pooling": "mean", "normalize": True, "data": [str(data)], "batch_size": 4,
        "num_negatives": 1, "learning_rate": 5e-3, "warmup_ratio": 0.0, "epochs": 6, "output": str(tmp_path / "out"),
        "checkpoint_every": 2, "log_every": 1, "progress": False, "seed": 3,
    }  # fmt: skip
    values.update(overrides)
    return load_config(overrides=values)


def _losses(output: Path) -> list[float]:
    """The loss of every step, across resumes."""
    return [value for _, value in read_log(output / "logs")["train/loss"]]


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {
        f"{p.parent.name}/{k}": v for p in sorted(model_dir.rglob("*.safetensors")) for k, v in load_file(p).items()
    }


def test_loss_falls_on_a_toy_task_and_the_model_loads_in_sentence_transformers(tmp_path, tiny_bert_dir):
    result = train(_config(tmp_path, tiny_bert_dir, _toy_rows(tmp_path / "toy.jsonl")))
    losses = _losses(tmp_path / "out")
    assert result.steps == 12 and len(losses) == 12
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    assert result.curves == tmp_path / "out" / "curves.png" and result.curves.stat().st_size > 1000
    short = train(_config(tmp_path / "short", tiny_bert_dir, tmp_path / "toy.jsonl", log_every=50, max_steps=2))
    assert short.curves is None and not (tmp_path / "short" / "out" / "curves.png").exists()  # nothing to plot

    manifest = json.loads((result.model_dir / "manifest.json").read_text())
    training = manifest["config"]["training"]
    assert training["config"]["data"]["num_negatives"] == 1 and list(training["data_fingerprints"]) == ["toy"]
    tuned = load_encoder(result.model_dir)
    assert manifest["fingerprint"] == tuned.fingerprint != load_encoder(tiny_bert_dir, pooling="mean").fingerprint
    from sentence_transformers import SentenceTransformer

    texts = ["what about sleep", "coffee coffee study"]
    st = SentenceTransformer(str(result.model_dir), device="cpu")
    assert np.abs(st.encode(texts) - tuned.encode_documents(texts)).max() < 1e-5
    # the query for a topic now prefers its own sentence
    q = tuned.encode_queries([f"what about {t}" for t in TOPICS])
    d = tuned.encode_documents([f"{t} {t} study" for t in TOPICS])
    assert (np.argmax(q @ d.T, axis=1) == np.arange(len(TOPICS))).mean() >= 0.75


class _Crash(RuntimeError):
    pass


class _CrashAt:
    """A callback that kills the run (raises) once training reaches ``step``."""

    def __init__(self, step: int) -> None:
        import lightning.pytorch as pl

        class Callback(pl.Callback):
            def on_train_batch_end(self_, trainer, *args):
                if trainer.global_step == step:
                    raise _Crash(f"killed at step {step}")

        self.callback = Callback()


@pytest.mark.parametrize(("every", "crash"), [(3, 5), (2, 3)], ids=["mid-epoch", "epoch-end"])
def test_resume_after_a_crash_continues_from_the_same_step_and_data_position(tmp_path, tiny_bert_dir, every, crash):
    data = _toy_rows(tmp_path / "toy.jsonl")  # 8 rows, batches of 4: 2 steps an epoch, 6 in all
    straight = train(_config(tmp_path / "a", tiny_bert_dir, data, epochs=3, checkpoint_every=every))
    config = _config(tmp_path / "b", tiny_bert_dir, data, epochs=3, checkpoint_every=every)
    with pytest.raises(_Crash):
        train(config, callbacks=[_CrashAt(crash).callback])  # dies after the checkpoint at step `every`
    assert latest_checkpoint(tmp_path / "b" / "out" / "checkpoints").name == f"step={every}.ckpt"
    resumed = train(config)
    assert resumed.resumed_from.name == f"step={every}.ckpt" and resumed.steps == straight.steps == 6
    a, b = _weights(straight.model_dir), _weights(resumed.model_dir)
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    assert _losses(tmp_path / "a" / "out") == pytest.approx(_losses(tmp_path / "b" / "out"), abs=1e-6)  # all 6 steps
    with pytest.raises(Exception, match="--resume"):
        train(_config(tmp_path / "b", tiny_bert_dir, data, epochs=3, resume=False))


def test_two_towers_and_distillation_train(tmp_path, tiny_bert_dir):
    data = _toy_rows(tmp_path / "scored.jsonl", scores=True)
    result = train(_config(tmp_path, tiny_bert_dir, data, separate_towers=True, loss="margin_mse", epochs=4))
    losses = _losses(tmp_path / "out")
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    encoder = load_encoder(result.model_dir)
    assert not encoder.spec.shared and encoder.query_tower is not encoder.document_tower
    q, d = encoder.encode_queries(["sleep"]), encoder.encode_documents(["sleep"])
    assert not np.allclose(q, d)  # the towers were trained apart
    kl = train(_config(tmp_path / "kl", tiny_bert_dir, data, loss="kl", epochs=2))
    assert kl.steps == 4 and all(np.isfinite(_losses(tmp_path / "kl" / "out")))


def test_distillation_without_teacher_scores_says_what_is_missing(tmp_path, tiny_bert_dir):
    with pytest.raises(Exception, match="pos_scores"):
        train(_config(tmp_path, tiny_bert_dir, _toy_rows(tmp_path / "toy.jsonl"), loss="margin_mse", epochs=1))


def test_dev_evaluation_logs_ndcg_and_keeps_the_best_model(tmp_path, tiny_bert_dir, toy_beir):
    config = _config(tmp_path, tiny_bert_dir, _toy_rows(tmp_path / "toy.jsonl"), epochs=2, dev_dataset=str(toy_beir),
                     dev_split="test")  # fmt: skip
    result = train(config)
    with (tmp_path / "out" / "logs" / "metrics.csv").open() as handle:
        dev = [float(r["dev/ndcg@10"]) for r in csv.DictReader(handle) if r.get("dev/ndcg@10")]
    assert len(dev) == 2 and result.best_dev == max(dev)
    assert (result.best_model_dir / "manifest.json").is_file()


def test_cli_train_from_yaml_and_mine_negatives(tmp_path, tiny_bert_dir, toy_beir, monkeypatch):
    monkeypatch.setenv("RETRIEVEKIT_CACHE", str(tmp_path / "cache"))
    model = load_encoder(tiny_bert_dir, pooling="mean", normalize=True).save(tmp_path / "tiny")
    runner = CliRunner()
    mined = tmp_path / "mined.jsonl"
    out = runner.invoke(cli, ["mine-negatives", "--model", str(model), "--data", f"{toy_beir}:test", "--range", "1-5",
                              "--num", "2", "--output", str(mined)])  # fmt: skip
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in mined.read_text().splitlines()]
    assert len(rows) == 4 and all(len(r["neg"]) == 2 and not set(r["neg"]) & set(r["pos"]) for r in rows)
    assert "negatives written" in out.output and (tmp_path / "cache" / "evaluation" / "embeddings").is_dir()
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text(
        f"model: {{model: {tiny_bert_dir}, pooling: mean, normalize: true}}\n"
        f"data: {{data: [{mined}], batch_size: 2, num_negatives: 1}}\n"
        "optimizer: {epochs: 1, learning_rate: 0.001}\n"
    )
    out = runner.invoke(cli, ["train", "--config", str(yaml_file), "--output", str(tmp_path / "run"), "--no-progress"])
    assert out.exit_code == 0, out.output
    assert "training finished" in out.output and (tmp_path / "run" / "model" / "modules.json").is_file()
    assert "--num-negatives" in runner.invoke(cli, ["train", "--help"]).output


def test_ddp_runs_with_two_cpu_processes(tmp_path, tiny_bert_dir):
    data = _toy_rows(tmp_path / "toy.jsonl")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [
        sys.executable, "-m", "retrievekit", "train", "--model", str(tiny_bert_dir), "--pooling", "mean",
        "--normalize", "--data", str(data), "--batch-size", "2", "--num-negatives", "1", "--epochs", "2",
        "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--gather-across-devices",
        "--output", str(tmp_path / "ddp"), "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    # 8 examples, batches of 2 per process, 2 processes: 2 steps per epoch
    assert "steps" in done.stdout and " 4 " in done.stdout.split("steps", 1)[1].splitlines()[0]
    assert (tmp_path / "ddp" / "model" / "manifest.json").is_file()


def test_early_stopping_after_patience_evaluations_without_gain(tmp_path, tiny_bert_dir, toy_beir):
    config = _config(tmp_path, tiny_bert_dir, _toy_rows(tmp_path / "toy.jsonl"), learning_rate=0.0, dev_dataset=
                     str(toy_beir), dev_split="test", eval_every=1, patience=2)  # fmt: skip
    result = train(config)  # a zero learning rate never improves: best at step 1, stop two evaluations later
    assert result.steps == 3 and result.best_dev is not None


def test_gradient_checkpointing_gives_the_same_training(tmp_path, tiny_bert_dir, monkeypatch):
    from retrievekit.training.model import BiEncoderModel

    switched_on: list[bool] = []
    enable = BiEncoderModel.gradient_checkpointing_enable

    def spy(self):  # the trainer must call it, and it must really switch checkpointing on
        enable(self)
        switched_on.append(all(t.backbone.is_gradient_checkpointing for t in (self.query_tower, self.document_tower)))

    monkeypatch.setattr(BiEncoderModel, "gradient_checkpointing_enable", spy)
    data = _toy_rows(tmp_path / "toy.jsonl")
    plain = train(_config(tmp_path / "a", tiny_bert_dir, data, epochs=1))
    assert switched_on == []
    checkpointed = train(_config(tmp_path / "b", tiny_bert_dir, data, epochs=1, gradient_checkpointing=True))
    assert switched_on == [True]
    a, b = _weights(plain.model_dir), _weights(checkpointed.model_dir)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_cached_infonce_trains_through_the_trainer(tmp_path, tiny_bert_dir):
    train(_config(tmp_path, tiny_bert_dir, _toy_rows(tmp_path / "toy.jsonl"), loss="cached_infonce", mini_batch_size=3))
    losses = _losses(tmp_path / "out")
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])


def test_the_marginal_loss_trains_with_further_positives_in_each_batch(tmp_path, tiny_bert_dir):
    import lightning.pytorch as lightning

    rows = tmp_path / "synonyms.jsonl"
    rows.write_text("".join(json.dumps({"query": f"what about {t}", "pos": [f"{t} study", f"{t} {t} report"],
                                        "neg": [f"{TOPICS[(i + 3) % 8]} study"]}) + "\n"
                            for i, t in enumerate(TOPICS)))  # fmt: skip

    class Seen(lightning.Callback):
        def __init__(self) -> None:
            self.documents: list[int] = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            assert module.loss.marginal and module.data.positives_per_query == 2
            self.documents.append(int(batch.document_input_ids.shape[0]))

    seen = Seen()
    config = _config(tmp_path, tiny_bert_dir, rows, positives_per_query=2, marginal=True, epochs=3)
    train(config, callbacks=[seen])
    assert seen.documents and set(seen.documents) == {4 + 4 + 4}  # 4 positives, 4 negatives, 4 further positives
    losses = _losses(tmp_path / "out")
    assert np.mean(losses[-2:]) < np.mean(losses[:2])


@pytest.mark.slow
def test_a_killed_training_process_resumes_where_it_stopped(tmp_path, tiny_bert_dir):
    """The real thing: SIGKILL the CLI after a checkpoint, run the same command again, compare with
    an uninterrupted run."""
    import signal
    import time

    data = _toy_rows(tmp_path / "toy.jsonl")

    def command(output: Path) -> list[str]:
        return [
            sys.executable, "-m", "retrievekit", "train", "--model", str(tiny_bert_dir), "--pooling", "mean",
            "--normalize", "--data", str(data), "--batch-size", "4", "--num-negatives", "1", "--epochs", "150",
            "--checkpoint-every", "25", "--seed", "5", "--output", str(output), "--no-progress",
        ]  # fmt: skip

    subprocess.run(command(tmp_path / "straight"), check=True, capture_output=True, timeout=600)
    process = subprocess.Popen(command(tmp_path / "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        found = latest_checkpoint(checkpoints) if checkpoints.is_dir() else None
        if found is not None and found.name != "step=25.ckpt":
            break
        time.sleep(0.05)
    assert process.poll() is None, "training ended before it could be killed; make the run longer"
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = latest_checkpoint(checkpoints)
    assert killed_at is not None and not (tmp_path / "killed" / "model").exists()
    done = subprocess.run(command(tmp_path / "killed"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert killed_at.name in done.stdout  # "resumed from .../step=N.ckpt"
    a, b = _weights(tmp_path / "straight" / "model"), _weights(tmp_path / "killed" / "model")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
