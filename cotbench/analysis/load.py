"""Read run directories (``samples.jsonl``, ``summary.csv``, ``manifest.json``) into pandas.

The sample table has one row per :class:`cotbench.records.SampleResult` plus a ``run`` column (the
directory it came from). ``messages`` is dropped by default: few-shot prompts are large and no
analysis needs them.

Nothing is dropped or merged silently: a sample (model, dataset, setting, example, sample index) that
appears twice, in one file or in two run directories, is an error naming both places, and a run whose
``summary.csv`` counts a different n than its ``samples.jsonl`` holds is an error too. Files written by
a newer cotbench (a higher ``schema_version``) are refused rather than misread.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from cotbench.pipeline.summary import read_summary
from cotbench.records import (
    DataError,
    SampleResult,
    check_schema,
    iter_jsonl,
    read_json,
)

SAMPLE_FIELDS = [f.name for f in dataclasses.fields(SampleResult)]
REQUIRED = ("model", "dataset", "setting", "example_id", "correct")


def _absent_value(f: dataclasses.Field, hint: Any) -> Any:
    """What a row written by an older cotbench (or another tool) holds for a field it lacks: the field's
    default; None for optional fields and for containers (the loader fills a fresh one); else the
    type's empty value ("" for text, 0 for counts, the first literal for a Literal)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    args = typing.get_args(hint)
    if f.default_factory is not dataclasses.MISSING or type(None) in args:
        return None
    if typing.get_origin(hint) is typing.Literal:
        return args[0]
    return {str: "", int: 0}.get(hint)


_HINTS = typing.get_type_hints(SampleResult)
DEFAULTS: dict[str, Any] = {f.name: _absent_value(f, _HINTS[f.name]) for f in dataclasses.fields(SampleResult)
                            if f.name not in REQUIRED}
ID_COLS = ["model", "dataset", "setting", "example_id", "sample_index"]
# optional counts and measurements (tokens_in, tokens_out, latency_s): float columns, NaN where unknown
NUMBER_COLS = [name for name, hint in _HINTS.items()
               if set(typing.get_args(hint)) in ({int, type(None)}, {float, type(None)})]


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
    seen: dict[tuple, int] = {}
    for n, obj in iter_jsonl(path):
        where = f"{path}: line {n}"
        check_schema(obj, where)
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
        ident = tuple(row[c] for c in ID_COLS)
        if ident in seen:
            raise DataError(f"{where}: sample {_describe(ident)} already at line {seen[ident]}")
        seen[ident] = n
        if not keep_messages:
            row.pop("messages")
        rows.append(row)
    return rows


def _describe(ident: tuple) -> str:
    return ", ".join(f"{c}={v!r}" for c, v in zip(ID_COLS, ident))


def load_run(run_dir: str | Path, keep_messages: bool = False) -> pd.DataFrame:
    """One run directory -> sample table (checked against its summary.csv where there is one)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: not a directory (expected a run directory with samples.jsonl)")
    if (run_dir / "manifest.json").is_file():
        read_manifest(run_dir)  # its schema version
    df = frame_from_rows(read_samples(run_dir / "samples.jsonl", keep_messages))
    df["run"] = str(run_dir)
    if (run_dir / "summary.csv").is_file():
        check_counts(df, read_summary(run_dir), run_dir / "summary.csv")
    return df


def check_counts(df: pd.DataFrame, summary: pd.DataFrame, where: Path) -> None:
    """summary.csv's n per (model, dataset, setting) must be the number of sample rows: if a file was
    edited or replaced, the two would otherwise report different numbers without a word."""
    if "n" not in summary.columns:
        return
    have = df.groupby(["model", "dataset", "setting"]).size().to_dict()
    said = {(str(r.model), str(r.dataset), str(r.setting)): int(r.n) for r in summary.itertuples()}
    diff = {k: (said.get(k, 0), have.get(k, 0)) for k in set(have) | set(said) if said.get(k, 0) != have.get(k, 0)}
    if diff:
        shown = "; ".join(f"{m}/{d}/{s}: n={a} in summary.csv, {b} in samples.jsonl"
                          for (m, d, s), (a, b) in sorted(diff.items())[:5])
        raise DataError(f"{where}: disagrees with samples.jsonl ({shown}{' …' if len(diff) > 5 else ''})")


def load_runs(run_dirs: Iterable[str | Path], keep_messages: bool = False) -> pd.DataFrame:
    """Several run directories -> one table.

    Each sample must come from one run: the same sample in two directories (the same run given twice,
    or two runs of one model over the same items) is an error naming both, since keeping either would
    change the numbers silently. Analyse such runs separately, or pass only one of them.
    """
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise DataError("no run directories given")
    frames = [load_run(d, keep_messages) for d in dirs]
    df = pd.concat(frames, ignore_index=True)
    dup = df[df.duplicated(subset=ID_COLS, keep=False)]
    if len(dup):
        first = dup.groupby(ID_COLS, sort=False)["run"].apply(list).iloc[0]
        ident = tuple(dup.iloc[0][c] for c in ID_COLS)
        n = int(dup.duplicated(subset=ID_COLS).sum())
        raise DataError(f"{n} sample(s) appear in more than one run, e.g. {_describe(ident)} in "
                        f"{' and '.join(first)}; analyse these runs separately or pass only one of them")
    return df


def frame_from_rows(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Sample-row dicts -> the typed sample table (bool ``correct``, float token/latency columns)."""
    cols = [c for c in SAMPLE_FIELDS if not rows or c in rows[0]]
    df = pd.DataFrame(rows, columns=cols)
    df["correct"] = df["correct"].astype(bool)
    for c in NUMBER_COLS:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    p = Path(run_dir) / "manifest.json"
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    obj = read_json(p)
    if not isinstance(obj, dict):
        raise DataError(f"{p}: expected a JSON object")
    check_schema(obj, str(p))
    return obj


