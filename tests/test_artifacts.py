from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from retrievekit.artifacts import Manifest, atomic_directory, read_manifest, write_manifest
from retrievekit.errors import ArtifactError


def test_manifest_round_trip_and_checks(tmp_path):
    write_manifest(tmp_path, Manifest(kind="thing", config={"a": 1}, fingerprint="sha256:x", family="dense"))
    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert {"format_version", "kind", "family", "retrievekit_version", "config", "fingerprint", "created_at"} <= set(
        raw
    )
    manifest = read_manifest(tmp_path, expected_kind="thing")
    assert manifest.config == {"a": 1} and manifest.family == "dense"
    with pytest.raises(ArtifactError, match="holds a 'thing', expected index"):
        read_manifest(tmp_path, expected_kind="index")
    raw["format_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="format_version 99 is newer"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_manifest(tmp_path)
    with pytest.raises(ArtifactError, match=r"no manifest.json"):
        read_manifest(tmp_path / "missing")


def test_failed_save_keeps_previous_artifact(tmp_path):
    target = tmp_path / "artifact"
    with atomic_directory(target) as staging:
        (staging / "data.txt").write_text("version 1")
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "data.txt").write_text("half of version 2")
        raise RuntimeError("disk full")
    assert (target / "data.txt").read_text() == "version 1"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".artifact.lock", "artifact"]  # partial sibling removed
    with pytest.raises(ArtifactError, match="already exists"), atomic_directory(target, overwrite=False):
        pass


def test_killed_save_keeps_previous_artifact(tmp_path):
    target = tmp_path / "artifact"
    with atomic_directory(target) as staging:
        (staging / "data.txt").write_text("version 1")
    ready = tmp_path / "ready"
    script = textwrap.dedent(
        f"""
        import pathlib, time
        from retrievekit.artifacts import atomic_directory
        with atomic_directory(pathlib.Path({str(target)!r})) as staging:
            (staging / "data.txt").write_text("half of version 2")
            pathlib.Path({str(ready)!r}).touch()
            time.sleep(60)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert process.poll() is None, "the saving process died before it was killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert (target / "data.txt").read_text() == "version 1"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".artifact.partial-")]
    assert len(leftovers) == 1  # the dead save's staging folder, never mistaken for the artifact
    with atomic_directory(target) as staging:  # a later save still works, and tidies the dead one's folder
        (staging / "data.txt").write_text("version 3")
    assert (target / "data.txt").read_text() == "version 3"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".artifact.") and p.suffix != ".lock"] == []


def test_a_previous_version_moved_aside_by_a_dead_save_is_put_back(tmp_path):
    from retrievekit.artifacts import _HOST

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid now belongs to no process
    target = tmp_path / "artifact"
    moved = tmp_path / f".artifact.old-{_HOST}-{dead.pid}-0123abcd"
    moved.mkdir()
    (moved / "data.txt").write_text("version 1")
    staging = tmp_path / f".artifact.partial-{_HOST}-{dead.pid}-4567cdef"
    staging.mkdir()
    live = tmp_path / f".artifact.partial-{_HOST}-{os.getpid()}-89abcdef"  # a save in progress: left alone
    live.mkdir()
    with atomic_directory(target) as fresh:
        assert (target / "data.txt").read_text() == "version 1"  # back in place before anything else
        (fresh / "data.txt").write_text("version 2")
    assert (target / "data.txt").read_text() == "version 2"
    assert not moved.exists() and not staging.exists() and live.exists()


def test_files_written_through_a_staging_sibling_tidy_a_dead_writer_s_leftovers(tmp_path):
    from retrievekit.artifacts import _HOST, atomic_write_text
    from retrievekit.models.npy_stream import NpyStreamWriter

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    vectors = tmp_path / "e.npy"
    half_encoded = tmp_path / f".e.npy.partial-{_HOST}-{dead.pid}-0123abcd"
    half_encoded.write_bytes(b"\x00" * 1024)
    with NpyStreamWriter(vectors, 2) as writer:
        writer.append(np.ones((3, 2), dtype=np.float32))
    assert np.load(vectors).shape == (3, 2) and not half_encoded.exists()
    text = tmp_path / "notes.txt"
    half_written = tmp_path / f".notes.txt.tmp-{_HOST}-{dead.pid}-4567cdef"
    half_written.write_text("half")
    atomic_write_text(text, "whole")
    assert text.read_text() == "whole\n" and not half_written.exists()


def test_scratch_folders_of_killed_runs_are_removed_by_the_next_run(tmp_path, monkeypatch):
    import subprocess
    import sys
    import tempfile

    from retrievekit.artifacts import _HOST, scratch_directory

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = tmp_path / f"retrievekit-eval-{_HOST}-{int(dead.stdout)}-abcd"
    alive = tmp_path / f"retrievekit-eval-{_HOST}-{os.getppid()}-efgh"  # a running process's: kept
    other = tmp_path / f"retrievekit-index-{_HOST}-{int(dead.stdout)}-ijkl"  # another purpose: its own run tidies
    for folder in (killed, alive, other):
        (folder / "corpus").mkdir(parents=True)
    with scratch_directory("eval") as scratch:
        assert scratch.parent == tmp_path and scratch.is_dir()
        assert not killed.exists() and alive.exists() and other.exists()
    assert not scratch.exists()
