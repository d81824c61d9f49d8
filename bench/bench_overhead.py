"""Harness overhead with a zero-latency backend: examples/s through load, render, store, extract, score, write.

The backend (:class:`cotbench.backends.table.TableBackend`) answers every request instantly with the gold
letter, so the wall time is cotbench's own work: reading the local mirror, rendering prompts, hashing
request keys, committing every response to SQLite (one transaction each, as in a real run), extracting,
scoring, and writing samples.jsonl / summary.csv / manifest.json. Target: ≥2,000 examples/s.

    python bench/bench_overhead.py                       # 10,000 MMLU items × zs_direct, 3 repetitions
    python bench/bench_overhead.py --n 2500 --settings zs_direct zs_cot fs_direct fs_cot
    python bench/bench_overhead.py --profile             # also print the top cProfile entries
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import time
from pathlib import Path

from _common import DATA_DIR, machine, median, write_json

from cotbench.backends.table import TableBackend
from cotbench.pipeline.config import build_config
from cotbench.pipeline.harness import run
from cotbench.pipeline.prompts import load_prompt_file, render
from cotbench.pipeline.settings import get_setting
from cotbench.tasks import get_task


def gold_table(n: int, settings: list[str], data_dir: Path) -> dict[str, str]:
    """Last user message -> a correct reply, so every example is scored right (and the check is real)."""
    task = get_task("mmlu")
    spec = load_prompt_file(task.prompt_file)
    table = {}
    for ex in task.load(data_dir, n):
        for s in settings:
            msgs = render(spec, ex, get_setting(s)).messages
            table[msgs[-1]["content"]] = f"The answer is ({ex.gold})."
    return table


def one_run(n: int, settings: list[str], data_dir: Path, table: dict[str, str], profile: bool) -> dict:
    backend = TableBackend(lambda r: table[r.messages[-1]["content"]])
    with tempfile.TemporaryDirectory(prefix="cotbench-overhead-") as tmp:
        cfg = build_config(None, {"datasets": ["mmlu"], "settings": settings, "limit": n, "data_dir": str(data_dir),
                                  "out": tmp, "cache": str(Path(tmp) / "store.sqlite"), "progress": False})
        prof = cProfile.Profile() if profile else None
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        out = run(cfg, backend=backend)
        if prof:
            prof.disable()
        wall = time.perf_counter() - t0
        rows = sum(1 for _ in open(out / "samples.jsonl", encoding="utf-8"))
        correct = sum('"correct": true' in line for line in open(out / "samples.jsonl", encoding="utf-8"))
    res = {"examples": rows, "wall_s": round(wall, 3), "examples_per_s": round(rows / wall, 1),
           "backend_calls": backend.stats.calls, "all_correct": correct == rows}
    if prof:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(30)
        res["profile_top_cumulative"] = buf.getvalue()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000, help="MMLU items")
    ap.add_argument("--settings", nargs="+", default=["zs_direct"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data-dir", default=str(DATA_DIR))
    ap.add_argument("--profile", action="store_true", help="profile one extra run and print the hot spots")
    ap.add_argument("--out", help="results JSON (default results/bench/overhead[_<n>x<settings>].json)")
    a = ap.parse_args()
    data_dir = Path(a.data_dir)
    table = gold_table(a.n, a.settings, data_dir)
    runs = [one_run(a.n, a.settings, data_dir, table, False) for _ in range(a.repeat)]
    for i, r in enumerate(runs):
        print(f"rep {i + 1}: {r['examples']} examples in {r['wall_s']:.2f}s = {r['examples_per_s']:.0f}/s")
    rate = median([r["examples_per_s"] for r in runs])
    payload = {"benchmark": "harness overhead, zero-latency TableBackend",
               "command": "python bench/bench_overhead.py " + " ".join(
                   [f"--n {a.n}", "--settings " + " ".join(a.settings), f"--repeat {a.repeat}"]),
               "dataset": "mmlu (local mirror)", "n_items": a.n, "settings": a.settings,
               "target_examples_per_s": 2000, "median_examples_per_s": rate, "meets_target": rate >= 2000,
               "runs": runs, "machine": machine()}
    if a.profile:
        p = one_run(a.n, a.settings, data_dir, table, True)
        print(p["profile_top_cumulative"])
        payload["profile"] = p
    name = "overhead" if a.settings == ["zs_direct"] else f"overhead_{a.n}x{len(a.settings)}settings"
    path = write_json(name, payload, a.out)
    print(f"median {rate:.0f} examples/s (target 2,000) -> {path}")


if __name__ == "__main__":
    main()
