"""The study's figures, drawn from our analysis tables (never from the network).

Each ``plot_*`` takes analysis DataFrames and returns a matplotlib Figure (or None when the
tables lack what it needs); :func:`make_all` runs the analyses on a sample table and writes every
figure it can, reporting the ones it skipped and why. Orders are fixed (category order of the
study, then names), and there is no randomness (no jitter, no bootstrapped error bars).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cotbench.analysis import equals as eq
from cotbench.analysis import gains as gn
from cotbench.analysis import plan_conditions as pl
from cotbench.analysis import selective as sel
from cotbench.figures.style import (
    SETTING_COLORS,
    figure_style,
    group_color,
    group_label,
    plt,
    save,
)

SHOTS_LABEL = {"zs": "zero-shot", "fs": "few-shot"}


def _models(g: pd.DataFrame) -> list[str]:
    return sorted(g["model"].unique())


def plot_gains_by_dataset(g: pd.DataFrame, shots: str = "zs"):
    """Fig. 3 (right) shape: mean CoT gain per dataset across models (bars, coloured by category,
    sorted ascending), each model's gain as a dot, the overall mean as a dashed line."""
    g = g[g["shots"] == shots]
    if g.empty:
        return None
    agg = gn.by_dataset(g).sort_values(["mean_gain", "dataset"], kind="mergesort").reset_index(drop=True)
    models = _models(g)
    marks = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
    with figure_style():
        fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(agg) + 1.5), 3.6))
        x = np.arange(len(agg))
        ax.bar(x, agg["mean_gain"] * 100, color=[group_color(k) for k in agg["group"]], edgecolor="white", zorder=2)
        for mi, m in enumerate(models):
            gm = g[g["model"] == m].set_index("dataset")["gain"]
            ys = [gm.get(d, np.nan) * 100 for d in agg["dataset"]]
            ax.scatter(x, ys, marker=marks[mi % len(marks)], s=14, color="black", zorder=3,
                       label=m if len(models) <= 10 else None)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.axhline(g["gain"].mean() * 100, color="red", linestyle="--", linewidth=1.2, label="mean gain", zorder=4)
        ax.set_xticks(x, agg["dataset"], rotation=-35, ha="left")
        ax.set_ylabel("CoT − direct accuracy (points)")
        ax.set_title(f"CoT improvement by dataset ({SHOTS_LABEL.get(shots, shots)}, mean over models)")
        _group_legend(ax, agg["group"], extra=True)
        return fig


def _group_legend(ax, groups, extra: bool = False):
    from matplotlib.patches import Patch

    handles, labels = ax.get_legend_handles_labels() if extra else ([], [])
    for gname in gn.group_order(groups):
        handles.append(Patch(color=group_color(gname)))
        labels.append(group_label(gname))
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def plot_gains_by_category(g: pd.DataFrame, shots: str = "zs"):
    """Fig. 3 (left) shape: one panel per category, a bar per model = mean of its dataset gains."""
    g = g[g["shots"] == shots]
    if g.empty:
        return None
    gm = gn.by_group_model(g)
    groups = gn.group_order(gm["group"])
    models = _models(g)
    with figure_style():
        fig, axes = plt.subplots(len(groups), 1, figsize=(max(4.0, 0.5 * len(models) + 2), 1.9 * len(groups)),
                                 sharex=True, squeeze=False)
        lo = min(0.0, gm["mean_gain"].min() * 100) - 2
        hi = max(0.0, gm["mean_gain"].max() * 100) + 2
        for ax, grp in zip(axes[:, 0], groups):
            sub = gm[gm["group"] == grp].set_index("model")["mean_gain"]
            ys = [sub.get(m, np.nan) * 100 for m in models]
            ax.bar(np.arange(len(models)), ys, color=group_color(grp), edgecolor="white", zorder=2)
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_ylim(lo, hi)
            ax.set_title(group_label(grp), fontsize=9)
        axes[-1, 0].set_xticks(np.arange(len(models)), models, rotation=-30, ha="left")
        fig.supylabel("CoT − direct (points)")
        fig.suptitle(f"CoT improvement by category ({SHOTS_LABEL.get(shots, shots)})")
        fig.tight_layout()
        return fig


def plot_radar(g: pd.DataFrame, shots: str = "zs"):
    """Fig. 1 (right) shape: spider plot, one axis per category, one polygon per model plus the mean
    over models. Needs at least three categories."""
    g = g[g["shots"] == shots]
    gm = gn.by_group_model(g)
    groups = gn.group_order(gm["group"])
    if len(groups) < 3:
        return None
    models = _models(g)
    ang = np.linspace(0, 2 * np.pi, len(groups), endpoint=False).tolist()
    ang_c = ang + ang[:1]
    with figure_style():
        fig = plt.figure(figsize=(5.2, 4.6))
        ax = fig.add_subplot(projection="polar")
        for mi, m in enumerate(models):
            sub = gm[gm["model"] == m].set_index("group")["mean_gain"]
            v = [sub.get(k, np.nan) * 100 for k in groups]
            ax.plot(ang_c, v + v[:1], linewidth=0.9, alpha=0.6, label=m)
        mean = gm.groupby("group")["mean_gain"].mean()
        v = [mean.get(k, np.nan) * 100 for k in groups]
        ax.plot(ang_c, v + v[:1], color="black", linewidth=2.0, label="mean over models")
        ax.fill(ang_c, v + v[:1], color="black", alpha=0.08)
        ax.set_xticks(ang, [group_label(k) for k in groups])
        ax.set_title(f"CoT improvement (points) by category, {SHOTS_LABEL.get(shots, shots)}", pad=18)
        ax.legend(fontsize=6, loc="upper right", bbox_to_anchor=(1.35, 1.1), frameon=False)
        return fig


def plot_equals(t: pd.DataFrame, shots: str = "zs"):
    """Fig. 4 shape: per model, CoT gain on items with "=" (hatched) and without (solid), for each
    "=" dataset, with 95% CIs. The no-answer bin is left out of the bars (it is in the table)."""
    t = t[(t["shots"] == shots) & (t["bin"] != "no_answer")]
    if t.empty or t["n"].sum() == 0:
        return None
    models = sorted(t["model"].unique())
    datasets = sorted(t["dataset"].unique())
    colors = {d: c for d, c in zip(datasets, ["#7b3294", "#2166ac", "#1b7837", "#b35806"])}
    width = 0.8 / (2 * len(datasets))
    with figure_style():
        fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(models) + 2), 3.4))
        k = 0
        for d in datasets:
            for b, hatch, alpha in (("equals", "xx", 0.55), ("no_equals", "", 1.0)):
                sub = t[(t["dataset"] == d) & (t["bin"] == b)].set_index("model")
                ys = np.array([sub["gain"].get(m, np.nan) * 100 for m in models])
                err = np.array([1.96 * sub["se"].get(m, np.nan) * 100 for m in models])
                xs = np.arange(len(models)) - 0.4 + width * (k + 0.5)
                ax.bar(xs, ys, width=width, color=colors.get(d, "grey"), alpha=alpha, hatch=hatch,
                       edgecolor="white", label=f"{d} {'with' if b == 'equals' else 'without'} =", zorder=2)
                ax.errorbar(xs, ys, yerr=np.where(np.isnan(err), 0, err), fmt="none", ecolor="black",
                            elinewidth=0.7, capsize=2, zorder=3)
                k += 1
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(np.arange(len(models)), models, rotation=-20, ha="left")
        ax.set_ylabel("CoT − direct (points)")
        ax.set_title(f'CoT improvement on items with vs without "=" ({SHOTS_LABEL.get(shots, shots)})')
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        return fig


def plot_selective(policies: pd.DataFrame, summary: pd.DataFrame):
    """Accuracy vs mean output tokens of every selective-CoT policy (test half), the Pareto frontier,
    the two baselines and the policy chosen on the training half; one panel per model."""
    p = policies[policies["mean_tokens_out"].notna()]
    if p.empty:
        return None
    models = sorted(p["model"].unique())
    with figure_style():
        ncols = min(4, len(models))
        nrows = -(-len(models) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 4.0 * nrows), squeeze=False)
        for ax in axes.flat[len(models):]:
            ax.set_visible(False)
        for ax, m in zip(axes.flat, models):
            q = p[p["model"] == m]
            ax.scatter(q["mean_tokens_out"], q["accuracy"] * 100, s=12, color="grey", alpha=0.6, label="policy")
            f = q[q["pareto"]].sort_values("mean_tokens_out", kind="mergesort")
            ax.plot(f["mean_tokens_out"], f["accuracy"] * 100, color="black", marker="o", markersize=3,
                    linewidth=1.2, label="Pareto frontier")
            for name, color in (("never_cot", "tab:blue"), ("always_cot", "tab:red")):
                r = q[q["policy"] == name]
                ax.scatter(r["mean_tokens_out"], r["accuracy"] * 100, s=50, color=color, zorder=4,
                           label=name.replace("_", " "))
            s = summary[summary["model"] == m]
            if len(s) and isinstance(s["chosen_policy"].iloc[0], str):
                r = q[q["policy"] == s["chosen_policy"].iloc[0]]
                ax.scatter(r["mean_tokens_out"], r["accuracy"] * 100, s=70, marker="*", color="tab:green",
                           zorder=5, label=f"chosen: {s['chosen_policy'].iloc[0]}")
            ax.set_title(m, fontsize=9)
            ax.set_xlabel("mean output tokens per item")
            ax.set_ylabel("accuracy (%)")
            ax.legend(fontsize=6, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
        fig.suptitle("Selective CoT: accuracy vs cost (held-out half)")
        fig.tight_layout()
        return fig


def plot_plan(t: pd.DataFrame):
    """Section 5: accuracy per dataset under each condition (direct, CoT, plan+direct, plan+CoT,
    plan+tool), one panel per model, binomial 95% error bars."""
    if t.empty or not t["setting"].str.startswith("plan_").any():
        return None
    models = sorted(t["model"].unique())
    settings = [s for s in pl.PLAN_SETTINGS if s in set(t["setting"])]
    with figure_style():
        width_in = max(5.0, 0.22 * t["dataset"].nunique() * len(settings) + 2.0)
        fig, axes = plt.subplots(len(models), 1, figsize=(width_in, 2.9 * len(models)), squeeze=False)
        for ax, m in zip(axes[:, 0], models):
            q = t[t["model"] == m]
            datasets = list(dict.fromkeys(q["dataset"]))
            width = 0.8 / len(settings)
            for k, s in enumerate(settings):
                sub = q[q["setting"] == s].set_index("dataset")
                ys = np.array([sub["accuracy"].get(d, np.nan) * 100 for d in datasets])
                err = np.array([1.96 * sub["se"].get(d, np.nan) * 100 for d in datasets])
                xs = np.arange(len(datasets)) - 0.4 + width * (k + 0.5)
                ax.bar(xs, ys, width=width, color=SETTING_COLORS.get(s, "grey"), label=s, zorder=2)
                ax.errorbar(xs, ys, yerr=np.where(np.isnan(err), 0, err), fmt="none", ecolor="black",
                            elinewidth=0.7, capsize=2, zorder=3)
            ax.set_xticks(np.arange(len(datasets)), datasets, rotation=-25, ha="left")
            ax.set_ylabel("accuracy (%)")
            ax.set_title(m, fontsize=9)
        axes[0, 0].legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.suptitle("Plan / execute / tool (Section 5)")
        fig.tight_layout()
        return fig


def make_all(df: pd.DataFrame, out_dir: str | Path, formats=("png", "pdf"), include_gold: bool = False,
             seed: int = 0, pool: bool = True) -> tuple[list[Path], dict[str, str]]:
    """Every figure the sample table supports -> files under ``out_dir``; (paths, {skipped: reason}).

    ``pool`` draws sub-tasks pooled into their dataset (27 BBH tasks -> one "bbh" bar), as the
    study's Figure 3 did; the equals, selective and plan figures always use the tasks as run."""
    out_dir = Path(out_dir)
    written: list[Path] = []
    skipped: dict[str, str] = {}

    def emit(stem: str, fig, reason: str):
        if fig is None:
            skipped[stem] = reason
        else:
            written.extend(save(fig, Path(out_dir) / stem, tuple(formats)))

    g = gn.gains(df, pool=pool)
    for s in ("zs", "fs"):
        if not (g["shots"] == s).any():
            skipped[f"*_{s}"] = f"no model × dataset has both {s}_direct and {s}_cot"
            continue
        emit(f"gains_by_dataset_{s}", plot_gains_by_dataset(g, s), "no gains")
        emit(f"gains_by_category_{s}", plot_gains_by_category(g, s), "no gains")
        emit(f"radar_{s}", plot_radar(g, s), "fewer than 3 categories have gains")
        emit(f"equals_{s}", plot_equals(eq.equals_split(df, shots=(s,), include_gold=include_gold), s),
             "no MMLU / MMLU-Pro item has both settings and a parseable CoT answer")
    pol, summ = sel.selective(df, "zs", seed=seed)
    emit("selective_frontier_zs", plot_selective(pol, summ) if len(pol) else None,
         "no zero-shot direct+CoT pairs with output-token counts")
    emit("plan_conditions", plot_plan(pl.plan_table(df)), "no plan_* settings in the runs")
    return written, skipped
