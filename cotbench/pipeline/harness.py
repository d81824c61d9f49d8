"""One run, end to end: config -> tasks and data -> backend -> runner -> run directory.

The run directory holds ``samples.jsonl`` (one SampleResult per line), ``summary.csv`` and
``manifest.json``. Generations live in a store shared by every run (:func:`default_store_path`, or
``--cache``), keyed by request, so no configuration change that leaves a request unchanged pays for it
again. Outputs are written to a temporary file and renamed, so a crash never leaves a half-written
file; the store is the unit of truth and outputs are rebuilt from it.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from cotbench.backends.base import Backend
from cotbench.backends.registry import BuildContext, build_backend
from cotbench.pipeline.config import (
    QUICK_DATASETS,
    Generation,
    RunConfig,
    default_store_path,
)
from cotbench.pipeline.model_registry import ModelSpec, resolve_model
from cotbench.pipeline.runner import RunOptions, build_units, execute, score_unit
from cotbench.pipeline.store import Store
from cotbench.pipeline.summary import summarize, summary_csv
from cotbench.records import (
    SCHEMA_VERSION,
    Example,
    atomic_write,
    file_sha256,
    samples_jsonl,
)
from cotbench.tasks.base import DataMissing, Task


def resolve_tasks(cfg: RunConfig) -> list[Task]:
    from cotbench.tasks import DATASETS, get_task

    g = cfg.generation
    tasks: list[Task] = []
    names = list(g.datasets)
    if g.dataset_file:
        from cotbench.tasks.custom import task_from_file

        tasks.append(task_from_file(g.dataset_file, g.answer_type))
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


def load_data(tasks: list[Task], cfg: RunConfig) -> tuple[dict[Task, list[Example]], dict[str, Any]]:
    """Load each task's examples; record where they came from (file + sha256, or hub id + revision)."""
    g, data_dir = cfg.generation, cfg.reporting.data_dir
    data, sources = {}, {}
    for t in tasks:
        try:
            data[t] = t.load(data_dir, g.limit)
        except DataMissing as e:  # absent local files: skipped with --skip-missing, an error otherwise
            if not (data_dir and g.skip_missing):
                raise
            print(f"warning: skipping {t.name}: {e}", file=sys.stderr)
            sources[t.name] = {"skipped": str(e)}
            continue
        src = t.source(data_dir)
        if "local" in src and Path(src["local"]).is_file():
            src["sha256"] = file_sha256(Path(src["local"]))
        sources[t.name] = src
    if g.sample is not None:
        sample_data(data, sources, g.sample, g.sample_seed)
    return data, sources


def sample_data(data: dict[Task, list[Example]], sources: dict[str, Any], n: int, seed: int) -> None:
    """Keep a seeded sample of ``n`` items of each study dataset, stratified by sub-task and by the task's
    subject field (:mod:`cotbench.pipeline.sampling`); a dataset's sub-tasks (``bbh/...``) share its ``n``. Each
    task's source records the sampled ids, so the manifest says which items were asked."""
    from cotbench.pipeline.sampling import stratified_sample
    from cotbench.tasks import dataset_of

    def dataset(t: Task) -> str:
        try:
            return dataset_of(t.name)
        except ValueError:  # a --dataset-file task is a dataset of its own
            return t.name

    groups: dict[str, list[Task]] = {}
    for t in data:
        groups.setdefault(dataset(t), []).append(t)
    for tasks in groups.values():
        pairs = [(t, ex) for t in tasks for ex in data[t]]
        strata = [t.name + (f"/{ex.metadata.get(t.stratum, '')}" if t.stratum else "") for t, ex in pairs]
        kept = {id(ex) for _, ex in stratified_sample(pairs, strata, n, seed)}
        for t in tasks:
            data[t] = [ex for ex in data[t] if id(ex) in kept]
            sources[t.name]["sample"] = {"n": n, "seed": seed, "stratum": t.stratum,
                                         "ids": [ex.id for ex in data[t]]}


def inputs_digest(data: dict[Task, list[Example]]) -> str:
    """A digest of what the model is asked: every loaded example and its task's prompt file. Part of a
    run's identity instead of the paths the data was read from."""
    from cotbench.pipeline.prompts import load_prompt_file

    h = hashlib.sha256()
    for task, examples in data.items():
        h.update(json.dumps([task.name, load_prompt_file(task.prompt_file)], sort_keys=True, default=str).encode())
        for ex in examples:
            h.update(json.dumps(asdict(ex), sort_keys=True, default=str).encode())
    return h.hexdigest()


def make_backend(spec: ModelSpec, cfg: RunConfig) -> Backend:
    """The backend of a resolved model spec, built by the registry (:mod:`cotbench.backends.registry`)
    with the run's backend arguments; the judge's backend is made the same way."""
    g = cfg.generation
    return build_backend(spec, BuildContext(seed=g.seed, intervention=g.intervention), cfg.execution.backend_args)


def run_options(g: Generation, model_name: str, allow_prefill: bool) -> RunOptions:
    """The runner's options: the generation part's fields of the same names, plus what the resolved model
    and backend decide (the rows' label, whether the assistant turn can be prefilled). A runner option the
    generation part lacks is an AttributeError here, not a silent default."""
    own = {"model_name", "allow_prefill"}
    return RunOptions(model_name=model_name, allow_prefill=allow_prefill,
                      **{f.name: getattr(g, f.name) for f in fields(RunOptions) if f.name not in own})


def run_identity(cfg: RunConfig, spec: ModelSpec, data: dict[Task, list[Example]]) -> str:
    """Same outputs, same identity: the config's output-changing fields (with the backend and endpoint
    as resolved, so spelling out a default changes nothing) and the digest of the inputs."""
    resolved = replace(cfg.generation, backend=spec.backend, base_url=spec.base_url)
    return replace(cfg, generation=resolved).hash(inputs_digest(data))


def default_out(cfg: RunConfig, identity: str) -> Path:
    """Same command, same directory: that is what makes a plain rerun resume."""
    safe = cfg.generation.model.replace("/", "__").replace(":", "_")
    return Path("runs") / f"{safe}-{identity}"


def adopt_legacy_store(out: Path, store: Store) -> None:
    """Run directories made before the store was shared hold their own ``store.sqlite``; copy its
    generations into the store in use, so resuming such a run pays for nothing it already has."""
    legacy = out / "store.sqlite"
    if not legacy.is_file() or legacy.resolve() == store.path.resolve():
        return
    try:
        added = store.import_from(legacy)
    except OSError as e:
        print(f"warning: {e}; its generations are not reused", file=sys.stderr)
        return
    if added:
        print(f"note: copied {added} stored generation(s) from {legacy} into the store {store.path}",
              file=sys.stderr)


MANIFEST_PACKAGES = ("cotbench", "llama_cpp_python", "openai", "datasets", "vllm", "numpy", "pandas",
                     "math-verify", "z3-solver")


@lru_cache(maxsize=None)
def _package_versions(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    from importlib import metadata

    out = [("python", platform.python_version())]
    for name in names:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            pass
    return tuple(out)


def package_versions(names: tuple[str, ...] = MANIFEST_PACKAGES) -> dict[str, str]:
    """Python's and the installed ``names``' versions (absent ones left out), read once per process:
    parsing the packages' metadata cost more than the rest of a short run's bookkeeping, and a running
    process keeps the code it imported. The manifest's list by default; the benchmarks pass theirs."""
    return dict(_package_versions(tuple(names)))


def revision_from_status(porcelain_v2: str) -> str | None:
    """HEAD from ``git status --porcelain=v2 --branch`` output, with ``+dirty`` when any tracked file is
    changed (any entry line); None before the first commit (pure)."""
    lines = porcelain_v2.splitlines()
    head = next((ln.split()[2] for ln in lines if ln.startswith("# branch.oid ")), None)
    if head in (None, "(initial)"):
        return None
    return head + ("+dirty" if any(ln and not ln.startswith("#") for ln in lines) else "")


@lru_cache(maxsize=None)
def git_revision() -> str | None:
    """The checkout's HEAD (``+dirty`` if tracked files differ), None outside git. One ``git status``
    instead of two commands, once per process: the code a process runs is the code it imported."""
    try:
        root = Path(__file__).resolve().parent.parent
        r = subprocess.run(["git", "-C", str(root), "status", "--porcelain=v2", "--branch", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return revision_from_status(r.stdout) if r.returncode == 0 else None


def run(cfg: RunConfig, console=None, backend: Backend | None = None) -> Path:
    """Run a configuration; returns the run directory. ``backend`` may be injected (tests, benchmarks)."""
    started = time.time()
    g, x, r = cfg.generation, cfg.execution, cfg.reporting
    spec = resolve_model(g.model, g.backend, g.base_url)
    tasks = resolve_tasks(cfg)
    data, sources = load_data(tasks, cfg)
    identity = run_identity(cfg, spec, data)
    out = Path(r.out) if r.out else default_out(cfg, identity)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create output directory {out}: {e.strerror or e}") from None
    if not os.access(out, os.W_OK):
        raise OSError(f"output directory {out} is not writable")
    store = Store(Path(r.cache) if r.cache else default_store_path())
    adopt_legacy_store(out, store)
    own_backend = backend is None
    if backend is None and x.batch_api:
        from cotbench.backends.openai_batch import make_batch_backend

        api = x.args_for("openai")
        backend = make_batch_backend(spec, store.path, timeout=api["timeout"], max_retries=api["max_retries"],
                                     wait=x.wait, poll_s=x.batch_poll)
    backend = backend or make_backend(spec, cfg)
    # rows of an intervened model are labelled BASE+LABEL (the transformers backend's model_id)
    label = backend.model_id if g.intervention else spec.name
    opts = run_options(g, label, spec.prefill)
    units = build_units(data, g.settings, opts)
    judge_backend = None
    if g.judge_model and any(u.task.judge is not None for u in units):
        judge_spec = resolve_model(g.judge_model)
        judge_backend = make_backend(judge_spec, cfg)
    from cotbench.pipeline.progress import Progress

    with Progress(enabled=r.progress, console=console) as prog:
        if hasattr(backend, "progress"):  # batch APIs report batches, not single calls
            backend.progress = prog.batches
        try:
            stats = execute(units, backend, store, opts, progress=prog.update, judge=judge_backend)
        finally:
            if own_backend:
                backend.close()
            if judge_backend is not None:
                judge_backend.close()
            store.close()
    rows = [score_unit(u, opts.model_name) for u in units]
    price_in = r.price_in if r.price_in is not None else spec.price_in
    price_out = r.price_out if r.price_out is not None else spec.price_out
    if x.batch_api:  # the provider's batch price (discount factor from the model registry)
        from cotbench.backends.openai_batch import batch_prices

        price_in, price_out = batch_prices(spec.batch_discount, price_in, price_out)
    lines = summarize(rows, price_in, price_out, r.chance_credit)
    atomic_write(out / "samples.jsonl", samples_jsonl(rows))
    atomic_write(out / "summary.csv", summary_csv(lines))
    manifest = {
        "schema_version": SCHEMA_VERSION, "store": str(store.path.resolve()),
        "config": cfg.flat(), "config_hash": identity, "model": asdict(spec) | {"model_id": spec.model_id},
        "backend": backend.describe(), "backend_stats": asdict(backend.stats), "run_stats": asdict(stats),
        "judge": (judge_backend.describe() | {"model": g.judge_model}) if judge_backend else
                 ({"model": spec.name, "note": "the evaluated model judged itself"}
                  if any(u.task.judge is not None for u in units) else None),
        "datasets": sources, "packages": package_versions(), "git_revision": git_revision(),
        "command": sys.argv, "started_at": started, "finished_at": time.time(),
        "started_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": {"machine": platform.machine(), "system": platform.system(), "cpus": os.cpu_count()},
    }
    atomic_write(out / "manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")
    return out
