"""Two processes saving one index folder take turns, a reader always sees a whole version, and a
FAISS index can be searched from one thread while another adds."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from retrievekit.index import ExactIndex, load_index
from retrievekit.index.base import IdTable
from retrievekit.index.faiss_index import HnswIndex

pytest.importorskip("faiss")

SAVER = """
import sys, numpy as np
from retrievekit.index import ExactIndex
seed, target, rounds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(seed)
for i in range(rounds):
    index = ExactIndex(8)
    n = int(rng.integers(5, 50))
    index.add([f"{seed}-{j}" for j in range(n)], rng.normal(size=(n, 8)).astype(np.float32))
    index.save(target)
"""

READER = """
import sys
from retrievekit.index import load_index
target, rounds = sys.argv[1], int(sys.argv[2])
for i in range(rounds):
    index = load_index(target)
    assert len(index) == len(index.table.ids) and index.search(index._vectors[:1], k=1)[0].ids
"""


def test_two_processes_saving_one_folder_and_a_reader(tmp_path):
    target = tmp_path / "shared-index"
    seed_index = ExactIndex(8)
    seed_index.add(["x"], np.ones((1, 8), dtype=np.float32))
    seed_index.save(target)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SAVER, str(seed), str(target), "400"], stderr=subprocess.PIPE, text=True
        )
        for seed in (1, 2)
    ]
    processes.append(
        subprocess.Popen([sys.executable, "-c", READER, str(target), "400"], stderr=subprocess.PIPE, text=True)
    )
    errors = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in processes]
    assert all(code == 0 for code, _ in errors), errors
    final = load_index(target)
    assert len(final) > 0 and {i.split("-")[0] for i in final.table.ids} <= {"1", "2"}
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "shared-index" and not p.name.endswith(".lock")]
    assert leftovers == []


def test_hnsw_search_while_another_thread_adds():
    rng = np.random.default_rng(0)
    index = HnswIndex(16, "dot", M=8, ef_construction=40, ef_search=32)
    index.add([f"seed{i}" for i in range(200)], rng.normal(size=(200, 16)).astype(np.float32))
    batches = [rng.normal(size=(100, 16)).astype(np.float32) for _ in range(20)]
    queries = rng.normal(size=(8, 16)).astype(np.float32)
    failures: list[BaseException] = []
    done = threading.Event()

    def add() -> None:
        try:
            for n, batch in enumerate(batches):
                index.add([f"b{n}-{i}" for i in range(len(batch))], batch)
        except BaseException as exc:
            failures.append(exc)
        finally:
            done.set()

    def search() -> None:
        try:
            while not done.is_set():
                assert all(len(h) == 10 for h in index.search(queries, k=10))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=add)] + [threading.Thread(target=search) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures and len(index) == 200 + 20 * 100


@pytest.mark.parametrize("make", [lambda: ExactIndex(16), lambda: HnswIndex(16, "dot", M=8)], ids=["exact", "hnsw"])
def test_a_search_reads_its_ids_while_it_holds_the_read_lock(make, monkeypatch):
    """An add extends the id list and a compaction renumbers it: ids read after the lock is let go
    can be torn (numpy saw the list change during its copy) or belong to another table."""
    index = make()
    index.add([f"d{i}" for i in range(30)], np.random.default_rng(1).normal(size=(30, 16)).astype(np.float32))
    readers_at_lookup: list[int] = []
    original = IdTable.lookup

    def lookup(table: IdTable, positions: np.ndarray) -> list[str]:
        readers_at_lookup.append(index.lock._readers)
        return original(table, positions)

    monkeypatch.setattr(IdTable, "lookup", lookup)
    hits = index.search(np.eye(16, dtype=np.float32)[:3], k=5)
    assert readers_at_lookup and all(count == 1 for count in readers_at_lookup)
    assert [len(h) for h in hits] == [5, 5, 5]
