"""Encoding throughput: retrievekit against sentence-transformers, side by side in one process.

    python benchmarks/encode.py --docs 400 --batch-size 32 --max-length 256 --repeats 3

SciFact documents (title + text, the first --docs of the corpus), all-MiniLM-L6-v2 (bundled).
Backends are run in turns, each --repeats times, and the best time of each is kept, so machine noise
hits them alike. sentence-transformers' ONNX backends need `optimum-onnx[onnxruntime]` (which pins
transformers < 4.58: run this under the environment `benchmarks/make_peer_env.sh` builds); without it
they are reported as not measured. The peer's quantised build is the one for this CPU (avx512_vnni,
avx512, avx2 or arm64).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from _peer import st_onnx_models


class PeakRss:
    """Samples this process's resident memory while a block runs (Linux /proc)."""

    def __enter__(self) -> PeakRss:
        self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Backend:
    name: str
    encode: Callable[[list[str]], np.ndarray]
    seconds: list[float] = field(default_factory=list)
    peak_rss: int = 0
    vectors: np.ndarray | None = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from retrievekit import load_dataset, load_encoder, resolve_model

    docs = [d.full_text for d in load_dataset(args.dataset, download=False).iter_corpus()][: args.docs]
    workdir = Path(tempfile.mkdtemp(prefix="rk-bench-"))
    model_dir, peer_dir = workdir / "minilm", workdir / "minilm-peer"
    for target in (model_dir, peer_dir):  # each library writes its exports beside its own copy
        shutil.copytree(resolve_model("minilm"), target)

    st = SentenceTransformer(str(model_dir), device="cpu")
    st.max_seq_length = args.max_length
    ours = load_encoder(model_dir, device="cpu", max_length=args.max_length)
    started = time.perf_counter()
    ours_onnx = load_encoder(model_dir, backend="onnx", quantize="int8", max_length=args.max_length)
    export_seconds = time.perf_counter() - started
    tokens = sum(
        min(len(ids), args.max_length)
        for ids in ours.document_tower.tokenizer(docs, truncation=True, max_length=args.max_length)["input_ids"]
    )

    backends = [
        Backend("sentence-transformers torch fp32", lambda x: st.encode(x, batch_size=args.batch_size)),
        Backend("retrievekit torch fp32", lambda x: ours.encode_documents(x, batch_size=args.batch_size)),
        Backend("retrievekit onnx int8", lambda x: ours_onnx.encode_documents(x, batch_size=args.batch_size)),
    ]
    peer_note = ""
    try:
        peers = st_onnx_models(lambda **options: SentenceTransformer(str(peer_dir), device="cpu", **options), peer_dir)
        for position, (name, peer) in enumerate(peers.items(), start=1):
            peer.max_seq_length = args.max_length
            backends.insert(
                position,
                Backend(
                    f"sentence-transformers {name}", lambda x, peer=peer: peer.encode(x, batch_size=args.batch_size)
                ),
            )
    except Exception as exc:  # the peer's optional backend; its absence is reported, not hidden
        peer_note = f"sentence-transformers ONNX not measured: {type(exc).__name__}: {exc}"

    for backend in backends:  # warm-up: first-call allocations, thread pools
        backend.encode(docs[: args.batch_size])
    for repeat in range(args.repeats):
        # every backend once per round, the order reversed every other round: none always runs first
        for backend in backends if repeat % 2 == 0 else backends[::-1]:
            with PeakRss() as rss:
                started = time.perf_counter()
                vectors = backend.encode(docs)
                backend.seconds.append(time.perf_counter() - started)
            backend.peak_rss = max(backend.peak_rss, rss.peak)
            backend.vectors = np.asarray(vectors, dtype=np.float32)

    reference = backends[0]
    base = min(reference.seconds)
    print(
        f"\n{len(docs)} SciFact documents, {tokens:,} tokens after truncation to {args.max_length}, batch {args.batch_size}, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, best of {args.repeats}"
    )
    print(f"retrievekit ONNX export + int8 quantisation (one-time, cached): {export_seconds:.1f} s")
    if peer_note:
        print(peer_note)
    print()
    print(
        "| backend | docs/s | tokens/s | peak RSS (MiB) | × ST torch fp32 | max abs diff vs ST fp32 | mean cosine vs ST fp32 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for backend in backends:
        best = min(backend.seconds)
        diff = np.abs(backend.vectors - reference.vectors).max()
        cosine = np.mean(
            np.sum(backend.vectors * reference.vectors, axis=1)
            / (np.linalg.norm(backend.vectors, axis=1) * np.linalg.norm(reference.vectors, axis=1))
        )
        print(
            f"| {backend.name} | {len(docs) / best:.1f} | {tokens / best:,.0f} | {backend.peak_rss / 2**20:,.0f} | {base / best:.2f}× | {diff:.2e} | {cosine:.4f} |"
        )
    fastest_peer = min(
        (b for b in backends if b.name.startswith("sentence-transformers")), key=lambda b: min(b.seconds)
    )
    onnx_best = min(next(b for b in backends if b.name == "retrievekit onnx int8").seconds)
    print(
        f"\nretrievekit onnx int8 vs the fastest sentence-transformers backend ({fastest_peer.name}): {min(fastest_peer.seconds) / onnx_best:.2f}×"
    )
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
