"""Throughput against a real local OpenAI-compatible server: cotbench vs a raw client vs lm-evaluation-harness.

One ``llama_cpp.server`` (the embedded SmolLM2-135M-Instruct, started on a free loopback port) serves
four clients in turn, on the same GSM8K zero-shot CoT items with the same messages, token budget and
greedy decoding, at the same concurrency:

* ``raw``: a minimal ``httpx`` asyncio client posting the exact payloads cotbench sends — the ceiling;
* ``cotbench_backend``: cotbench's ``openai`` backend alone (``OpenAIBackend.generate`` on the same
  requests): the client's own cost, without the harness around it;
* ``cotbench``: ``cotbench.pipeline.harness.run`` with the ``openai`` backend (fresh store each repetition, so
  nothing is served from cache; includes loading data, rendering, storing, scoring, writing outputs);
* ``lm_eval``: ``lm_eval.simple_evaluate`` with ``local-chat-completions`` and a small task YAML over
  the same items (written to a temp dir; the local file, no hub download); includes building the task,
  requests, filters and metrics. Its TaskManager index is built once, outside the timing.

The order rotates every repetition (raw, cotbench, lm_eval; cotbench, lm_eval, raw; …) so drift on a
shared machine does not favour one. Reported: per-client medians of samples/s and completion tokens/s
(tokens counted by the server for the raw client; all three produce the same greedy text, checked),
and the ratios of cotbench (backend alone, and whole harness) to raw and to lm_eval, taken within each
repetition (adjacent in time, so under similar load) and then the median over repetitions; with
``--server instant`` also the endpoint's own CPU time per request (so one can see it is not the
bottleneck). The server runs llama.cpp on one thread by default: on a small shared machine more threads
make it far more sensitive to other processes.

    python bench/bench_throughput.py                       # 16 items, max_tokens 64, concurrency 4, 5 reps
    python bench/bench_throughput.py --n 32 --concurrency 2 --reps 3 --server-threads 2
    python bench/bench_throughput.py --server instant      # 1000 items, concurrency 4 and 64, zero-latency endpoint
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # lm-eval and datasets: local files only, no hub lookups
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's progress bars

from _common import DATA_DIR, machine, median, tree_cpu_s, write_json  # noqa: E402

from cotbench.pipeline.config import build_config  # noqa: E402
from cotbench.pipeline.harness import run  # noqa: E402
from cotbench.pipeline.model_registry import DEFAULT_MODEL, embedded_gguf  # noqa: E402
from cotbench.pipeline.prompts import load_prompt_file, render  # noqa: E402
from cotbench.pipeline.settings import get_setting  # noqa: E402
from cotbench.tasks import get_task  # noqa: E402
from cotbench.testing.servers import free_port, llama_server  # noqa: E402

EXTRA = {"repeat_penalty": 1.0}  # llama_cpp.server defaults to 1.1; in-process and greedy references use 1.0
SEED = 0

LM_EVAL_TASK = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{target}}}}"
generation_kwargs:
  until: []
  max_gen_toks: {max_tokens}
  do_sample: false
  temperature: 0.0
  top_p: 1.0
  repeat_penalty: 1.0
filter_list:
  - name: answer
    filter:
      - function: regex
        regex_pattern: "The answer is \\\\$?(-?[0-9.,]+)"
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: false
    regexes_to_ignore: [",", "\\\\.$"]
metadata:
  version: 1.0
"""


def items(n: int, data_dir: Path, setting: str = "zs_cot") -> list[dict]:
    task = get_task("gsm8k")
    spec = load_prompt_file(task.prompt_file)
    out = []
    for ex in task.load(data_dir, n):
        r = render(spec, ex, get_setting(setting))
        assert len(r.messages) == 1 and r.messages[0]["role"] == "user", "bench assumes a single user turn"
        out.append({"prompt": r.messages[0]["content"], "target": ex.gold, "stop": list(r.stop)})
    return out


async def raw_client(url: str, payloads: list[dict], concurrency: int) -> tuple[list[str], int]:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600) as client:
        async def one(p: dict) -> dict:
            async with sem:
                r = await client.post("/chat/completions", json=p)
                r.raise_for_status()
                return r.json()

        outs = await asyncio.gather(*(one(p) for p in payloads))
    return [o["choices"][0]["message"]["content"] for o in outs], sum(o["usage"]["completion_tokens"] for o in outs)


def run_raw(url: str, its: list[dict], max_tokens: int, concurrency: int) -> dict:
    payloads = [{"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": it["prompt"]}],
                 "max_tokens": max_tokens, "temperature": 0.0, "top_p": 1.0, "seed": SEED,
                 **({"stop": it["stop"]} if it["stop"] else {}), **EXTRA} for it in its]
    t0 = time.perf_counter()
    texts, tokens = asyncio.run(raw_client(url, payloads, concurrency))
    return {"wall_s": time.perf_counter() - t0, "texts": texts, "tokens_out": tokens}


def run_cotbench(url: str, n: int, max_tokens: int, concurrency: int, data_dir: Path,
                 setting: str = "zs_cot") -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-cotbench-") as tmp:
        cfg = build_config(None, {"datasets": ["gsm8k"], "settings": [setting], "limit": n, "data_dir": str(data_dir),
                                  "out": tmp, "backend": "openai", "base_url": url, "model": f"openai:{DEFAULT_MODEL}",
                                  "concurrency": concurrency, "max_tokens_cot": max_tokens,
                                  "max_tokens_direct": max_tokens, "extra_body": EXTRA, "seed": SEED,
                                  "cache": str(Path(tmp) / "store.sqlite"), "progress": False})
        t0 = time.perf_counter()
        out = run(cfg)
        wall = time.perf_counter() - t0
        rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
        stats = json.loads((out / "manifest.json").read_text())["run_stats"]
    assert stats["calls_made"] == n, stats
    return {"wall_s": wall, "texts": [r["response"] for r in rows], "tokens_out": stats["tokens_out"],
            "accuracy": sum(r["correct"] for r in rows) / len(rows)}


def run_lm_eval(url: str, task_name: str, tm, n: int, max_tokens: int, concurrency: int) -> dict:
    import lm_eval

    t0 = time.perf_counter()
    res = lm_eval.simple_evaluate(
        model="local-chat-completions",
        model_args={"base_url": url + "/chat/completions", "model": DEFAULT_MODEL, "num_concurrent": concurrency,
                    "max_retries": 3, "tokenizer_backend": None, "tokenized_requests": False,
                    "max_gen_toks": max_tokens, "timeout": 600},
        tasks=[task_name], task_manager=tm, apply_chat_template=True, log_samples=True, limit=n)
    wall = time.perf_counter() - t0
    samples = sorted(res["samples"][task_name], key=lambda s: s["doc_id"])
    return {"wall_s": wall, "texts": [s["resps"][0][0] for s in samples],
            "accuracy": res["results"][task_name].get("exact_match,answer")}


def run_backend(url: str, its: list[dict], max_tokens: int, concurrency: int) -> dict:
    """cotbench's ``openai`` backend alone (no harness): the client's own per-request cost."""
    from cotbench.backends.openai_api import OpenAIBackend
    from cotbench.records import GenParams, Request

    reqs = [Request(model=DEFAULT_MODEL, model_revision="", backend="openai",
                    messages=({"role": "user", "content": it["prompt"]},),
                    params=GenParams(max_tokens=max_tokens, temperature=0.0, top_p=1.0, stop=tuple(it["stop"]),
                                     seed=SEED, extra_body=json.dumps(EXTRA, sort_keys=True))) for it in its]
    got: dict[int, object] = {}
    backend = OpenAIBackend(DEFAULT_MODEL, base_url=url, api_key_env=None, concurrency=concurrency)
    t0 = time.perf_counter()
    backend.generate(reqs, lambda req, resp: got.__setitem__(id(req), resp))
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "texts": [got[id(r)].text for r in reqs]}


@contextmanager
def instant_server(workers: int):
    """bench/_instant_server.py (uvicorn, ``workers`` processes): answers every chat call at once."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_instant_server.py")), str(port),
                             str(workers)])
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the instant server exited with code {proc.returncode}")
            try:
                urllib.request.urlopen(url + "/models", timeout=2).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("the instant server did not start within 60 s") from None
                time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def real_server(n_ctx: int, threads: int, log: Path):
    with llama_server(embedded_gguf(), DEFAULT_MODEL, n_ctx=n_ctx, log=log, n_threads=threads) as url:
        yield url, None


def measure(url: str, server_pid: int | None, clients: list[str], its: list[dict], a, concurrency: int,
            data_dir: Path, tm, task_name: str, errors: dict) -> dict:
    """All clients, ``a.reps`` repetitions in rotating order, at one concurrency; summary and ratios."""
    results: dict[str, list[dict]] = {c: [] for c in clients}
    for rep in range(a.reps):
        order = clients[rep % len(clients):] + clients[:rep % len(clients)]
        for c in order:
            if c not in results:
                continue
            cpu0 = tree_cpu_s(server_pid) if server_pid else None
            try:
                if c == "raw":
                    r = run_raw(url, its, a.max_tokens, concurrency)
                elif c == "cotbench":
                    r = run_cotbench(url, a.n, a.max_tokens, concurrency, data_dir)
                elif c == "cotbench_backend":
                    r = run_backend(url, its, a.max_tokens, concurrency)
                else:
                    r = run_lm_eval(url, task_name, tm, a.n, a.max_tokens, concurrency)
            except Exception as e:
                if c != "lm_eval":
                    raise
                errors["lm_eval"] = f"{type(e).__name__}: {e}"
                results.pop("lm_eval", None)
                continue
            if server_pid:
                r["server_cpu_s"] = tree_cpu_s(server_pid) - cpu0
            r["load_1min"] = os.getloadavg()[0]  # other work on a shared machine, at the end of this pass
            results[c].append(r)
            print(f"c={concurrency} rep {rep + 1} {c:16s} {r['wall_s']:7.2f}s  {a.n / r['wall_s']:8.2f} samples/s",
                  flush=True)
    ref = results["raw"][0]
    tokens = ref["tokens_out"]
    summary = {}
    for c, rs in results.items():
        walls = [r["wall_s"] for r in rs]
        same = [sum(x == y for x, y in zip(r["texts"], ref["texts"])) for r in rs]
        summary[c] = {"wall_s": [round(w, 3) for w in walls], "median_wall_s": round(median(walls), 3),
                      "median_samples_per_s": round(a.n / median(walls), 2),
                      "median_tokens_per_s": round(tokens / median(walls), 2),
                      "per_request_ms": round(1000 * median(walls) / a.n, 3),
                      "texts_equal_to_raw": f"{min(same)}/{a.n}" if same else None,
                      "accuracy": rs[0].get("accuracy"),
                      "load_1min_after_each_pass": [round(r["load_1min"], 2) for r in rs]}
        if server_pid:
            summary[c]["server_cpu_ms_per_request"] = round(1000 * median([r["server_cpu_s"] for r in rs]) / a.n, 3)

    def per_rep(mine: str, other: str) -> list[float]:  # same repetition = adjacent in time = similar load
        return [round(o["wall_s"] / m["wall_s"], 4) for o, m in zip(results[other], results[mine])]

    ratios, ratios_per_rep = {}, {}
    for mine in [c for c in ("cotbench_backend", "cotbench") if c in results]:
        for other in [c for c in ("raw", "lm_eval") if c in results]:
            ratios_per_rep[f"{mine}_vs_{other}"] = per_rep(mine, other)
            ratios[f"{mine}_vs_{other}"] = round(median(per_rep(mine, other)), 4)
    return {"concurrency": concurrency, "completion_tokens_per_pass": tokens, "ratios": ratios,
            "ratios_per_rep": ratios_per_rep, "clients": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", choices=["llama", "instant"], default="llama",
                    help="llama: llama_cpp.server with the embedded model; instant: a zero-latency endpoint that "
                         "isolates each client's own per-request cost")
    ap.add_argument("--n", type=int, help="GSM8K items (default 16 with llama, 1000 with instant)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, nargs="+", help="one run per value (default 4 with llama, "
                                                                "4 and 64 with instant)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--server-threads", type=int, default=1,
                    help="llama.cpp threads of the server (1: least sensitive to other load on a small shared box)")
    ap.add_argument("--workers", type=int, default=2, help="instant server: uvicorn worker processes")
    ap.add_argument("--data-dir", default=str(DATA_DIR))
    ap.add_argument("--skip-lm-eval", action="store_true")
    ap.add_argument("--out", help="results JSON (default results/bench/throughput[_instant].json)")
    a = ap.parse_args()
    a.n = a.n or (16 if a.server == "llama" else 1000)
    a.concurrency = a.concurrency or ([4] if a.server == "llama" else [4, 64])
    data_dir = Path(a.data_dir)
    its = items(a.n, data_dir)
    clients = ["raw", "cotbench_backend", "cotbench"]
    warm_its = items(2, data_dir, "zs_direct")  # warm-up prompts that are never measured
    tm, task_name, errors = None, "cotbench_bench_gsm8k_cot", {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-lmeval-"))
    if not a.skip_lm_eval:
        try:
            import lm_eval  # noqa: F401
            from lm_eval.tasks import TaskManager

            for name in ("lm_eval", "lm-eval", "httpx"):
                logging.getLogger(name).setLevel(logging.WARNING)
            for name, rows in ((task_name, its), (task_name + "_warmup", warm_its)):
                data = tmp / f"{name}.jsonl"
                data.write_text("".join(json.dumps({"prompt": i["prompt"], "target": i["target"]}) + "\n"
                                        for i in rows))
                (tmp / f"{name}.yaml").write_text(LM_EVAL_TASK.format(name=name, data=data, max_tokens=a.max_tokens))
            tm = TaskManager(include_path=str(tmp))
            clients.append("lm_eval")
        except Exception as e:  # report honestly rather than crash the others
            errors["lm_eval"] = f"{type(e).__name__}: {e}"
    server = (real_server(a.n_ctx, a.server_threads, tmp / "server.log") if a.server == "llama"
              else instant_server(a.workers))
    runs = []
    with server as (url, server_pid):
        # one untimed pass of each client (imports, connection set-up, caches) on prompts that are not measured:
        # llama.cpp reuses the previous prompt's KV prefix, and re-evaluating an identical prompt that way can
        # change a greedy continuation, so measured prompts must not be repeated back to back
        run_raw(url, warm_its, 8, a.concurrency[0])
        run_backend(url, warm_its, 8, a.concurrency[0])
        run_cotbench(url, len(warm_its), 8, a.concurrency[0], data_dir, setting="zs_direct")
        if "lm_eval" in clients:
            try:
                run_lm_eval(url, task_name + "_warmup", tm, len(warm_its), 8, a.concurrency[0])
            except Exception as e:
                errors["lm_eval"] = f"{type(e).__name__}: {e}"
                clients.remove("lm_eval")
        for conc in a.concurrency:
            runs.append(measure(url, server_pid, clients, its, a, conc, data_dir, tm, task_name, errors))
    if a.server == "llama":
        server_desc = (f"llama_cpp.server (cotbench.backends.llamacpp_server), embedded {DEFAULT_MODEL} Q4 GGUF, "
                       f"n_ctx {a.n_ctx}, {a.server_threads or 'default'} thread(s), loopback")
    else:
        server_desc = (f"bench/_instant_server.py: zero-latency ASGI endpoint under uvicorn, {a.workers} worker "
                       "processes, same canned reply to every call, loopback; measures each client's own "
                       "per-request cost")
    payload = {"benchmark": f"throughput vs a raw client and lm-evaluation-harness ({a.server} server)",
               "command": f"python bench/bench_throughput.py --server {a.server} --n {a.n} --max-tokens {a.max_tokens} "
                          f"--concurrency {' '.join(map(str, a.concurrency))} --reps {a.reps}"
                          + (f" --server-threads {a.server_threads}" if a.server == "llama" else
                             f" --workers {a.workers}"),
               "server": server_desc, "model": DEFAULT_MODEL,
               "workload": {"dataset": "gsm8k test (local mirror), first items", "setting": "zs_cot", "n": a.n,
                            "max_tokens": a.max_tokens, "reps": a.reps,
                            "completion_tokens_per_pass": runs[0]["completion_tokens_per_pass"],
                            "temperature": 0, "extra_body": EXTRA},
               "clients_measured": {
                   "raw": "minimal httpx asyncio client posting the same payloads (the ceiling)",
                   "cotbench_backend": "cotbench.backends.openai_api.OpenAIBackend.generate alone, same requests",
                   "cotbench": "the whole harness (cotbench.pipeline.harness.run): data, render, store, score, outputs",
                   "lm_eval": "lm_eval.simple_evaluate with local-chat-completions"},
               "ratio_definition": "throughput ratio = other client's wall time / cotbench's wall time in the same "
                                   "repetition, median over repetitions (>1 means cotbench is faster)",
               "runs": runs, "errors": errors, "machine": machine()}
    path = write_json("throughput" if a.server == "llama" else "throughput_instant", payload, a.out)
    for r in runs:
        print(json.dumps({"concurrency": r["concurrency"], "ratios": r["ratios"],
                          **{c: r["clients"][c]["median_samples_per_s"] for c in r["clients"]}}))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
