"""SIGKILL at random points of a real run (the CLI, the embedded model, the default shared store, the tests'
tiny mirror), rerun until it finishes: 0 lost and 0 duplicated samples, and the final rerun calls the
model only for what was not yet stored.

Kill points are drawn with a fixed seed: some by time (during start-up, model loading or the first
generations), some by progress (right after the store reaches a random row count, plus a random delay).
"""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cotbench.backends.threads import openmp_wait_defaults

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
N_ITEMS, SETTINGS = 8, ("zs_direct", "zs_cot")
TOTAL = N_ITEMS * len(SETTINGS)
KILLS = 5


def run_env() -> dict:
    """The test's environment (its own XDG_CACHE_HOME, hence store), with the OpenMP wait settings
    (cotbench.backends.threads)."""
    return openmp_wait_defaults(dict(os.environ))


def command(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "cotbench", "run", "--datasets", "gsm8k", "--settings", *SETTINGS,
            "--limit", str(N_ITEMS), "--data-dir", str(data), "--max-tokens-direct", "8",
            "--max-tokens-cot", "24", "--out", str(out), "--no-progress"]


def stored_keys(db: Path, readonly: bool = True) -> set[str]:
    """Keys in the store; while the run is alive we read through a read-only connection (WAL allows it)."""
    if not db.exists():
        return set()
    uri = f"file:{db}?mode=ro" if readonly else f"file:{db}"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=30)
        try:
            return {k for (k,) in con.execute("SELECT key FROM generations")}
        finally:
            con.close()
    except sqlite3.OperationalError:
        if readonly:  # store not created yet, or its WAL index not there yet
            return set()
        raise


def kill_at_random_point(proc: subprocess.Popen, db: Path, rng: random.Random, mode: str) -> str:
    """SIGKILL ``proc`` at a random point; returns what happened (for the failure message)."""
    t0 = time.monotonic()
    deadline = t0 + 300
    if mode == "time":
        delay = rng.uniform(0.2, 3.0)
        try:
            proc.wait(delay)
            return f"finished before the kill at {delay:.2f}s"
        except subprocess.TimeoutExpired:
            pass
    else:
        target = len(stored_keys(db)) + rng.randint(1, 2)
        while len(stored_keys(db)) < target:
            if proc.poll() is not None:
                return "finished before reaching the kill point"
            assert time.monotonic() < deadline, "run made no progress for 300 s"
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.4))
    if proc.poll() is not None:
        return "finished just before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    return f"killed ({mode}) with {len(stored_keys(db, readonly=False))} stored after {time.monotonic() - t0:.1f}s"


def test_sigkill_at_random_points_then_resume(tiny_data, own_store, tmp_path):
    out = tmp_path / "run"
    db = own_store
    cmd = command(tiny_data, out)
    rng = random.Random(20240923)
    history: list[str] = []
    seen: set[str] = set()
    finished = False
    for i in range(KILLS):
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=run_env())
        try:
            history.append(kill_at_random_point(proc, db, rng, "time" if i % 2 == 0 else "progress"))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        if proc.returncode == 0:
            finished = True
            break
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, err[-2000:])
        keys = stored_keys(db, readonly=False)
        assert seen <= keys, f"lost stored samples after kill {i + 1}: {history}"
        assert len(keys) <= TOTAL
        seen = keys
        # a killed run never leaves a half-written output behind (outputs are written whole, then renamed)
        if (out / "samples.jsonl").exists():
            [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert not finished or len(history) > 1, f"the first run finished before any kill: {history}"
    assert 0 < len(seen) < TOTAL or finished, f"no kill landed mid-generation: {history}"

    before_final = stored_keys(db, readonly=False)
    print("kills:", history, "| stored before the final rerun:", len(before_final))  # shown on failure / with -s
    final = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env=run_env())
    assert final.returncode == 0, final.stderr[-3000:]

    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    ids = [(r["dataset"], r["setting"], r["example_id"], r["sample_index"]) for r in rows]
    keys = [r["key"] for r in rows]
    assert len(rows) == TOTAL, history  # none lost
    assert len(set(ids)) == TOTAL and len(set(keys)) == TOTAL, history  # none duplicated
    assert set(ids) == {("gsm8k", s, f"gsm8k/{i}", 0) for s in SETTINGS for i in range(N_ITEMS)}
    assert all(r["response"] is not None and r["finish_reason"] in ("stop", "length") for r in rows)
    store = stored_keys(db, readonly=False)
    con = sqlite3.connect(db)
    n_rows = con.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    assert n_rows == len(store) == TOTAL and store == set(keys)  # the store holds each distinct request once
    man = json.loads((out / "manifest.json").read_text())
    stats = man["run_stats"]
    # the final rerun called the model only for what the killed runs had not stored
    assert stats["calls_cached"] == len(before_final), (stats, history)
    assert stats["calls_made"] == TOTAL - len(before_final) == man["backend_stats"]["calls"], (stats, history)
    assert before_final <= store
