"""Accuracy and CoT gain under each answer extractor, side by side (lm-eval's strict-match vs flexible-extract).

Parsing is the main confound of a CoT study: a direct answer and a CoT answer are read by different rules
of the same extractor, so a gain can come from the parser. Every sample is therefore scored by every
extractor that applies to its answer type, in three roles (:data:`cotbench.scoring.extract.APPLICABLE`):
``strict`` (only the answer format the prompt asks for), ``default`` (the stored ``correct``) and
``flexible`` (also guesses). A conclusion that holds under all three does not hang on parsing.

Where a row's verdicts come from (column ``verdicts``):

* ``stored``: the row's ``extractions`` (runs written since that field exists);
* ``re-extracted``: older rows; the stored ``response`` is read again by the strict and flexible extractors,
  with the answer type and labels of the row's task and its stored ``finish_reason`` (the default column
  keeps the stored verdict, which an older extractor may have given);
* ``default only``: neither is possible (a dataset the task registry does not know, an answer that came
  from a tool or a judge, or no response): every role then gets the row's own ``correct``.

A role an answer type lacks (judge items have one verdict) also falls back to ``correct``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cotbench.records import Example
from cotbench.scoring.extract import APPLICABLE, ROLES, extract_all

SOLVER_METHODS = ("tool_", "judge", "unsupported")  # answers a solver computed, not read from text


def _task_of(dataset: str):
    from cotbench.tasks import get_task

    try:
        return get_task(dataset)
    except (ValueError, KeyError):
        return None


def _reextract(row: dict[str, Any], tasks: dict[str, Any]) -> dict[str, dict] | None:
    """Every applicable extractor's verdict for an old row, or None when the row cannot be re-read."""
    method = str(row.get("extract_method") or "")
    if not row.get("response") or method.startswith(SOLVER_METHODS):
        return None
    dataset = row["dataset"]
    if dataset not in tasks:
        tasks[dataset] = _task_of(dataset)
    task = tasks[dataset]
    if task is None or task.answer_type not in APPLICABLE or task.answer_type == "judge":
        return None
    choices = row.get("choices")
    meta = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
    ex = Example(str(row["example_id"]), dataset, row.get("question") or "", str(row.get("gold") or ""),
                 task.answer_type, tuple(choices) if isinstance(choices, (list, tuple)) and choices else None, meta)
    finish = row.get("finish_reason")
    try:
        return extract_all(row["response"], ex, task.labels, finish if isinstance(finish, str) else None)
    except ValueError:  # e.g. a label task row without labels: keep its stored verdict
        return None


def verdicts(df: pd.DataFrame) -> pd.DataFrame:
    """The sample table plus ``correct_<role>``, ``parsed_<role>`` for each role and ``verdicts``
    (stored / re-extracted / default only, see the module docstring)."""
    tasks: dict[str, Any] = {}
    cols: dict[str, list] = {f"{k}_{r}": [] for k in ("correct", "parsed") for r in ROLES}
    source: list[str] = []
    has = "extractions" in df.columns
    for row in df.to_dict("records"):
        ext = row.get("extractions") if has else None
        how = "stored"
        if not isinstance(ext, dict) or not ext:
            ext, how = _reextract(row, tasks), "re-extracted"
        by_role = {e.get("role"): e for e in (ext or {}).values() if isinstance(e, dict)}
        if "default" not in by_role:
            how = "default only"
            by_role = {}
        for r in ROLES:  # the default column is the stored verdict itself, so it matches every other table
            e = None if r == "default" else by_role.get(r)
            if e is None:
                cols[f"correct_{r}"].append(bool(row["correct"]))
                cols[f"parsed_{r}"].append(row.get("parse_status", "ok") == "ok")
            else:
                cols[f"correct_{r}"].append(bool(e.get("correct")))
                cols[f"parsed_{r}"].append(e.get("answer") is not None)
        source.append(how)
    out = df.copy()
    for k, v in cols.items():
        out[k] = np.array(v, dtype=bool)
    out["verdicts"] = source
    return out


def _sources(s: pd.Series) -> str:
    counts = s.value_counts()
    if len(counts) == 1:
        return str(counts.index[0])
    return ", ".join(f"{n} {k}" for k, n in counts.items())


def accuracy_table(v: pd.DataFrame) -> pd.DataFrame:
    """Per model × dataset × setting: accuracy and unparseable rate under each role, and where the verdicts
    came from. ``v`` is :func:`verdicts` output."""
    cols = (["model", "dataset", "setting", "n"] + [f"acc_{r}" for r in ROLES]
            + [f"unparseable_{r}" for r in ROLES] + ["verdicts"])
    if v.empty:
        return pd.DataFrame(columns=cols)
    first = v[v["sample_index"] == 0] if "sample_index" in v.columns else v
    rows = []
    for (m, d, s), x in first.groupby(["model", "dataset", "setting"], sort=True):
        line = {"model": m, "dataset": d, "setting": s, "n": len(x)}
        line.update({f"acc_{r}": float(x[f"correct_{r}"].mean()) for r in ROLES})
        line.update({f"unparseable_{r}": float(1 - x[f"parsed_{r}"].mean()) for r in ROLES})
        line["verdicts"] = _sources(x["verdicts"])
        rows.append(line)
    return pd.DataFrame(rows, columns=cols)


def gains_table(v: pd.DataFrame, shots: tuple[str, ...] = ("zs", "fs"), pool: bool = False) -> pd.DataFrame:
    """Per model × dataset × shots: direct and CoT accuracy and the CoT gain under each role side by side,
    plus ``gain_spread`` (largest minus smallest gain): how much the conclusion depends on parsing."""
    from cotbench.analysis.gains import gains, order_rows

    keys = ["model", "dataset", "group", "shots"]
    merged = None
    for r in ROLES:
        g = gains(v.assign(correct=v[f"correct_{r}"]), shots, pool=pool)
        g = g[keys + ["n", "acc_direct", "acc_cot", "gain"]].rename(
            columns={"acc_direct": f"acc_direct_{r}", "acc_cot": f"acc_cot_{r}", "gain": f"gain_{r}"})
        merged = g if merged is None else merged.merge(g.drop(columns="n"), on=keys, how="outer")
    gain_cols = [f"gain_{r}" for r in ROLES]
    cols = keys + ["n"] + [f"{k}_{r}" for r in ROLES for k in ("acc_direct", "acc_cot")] + gain_cols + ["gain_spread"]
    if merged is None or merged.empty:
        return pd.DataFrame(columns=cols)
    merged["gain_spread"] = merged[gain_cols].max(axis=1) - merged[gain_cols].min(axis=1)
    return order_rows(merged[cols])
