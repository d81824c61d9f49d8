"""One run, end to end: config -> tasks and data -> backend -> runner -> run directory.

The run directory holds ``samples.jsonl`` (one SampleResult per line), ``summary.csv``, ``manifest.json``
and the generation store ``store.sqlite``. Outputs are written to a temporary file and renamed, so a
crash never leaves a half-written file; the store is the unit of truth and outputs are rebuilt from it.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cotbench.backends.base import Backend
from cotbench.config import QUICK_DATASETS, RunConfig
from cotbench.models import ModelSpec, resolve_model
from cotbench.runner import RunOptions, build_units, execute, score_unit, summarize
from cotbench.store import Store
from cotbench.tasks.base import DataError, Task
from cotbench.types import Example

SUMMARY_FIELDS = ["model", "dataset", "group", "setting", "n", "accuracy", "se", "unparseable_rate",
                  "mean_tokens_out", "tokens_in", "tokens_out", "accuracy_chance_credit", "cost_usd"]


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(f"cannot write {path}: {e.strerror or e}") from None


def resolve_tasks(cfg: RunConfig) -> list[Task]:
    from cotbench.tasks import DATASETS, get_task

    tasks: list[Task] = []
    names = list(cfg.datasets)
    if cfg.dataset_file:
        from cotbench.tasks.custom import task_from_file

        tasks.append(task_from_file(cfg.dataset_file, cfg.answer_type))
        if names == list(QUICK_DATASETS):  # the default list: a --dataset-file run is about that file alone
            names = []
    for name in names:
        tasks += [get_task(n) for n in DATASETS.get(name, [name])]
    seen, unique = set(), []
    for t in tasks:
        if t.name not in seen:
            seen.add(t.name)
            unique.append(t)
    return unique


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def load_data(tasks: list[Task], cfg: RunConfig) -> tuple[dict[Task, list[Example]], dict[str, Any]]:
    """Load each task's examples; record where they came from (file + sha256, or hub id + revision)."""
    data, sources = {}, {}
    for t in tasks:
        if cfg.data_dir:
            try:
                data[t] = t.load(cfg.data_dir, cfg.limit)
            except DataError as e:
                if not (cfg.skip_missing and "found under data dir" in str(e)):
                    raise
                print(f"warning: skipping {t.name}: {e}", file=sys.stderr)
                sources[t.name] = {"skipped": str(e)}
                continue
            src = next((Path(cfg.data_dir or ".") / rel for rel in t.local_files
                        if (Path(cfg.data_dir or ".") / rel).exists()), None)
            sources[t.name] = ({"local": str(src), "sha256": file_digest(src)} if src and src.is_file()
                               else {"local": str(src or cfg.data_dir)})
        else:
            data[t] = t.load(None, cfg.limit)
            sources[t.name] = {"hub": t.hub.path if t.hub else None, "config": t.hub.config if t.hub else None,
                               "split": t.hub.split if t.hub else None, "revision": t.hub.revision if t.hub else None}
    return data, sources


def make_backend(spec: ModelSpec, cfg: RunConfig) -> Backend:
    if spec.backend == "llamacpp":
        from cotbench.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(spec.model_id, model_id=spec.name, n_ctx=cfg.n_ctx, seed=cfg.seed,
                               batch_size=cfg.batch_size)
    if spec.backend == "openai":
        from cotbench.backends.openai_api import OpenAIBackend

        return OpenAIBackend(spec.model_id, base_url=spec.base_url, api_key_env=spec.api_key_env,
                             concurrency=cfg.concurrency, timeout_s=cfg.timeout, max_retries=cfg.max_retries,
                             revision=spec.revision or "", allow_prefill=spec.prefill)
    if spec.backend == "vllm":
        from cotbench.backends.vllm_offline import VLLMBackend

        return VLLMBackend(spec.model_id, revision=spec.revision, tensor_parallel_size=cfg.tensor_parallel_size,
                           data_parallel_size=cfg.data_parallel_size, seed=cfg.seed,
                           pipeline_parallel_size=cfg.pipeline_parallel_size,
                           distributed_executor_backend=cfg.distributed_executor_backend,
                           max_model_len=spec.context_length or None)
    raise ValueError(f"unknown backend {spec.backend!r}")


def default_out(cfg: RunConfig) -> Path:
    """Same command, same directory: that is what makes a plain rerun resume."""
    safe = cfg.model.replace("/", "__").replace(":", "_")
    return Path("runs") / f"{safe}-{cfg.hash()}"


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("cotbench", "llama_cpp_python", "openai", "datasets", "vllm", "numpy", "pandas", "math-verify",
                 "z3-solver"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_revision() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return (r.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")) if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def samples_jsonl(rows) -> str:
    return "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in rows)


def summary_csv(lines: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    fields = [f for f in SUMMARY_FIELDS if any(f in ln for ln in lines)]
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(lines)
    return buf.getvalue()


def run(cfg: RunConfig, console=None, backend: Backend | None = None) -> Path:
    """Run a configuration; returns the run directory. ``backend`` may be injected (tests, benchmarks)."""
    started = time.time()
    spec = resolve_model(cfg.model, cfg.backend, cfg.base_url)
    tasks = resolve_tasks(cfg)
    data, sources = load_data(tasks, cfg)
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create output directory {out}: {e.strerror or e}") from None
    if not os.access(out, os.W_OK):
        raise OSError(f"output directory {out} is not writable")
    store = Store(Path(cfg.cache) if cfg.cache else out / "store.sqlite")
    own_backend = backend is None
    backend = backend or make_backend(spec, cfg)
    opts = RunOptions(model_name=spec.name, seed=cfg.seed, temperature=cfg.temperature, top_p=cfg.top_p,
                      samples=cfg.samples, max_tokens_direct=cfg.max_tokens_direct,
                      max_tokens_cot=cfg.max_tokens_cot, fewshot_k=cfg.fewshot_k,
                      allow_prefill=spec.prefill, extra_body=cfg.extra_body)
    units = build_units(data, cfg.settings, opts)
    judge_backend = None
    if cfg.judge_model and any(u.example.answer_type == "judge" for u in units):
        judge_spec = resolve_model(cfg.judge_model)
        judge_backend = make_backend(judge_spec, cfg)
    from cotbench.progress import Progress

    with Progress(enabled=cfg.progress, console=console) as prog:
        try:
            stats = execute(units, backend, store, opts, progress=prog.update, judge=judge_backend)
        finally:
            if own_backend:
                backend.close()
            if judge_backend is not None:
                judge_backend.close()
            store.close()
    rows = [score_unit(u, opts.model_name) for u in units]
    lines = summarize(rows, cfg.price_in if cfg.price_in is not None else spec.price_in,
                      cfg.price_out if cfg.price_out is not None else spec.price_out, cfg.chance_credit)
    atomic_write(out / "samples.jsonl", samples_jsonl(rows))
    atomic_write(out / "summary.csv", summary_csv(lines))
    manifest = {
        "config": asdict(cfg), "config_hash": cfg.hash(), "model": asdict(spec) | {"model_id": spec.model_id},
        "backend": backend.describe(), "backend_stats": asdict(backend.stats), "run_stats": asdict(stats),
        "judge": (judge_backend.describe() | {"model": cfg.judge_model}) if judge_backend else
                 ({"model": spec.name, "note": "the evaluated model judged itself"}
                  if any(u.example.answer_type == "judge" for u in units) else None),
        "datasets": sources, "packages": package_versions(), "git_revision": git_revision(),
        "command": sys.argv, "started_at": started, "finished_at": time.time(),
        "started_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": {"machine": platform.machine(), "system": platform.system(), "cpus": os.cpu_count()},
    }
    atomic_write(out / "manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")
    return out
