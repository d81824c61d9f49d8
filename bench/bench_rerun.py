"""Cached rerun of a finished run: wall time of the rerun vs the first run, and backend calls (must be 0).

Two workloads, each run once and then rerun with the same command into the same run directory:

* ``model``: the embedded SmolLM2-135M-Instruct in-process (llama.cpp) on GSM8K + MMLU × the four core
  settings (``--n`` items each, small token budgets). The rerun still opens the model (the backend is
  built before the store is consulted), so its time includes loading the GGUF;
* ``table``: 10,000 MMLU items × zs_direct through the zero-latency TableBackend — the store-read path
  at scale (first run = render + generate-instantly + store, rerun = render + read back).

    python bench/bench_rerun.py                   # both workloads
    python bench/bench_rerun.py --skip-model      # table workload only (seconds)
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from cotbench.backends.threads import openmp_wait_defaults  # noqa: E402

openmp_wait_defaults()  # before llama_cpp loads (cotbench.backends.threads)

from _common import DATA_DIR, machine, write_json  # noqa: E402

from cotbench.backends.table import TableBackend  # noqa: E402
from cotbench.pipeline.config import build_config  # noqa: E402
from cotbench.pipeline.harness import run  # noqa: E402
from cotbench.pipeline.settings import CORE_SETTINGS  # noqa: E402


def timed_run(cfg, backend=None) -> tuple[float, dict]:
    t0 = time.perf_counter()
    out = run(cfg, backend=backend)
    wall = time.perf_counter() - t0
    man = json.loads((Path(out) / "manifest.json").read_text())
    return wall, man


def workload(name: str, overrides: dict, backend_factory=None) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-rerun-{name}-") as tmp:
        cfg = build_config(None, {**overrides, "out": tmp, "cache": str(Path(tmp) / "store.sqlite"),
                                  "progress": False})
        first_backend = backend_factory() if backend_factory else None
        w1, m1 = timed_run(cfg, first_backend)
        samples1 = (Path(tmp) / "samples.jsonl").read_text()
        rerun_backend = backend_factory() if backend_factory else None
        w2, m2 = timed_run(cfg, rerun_backend)
        same = (Path(tmp) / "samples.jsonl").read_text() == samples1
    calls = m2["backend_stats"]["calls"]
    res = {"first_wall_s": round(w1, 3), "rerun_wall_s": round(w2, 3), "rerun_over_first": round(w2 / w1, 4),
           "first_calls_made": m1["run_stats"]["calls_made"], "rerun_calls_made": m2["run_stats"]["calls_made"],
           "rerun_calls_cached": m2["run_stats"]["calls_cached"], "rerun_backend_calls": calls,
           "samples_identical": same, "zero_backend_calls": calls == 0 and m2["run_stats"]["calls_made"] == 0}
    print(f"{name}: first {w1:.2f}s, rerun {w2:.2f}s (ratio {w2 / w1:.3f}), rerun backend calls {calls}, "
          f"samples identical: {same}", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4, help="items per dataset for the model workload")
    ap.add_argument("--table-n", type=int, default=10000)
    ap.add_argument("--skip-model", action="store_true")
    ap.add_argument("--data-dir", default=str(DATA_DIR))
    ap.add_argument("--out", help="results JSON (default results/bench/rerun.json)")
    a = ap.parse_args()
    results = {}
    if not a.skip_model:
        results["model"] = workload("model", {"datasets": ["gsm8k", "mmlu"], "settings": list(CORE_SETTINGS),
                                              "limit": a.n, "data_dir": a.data_dir, "max_tokens_direct": 16,
                                              "max_tokens_cot": 48})
        results["model"]["workload"] = (f"embedded SmolLM2-135M-Instruct in-process; gsm8k+mmlu x {a.n} items x "
                                        f"{' '.join(CORE_SETTINGS)}; max_tokens direct 16 / cot 48")
    results["table"] = workload("table", {"datasets": ["mmlu"], "settings": ["zs_direct"], "limit": a.table_n,
                                          "data_dir": a.data_dir},
                                backend_factory=lambda: TableBackend(lambda r: "The answer is (A)."))
    results["table"]["workload"] = f"TableBackend (zero latency); mmlu x {a.table_n} items x zs_direct"
    payload = {"benchmark": "cached rerun of a finished run (same command, same run directory)",
               "command": "python bench/bench_rerun.py" + (" --skip-model" if a.skip_model else f" --n {a.n}"),
               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "results": results, "machine": machine()}
    print(f"-> {write_json('rerun', payload, a.out)}")


if __name__ == "__main__":
    main()
