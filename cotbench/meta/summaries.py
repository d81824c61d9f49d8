"""The study's own descriptive summaries of CoT-minus-direct deltas (Sprague et al. 2024, §3).

These are plain means and medians, no weighting: a paper with many comparisons in a category counts
once at the paper level (``paper_category_means``) and many times at the effect level. Both views are
reported so the reader can see how much a few prolific papers drive a category.
"""
from __future__ import annotations

import pandas as pd

__all__ = ["paper_category_means", "category_summary", "top_k_vs_rest", "REQUIRED"]

REQUIRED = ("paper_id", "category", "delta")


def _check(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"effects table lacks column(s) {', '.join(missing)}")
    bad = df["delta"].isna()
    if bad.any():
        raise ValueError(f"delta is missing in row {int(bad.to_numpy().nonzero()[0][0])}")
    # plain labels: a pandas Categorical would add empty groups for unused categories
    return df.assign(category=df["category"].astype(str), paper_id=df["paper_id"].astype(str))


def paper_category_means(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (paper, category): mean delta over that paper's comparisons in the category."""
    df = _check(df)
    g = df.groupby(["category", "paper_id"], sort=True)["delta"]
    return g.agg(mean_delta="mean", n_effects="size").reset_index()


def category_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per category: effect-level and paper-level mean/median deltas with counts, best first."""
    df = _check(df)
    eff = df.groupby("category")["delta"].agg(
        n_effects="size", mean_delta="mean", median_delta="median", sd_delta="std"
    )
    pc = paper_category_means(df)
    pap = pc.groupby("category")["mean_delta"].agg(
        n_papers="size", paper_mean_delta="mean", paper_median_delta="median"
    )
    out = eff.join(pap).sort_values("paper_mean_delta", ascending=False, kind="stable")
    return out.reset_index()


def top_k_vs_rest(df: pd.DataFrame, k: int = 3) -> dict:
    """Split categories into the k with the largest paper-level mean delta and the rest.

    Returns the chosen categories and, for each side, the effect-level and paper-level mean and
    median delta and counts — the comparison behind the study's "math and symbolic reasoning"
    headline.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    df = _check(df)
    summ = category_summary(df)
    if len(summ) <= k:
        raise ValueError(f"only {len(summ)} categories: cannot split off the top {k}")
    top = list(summ["category"].iloc[:k])
    pc = paper_category_means(df)
    out = {"top_categories": top}
    for name, mask_e, mask_p in (
        ("top", df["category"].isin(top), pc["category"].isin(top)),
        ("rest", ~df["category"].isin(top), ~pc["category"].isin(top)),
    ):
        d = df.loc[mask_e, "delta"]
        p = pc.loc[mask_p, "mean_delta"]
        out[name] = {
            "n_effects": int(d.size),
            "n_paper_category": int(p.size),
            "n_papers": int(df.loc[mask_e, "paper_id"].nunique()),
            "mean_delta": float(d.mean()),
            "median_delta": float(d.median()),
            "paper_mean_delta": float(p.mean()),
            "paper_median_delta": float(p.median()),
        }
    out["difference_paper_mean"] = out["top"]["paper_mean_delta"] - out["rest"]["paper_mean_delta"]
    return out
