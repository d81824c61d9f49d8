"""Render analysis tables as aligned text, CSV or JSON (I/O-free: returns strings)."""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

P_COLS = ("p_bootstrap", "p_mcnemar", "p_bonferroni", "p_holm")


def _fmt(col: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        if col in P_COLS:
            return f"{v:.2e}" if 0 < v < 1e-3 else f"{v:.4f}"
        if "tokens" in col and not col.endswith("_pct"):
            return f"{v:.1f}"
        return f"{v:+.3f}" if ("gain" in col or col in ("diff",)) else f"{v:.3f}"
    return str(v)


def text_table(df: pd.DataFrame, title: str = "") -> str:
    """Plain aligned table; numbers right-aligned, '-' for missing."""
    head = f"== {title} ==\n" if title else ""
    if df.empty:
        return head + "(no rows: the runs lack the settings this table needs)\n"
    cols = list(df.columns)
    cells = [[_fmt(c, v) for c, v in zip(cols, row)] for row in df.itertuples(index=False, name=None)]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in cols]

    def line(vals):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)).rstrip()

    return head + "\n".join([line(cols), line(["-" * w for w in widths]), *(line(r) for r in cells)]) + "\n"


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if math.isnan(v) else float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{c: _jsonable(v) for c, v in zip(df.columns, row)} for row in df.itertuples(index=False, name=None)]


def render(tables: dict[str, tuple[str, pd.DataFrame]], fmt: str = "table") -> str:
    """All tables in one string: ``table`` (titled text blocks), ``csv`` (``# name`` + CSV per
    table) or ``json`` (one object keyed by table name)."""
    if fmt == "json":
        return json.dumps({k: records(df) for k, (_, df) in tables.items()}, indent=1, sort_keys=False) + "\n"
    if fmt == "csv":
        return "\n".join(f"# {k}\n" + df.to_csv(index=False) for k, (_, df) in tables.items())
    if fmt == "table":
        return "\n".join(text_table(df, title) for _, (title, df) in tables.items())
    raise ValueError(f"unknown format {fmt!r}; choose table, csv or json")
