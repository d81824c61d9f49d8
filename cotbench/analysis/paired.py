"""Item-level pairing of two settings (e.g. zs_direct vs zs_cot) for the same model and item.

Every CoT-vs-direct number in the analyzer is computed on *paired* items: the items that both
settings answered. Only the first sample of each item (``sample_index == 0``) is used, so a run with
several samples per item is compared on its greedy/first draw (self-consistency is out of scope).
"""
from __future__ import annotations

import pandas as pd

SHOT_PAIRS: dict[str, tuple[str, str]] = {
    "zs": ("zs_direct", "zs_cot"),
    "fs": ("fs_direct", "fs_cot"),
}
KEYS = ["model", "dataset", "example_id"]
CARRY = ["correct", "tokens_out", "parse_status", "response", "extracted"]


def dataset_family(name: str) -> str:
    """``bbh/date_understanding`` -> ``bbh``: the level at which the study pooled sub-tasks."""
    return name.split("/", 1)[0]


def pair_settings(df: pd.DataFrame, base: str, treat: str) -> pd.DataFrame:
    """One row per (model, dataset, example) answered in both settings.

    Columns: model, dataset, group, example_id, question, gold, choices, metadata, and for each of
    ``base``/``treat`` the suffixed ``correct``, ``tokens_out``, ``parse_status``, ``response``,
    ``extracted``; plus ``d`` = correct_treat − correct_base (in {−1, 0, 1}).
    Empty (with those columns) when either setting is absent.
    """
    first = df[df["sample_index"] == 0] if "sample_index" in df.columns else df
    a = first[first["setting"] == base]
    b = first[first["setting"] == treat]
    item_cols = ["group", "question", "gold", "choices", "metadata"]
    left = a[KEYS + [c for c in item_cols if c in a.columns] + CARRY].rename(columns={c: f"{c}_base" for c in CARRY})
    right = b[KEYS + CARRY].rename(columns={c: f"{c}_treat" for c in CARRY})
    m = left.merge(right, on=KEYS, how="inner", validate="one_to_one")
    m["correct_base"] = m["correct_base"].astype(int)
    m["correct_treat"] = m["correct_treat"].astype(int)
    m["d"] = m["correct_treat"] - m["correct_base"]
    return m.sort_values(KEYS, kind="mergesort").reset_index(drop=True)


def pair_shots(df: pd.DataFrame, shots: tuple[str, ...] = ("zs", "fs")) -> pd.DataFrame:
    """Direct-vs-CoT pairs for each shots setting, stacked with a ``shots`` column."""
    parts = []
    for s in shots:
        base, treat = SHOT_PAIRS[s]
        p = pair_settings(df, base, treat)
        p.insert(0, "shots", s)
        parts.append(p)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
