"""Figures for the literature meta-analysis (``cotbench meta plot``): the study's Figure 2, a forest
plot by category, a funnel plot.

All figures use the Agg backend, a fixed jitter seed and PNG files without a timestamp, so the same
input gives byte-identical output.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cotbench.figures.style import save  # noqa: E402
from cotbench.meta.summaries import paper_category_means  # noqa: E402

__all__ = ["fig2", "forest", "funnel"]

_GREY = "#9a9a9a"
_BLUE = "#1f5fa8"
_RED = "#c0392b"


def _label(cat: str) -> str:
    """The study's wording for a category id when the schema knows it."""
    try:
        from cotbench.meta.schema import CATEGORY_LABELS
    except ImportError:
        return str(cat)
    return CATEGORY_LABELS.get(str(cat), str(cat))


def _papers(n: int) -> str:
    return f"{n} paper" if n == 1 else f"{n} papers"


def _jitter(n: int, width: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-width, width, n)


def fig2(df: pd.DataFrame, out: str | Path | None = None, mean_of: str = "paper"):
    """Per-category CoT deltas: all comparisons (grey), per-paper means (blue), category mean (red).

    Categories are sorted by the mean (of paper means by default, ``mean_of="effect"`` for the plain
    mean over comparisons); a light violin shows the distribution of all comparisons.
    """
    import seaborn as sns

    if mean_of not in ("paper", "effect"):
        raise ValueError(f"mean_of must be 'paper' or 'effect', got {mean_of!r}")
    df = df.assign(category=df["category"].astype(str))
    pc = paper_category_means(df)
    means = (pc.groupby("category")["mean_delta"].mean() if mean_of == "paper"
             else df.groupby("category")["delta"].mean())
    order = list(means.sort_values(ascending=False, kind="stable").index)
    pos = {c: i for i, c in enumerate(order)}
    fig, ax = plt.subplots(figsize=(8.5, 0.55 * len(order) + 1.6))
    sns.violinplot(data=df, y="category", x="delta", order=order, orient="h", inner=None, cut=0,
                   color="#e6e6e6", linewidth=0, density_norm="width", width=0.8, ax=ax)
    y_eff = df["category"].map(pos).to_numpy(float) + _jitter(len(df), 0.18, 0)
    ax.scatter(df["delta"], y_eff, s=7, color=_GREY, alpha=0.55, linewidths=0, label="comparison", zorder=2)
    y_pap = pc["category"].map(pos).to_numpy(float) + _jitter(len(pc), 0.12, 1)
    ax.scatter(pc["mean_delta"], y_pap, s=22, color=_BLUE, alpha=0.85, edgecolors="white", linewidths=0.4,
               label="paper mean", zorder=3)
    for c, m in means.items():
        ax.plot([m, m], [pos[c] - 0.36, pos[c] + 0.36], color=_RED, lw=2.2, zorder=4,
                label=("category mean of paper means" if mean_of == "paper" else "category mean")
                if pos[c] == 0 else None)
    ax.axvline(0, color="black", lw=0.8, ls="--", zorder=1)
    counts = df.groupby("category")["paper_id"].nunique()
    ax.set_yticks(range(len(order)))
    ax.set_yticklabels([f"{_label(c)}  ({_papers(counts[c])})" for c in order])
    ax.set_ylim(len(order) - 0.5, -0.5)
    ax.set_xlabel("CoT − direct answer (accuracy points)")
    ax.set_ylabel("")
    ax.set_title("Where does chain-of-thought help? Deltas from the literature by task category", fontsize=11)
    ax.grid(axis="x", color="#eeeeee", zorder=0)
    ax.legend(loc="lower right", frameon=True, fontsize=8)
    fig.tight_layout()
    if out is not None:
        save(fig, out)
    return fig


def forest(table: pd.DataFrame, overall: dict | None = None, out: str | Path | None = None,
           xlabel: str = "Pooled CoT − direct (accuracy points)", title: str | None = None):
    """Forest plot of pooled estimates per group with CIs (thick) and prediction intervals (thin).

    ``table`` needs columns group, estimate, ci_lb, ci_ub and optionally pi_lb, pi_ub, k, papers;
    ``overall`` (same keys) is drawn as a diamond at the bottom.
    """
    need = {"group", "estimate", "ci_lb", "ci_ub"}
    if not need <= set(table.columns):
        raise ValueError(f"forest: table lacks {sorted(need - set(table.columns))}")
    t = table.sort_values("estimate", ascending=False, kind="stable").reset_index(drop=True)
    n = len(t) + (2 if overall else 0)
    fig, ax = plt.subplots(figsize=(9, 0.42 * n + 1.5))
    ys = np.arange(len(t))
    if {"pi_lb", "pi_ub"} <= set(t.columns):
        ax.hlines(ys, t["pi_lb"], t["pi_ub"], color=_BLUE, lw=1, alpha=0.5, label="95% prediction interval")
    ax.hlines(ys, t["ci_lb"], t["ci_ub"], color=_BLUE, lw=3, label="95% CI")
    size = 30 + 60 * (t["k"] / t["k"].max()) if "k" in t.columns else 40
    ax.scatter(t["estimate"], ys, marker="s", s=size, color="black", zorder=3)
    labels = []
    for _, r in t.iterrows():
        extra = ""
        if "k" in t.columns:
            extra = f"  k={int(r['k'])}" + (f", {_papers(int(r['papers']))}" if "papers" in t.columns else "")
        labels.append(f"{_label(r['group'])}{extra}")
    ticks = list(ys)
    if overall:
        yo = len(t) + 1
        e, lo, hi = overall["estimate"], overall["ci_lb"], overall["ci_ub"]
        ax.fill([lo, e, hi, e], [yo, yo - 0.3, yo, yo + 0.3], color=_RED, zorder=3)
        if "pi_lb" in overall:
            ax.hlines([yo], overall["pi_lb"], overall["pi_ub"], color=_RED, lw=1, alpha=0.6)
        ticks.append(yo)
        extra = f"  k={int(overall['k'])}" if "k" in overall else ""
        labels.append(f"All categories{extra}")
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels)
    ax.set_ylim(max(ticks) + 0.7, -0.7)
    ax.axvline(0, color="black", lw=0.8, ls="--")
    xr = ax.get_xlim()
    txt_x = xr[1] + 0.02 * (xr[1] - xr[0])
    rows = list(t[["estimate", "ci_lb", "ci_ub"]].itertuples(index=False))
    for y, (e, lo, hi) in zip(ys, rows):
        ax.text(txt_x, y, f"{e:6.2f} [{lo:6.2f}, {hi:6.2f}]", va="center", fontsize=8, family="monospace")
    if overall:
        ax.text(txt_x, len(t) + 1, f"{overall['estimate']:6.2f} [{overall['ci_lb']:6.2f}, {overall['ci_ub']:6.2f}]",
                va="center", fontsize=8, family="monospace", color=_RED)
    ax.set_xlim(xr)
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title, fontsize=11)
    ax.grid(axis="x", color="#eeeeee")
    fig.tight_layout()
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    if out is not None:
        save(fig, out)
    return fig


def funnel(yi: Sequence[float], vi: Sequence[float], estimate: float, out: str | Path | None = None,
           filled_yi: Sequence[float] = (), filled_vi: Sequence[float] = (), xlabel: str = "Effect",
           title: str | None = None):
    """Funnel plot: effects against their standard errors with the pseudo 95% region."""
    from cotbench.meta.bias import funnel_data

    pts, region = funnel_data(yi, vi, estimate)
    fig, ax = plt.subplots(figsize=(6.5, 5))
    ax.fill_betweenx(region["sei"], region["lo"], region["hi"], color="#f2f2f2", zorder=0)
    ax.plot(region["lo"], region["sei"], color=_GREY, lw=0.8, ls="--")
    ax.plot(region["hi"], region["sei"], color=_GREY, lw=0.8, ls="--")
    ax.axvline(estimate, color=_RED, lw=1.2, label=f"pooled estimate {estimate:.2f}")
    ax.scatter(pts["yi"], pts["sei"], s=14, color="black", alpha=0.7, linewidths=0, label="observed")
    if len(filled_yi):
        ax.scatter(filled_yi, np.sqrt(np.asarray(filled_vi, float)), s=16, facecolors="white",
                   edgecolors="black", label="imputed (trim-and-fill)")
    ax.set_ylim(region["sei"].max(), 0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Standard error")
    if title:
        ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False)
    fig.tight_layout()
    if out is not None:
        save(fig, out)
    return fig
