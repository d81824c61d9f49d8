"""Read run directories (``samples.jsonl``, ``summary.csv``, ``manifest.json``) into pandas.

The sample table has one row per :class:`cotbench.types.SampleResult` plus a ``run`` column (the
directory it came from). ``messages`` is dropped by default: few-shot prompts are large and no
analysis needs them.
"""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from cotbench.tasks.base import DataError, iter_jsonl
from cotbench.types import SampleResult

SAMPLE_FIELDS = [f.name for f in fields(SampleResult)]
REQUIRED = ("model", "dataset", "setting", "example_id", "correct")
DEFAULTS: dict[str, Any] = {
    "group": "",
    "sample_index": 0,
    "key": "",
    "messages": None,
    "response": "",
    "extracted": None,
    "extract_method": "",
    "parse_status": "ok",
    "gold": "",
    "tokens_in": None,
    "tokens_out": None,
    "latency_s": None,
    "finish_reason": None,
    "question": "",
    "choices": None,
    "metadata": None,
    "extra": None,
    "extractions": None,  # absent in rows written before per-extractor verdicts were stored
}
ID_COLS = ["model", "dataset", "setting", "example_id", "sample_index"]


def _coerce_bool(v: Any, where: str) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    raise DataError(f"{where}: field 'correct' must be true/false, got {v!r}")


def read_samples(path: str | Path, keep_messages: bool = False) -> list[dict[str, Any]]:
    """Parse one samples.jsonl; a bad line or a missing field raises DataError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (a run directory must contain samples.jsonl)")
    rows: list[dict[str, Any]] = []
    for n, obj in iter_jsonl(path):
        where = f"{path}: line {n}"
        for name in REQUIRED:
            if obj.get(name) is None:
                raise DataError(f"{where}: missing field {name!r}")
        row = {k: obj.get(k, DEFAULTS.get(k)) for k in SAMPLE_FIELDS}
        row["correct"] = _coerce_bool(row["correct"], where)
        row["example_id"] = str(row["example_id"])
        row["sample_index"] = int(row["sample_index"] or 0)
        row["response"] = row["response"] or ""
        row["question"] = row["question"] or ""
        row["metadata"] = row["metadata"] or {}
        row["extra"] = row["extra"] or {}
        row["extractions"] = row["extractions"] or {}
        if not isinstance(row["extractions"], dict):
            raise DataError(f"{where}: field 'extractions' must be an object, got {type(row['extractions']).__name__}")
        if row["parse_status"] not in ("ok", "unparseable"):
            raise DataError(f"{where}: field 'parse_status' must be 'ok' or 'unparseable', got {row['parse_status']!r}")
        if not keep_messages:
            row.pop("messages")
        rows.append(row)
    return rows


def load_run(run_dir: str | Path, keep_messages: bool = False) -> pd.DataFrame:
    """One run directory -> sample table."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: not a directory (expected a run directory with samples.jsonl)")
    df = frame_from_rows(read_samples(run_dir / "samples.jsonl", keep_messages))
    df["run"] = str(run_dir)
    return _dedupe(df)


def _dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """Keep the last occurrence of each sample, so a resumed run that appended never double-counts."""
    return df.drop_duplicates(subset=ID_COLS, keep="last").reset_index(drop=True)


def load_runs(run_dirs: Iterable[str | Path], keep_messages: bool = False) -> pd.DataFrame:
    """Several run directories -> one table.

    A sample (model, dataset, setting, example, sample index) seen twice — a resumed run that
    appended, or the same run passed twice — keeps its last occurrence (later directories win).
    """
    frames = [load_run(d, keep_messages) for d in run_dirs]
    if not frames:
        raise DataError("no run directories given")
    return _dedupe(pd.concat(frames, ignore_index=True))


def frame_from_rows(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Sample-row dicts -> the typed sample table (bool ``correct``, float token/latency columns)."""
    cols = [c for c in SAMPLE_FIELDS if not rows or c in rows[0]]
    df = pd.DataFrame(rows, columns=cols)
    df["correct"] = df["correct"].astype(bool)
    for c in ("tokens_in", "tokens_out", "latency_s"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    p = Path(run_dir) / "manifest.json"
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{p}: invalid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{p}: expected a JSON object")
    return obj


def read_summary(run_dir: str | Path) -> pd.DataFrame:
    p = Path(run_dir) / "summary.csv"
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    try:
        df = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot read CSV ({e})") from None
    missing = [c for c in ("model", "dataset", "setting", "accuracy") if c not in df.columns]
    if missing:
        raise DataError(f"{p}: missing column(s) {missing}")
    return df
