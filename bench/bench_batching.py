"""In-process llama.cpp: continuous batching vs one request at a time, same prompts, one process.

The embedded SmolLM2-135M-Instruct generates the same GSM8K zero-shot CoT prompts (greedy, same token
budget) in each mode:

* ``create_chat_completion``: ``Llama.create_chat_completion`` one request at a time, each from an empty
  KV cache: the in-process path before batching, and llama_cpp.server's path (reference texts);
* ``batch=1``: cotbench's engine with one sequence at a time (``--batch-size 1``);
* ``batch=N``: the engine with N sequences decoded together (``--batch-size N``).

Modes alternate in rotating order within each repetition, so they share the machine's load; reported
are completion tokens/s per mode (median over repetitions) and, within each repetition, each mode's
tokens/s divided by ``batch=1``'s and by ``create_chat_completion``'s (median over repetitions). Every
mode's texts are compared with the reference texts.

    python bench/bench_batching.py                          # 16 items, 64 tokens, batch 1 4 8 16, 3 reps
    python bench/bench_batching.py --n 32 --batch-sizes 8 16 32 --reps 2
    python bench/bench_batching.py --weights f16 --max-tokens 256 --skip-reference   # -B weights=f16's copy
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from cotbench.backends.threads import openmp_wait_defaults  # noqa: E402

openmp_wait_defaults()  # before llama_cpp loads; the environment's own values win

from _common import DATA_DIR, machine, median, write_json  # noqa: E402

from cotbench.backends.llamacpp import (  # noqa: E402
    disable_extra_buffer_types,
    fresh_context_per_call,
    weights_file,
)
from cotbench.backends.llamacpp_engine import BatchedEngine  # noqa: E402
from cotbench.backends.registry import get_backend  # noqa: E402
from cotbench.pipeline.model_registry import DEFAULT_MODEL, embedded_gguf  # noqa: E402
from cotbench.pipeline.prompts import load_prompt_file, render  # noqa: E402
from cotbench.pipeline.settings import get_setting  # noqa: E402
from cotbench.records import GenParams, Request, file_sha256  # noqa: E402
from cotbench.tasks import get_task  # noqa: E402

REFERENCE = "create_chat_completion"


def requests(n: int, data_dir: Path, max_tokens: int) -> list[Request]:
    task = get_task("gsm8k")
    spec = load_prompt_file(task.prompt_file)
    out = []
    for ex in task.load(data_dir, n):
        r = render(spec, ex, get_setting("zs_cot"))
        out.append(Request(model=DEFAULT_MODEL, model_revision="", backend="llamacpp", messages=tuple(r.messages),
                           params=GenParams(max_tokens=max_tokens, stop=tuple(r.stop))))
    return out


def run_reference(llm, reqs: list[Request]) -> dict:
    t0 = time.perf_counter()
    outs = [llm.create_chat_completion(messages=[dict(m) for m in r.messages], max_tokens=r.params.max_tokens,
                                       temperature=0.0, top_p=1.0, stop=list(r.params.stop) or None, seed=0)
            for r in reqs]
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "texts": [o["choices"][0]["message"]["content"] for o in outs],
            "tokens_out": sum(o["usage"]["completion_tokens"] for o in outs)}


def run_engine(engine: BatchedEngine, reqs: list[Request], batch_size: int) -> dict:
    got = {}
    t0 = time.perf_counter()
    engine.run(reqs, lambda req, resp: got.__setitem__(id(req), resp), batch_size)
    wall = time.perf_counter() - t0
    resps = [got[id(r)] for r in reqs]
    return {"wall_s": wall, "texts": [r.text for r in resps], "tokens_out": sum(r.tokens_out for r in resps)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16, help="GSM8K items")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 8, 16], help="batched modes (besides 1)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    ap.add_argument("--skip-reference", action="store_true", help="leave out create_chat_completion")
    ap.add_argument("--data-dir", default=str(DATA_DIR))
    ap.add_argument("--gguf", help="model file (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--weights", choices=get_backend("llamacpp").arg("weights").choices, default="file",
                    help="as -B weights=: the file's own weights or the backend's cached converted copy")
    ap.add_argument("--out", help="results JSON (default results/bench/batching.json)")
    a = ap.parse_args()
    reqs = requests(a.n, Path(a.data_dir), a.max_tokens)
    threads = a.threads or os.cpu_count()
    gguf = a.gguf or str(embedded_gguf())
    gguf = weights_file(gguf, a.weights, file_sha256(gguf)[:16])
    engine = BatchedEngine(gguf, n_ctx=a.n_ctx, n_threads=threads)
    modes = ["batch=1"] + [f"batch={b}" for b in a.batch_sizes if b != 1]
    llm = None
    if not a.skip_reference:
        from llama_cpp import Llama

        disable_extra_buffer_types()
        fresh_context_per_call()
        llm = Llama(model_path=gguf, n_ctx=a.n_ctx, n_threads=threads, verbose=False)
        modes.insert(0, REFERENCE)
    warm = requests(2, Path(a.data_dir), 8)  # untimed: first-call costs (allocations, page faults)
    run_engine(engine, warm, 2)
    if llm is not None:
        run_reference(llm, warm)
    results: dict[str, list[dict]] = {m: [] for m in modes}
    for rep in range(a.reps):
        order = modes[rep % len(modes):] + modes[:rep % len(modes)]
        for m in order:
            r = run_reference(llm, reqs) if m == REFERENCE else run_engine(engine, reqs, int(m.split("=")[1]))
            results[m].append(r)
            print(f"rep {rep + 1} {m:24s} {r['wall_s']:7.2f}s  {r['tokens_out'] / r['wall_s']:6.1f} tokens/s",
                  flush=True)
    ref_texts = results[modes[0]][0]["texts"]
    summary = {}
    for m, rs in results.items():
        tps = [r["tokens_out"] / r["wall_s"] for r in rs]
        same = [sum(x == y for x, y in zip(r["texts"], ref_texts)) for r in rs]
        summary[m] = {"wall_s": [round(r["wall_s"], 3) for r in rs], "tokens_out": rs[0]["tokens_out"],
                      "tokens_per_s": [round(t, 2) for t in tps], "median_tokens_per_s": round(median(tps), 2),
                      f"texts_equal_to_{modes[0]}": f"{min(same)}/{a.n}"}

    def ratios(base: str) -> dict:
        out = {}
        for m in modes:
            if m == base:
                continue
            per_rep = [(r["tokens_out"] / r["wall_s"]) / (b["tokens_out"] / b["wall_s"])
                       for r, b in zip(results[m], results[base])]
            out[m] = {"median": round(median(per_rep), 3), "per_rep": [round(x, 3) for x in per_rep]}
        return out

    payload = {
        "benchmark": "in-process llama.cpp: continuous batching vs one request at a time",
        "command": f"python bench/bench_batching.py --n {a.n} --max-tokens {a.max_tokens} --batch-sizes "
                   f"{' '.join(map(str, a.batch_sizes))} --reps {a.reps}"
                   + (" --skip-reference" if llm is None else "") + (f" --gguf {a.gguf}" if a.gguf else "")
                   + (f" --weights {a.weights}" if a.weights != "file" else ""),
        "model": a.gguf or f"{DEFAULT_MODEL} (embedded GGUF)", "weights": a.weights, "llama_threads": threads,
        "n_ctx": a.n_ctx, "engine_row_mode": engine.row_mode(),
        "omp_env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")},
        "workload": {"dataset": "gsm8k test (local mirror), first items", "setting": "zs_cot", "n": a.n,
                     "max_tokens": a.max_tokens, "temperature": 0, "reps": a.reps},
        "ratio_definition": "tokens/s of a mode / tokens/s of the base mode in the same repetition, median over "
                            "repetitions (modes alternate in rotating order within a repetition)",
        "speedup_vs_batch1": ratios("batch=1"),
        **({"speedup_vs_create_chat_completion": ratios(REFERENCE)} if llm is not None else {}),
        "modes": summary, "machine": machine(),
    }
    path = write_json("batching", payload, a.out)
    print({m: s["median_tokens_per_s"] for m, s in summary.items()})
    print(f"-> {path}")
    engine.close()
    if llm is not None:
        llm.close()


if __name__ == "__main__":
    main()
