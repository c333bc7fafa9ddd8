"""Linking throughput on NCBI-disease: retrievekit's entity linker against sentence-transformers
``encode`` + a FAISS inner-product index, each on every backend it has.

    python benchmarks/link_throughput.py                      # torch backends only
    benchmarks/make_peer_env.sh && benchmarks/.venv-peer/bin/python benchmarks/link_throughput.py

Both sides link the 960 test mentions (the mention in its context, the model's linking format)
over the same name vectors (the 76,237 MEDIC names of dictionary.tsv, encoded once by the float32
graph): a run is query encoding plus a top-64 search. retrievekit runs on torch float32, ONNX float32
(``--quantize none`` on the command line) and ONNX int8; sentence-transformers on torch and, where
optimum is installed (the environment ``benchmarks/make_peer_env.sh`` builds), on ONNX float32 and
its fastest int8 export for this CPU. Every engine runs in this one process with the same threads,
in an order reversed every other round, best of --repeats; the ratios are against the peer's default
(torch) and against its fastest backend.
--model takes a trained linker folder (its saved linking format is used) or ``minilm``, which is
read with the raw protocol's format (BLINK's markers, 64 query tokens, 32 name tokens).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from _peer import st_onnx_models
from _timing import best_of_alternating

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ncbi-disease"
DEPTH = 64  # names returned per mention, as the recall@64 of the evaluation


def linking_throughput(
    model_dir: str | Path, data: Path, names_file: Path, *, repeats: int = 2, batch_size: int = 128
) -> dict[str, float]:
    """Mentions/s of every engine (and ``scann_recall@10``, ``ratio`` against the peer's torch
    backend, ``ratio_fastest`` of retrievekit's fastest against the peer's fastest); prints them."""
    import faiss
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from retrievekit.linking import EntityIndex, EntityLinker, read_mentions, read_names
    from retrievekit.linking.evaluate import folder_documents
    from retrievekit.linking.text import load_linking_model

    workdir = Path(tempfile.mkdtemp(prefix="rk-link-throughput-"))
    ours_dir, peer_dir = workdir / "ours", workdir / "peer"
    for target in (ours_dir, peer_dir):  # each library writes its ONNX exports beside its own copy
        shutil.copytree(model_dir, target)
    try:
        linkers: dict[str, Any] = {}
        encoders = {
            "torch": load_linking_model(ours_dir),
            "onnx fp32": load_linking_model(ours_dir, backend="onnx", quantize=None),
            "onnx int8": load_linking_model(ours_dir, backend="onnx", quantize="int8"),
        }
        encoder, fmt = encoders["onnx fp32"]
        mentions = read_mentions(data / "mentions" / "test.jsonl")
        names = read_names(names_file)
        started = time.perf_counter()
        vectors = np.asarray(
            encoder.encode_documents([n.name for n in names], max_length=fmt.entity_max_length), np.float32
        )
        print(f"{len(names):,} names encoded once (onnx fp32) in {time.perf_counter() - started:.0f} s", flush=True)
        for backend, (model, model_fmt) in encoders.items():
            linkers[f"retrievekit {backend}"] = EntityLinker(EntityIndex(model, names, vectors=vectors), model_fmt)
        texts = linkers["retrievekit torch"].query_texts(mentions, folder_documents(data, fmt))
        scann_recall = float("nan")
        try:
            scann = EntityLinker(EntityIndex(encoders["torch"][0], names, vectors=vectors, index_type="scann"), fmt)
        except Exception as exc:  # scann is an optional extra
            print(f"ScaNN not measured: {type(exc).__name__}: {exc}", flush=True)
        else:
            exact_hits = linkers["retrievekit torch"].link_texts(texts, 10, group="names", batch_size=batch_size)
            scann_hits = scann.link_texts(texts, 10, group="names", batch_size=batch_size)
            scann_recall = float(
                np.mean([len(set(a.texts) & set(b.texts)) / 10 for a, b in zip(exact_hits, scann_hits, strict=True)])
            )
            print(f"ScaNN (default settings) recall@10 of the exact top 10 names: {scann_recall:.4f}", flush=True)
            linkers["retrievekit torch + scann"] = scann

        flat = faiss.IndexFlatIP(vectors.shape[1])
        flat.add(vectors)
        peers = {"torch": SentenceTransformer(str(peer_dir), device="cpu")}
        try:
            peers |= st_onnx_models(
                lambda **options: SentenceTransformer(str(peer_dir), device="cpu", **options), peer_dir
            )
        except Exception as exc:  # the peer's optional backends; their absence is reported, not hidden
            print(f"sentence-transformers ONNX not measured: {type(exc).__name__}: {exc}", flush=True)
        for peer in peers.values():
            peer.max_seq_length = fmt.query_max_length

        def ours(linker: Any) -> Any:
            return lambda: linker.link_texts(texts, DEPTH, group="names", batch_size=batch_size)

        def theirs(peer: Any) -> Any:
            def run() -> Any:
                queries = peer.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
                return flat.search(np.asarray(queries, dtype=np.float32), DEPTH)

            return run

        runs = {name: ours(linker) for name, linker in linkers.items()}
        runs |= {f"sentence-transformers {backend} + faiss": theirs(peer) for backend, peer in peers.items()}
        best, _ = best_of_alternating(runs, repeats)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    rates = {name: len(texts) / seconds for name, seconds in best.items()}
    peer_default = rates["sentence-transformers torch + faiss"]
    peer_fastest = max((n for n in rates if n.startswith("sentence-transformers")), key=rates.__getitem__)
    ours_fastest = max((n for n in rates if n.startswith("retrievekit") and "scann" not in n), key=rates.__getitem__)
    pooled = "span-pooled" if fmt.mention_pooling else "mean-pooled"
    print(
        f"\n{len(texts)} test mentions ({fmt.query_max_length} query tokens, {pooled} on our side), top {DEPTH} "
        f"of {len(names):,} names, batch {batch_size}, torch {torch.__version__} with {torch.get_num_threads()} "
        f"threads, {os.cpu_count()} CPUs, best of {repeats}\n"
    )
    print("| engine | mentions/s | × sentence-transformers torch |")
    print("|---|---:|---:|")
    for name, rate in sorted(rates.items(), key=lambda item: -item[1]):
        print(f"| {name} | {rate:,.0f} | {rate / peer_default:.2f}× |")
    ratio_fastest = rates[ours_fastest] / rates[peer_fastest]
    print(f"\nfastest: {ours_fastest} {rates[ours_fastest]:,.0f} mentions/s against {peer_fastest} "
          f"{rates[peer_fastest]:,.0f} mentions/s ({ratio_fastest:.2f}×)")  # fmt: skip
    return rates | {
        "ratio": rates["retrievekit torch"] / peer_default,
        "ratio_fastest": ratio_fastest,
        "scann_recall@10": scann_recall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm", help="a linker folder, or minilm (the raw protocol's format)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--names", type=Path, default=None, help="names file (default: DATA/dictionary.tsv)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    from retrievekit import resolve_model
    from retrievekit.linking.text import LinkingFormat, load_linking_model

    model_dir = Path(args.model)
    with tempfile.TemporaryDirectory(prefix="rk-linker-") as scratch:
        if args.model == "minilm":  # the untrained model with the raw protocol's format, saved as a linker
            encoder, _ = load_linking_model(resolve_model("minilm"), fmt=LinkingFormat(entity_max_length=32))
            model_dir = encoder.save(Path(scratch) / "minilm-linker")
        linking_throughput(
            model_dir, args.data, args.names or args.data / "dictionary.tsv",
            repeats=args.repeats, batch_size=args.batch_size,
        )  # fmt: skip


if __name__ == "__main__":
    main()
