"""Where our re-scoring of the study's published generations disagrees with the release's own verdicts.

Rows come from :mod:`cotbench.published.importer` (the importer: ``extra["published"]`` holds their verdict,
``extra["ours"]`` ours when they were imported with ``--scores theirs``). I/O-free.
"""
from __future__ import annotations

import pandas as pd

DIS_COLUMNS = ["model", "dataset", "setting", "n", "acc_theirs", "acc_ours", "n_disagree", "n_ours_only_correct",
               "n_theirs_only_correct", "parsed_theirs", "parsed_ours", "n_unsupported"]


def disagreements(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary per model × dataset × setting, item-level rows where our and their verdicts differ)."""
    if df.empty or "extra" not in df.columns:
        return pd.DataFrame(columns=DIS_COLUMNS), pd.DataFrame()
    pub = df["extra"].map(lambda e: (e or {}).get("published"))
    d = df[pub.notna()].copy()
    if d.empty:
        return pd.DataFrame(columns=DIS_COLUMNS), pd.DataFrame()
    pub = pub[pub.notna()]
    ours = d["extra"].map(lambda e: e.get("ours"))
    if ours.notna().any():  # rows imported with --scores theirs: put our verdicts back for the comparison
        has = ours.notna()
        for col in ("extracted", "correct", "parse_status", "extract_method"):
            d.loc[has, col] = ours[has].map(lambda o: o[col])
        d["correct"] = d["correct"].astype(bool)
    d["their_correct"] = pub.map(lambda p: bool(p["correct"])).astype(bool)
    d["their_parsed"] = pub.map(lambda p: bool(p["parsed"])).astype(bool)
    d["their_extracted"] = pub.map(lambda p: p.get("extracted"))
    d["unsupported"] = d["extract_method"].astype(str).str.startswith("unsupported")
    rows = []
    for (m, ds, s), g in d.groupby(["model", "dataset", "setting"], sort=True):
        rows.append({
            "model": m, "dataset": ds, "setting": s, "n": len(g),
            "acc_theirs": g["their_correct"].mean(), "acc_ours": g["correct"].mean(),
            "n_disagree": int((g["their_correct"] != g["correct"]).sum()),
            "n_ours_only_correct": int((g["correct"] & ~g["their_correct"]).sum()),
            "n_theirs_only_correct": int((~g["correct"] & g["their_correct"]).sum()),
            "parsed_theirs": g["their_parsed"].mean(), "parsed_ours": (g["parse_status"] == "ok").mean(),
            "n_unsupported": int(g["unsupported"].sum()),
        })
    items = d[d["their_correct"] != d["correct"]][
        ["model", "dataset", "setting", "example_id", "gold", "their_extracted", "extracted", "their_correct",
         "correct", "extract_method"]].rename(columns={"extracted": "our_extracted", "correct": "our_correct"})
    return pd.DataFrame(rows, columns=DIS_COLUMNS), items.reset_index(drop=True)
