"""Does one paper drive a subgroup conclusion? Leave-one-paper-out, largest-paper-out and capped weights.

The database is unbalanced: one paper (Wei et al. 2022) holds over a third of the rows, and several
categories rest on one or two papers. :func:`category_sensitivity` refits the per-group pooled
estimates (the same model choice as ``meta fit --by``: multilevel ``~ 1 | paper/effect`` by REML when a
group has two or more papers, a univariate REML fit when it has one, the value itself for a single
row) and reports

* **leave one paper out** -- every paper removed in turn: the range of each group's estimate, how
  often its rank changes, and in how many runs the ordering of the groups changes at all;
* **largest paper out** -- the paper with the most rows removed;
* **capped weights** -- each paper's total weight within a group limited to ``cap`` of the group's
  weight (point estimate only, see :func:`capped_estimate`).

Everything here is a pure function of the effects table (columns ``yi``, ``vi``, ``paper_id`` and the
grouping column); the CLI only formats the result.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["SensitivityResult", "category_sensitivity", "group_estimates", "paper_weights", "capped_estimate",
           "cap_shares", "DEFAULT_CAP"]

DEFAULT_CAP = 0.2   # a paper may carry at most 20 % of a group's weight in the capped analysis
_RANDOM = "~ 1 | paper_id/effect_id"


def _fit(d: pd.DataFrame, multilevel: bool, method: str):
    """(estimate, paper-level variance, effect-level variance, note) as ``meta fit --by`` would fit ``d``.

    A multilevel fit that does not converge (possible in a leave-one-out subset) falls back to the
    univariate REML fit, and the note says so.
    """
    from cotbench.meta.models import rma, rma_mv

    y, v = d["yi"].to_numpy(float), d["vi"].to_numpy(float)
    if len(d) == 1:
        return float(y[0]), 0.0, 0.0, ""
    papers = d["paper_id"].nunique()
    note = ""
    if multilevel and papers >= 2:
        data = d.assign(effect_id=np.arange(len(d)).astype(str)) if "effect_id" not in d else d
        try:
            fit = rma_mv(y, v, random=_RANDOM, data=data, method="ML" if method == "ML" else "REML")
            return float(fit.estimate), float(fit.sigma2[0]), float(fit.sigma2[1]), ""
        except RuntimeError as e:
            note = f"multilevel fit failed ({e}); univariate REML used"
    meth = method if not (multilevel and method not in ("REML", "ML")) else "REML"
    fit = rma(y, v, method=meth)
    return float(fit.estimate), 0.0, float(fit.tau2), note


def paper_weights(d: pd.DataFrame, sigma2_paper: float, sigma2_effect: float) -> pd.DataFrame:
    """Each paper's total weight in the intercept-only estimate and its weighted mean effect.

    With effects nested in papers the marginal covariance of a paper's m effects is
    ``D + s2_paper * J`` (D = diag(v_i + s2_effect)), so by Sherman-Morrison its effects carry GLS
    weights ``(1/d_i) / (1 + s2_paper * S)`` with ``S = sum(1/d_i)``: the paper's total weight is
    ``S / (1 + s2_paper * S)``, which saturates at ``1 / s2_paper`` however many rows it has.
    """
    rows = []
    for pid, g in d.groupby("paper_id", sort=True):
        inv = 1.0 / (g["vi"].to_numpy(float) + sigma2_effect)
        s = float(inv.sum())
        rows.append({"paper_id": pid, "k": len(g), "weight": s / (1.0 + sigma2_paper * s),
                     "mean": float((inv * g["yi"].to_numpy(float)).sum() / s)})
    out = pd.DataFrame(rows)
    out["share"] = out["weight"] / out["weight"].sum()
    return out


def cap_shares(shares: np.ndarray, cap: float) -> np.ndarray:
    """Limit every share to ``cap`` (at least 1/n, so the shares can still sum to one) and give the
    excess to the uncapped papers in proportion to their shares (water-filling)."""
    s = np.asarray(shares, float)
    s = s / s.sum()
    c = max(cap, 1.0 / s.size)
    capped = np.zeros(s.size, bool)
    while True:
        free = ~capped
        rest = 1.0 - c * capped.sum()
        out = np.where(capped, c, s * rest / s[free].sum())
        over = free & (out > c + 1e-12)
        if not over.any():
            return out
        capped |= over


def capped_estimate(d: pd.DataFrame, cap: float, sigma2_paper: float, sigma2_effect: float) -> dict[str, Any]:
    """The group's estimate with each paper's share of the weight capped at ``cap``.

    Papers keep their own (GLS-weighted) mean effect; only how much each paper counts changes. The
    uncapped version of this weighted mean is exactly the intercept-only GLS estimate.
    """
    pw = paper_weights(d, sigma2_paper, sigma2_effect)
    new = cap_shares(pw["share"].to_numpy(), cap)
    top = pw.loc[pw["share"].idxmax()]
    return {"estimate": float((new * pw["mean"].to_numpy()).sum()), "max_share": float(top["share"]),
            "max_share_paper": str(top["paper_id"]), "cap_used": max(cap, 1.0 / len(pw))}


def group_estimates(df: pd.DataFrame, by: str = "category", multilevel: bool = True, method: str = "REML",
                    groups: list | None = None) -> dict[Any, tuple[float, float, float, str]]:
    """{group: (estimate, s2_paper, s2_effect, note)} for the groups in ``df`` (or only ``groups``)."""
    out = {}
    for lvl, d in df.groupby(by, sort=True, observed=True):
        if groups is None or lvl in groups:
            out[lvl] = _fit(d.reset_index(drop=True), multilevel, method.upper())
    return out


def _ranks(est: dict) -> dict:
    """Rank 1 = largest estimate; ties keep the group order."""
    order = sorted(est, key=lambda g: (-est[g], str(g)))
    return {g: i + 1 for i, g in enumerate(order)}


@dataclass
class SensitivityResult:
    by: str
    cap: float
    table: pd.DataFrame                      # one row per group
    loo: pd.DataFrame                        # one row per (left-out paper, group)
    ranking_changes: int                     # LOO runs whose group ordering differs from the full fit
    n_papers: int
    largest_paper: str
    largest_rows: int
    notes: list[str] = field(default_factory=list)

    @property
    def stable(self) -> bool:
        """No single paper changes the ordering of the groups or removes a group."""
        return self.ranking_changes == 0 and not self.table["vanishes_without"].astype(bool).any()

    def to_dict(self) -> dict[str, Any]:
        return {"by": self.by, "cap": self.cap, "n_papers": self.n_papers, "ranking_changes": self.ranking_changes,
                "stable": self.stable, "largest_paper": self.largest_paper, "largest_rows": self.largest_rows,
                "groups": self.table.to_dict(orient="records"), "leave_one_out": self.loo.to_dict(orient="records"),
                "notes": self.notes}

    def text(self) -> str:
        t = self.table
        cols = ["group", "k", "papers", "estimate", "rank", "loo_min", "loo_max", "loo_rank_changes",
                "without_largest", "rank_without_largest", "capped", "rank_capped", "max_share"]
        shown = t[cols].copy()
        shown["max_share"] = (100 * shown["max_share"]).round(0).astype(int)
        body = shown.to_string(index=False, float_format=lambda x: f"{x:.2f}", na_rep="-")
        lines = [
            f"Sensitivity of the per-{self.by} estimates to single papers ({self.n_papers} papers)",
            "loo_*: leave one paper out (min/max of the estimate; runs in which the group's rank changes);",
            f"without_largest: {self.largest_paper} ({self.largest_rows} rows) left out;",
            f"capped: each paper's weight in a group limited to {self.cap:.0%} of the group's weight "
            "(at least 1/papers); max_share: the largest paper's share in %",
            "", body, "",
            f"The ordering of the {self.by} groups changes in {self.ranking_changes} of {self.n_papers} "
            "leave-one-paper-out fits" + ("" if self.ranking_changes else " (stable)") + ".",
        ]
        gone = t[t["vanishes_without"].astype(bool)]
        for _, r in gone.iterrows():
            lines.append(f"{r['group']} rests on one paper only ({r['vanishes_without']}); it disappears without it.")
        lines += self.notes
        return "\n".join(lines) + "\n"


def category_sensitivity(df: pd.DataFrame, by: str = "category", multilevel: bool = True, method: str = "REML",
                         cap: float = DEFAULT_CAP) -> SensitivityResult:
    """Leave-one-paper-out, largest-paper-out and capped-weight versions of the per-``by`` estimates."""
    if not 0 < cap <= 1:
        raise ValueError(f"cap must be a share in (0, 1], got {cap}")
    for col in ("yi", "vi", "paper_id", by):
        if col not in df.columns:
            raise ValueError(f"sensitivity needs column {col!r}")
    if df.empty:
        raise ValueError("no rows to analyse")
    df = df.reset_index(drop=True)
    full = group_estimates(df, by, multilevel, method)
    est = {g: v[0] for g, v in full.items()}
    notes = [f"{g} (all papers): {v[3]}" for g, v in full.items() if v[3]]
    rank = _ranks(est)
    papers = sorted(df["paper_id"].unique())
    groups_of = df.groupby("paper_id")[by].apply(lambda s: set(s.dropna().unique()))
    loo_rows, changes = [], 0
    per_group_changes = {g: 0 for g in est}
    for p in papers:
        rest = df[df["paper_id"] != p]
        touched = groups_of[p]
        refit = group_estimates(rest, by, multilevel, method, groups=list(touched)) if len(rest) else {}
        notes += [f"{g} without {p}: {v[3]}" for g, v in refit.items() if v[3]]
        e = {g: (refit[g][0] if g in touched else est[g]) for g in est if g not in touched or g in refit}
        r_full = _ranks({g: est[g] for g in e})      # full ordering restricted to the groups still present
        r_loo = _ranks(e)
        changed = any(r_full[g] != r_loo[g] for g in e)
        changes += changed
        for g in est:
            moved = g not in e or r_full[g] != r_loo[g]
            per_group_changes[g] += moved
            if g in touched:
                loo_rows.append({"left_out": p, "group": g, "estimate": e.get(g, math.nan),
                                 "rank": r_loo.get(g, math.nan), "rank_full": rank[g], "order_changed": changed})
    loo = pd.DataFrame(loo_rows, columns=["left_out", "group", "estimate", "rank", "rank_full", "order_changed"])
    counts = df["paper_id"].value_counts()
    largest = str(sorted(counts[counts == counts.max()].index)[0])
    without = df[df["paper_id"] != largest]
    w_fit = group_estimates(without, by, multilevel, method) if len(without) else {}
    notes += [f"{g} without {largest}: {v[3]}" for g, v in w_fit.items() if v[3] and g not in groups_of[largest]]
    w_est = {g: v[0] for g, v in w_fit.items()}
    w_rank = _ranks(w_est)
    capped = {g: capped_estimate(df[df[by] == g], cap, full[g][1], full[g][2]) for g in est}
    c_rank = _ranks({g: c["estimate"] for g, c in capped.items()})
    rows = []
    for g in sorted(est, key=lambda g: rank[g]):
        d = df[df[by] == g]
        lo = loo[(loo["group"] == g) & loo["estimate"].notna()]
        single = d["paper_id"].nunique() == 1
        rows.append({
            "group": g, "k": len(d), "papers": int(d["paper_id"].nunique()), "estimate": est[g], "rank": rank[g],
            "loo_min": float(min(lo["estimate"].min(), est[g])) if len(lo) else est[g],
            "loo_max": float(max(lo["estimate"].max(), est[g])) if len(lo) else est[g],
            "loo_min_without": str(lo.loc[lo["estimate"].idxmin(), "left_out"]) if len(lo) else "",
            "loo_max_without": str(lo.loc[lo["estimate"].idxmax(), "left_out"]) if len(lo) else "",
            "loo_rank_changes": per_group_changes[g],
            "vanishes_without": str(d["paper_id"].iloc[0]) if single else "",
            "without_largest": w_est.get(g, math.nan), "rank_without_largest": w_rank.get(g, math.nan),
            "capped": capped[g]["estimate"], "rank_capped": c_rank[g], "max_share": capped[g]["max_share"],
            "max_share_paper": capped[g]["max_share_paper"], "cap_used": capped[g]["cap_used"],
        })
    table = pd.DataFrame(rows)
    if (table["cap_used"] > cap + 1e-12).any():
        notes.append(f"Groups with fewer than {math.ceil(1 / cap)} papers cannot meet the {cap:.0%} cap; "
                     "there each paper gets an equal share (cap_used = 1/papers).")
    return SensitivityResult(by=by, cap=cap, table=table, loo=loo, ranking_changes=int(changes),
                             n_papers=len(papers), largest_paper=largest, largest_rows=int(counts.max()), notes=notes)
