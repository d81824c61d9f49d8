"""How OpenMP's wait policy changes in-process generation speed, on an idle and on a busy machine.

Each setting runs in a fresh process (libgomp reads its environment when it loads): the engine
generates the same ``--n`` GSM8K zero-shot CoT prompts one at a time (``--batch-size``), greedy,
``--max-tokens`` each, and reports completion tokens/s. ``--busy K`` repeats every setting while K
pure-Python busy loops compete for the cores (a stand-in for other jobs on a shared machine).
A setting that takes longer than ``--timeout`` seconds is recorded as timed out.

    python bench/bench_wait_policy.py --busy 0 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import DATA_DIR, machine, write_json

SETTINGS = {
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0"},
    "passive+spin 10k (default)": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000"},
    "passive+spin 300k": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "300000"},
    # an explicit count: the child imports bench_batching, whose defaults would otherwise add a 10k spin
    "active (spin forever)": {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "infinite"},
}

CHILD = """
import json, sys, time
sys.path.insert(0, {bench!r})
from pathlib import Path
from bench_batching import requests, run_engine
from cotbench.backends.llamacpp_engine import BatchedEngine
from cotbench.pipeline.model_registry import embedded_gguf
e = BatchedEngine(str(embedded_gguf()), n_ctx=4096)
reqs = requests({n}, Path({data!r}), {max_tokens})
run_engine(e, reqs[:1], 1)  # untimed warm-up
r = run_engine(e, reqs, {batch})
print(json.dumps({{"wall_s": r["wall_s"], "tokens_out": r["tokens_out"]}}))
"""


def run_one(env: dict, a) -> dict:
    code = CHILD.format(bench=str(Path(__file__).parent), n=a.n, data=a.data_dir, max_tokens=a.max_tokens,
                        batch=a.batch_size)
    full = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | env
    try:
        p = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                           timeout=a.timeout)
    except subprocess.TimeoutExpired:
        return {"timed_out": True, "timeout_s": a.timeout}
    if p.returncode != 0:
        raise SystemExit(p.stderr[-2000:])
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return r | {"tokens_per_s": round(r["tokens_out"] / r["wall_s"], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 2], help="competing busy loops per round")
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--data-dir", default=str(DATA_DIR))
    ap.add_argument("--out", help="results JSON (default results/bench/wait_policy.json)")
    a = ap.parse_args()
    results = {}
    for busy in a.busy:
        burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
        try:
            time.sleep(1 if busy else 0)
            for name, env in SETTINGS.items():
                r = run_one(env, a)
                results.setdefault(f"busy={busy}", {})[name] = r
                print(f"busy={busy} {name:28s} {r.get('tokens_per_s', 'timed out')}", flush=True)
        finally:
            for b in burners:
                b.kill()
    payload = {"benchmark": "OpenMP wait policy vs in-process generation speed",
               "command": f"python bench/bench_wait_policy.py --n {a.n} --max-tokens {a.max_tokens} "
                          f"--batch-size {a.batch_size} --busy {' '.join(map(str, a.busy))}",
               "settings": SETTINGS, "results": results, "machine": machine()}
    print(f"-> {write_json('wait_policy', payload, a.out)}")


if __name__ == "__main__":
    main()
