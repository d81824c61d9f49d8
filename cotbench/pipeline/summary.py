"""Per (model, dataset, setting) summary lines: computed from a run's rows, written as summary.csv and
read back (the one reader of that file: the console, the analyzer and the importer use it)."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotbench.records import REFUSALS, DataError, SampleResult

if TYPE_CHECKING:  # pandas only where summary.csv is read back: a run writes it and never imports pandas
    import pandas as pd

SUMMARY_FIELDS = ["model", "dataset", "group", "setting", "n", "accuracy", "se", "unparseable_rate",
                  "mean_tokens_out", "tokens_in", "tokens_out", "context_overflow", "content_filter",
                  "accuracy_chance_credit", "accuracy_strict", "accuracy_flexible", "cost_usd"]


def _role_verdict(r: SampleResult, role: str) -> bool | None:
    """The verdict of the extractor playing ``role`` for this sample, None if it has none (tool/judge answers)."""
    return next((bool(e["correct"]) for e in (r.extractions or {}).values() if e.get("role") == role), None)


def refusal(r: SampleResult) -> str | None:
    """The refusal behind a row, if any of its calls was refused (a plan's first call included)."""
    reasons = [c.get("finish_reason") for c in r.extra.get("calls", [])] + [r.finish_reason]
    return next((x for x in reasons if x in REFUSALS), None)


def _total(values) -> int | None:
    """The sum of the counts rows report (a row without one counts 0), or None when no row reports one
    (e.g. imported published generations): an unknown count is written as an empty cell, not as 0."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def summarize(rows: list[SampleResult], price_in: float | None = None, price_out: float | None = None,
              chance_credit: bool = False) -> list[dict[str, Any]]:
    """One line per (model, dataset, setting): accuracy with its binomial standard error, etc. The one
    computation of these lines: the harness and the ``published`` importer both write summary.csv with it."""
    groups: dict[tuple[str, str, str], list[SampleResult]] = {}
    for r in rows:
        groups.setdefault((r.model, r.dataset, r.setting), []).append(r)
    out = []
    for (model, dataset, setting), rs in groups.items():
        n = len(rs)
        acc = sum(r.correct for r in rs) / n
        tin = _total(r.tokens_in for r in rs)
        tout = _total(r.tokens_out for r in rs)
        line = {
            "model": model, "dataset": dataset, "group": rs[0].group, "setting": setting, "n": n,
            "accuracy": round(acc, 6), "se": round(math.sqrt(acc * (1 - acc) / n), 6),
            "unparseable_rate": round(sum(r.parse_status == "unparseable" for r in rs) / n, 6),
            "mean_tokens_out": None if tout is None else round(tout / n, 2), "tokens_in": tin, "tokens_out": tout,
            "context_overflow": sum(refusal(r) == "context_overflow" for r in rs),
        }
        for role in ("strict", "flexible"):  # the same responses read by the other extractors
            if any(_role_verdict(r, role) is not None for r in rs):
                hits = [_role_verdict(r, role) for r in rs]
                line[f"accuracy_{role}"] = round(sum(r.correct if h is None else h for r, h in zip(rs, hits)) / n, 6)
        filtered = sum(refusal(r) == "content_filter" for r in rs)
        if filtered:
            line["content_filter"] = filtered
        if chance_credit:
            credit = sum(1.0 if r.correct else (1.0 / len(r.choices) if r.parse_status == "unparseable" and r.choices else 0.0)
                         for r in rs)
            line["accuracy_chance_credit"] = round(credit / n, 6)
        if price_in is not None and price_out is not None and tin is not None and tout is not None:
            line["cost_usd"] = round(tin / 1e6 * price_in + tout / 1e6 * price_out, 6)
        out.append(line)
    order = {"zs_direct": 0, "zs_cot": 1, "fs_direct": 2, "fs_cot": 3, "plan_direct": 4, "plan_cot": 5, "plan_tool": 6}
    out.sort(key=lambda d: (d["model"], d["dataset"], order.get(d["setting"], 99)))
    return out


def summary_csv(lines: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    fields = [f for f in SUMMARY_FIELDS if any(f in ln for ln in lines)]
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(lines)
    return buf.getvalue()


KEY_COLUMNS = ("model", "dataset", "group", "setting")  # read as text, whatever the cells look like
REQUIRED_COLUMNS = ("model", "dataset", "setting", "accuracy")  # what every reader of summary.csv needs


def read_summary(run_dir: str | Path, required: tuple[str, ...] = REQUIRED_COLUMNS) -> pd.DataFrame:
    """A run's summary.csv, checked for the ``required`` columns and for empty model/dataset/setting
    cells (the one reader of that file)."""
    import pandas as pd

    p = Path(run_dir) / "summary.csv"
    if not p.is_file():
        raise DataError(f"{p}: no such file — is {run_dir} a finished cotbench run directory?")
    try:
        # only an empty cell is missing (what summary_csv writes for None): a model named "NA" stays one
        df = pd.read_csv(p, dtype={c: str for c in KEY_COLUMNS}, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot read CSV ({e})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{p}: missing column(s) {missing}")
    for c in ("model", "dataset", "setting"):
        empty = df.index[df[c].isna()] if c in df.columns else []
        if len(empty):
            raise DataError(f"{p}: line {empty[0] + 2}: empty field {c!r}")
    return df


def summary_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """summary.csv's rows as dicts through :func:`read_summary`; empty cells (columns older runs lack)
    are None."""
    df = read_summary(run_dir)
    return [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
            for r in df.to_dict("records")]
