"""Training throughput: retrievekit's trainer against sentence-transformers' trainer with
MultipleNegativesRankingLoss, same model, data, batch and sequence length, in one process.

    python benchmarks/train_throughput.py [--steps 10 --batch-size 16 --max-length 256]

Data: SciFact train claims with their cited abstract as positive and one BM25-mined hard negative
(ranks 10-100), as (query, positive, negative) triplets. Model: the bundled all-MiniLM-L6-v2.
Both trainers run with dropout on, fused AdamW, the same learning rate and warmup, on the CPU. Each
batch is timed from its start to the end of its optimizer step; the first two steps (warm-up) are
left out; examples/s = queries per second. Wall times (load model, fit, save) are printed too.
Each trainer runs in its own fresh process (--repeats of each, in alternating order, so neither
gains from running second); the parent prints the means and the ratios. --no-retain-memory runs
retrievekit with glibc's default malloc settings (see retrievekit.training.allocator). The peer runs
twice per repeat: with glibc's defaults, and with the same malloc settings retrievekit applies
(given through glibc's MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ environment variables), so
the comparison is made with and without the allocator setting on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--repeats", type=int, default=2, help="fresh processes per trainer, in alternating order")
    parser.add_argument("--only", choices=["retrievekit", "sentence-transformers"], help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-retain-memory", dest="retain_memory", action="store_false",
        help="run retrievekit with the default malloc settings (see retrievekit.training.allocator)",
    )  # fmt: skip
    args = parser.parse_args()

    import torch

    from retrievekit import load_dataset, resolve_model
    from retrievekit.index.bm25 import Bm25Index
    from retrievekit.retrieval.retriever import Bm25Retriever
    from retrievekit.training import (
        TrainingExample,
        examples_from_split,
        load_config,
        mine_hard_negatives,
        train,
        write_training_rows,
    )

    torch.manual_seed(0)
    workdir = Path(tempfile.mkdtemp(prefix="rk-train-bench-"))
    beir = load_dataset(args.dataset, download=False)
    split = beir.load("train")
    bm25 = Bm25Index()
    bm25.add(split.corpus.ids, split.corpus.texts())
    mined, _ = mine_hard_negatives(examples_from_split(split), Bm25Retriever(bm25), split.corpus, rank_range=(10, 100),
                                   num=1, seed=0)  # fmt: skip
    mined = [m for m in mined if m.negatives]
    triplets = [(m.query, m.positives[0], m.negatives[0]) for m in mined]
    data_file = write_training_rows(
        workdir / "triplets.jsonl", [TrainingExample(q, (p,), (n,)) for q, p, n in triplets]
    )
    model_dir = resolve_model("minilm")
    skip = 2
    results: dict[str, tuple[float, float]] = {}

    def run_ours() -> None:
        config = load_config(
            overrides={
                "model": str(model_dir), "data": [str(data_file)], "batch_size": args.batch_size, "num_negatives": 1,
                "query_max_length": args.max_length, "document_max_length": args.max_length, "learning_rate": 2e-5,
                "weight_decay": 0.0, "warmup_ratio": 0.1, "max_steps": args.steps,
                "output": str(workdir / "retrievekit"), "checkpoint_every": 10**6, "progress": False, "seed": 0,
                "retain_memory": args.retain_memory,
            }
        )  # fmt: skip
        started = time.perf_counter()
        ours = train(config)  # loads the model, fits, saves it
        results["retrievekit"] = (args.batch_size / statistics.median(ours.batch_seconds[skip:]),
                                  time.perf_counter() - started)  # fmt: skip

    def run_peer() -> None:
        from datasets import Dataset
        from sentence_transformers import (
            SentenceTransformer,
            SentenceTransformerTrainer,
            SentenceTransformerTrainingArguments,
        )
        from sentence_transformers.losses import MultipleNegativesRankingLoss
        from transformers import TrainerCallback

        class StepTimer(TrainerCallback):
            def __init__(self) -> None:
                self.seconds: list[float] = []
                self._started = 0.0

            def on_step_begin(self, *a, **k):
                self._started = time.perf_counter()

            def on_step_end(self, *a, **k):
                self.seconds.append(time.perf_counter() - self._started)

        started = time.perf_counter()
        model = SentenceTransformer(str(model_dir), device="cpu")
        model.max_seq_length = args.max_length
        dataset = Dataset.from_dict({"anchor": [t[0] for t in triplets], "positive": [t[1] for t in triplets],
                                     "negative": [t[2] for t in triplets]})  # fmt: skip
        timer = StepTimer()
        peer_args = SentenceTransformerTrainingArguments(
            output_dir=str(workdir / "st"), per_device_train_batch_size=args.batch_size, max_steps=args.steps,
            learning_rate=2e-5, warmup_steps=0.1, save_strategy="no", report_to="none", use_cpu=True,
            logging_steps=10**6, seed=0, dataloader_drop_last=True, disable_tqdm=True,
        )  # fmt: skip
        trainer = SentenceTransformerTrainer(
            model=model, args=peer_args, train_dataset=dataset, loss=MultipleNegativesRankingLoss(model),
            callbacks=[timer],
        )  # fmt: skip
        trainer.train()
        model.save(str(workdir / "st-model"))
        results["sentence-transformers"] = (args.batch_size / statistics.median(timer.seconds[skip:]),
                                            time.perf_counter() - started)  # fmt: skip

    if args.only:  # a child process: one trainer, one JSON line
        (run_ours if args.only == "retrievekit" else run_peer)()
        print("RESULT " + json.dumps(results[args.only]))  # the parent names the run (with or without malloc env)
        return
    # the malloc settings retrievekit's trainer applies itself, as environment variables for the peer
    retained = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str((1 << 31) - 1)}
    peers = {"sentence-transformers": {}, "sentence-transformers + retained malloc": retained}
    names = ["retrievekit"] + ([] if args.skip_peer else list(peers))
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        for name in names if repeat % 2 else names[::-1]:
            only = "retrievekit" if name == "retrievekit" else "sentence-transformers"
            command = [sys.executable, __file__, "--only", only, *sys.argv[1:]]
            env = os.environ | peers.get(name, {})
            done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
            line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
            runs[name].append(tuple(json.loads(line.removeprefix("RESULT "))))
            print(f"{name}: {runs[name][-1][0]:.2f} examples/s, {runs[name][-1][1]:.1f} s", flush=True)
    results.update(
        {name: (statistics.mean(r for r, _ in v), statistics.mean(w for _, w in v)) for name, v in runs.items()}
    )

    print(f"\nSciFact train triplets ({len(triplets)}), batch {args.batch_size}, max length {args.max_length}, "
          f"{args.steps} steps (median step after {skip} warm-up steps), {torch.get_num_threads()} threads, "
          f"mean of {args.repeats} fresh processes per trainer")  # fmt: skip
    print("| trainer | examples/s | × peer (examples/s) | wall s (load, fit, save) | × peer (wall) |")
    print("|---|---:|---:|---:|---:|")
    base_rate, base_wall = results.get("sentence-transformers", results["retrievekit"])
    for name, (rate, wall) in results.items():
        print(f"| {name} | {rate:.2f} | {rate / base_rate:.2f}× | {wall:.1f} | {base_wall / wall:.2f}× |")


if __name__ == "__main__":
    main()
