"""Section 5 of the study: separate planning from execution.

Conditions, side by side per model × dataset: few-shot direct, few-shot CoT, plan + direct answer,
plan + CoT execution, plan + tool execution (Python / z3). Accuracy has a binomial SE; the plan
conditions also report how often the plan could not be parsed and how often executing it failed,
read from the ``extra`` dict the plan solver stores on each sample (``plan_parse`` and ``tool``,
see :mod:`cotbench.solvers.plan`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from cotbench.analysis.gains import group_order

PLAN_SETTINGS = ("fs_direct", "fs_cot", "plan_direct", "plan_cot", "plan_tool")


def plan_failure(extra) -> float:
    """1.0 when no plan could be found in the plan call (``plan_parse == "none"``, or the tool
    reported ``no_plan``), else 0.0 — keys as defined in :mod:`cotbench.solvers.plan`."""
    e = extra or {}
    tool = e.get("tool") or {}
    return float(e.get("plan_parse") == "none" or tool.get("status") == "no_plan")


def exec_failure(extra) -> float:
    """1.0 when the tool ran but did not return a usable answer (any status but ``ok``, or an
    answer that could not be mapped to the task's gold format), else 0.0."""
    tool = (extra or {}).get("tool") or {}
    if not tool:
        return 0.0
    return float(tool.get("status") != "ok" or tool.get("mapped") is None)


def tool_status_counts(df: pd.DataFrame) -> pd.DataFrame:
    """plan_tool outcomes per model × dataset: one column per sandbox status (ok, timeout, …)."""
    d = df[df["setting"] == "plan_tool"]
    if d.empty:
        return pd.DataFrame(columns=["model", "dataset", "n"])
    status = d["extra"].map(lambda e: ((e or {}).get("tool") or {}).get("status") or "missing")
    t = pd.crosstab([d["model"], d["dataset"]], status).reset_index().rename_axis(columns=None)
    t.insert(2, "n", t.drop(columns=["model", "dataset"]).sum(axis=1))
    return t


COLUMNS = ["model", "dataset", "group", "setting", "n", "accuracy", "se", "unparseable_rate",
           "plan_fail_rate", "exec_fail_rate", "mean_tokens_out"]


def plan_table(df: pd.DataFrame, settings: tuple[str, ...] = PLAN_SETTINGS) -> pd.DataFrame:
    """Long table: one row per model × dataset × condition present (first sample per item)."""
    d = df[df["setting"].isin(settings)]
    if "sample_index" in d.columns:
        d = d[d["sample_index"] == 0]
    rows = []
    for (model, dataset, setting), g in d.groupby(["model", "dataset", "setting"], sort=True):
        n = len(g)
        acc = float(g["correct"].mean())
        is_plan = setting.startswith("plan_")
        extra = g["extra"] if "extra" in g.columns else pd.Series([{}] * n)
        rows.append({
            "model": model, "dataset": dataset, "group": g["group"].iloc[0], "setting": setting, "n": n,
            "accuracy": acc, "se": float(np.sqrt(acc * (1 - acc) / n)) if n else np.nan,
            "unparseable_rate": float((g["parse_status"] == "unparseable").mean()),
            "plan_fail_rate": float(extra.map(plan_failure).mean()) if is_plan else np.nan,
            "exec_fail_rate": float(extra.map(exec_failure).mean()) if setting == "plan_tool" else np.nan,
            "mean_tokens_out": float(g["tokens_out"].mean()) if g["tokens_out"].notna().any() else np.nan,
        })
    out = pd.DataFrame(rows, columns=COLUMNS)
    if out.empty:
        return out
    order = {g: i for i, g in enumerate(group_order(out["group"]))}
    out = out.assign(_g=out["group"].map(order), _s=out["setting"].map({s: i for i, s in enumerate(settings)}))
    return out.sort_values(["_g", "dataset", "model", "_s"], kind="mergesort").drop(columns=["_g", "_s"]).reset_index(drop=True)


def plan_wide(t: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per model × dataset with one column per condition (missing conditions omitted)."""
    if t.empty:
        return t
    w = t.pivot_table(index=["model", "dataset", "group"], columns="setting", values="accuracy", sort=False)
    cols = [s for s in PLAN_SETTINGS if s in w.columns]
    return w[cols].reset_index().rename_axis(columns=None)
