"""Entity linking on NCBI-disease: BM25, the untrained and the fine-tuned all-MiniLM-L6-v2, under the
papers' protocol and the raw one, in one table.

    python benchmarks/finetune_ncbi_disease.py --output runs/ncbi-disease

Without training flags each protocol trains with its reference settings (REFERENCE_SETTINGS: biosyn, a
synonym stage then 1 epoch with 7 hard negatives per mention; raw, 3 rounds of 2 epochs; and the raw-only
flags' defaults: the mention pooled, abbreviations read long, 32 tokens); a flag given overrides its
setting under every protocol.

Data: ../shared/data/ncbi-disease (see its README for the protocols). Everything runs through
retrievekit's public API:
1. baselines on test: BM25 and the untrained MiniLM, ``biosyn`` (preprocessed mention parts ranked
   over the names of BioSyn's test dictionary; comparable with the papers) and ``raw`` (the mention
   in its context, BLINK's [unused0]/[unused1] markers, against the 76,237 MEDIC names of
   dictionary.tsv, a concept scored by its best name);
2. two linkers trained from MiniLM on train+dev (as BioSyn does; no early stopping, a fixed number
   of epochs; --rounds N re-mines the negatives with the trained model and trains on, N times),
   one per protocol, each through the one trainer: every name of the gold concept is a
   positive (one drawn per step, the others never counted as negatives), --num-mined hard negatives
   per query mined by the untrained model from the same names (entries of the gold concepts
   skipped), --num-negatives of them per query in a batch plus in-batch negatives (InfoNCE at
   --temperature; --symmetric adds the name-to-mention term).
   ``biosyn``: queries are the mention parts (25 tokens, BioSyn's length), names from BioSyn's test
   dictionary (MEDIC names plus the train and dev mention strings; no test mention is in it).
   ``raw``: queries are mentions in context (--query-length tokens; --mention-pooling pools the mention's
   own tokens; --abbreviations reads a mention its abstract defines as an abbreviation as the long
   form), names from dictionary.tsv;
3. the trained linkers on test under their protocol (with --rerank, also behind a cross-encoder trained
   from --model on the fine-tuned linker's hard negatives, or the one --reranker names: BLINK's second stage; with --rerank-weights, also
   fused with the first stage, the reranker's weight chosen on dev); linking throughput (mentions/s: query encoding
   and search) on each backend against sentence-transformers ``encode`` + a FAISS inner-product index over the
   same name vectors on each of its backends, same threads, alternating, best of --repeats (link_throughput.py);
4. with --lexical-weights, BioSyn's ``dense + weight * sparse`` scores (character n-gram TF-IDF of the
   mention alone): each weight on dev, the best dev acc@1's on test (BioSyn tunes on dev).
--train-splits train holds dev out, to choose settings without test: the trainer scores dev acc@1
after each epoch and the best epoch's model goes on; under ``biosyn`` dev is ranked over BioSyn's dev
dictionary (its test dictionary less the dev mention strings), which is also what such a run mines from.
--synonym-pretraining K first aligns the names of each concept with each other (SapBERT's self-alignment:
up to K names per concept as queries for the others, hard negatives mined from the names), then fine-tunes
on the mentions. --aliases adds a raw row with the train and dev mention strings as names (BioSyn's
test-dictionary rule).
--trained MODEL evaluates a linker trained earlier (an earlier run's OUTPUT/model) instead of training one.
Writes OUTPUT/model (the raw-protocol linker: mentions in context), OUTPUT/biosyn-model, the table in
OUTPUT/results.md and OUTPUT/summary.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ncbi-disease"
# each protocol's reference settings (its best row in benchmarks/README.md), for the flags a run leaves unset:
# biosyn, a synonym stage then one epoch with 7 hard negatives per mention; raw, three rounds of two epochs
REFERENCE_SETTINGS: dict[str, dict[str, int]] = {
    "biosyn": {"synonym_pretraining": 1, "num_negatives": 7, "epochs": 1, "rounds": 1},
    "raw": {"synonym_pretraining": 0, "num_negatives": 3, "epochs": 2, "rounds": 3},
}


def _reference(setting: str) -> str:
    """A setting's reference value under each protocol, as --help says it."""
    return "default: " + ", ".join(f"{protocol} {values[setting]}" for protocol, values in REFERENCE_SETTINGS.items())


def _flag(dest: str) -> str:
    """The command-line flag of an argparse destination."""
    return "--" + dest.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    """The script's command line (its flags reach the trainer through :func:`_config`)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--epochs", type=int, default=None, help=f"epochs per round ({_reference('epochs')})")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-negatives", type=int, default=None,
                        help=f"hard negatives per query in a batch ({_reference('num_negatives')})")  # fmt: skip
    parser.add_argument("--num-mined", type=int, default=15, help="hard negatives mined per query")
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--temperature", type=float, default=0.05,
                        help="fine-tuning: InfoNCE's temperature (0.05 = sentence-transformers' scale 20)")  # fmt: skip
    parser.add_argument("--symmetric", action="store_true",
                        help="fine-tuning: add InfoNCE's name-to-mention term (each positive against every query)")  # fmt: skip
    parser.add_argument(
        "--query-length", type=int, default=32, help="raw protocol: tokens of mention + context (default: 32)"
    )
    parser.add_argument("--protocols", nargs="+", default=["biosyn", "raw"], choices=["biosyn", "raw"])
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the throughput comparison")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--separate-towers", action="store_true", help="BET's layout: a mention and an entity tower")
    parser.add_argument(
        "--mention-pooling",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="raw protocol: the query vector is the mean of the mention's own tokens (between its "
        "markers, read in context) instead of the whole window's (default: on)",
    )
    parser.add_argument(
        "--abbreviations",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="raw protocol: a mention written as an abbreviation its abstract defines (Schwartz & Hearst) is "
        "read as the long form, in training and evaluation (BioSyn's queries are expanded with Ab3P; default: on)",
    )
    parser.add_argument("--rerank", action="store_true",
                        help="train a cross-encoder second stage (BLINK's) on the fine-tuned model's hard negatives "
                        "and re-score each query's best --rerank-top-k names with it")  # fmt: skip
    parser.add_argument("--reranker", type=Path, default=None,
                        help="a cross-encoder trained earlier (an earlier --rerank run's OUTPUT/rerank-PROTOCOL/model) "
                        "to use as the second stage instead of training one; implies --rerank")  # fmt: skip
    parser.add_argument("--rerank-top-k", type=int, default=16)
    parser.add_argument("--rerank-negatives", type=int, default=7, help="cross-encoder: hard negatives per query")
    parser.add_argument("--rerank-batch-size", type=int, default=16, help="cross-encoder: queries per step")
    parser.add_argument("--rerank-learning-rate", type=float, default=5e-5)
    parser.add_argument("--rerank-epochs", type=int, default=1)
    parser.add_argument("--rerank-weights", type=float, nargs="*", default=[],
                        help="with --rerank or --reranker: the reranker's weights to try on dev in a weighted fusion with the "
                        "first stage (weight 1; per-mention min-max normalised scores; 0: the first stage alone); "
                        "the best dev acc@1's test row joins the table")  # fmt: skip
    parser.add_argument(
        "--no-throughput",
        dest="throughput",
        action="store_false",
        help="skip the linking throughput comparison (raw protocol)",
    )
    parser.add_argument("--no-baselines", dest="baselines", action="store_false",
                        help="skip BM25 and the untrained rows (they do not depend on the training options)")  # fmt: skip
    parser.add_argument("--lexical-weights", type=float, nargs="*", default=[],
                        help="BioSyn's sparse weights to try on dev; the best one's test row joins the table")  # fmt: skip
    parser.add_argument("--trained", type=Path, default=None,
                        help="a linker trained earlier (a model folder) to evaluate instead of training")  # fmt: skip
    parser.add_argument("--synonym-pretraining", type=int, default=None, metavar="K",
                        help="first align the knowledge base's synonyms as SapBERT does: up to K names of each "
                        "concept as queries for its other names, hard negatives mined from the names; 0: no such "
                        f"stage, as for a --model that had it ({_reference('synonym_pretraining')})")  # fmt: skip
    parser.add_argument("--synonym-epochs", type=int, default=1)
    parser.add_argument("--synonym-negatives", type=int, default=1, help="synonym stage: hard negatives per query")
    parser.add_argument("--aliases", action="store_true",
                        help="raw protocol: also evaluate with the train and dev mention strings as names of their "
                        "gold concepts (BioSyn's test dictionary adds them to MEDIC's names the same way)")  # fmt: skip
    parser.add_argument("--positive-depth", type=int, default=None, metavar="K",
                        help="fine-tuning: a mention's positives are only the names of its gold concept the mining "
                        "model ranks in its best K (BioSyn's marginalisation over its top-K candidates); all of "
                        "them where none is")  # fmt: skip
    parser.add_argument("--positives-per-query", type=int, default=1, metavar="P",
                        help="fine-tuning: put up to P names of a mention's gold concept in each batch and train "
                        "with the marginal loss, every one of them counting towards the mention (BioSyn's synonym "
                        "marginalisation); 1: one name per step, the others masked")  # fmt: skip
    parser.add_argument("--train-splits", nargs="+", default=["train", "dev"], choices=["train", "dev"],
                        help="the splits trained on (BioSyn: train+dev). Without dev, dev is held out: the trainer "
                        "scores dev acc@1 each epoch and the best epoch's model is evaluated (early stopping), biosyn "
                        "mines from BioSyn's dev dictionary, and --lexical-weights are chosen on an unseen dev")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=None,
                        help="training rounds; each after the first re-mines the hard negatives with the model the "
                        "last round trained and trains it further (BioSyn updates its candidates as it trains; "
                        f"{_reference('rounds')})")  # fmt: skip
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked: options that cannot work together are refused before any work starts."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag in ("positives_per_query", "rounds", "epochs"):
        value = getattr(args, flag)
        if value is not None and value < 1:  # unset (None): the protocol's reference
            parser.error(f"{_flag(flag)} must be at least 1, got {value}")
    from retrievekit.linking.training import MINING_DEPTH

    if args.positive_depth is not None and not 1 <= args.positive_depth <= MINING_DEPTH:
        parser.error(
            f"--positive-depth must be between 1 and {MINING_DEPTH} (the mining depth), got {args.positive_depth}"
        )
    if args.reranker:  # a trained cross-encoder is used as it is: options that would train one do nothing
        training_options = ["rerank_negatives", "rerank_batch_size", "rerank_learning_rate", "rerank_epochs"]
        ignored = [_flag(o) for o in training_options if getattr(args, o) != parser.get_default(o)]
        if ignored:
            parser.error(
                f"{', '.join(ignored)} train a cross-encoder; --reranker uses a trained one: drop one or the other"
            )
    return args


def protocol_settings(args: argparse.Namespace, protocol: str) -> argparse.Namespace:
    """The run's settings under ``protocol``: each flag left unset from the protocol's reference settings."""
    given = vars(args)
    return argparse.Namespace(**given | {k: v for k, v in REFERENCE_SETTINGS[protocol].items() if given[k] is None})


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    from retrievekit import load_encoder
    from retrievekit.linking import (
        EntityIndex,
        LinkingFormat,
        biosyn_dev_dictionary,
        evaluate_linking,
        read_mentions,
        read_names,
    )
    from retrievekit.linking.evaluate import folder_documents
    from retrievekit.linking.text import prepare_linking_model
    from retrievekit.linking.training import linking_examples, synonym_queries, training_queries
    from retrievekit.training import train, write_training_rows
    from retrievekit.training.curves import read_log

    started = time.perf_counter()
    # the rows name the start model: the bundled MiniLM, or the folder --model gave
    who, fresh = ("MiniLM", "untrained") if args.model == "minilm" else (args.model, "before fine-tuning")
    args.output.mkdir(parents=True, exist_ok=True)
    mentions = [m for split in args.train_splits for m in read_mentions(args.data / "mentions" / f"{split}.jsonl")]
    held_out = "dev" not in args.train_splits  # dev is unseen: early stopping on it, and a fair place to tune
    formats = {
        "biosyn": LinkingFormat(context=False, query_max_length=25, entity_max_length=25),
        "raw": LinkingFormat(
            context=True,
            query_max_length=args.query_length,
            entity_max_length=32,
            mention_pooling=args.mention_pooling,
            abbreviations=args.abbreviations,
        ),
    }
    names_file = {"biosyn": args.data / "biosyn" / "test_dictionary.txt.gz", "raw": args.data / "dictionary.tsv"}
    rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    trained_dirs: dict[str, Path] = {}
    dev_sweeps: dict[str, dict[float, float]] = {}  # dev acc@1 of each sparse weight
    rerank_sweeps: dict[str, dict[float, float]] = {}  # dev acc@1 of each fused reranker weight
    dev_curves: dict[str, list[float]] = {}  # with dev held out: the trainer's dev acc@1 after each epoch
    settings: dict[str, argparse.Namespace] = {}  # each protocol's settings, as run

    def record(result, label: str) -> None:
        m = result.metrics
        rows.append({"system": label, "protocol": result.protocol, "queries": result.queries, "entries": result.settings["entries"], "acc@1": m["acc@1"], "acc@5": m["acc@5"],
                     "recall@64": m["recall@64"], "acc@1_normalized": m["acc@1_normalized"],
                     "mentions_per_second": result.timings["mentions_per_second"]})  # fmt: skip
        print(f"{label:<28} {result.protocol:<7} acc@1 {100 * m['acc@1']:.1f}  acc@5 {100 * m['acc@5']:.1f}  "
              f"R@64 {100 * m['recall@64']:.1f}", flush=True)  # fmt: skip

    for protocol in args.protocols:
        run = protocol_settings(args, protocol)  # the flags given, the protocol's reference for the rest
        settings[protocol] = run
        fmt = formats[protocol]
        t = time.perf_counter()
        base = load_encoder(run.model)
        prepare_linking_model(base, fmt)
        pooled = (", mention pooled" if fmt.mention_pooling else "") + (", abbreviations" if fmt.abbreviations else "")
        if run.baselines:
            record(evaluate_linking(run.data, "test", encoder=None, protocol=protocol, show_progress=False), "BM25")
        # one vector per concept (title + synonyms + definition) instead of per name
        if protocol == "raw" and run.baselines:
            record(evaluate_linking(run.data, "test", encoder=base, protocol=protocol, fmt=fmt,
                                    entity_vectors="concepts"), f"{who}, {fresh}{pooled}, per concept")  # fmt: skip
        timings[f"{protocol}: baselines"] = time.perf_counter() - t

        # mine with the current model (the untrained one first), then train through the one trainer from the
        # saved start model (its format and markers travel with it); a --trained run trains nothing
        current, start_dir = base, None if run.trained else base.save(run.output / f"start-{protocol}")
        documents = folder_documents(run.data, fmt)  # the abstracts, where abbreviations are defined
        queries = training_queries(
            mentions, fmt, base.query_tower.tokenizer, parts=protocol == "biosyn", documents=documents
        )
        # the names mined from: BioSyn's test dictionary holds the dev mention strings, so a run that
        # holds dev out mines from its dev dictionary, and the test rows get an index of their own
        mined_from_dev_dictionary = held_out and protocol == "biosyn"
        names = biosyn_dev_dictionary(run.data) if mined_from_dev_dictionary else read_names(names_file[protocol])

        # the indexes test and dev evaluations search: the mining one where it holds their names, else
        # the same model's index over them, built once per mining index
        on_test = _SameModelIndex(lambda path=names_file[protocol]: read_names(path), fmt,
                                  reusable=not mined_from_dev_dictionary)  # fmt: skip
        on_dev = _SameModelIndex(lambda data=run.data: biosyn_dev_dictionary(data), fmt,
                                 reusable=protocol == "raw" or mined_from_dev_dictionary)  # fmt: skip

        def reloaded(folder: Path, names: list = names, fmt: Any = fmt) -> tuple[Any, Any]:
            """A trained linker loaded with its format, and its index over the protocol's names."""
            encoder = load_encoder(str(folder))
            prepare_linking_model(encoder)
            return encoder, EntityIndex(encoder, names, max_length=fmt.entity_max_length)

        index = None  # the current model's vectors of the names: mined from, then evaluated on
        if not run.trained or run.baselines:  # a --trained run still puts the untrained rows in its table
            index = EntityIndex(current, names, max_length=fmt.entity_max_length)  # the untrained model's
            record(evaluate_linking(run.data, "test", encoder=base, protocol=protocol, fmt=fmt, index=on_test(index)),
                   f"{who}, {fresh}{pooled}")  # fmt: skip
            if protocol == "raw" and run.baselines:  # the data README's P3: the mention alone (65.9 / 78.2)
                record(evaluate_linking(run.data, "test", encoder=base, protocol=protocol, index=on_test(index),
                                        fmt=LinkingFormat(context=False, entity_max_length=32)),
                       f"{who}, {fresh}, mention only")  # fmt: skip
        if run.synonym_pretraining and not run.trained:  # SapBERT's self-alignment on the names first
            assert index is not None  # the untrained model's
            t = time.perf_counter()
            aligned = synonym_queries(names, per_concept=run.synonym_pretraining, seed=run.seed)
            examples, report = linking_examples(aligned, index, num_negatives=run.num_mined)
            data_file = write_training_rows(run.output / f"{protocol}-synonyms.jsonl", examples)
            print(f"mined ({protocol}, synonyms): {report}", flush=True)
            trained = train(_config(run, fmt, start_dir, data_file, run.output / f"synonyms-{protocol}",
                                    run.synonym_epochs, run.seed, num_negatives=run.synonym_negatives))  # fmt: skip
            timings[f"{protocol}: synonym pretraining"] = time.perf_counter() - t
            start_dir = trained.model_dir
            current, index = reloaded(trained.model_dir)
            record(evaluate_linking(run.data, "test", encoder=current, protocol=protocol, index=on_test(index)),
                   f"{who} + synonym pretraining{pooled}")  # fmt: skip
        for round_ in range(1, 0 if run.trained else run.rounds + 1):
            suffix = "" if round_ == 1 else f"-round{round_}"
            t = time.perf_counter()
            assert index is not None  # the current model's
            examples, report = linking_examples(queries, index, num_negatives=run.num_mined,
                                                positive_depth=run.positive_depth)  # fmt: skip
            data_file = write_training_rows(run.output / f"{protocol}-train{suffix}.jsonl", examples)
            timings[f"{protocol}: mining{suffix}"] = time.perf_counter() - t
            print(f"mined ({protocol}, round {round_}): {report}", flush=True)
            config = _config(run, fmt, start_dir, data_file, run.output / f"train-{protocol}{suffix}", run.epochs,
                             run.seed + round_ - 1, dev_protocol=protocol if held_out else None,
                             positives_per_query=run.positives_per_query)  # fmt: skip
            trained = train(config)
            timings[f"{protocol}: training{suffix}"] = trained.wall_seconds
            if held_out:  # the epoch with the best dev acc@1 (early stopping)
                dev_curves[f"{protocol}{suffix}"] = [
                    v for _, v in read_log(Path(config.run.output) / "logs")["dev/acc@1"]
                ]
                print(f"dev acc@1 by epoch ({protocol}{suffix}): {dev_curves[f'{protocol}{suffix}']}", flush=True)
            trained_dirs[protocol] = start_dir = trained.best_model_dir or trained.model_dir
            current, index = reloaded(start_dir)
            label = f"{who}, fine-tuned{pooled}" + (f" (round {round_})" if run.rounds > 1 else "")
            record(evaluate_linking(run.data, "test", encoder=current, protocol=protocol, index=on_test(index)), label)
        if run.trained:
            current, index = reloaded(run.trained)
            record(evaluate_linking(run.data, "test", encoder=current, protocol=protocol, index=on_test(index)),
                   f"{who}, fine-tuned{pooled} ({run.trained})")  # fmt: skip
        model = current
        if run.lexical_weights:
            t = time.perf_counter()
            weight, dev_sweeps[protocol] = _choose_on_dev(
                run, protocol, model, on_dev(index), "sparse weight", run.lexical_weights,
                lambda w: {"lexical_weight": w},
            )  # fmt: skip
            timings[f"{protocol}: sparse weight on dev"] = time.perf_counter() - t
            record(evaluate_linking(run.data, "test", encoder=model, protocol=protocol, index=on_test(index),
                                    lexical_weight=weight),
                   f"{who}, fine-tuned{pooled} + sparse (weight {weight:g}, chosen on dev)")  # fmt: skip
        if run.rerank or run.reranker:
            t = time.perf_counter()
            reranker = _reranker(run, protocol, queries, index, fmt)
            timings[f"{protocol}: cross-encoder" + ("" if run.reranker else " (mining and training)")] = (
                time.perf_counter() - t
            )
            record(evaluate_linking(run.data, "test", encoder=model, protocol=protocol, index=on_test(index),
                                    reranker=reranker, rerank_top_k=run.rerank_top_k),
                   f"{who}, fine-tuned{pooled} > cross-encoder (best {run.rerank_top_k} names)")  # fmt: skip
            if run.rerank_weights:  # the reranker as a second opinion: fused with the first stage, weight on dev
                t = time.perf_counter()
                memo: dict[tuple[str, str], float] = {}  # the dev index's pairs, scored once for every weight

                def fused(
                    weight: float, memo: dict = memo, reranker: Any = reranker, top_k: int = run.rerank_top_k
                ) -> dict[str, Any]:
                    return {"reranker": reranker, "rerank_top_k": top_k, "rerank_fusion": "weighted",
                            "rerank_weights": (1.0, weight), "rerank_memo": memo} if weight else {}  # fmt: skip

                weight, rerank_sweeps[protocol] = _choose_on_dev(
                    run, protocol, model, on_dev(index), "reranker weight", run.rerank_weights, fused
                )  # fmt: skip
                timings[f"{protocol}: reranker weight on dev"] = time.perf_counter() - t
                record(evaluate_linking(run.data, "test", encoder=model, protocol=protocol, index=on_test(index),
                                        **fused(weight, memo={})),
                       f"{who}, fine-tuned{pooled} + cross-encoder (weight {weight:g} of 1, chosen on dev)")  # fmt: skip
        if protocol == "raw" and run.aliases:  # BioSyn's test-dictionary rule: train and dev mentions as names
            record(evaluate_linking(run.data, "test", encoder=model, protocol=protocol, alias_splits=("train", "dev")),
                   f"{who}, fine-tuned{pooled}, + train/dev mentions as names")  # fmt: skip
        if protocol == "raw":
            record(evaluate_linking(run.data, "test", encoder=model, protocol=protocol, entity_vectors="concepts"),
                   f"{who}, fine-tuned{pooled}, per concept")  # fmt: skip
            if run.throughput:
                throughput = _throughput(run, model, names_file["raw"])
                timings |= {f"throughput: {k}": v for k, v in throughput.items()}

    for protocol, folder in trained_dirs.items():
        target = args.output / ("model" if protocol == "raw" else "biosyn-model")
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(folder, target)
    wall = time.perf_counter() - started
    table = ["| system | protocol | entries | acc@1 | acc@5 | recall@64 | normalised acc@1 | mentions/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    table += [f"| {r['system']} | {r['protocol']} | {r['entries']:,} | {100 * r['acc@1']:.1f} | {100 * r['acc@5']:.1f} | "
              f"{100 * r['recall@64']:.1f} | {100 * r['acc@1_normalized']:.1f} | {r['mentions_per_second']:.0f} |"
              for r in rows]  # fmt: skip
    counts = sorted({r["queries"] for r in rows})
    print(f"\n{args.data.name} test ({' / '.join(f'{n:,}' for n in counts)} mentions)\n\n" + "\n".join(table))
    print("\ntimings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()) + f"; total wall {wall:.0f}")
    (args.output / "results.md").write_text("\n".join(table) + "\n")
    summary = {"rows": rows, "timings_s": timings, "wall_s": wall, "dev_acc@1_by_sparse_weight": dev_sweeps,
               "dev_acc@1_by_reranker_weight": rerank_sweeps,
               "dev_acc@1_by_epoch": dev_curves, "train_splits": args.train_splits,
               "settings": {protocol: {k: str(v) if isinstance(v, Path) else v for k, v in vars(run).items()}
                            for protocol, run in settings.items()}}  # fmt: skip
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def _config(
    args: argparse.Namespace,
    fmt: Any,
    start: Path | None,
    data_file: Path,
    output: Path,
    epochs: int,
    seed: int,
    num_negatives: int | None = None,
    dev_protocol: str | None = None,
    positives_per_query: int = 1,
) -> Any:
    """The trainer's settings for the dense linker: InfoNCE over in-batch and mined hard negatives
    (marginal over up to ``positives_per_query`` names of the gold concept when above 1);
    with ``dev_protocol``, dev acc@1 under it after each epoch, the best epoch's model kept."""
    from retrievekit.training import load_config

    assert start is not None, "a --trained run trains nothing"
    return load_config(
        overrides={
            "model": str(start), "kind": "dense", "data": [str(data_file)], "batch_size": args.batch_size,
            "num_negatives": args.num_negatives if num_negatives is None else num_negatives,
            "query_max_length": fmt.query_max_length,
            "document_max_length": fmt.entity_max_length, "learning_rate": args.learning_rate,
            "epochs": epochs, "warmup_ratio": 0.1, "loss": "infonce", "seed": seed,
            "temperature": args.temperature, "symmetric": args.symmetric,
            "positives_per_query": positives_per_query, "marginal": positives_per_query > 1,
            "separate_towers": args.separate_towers, "output": str(output), "checkpoint_every": 50, "resume": True,
        } | ({"dev_linking": str(args.data), "dev_linking_protocol": dev_protocol, "patience": epochs}
             if dev_protocol else {})
    )  # fmt: skip


class _SameModelIndex:
    """The index an evaluation searches, given the current mining index: that one where it already
    holds the evaluation's names (``reusable``), else its model's index over ``names()``, built once
    per mining index."""

    def __init__(self, names: Any, fmt: Any, *, reusable: bool) -> None:
        self.names, self.fmt, self.reusable = names, fmt, reusable
        self.built_for: Any = None
        self.built: Any = None

    def __call__(self, index: Any) -> Any:
        from retrievekit.linking import EntityIndex

        if self.reusable:
            return index
        if self.built_for is not index:
            self.built_for = index
            self.built = EntityIndex(index.encoder, self.names(), max_length=self.fmt.entity_max_length)
        return self.built


def _choose_on_dev(
    args: argparse.Namespace, protocol: str, model: Any, dev_index: Any, what: str, values: list[float], options: Any
) -> tuple[float, dict[float, float]]:
    """The value of ``values`` (and 0) whose evaluation ``options(value)`` has the best dev acc@1
    (ties to the smaller), and each value's dev acc@1 (BioSyn tunes its sparse weight on dev).
    ``dev_index``: ``biosyn``, BioSyn's dev dictionary (its test dictionary less the dev mention
    strings); ``raw``, the test's names."""
    from retrievekit.linking import evaluate_linking

    if "dev" in args.train_splits:
        print("note: the model was trained on dev, so its dev acc@1 flatters the dense side; "
              "--train-splits train holds dev out", flush=True)  # fmt: skip
    found: dict[float, float] = {}
    for value in sorted({0.0, *values}):
        result = evaluate_linking(args.data, "dev", encoder=model, protocol=protocol, index=dev_index,
                                  show_progress=False, **options(value))  # fmt: skip
        found[value] = result.metrics["acc@1"]
        print(f"dev ({protocol}) {what} {value:g}: acc@1 {100 * found[value]:.1f}", flush=True)
    return max(found, key=lambda v: (found[v], -v)), found


def _reranker(args: argparse.Namespace, protocol: str, queries: list, index: Any, fmt: Any) -> Any:
    """BLINK's second stage: the cross-encoder --reranker names, else the one :func:`_train_reranker`
    trains, reading a mention and a name together."""
    from retrievekit.models.cross_encoder import load_cross_encoder

    folder = args.reranker or _train_reranker(args, protocol, queries, index, fmt)
    return load_cross_encoder(folder, max_length=fmt.query_max_length + fmt.entity_max_length)


def _train_reranker(args: argparse.Namespace, protocol: str, queries: list, index: Any, fmt: Any) -> Path:
    """A cross-encoder trained from --model on the same queries, each with a name of its gold concept
    against --rerank-negatives of the names the fine-tuned model ranks highest for it (group softmax,
    FlagEmbedding's reranker loss), through the one trainer; its model folder."""
    from retrievekit.linking.text import register_markers
    from retrievekit.linking.training import linking_examples
    from retrievekit.models.cross_encoder import build_cross_encoder
    from retrievekit.training import load_config, train, write_training_rows

    examples, report = linking_examples(queries, index, num_negatives=args.num_mined)
    print(f"mined for the cross-encoder ({protocol}): {report}", flush=True)
    data_file = write_training_rows(args.output / f"{protocol}-rerank-train.jsonl", examples)
    # the start: --model under a new score head, its tokenizer reading each marker as one token
    start = build_cross_encoder(args.model, seed=args.seed)
    register_markers([start.tower], fmt.markers)
    start_dir = start.save(args.output / f"start-rerank-{protocol}")
    config = load_config(
        overrides={
            "model": str(start_dir), "kind": "cross_encoder", "data": [str(data_file)],
            "batch_size": args.rerank_batch_size, "num_negatives": args.rerank_negatives,
            "query_max_length": fmt.query_max_length, "document_max_length": fmt.entity_max_length,
            "learning_rate": args.rerank_learning_rate, "epochs": args.rerank_epochs, "warmup_ratio": 0.1,
            "loss": "group_softmax", "seed": args.seed, "output": str(args.output / f"rerank-{protocol}"),
            "checkpoint_every": 50, "resume": True,
        }
    )  # fmt: skip
    trained = train(config)
    print(f"cross-encoder: {trained.steps} steps in {trained.wall_seconds:.0f} s", flush=True)
    return trained.model_dir


def _throughput(args: argparse.Namespace, model: Any, names_file: Path) -> dict[str, float]:
    """Mentions/s linking the test mentions with the trained linker, on each backend, against
    sentence-transformers + FAISS on each of its backends (see ``link_throughput.py``)."""
    from link_throughput import linking_throughput

    return linking_throughput(model.source, args.data, names_file, repeats=args.repeats)


if __name__ == "__main__":
    main()
