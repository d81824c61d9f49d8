"""Head heatmaps (retrieval score, LoFiT selection) and before/after accuracy by setting.

Uses the deterministic style of :mod:`cotbench.figures.style` (Agg, no timestamps in files).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cotbench.figures.style import figure_style, plt, save
from cotbench.pipeline.summary import read_summary


def heatmap(scores: np.ndarray, path: str | Path, title: str, marked=(), cbar: str = "retrieval score") -> Path:
    """Layers x heads grid (layer 0 at the top); ``marked`` heads get a box."""
    path = Path(path)
    L, H = scores.shape
    with figure_style():
        fig, ax = plt.subplots(figsize=(2.2 + 0.32 * H, 1.2 + 0.16 * L))
        im = ax.imshow(scores, aspect="auto", cmap="viridis", interpolation="nearest")
        for l, h in marked:
            ax.add_patch(plt.Rectangle((h - 0.5, l - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.2))
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(H))
        ax.set_yticks(range(0, L, max(1, L // 10)))
        ax.grid(False)
        ax.set_title(title, fontsize=8)
        fig.colorbar(im, ax=ax, label=cbar)
        save(fig, path.parent / path.stem, formats=(path.suffix.lstrip(".") or "png",))
    return path


def retrieval_heatmaps(csv_path: str | Path, out: Path) -> list[Path]:
    df = pd.read_csv(csv_path)
    paths = []
    for name, g in df.groupby("probe_set", sort=True):
        grid = g.pivot(index="layer", columns="head", values="score").sort_index().to_numpy()
        paths.append(heatmap(grid, out / f"heads_retrieval_{name}.png",
                             f"Retrieval score, {name} ({int(g['n_probes'].iloc[0])} probes)"))
    return paths


def lofit_heatmap(lofit_file: str | Path, out: Path) -> Path:
    data = json.loads(Path(lofit_file).read_text(encoding="utf-8"))
    norms = np.asarray(data["select_norms"])
    heads = [tuple(int(x) for x in h.split(".")) for h in data["heads"]]
    return heatmap(norms, out / f"heads_lofit_{Path(lofit_file).stem}.png",
                   f"LoFiT step 1: |a_h|_1 ({data.get('dataset', '?')}); boxes: {len(heads)} selected heads",
                   marked=heads, cbar="|a_h|_1")


def before_after(run_dirs: list[str | Path], out: Path) -> Path | None:
    """Accuracy (± 1 SE) per dataset x setting, one bar per model variant (base, +knockout, +LoFiT)."""
    frames = [read_summary(d) for d in run_dirs]
    if not frames:
        return None
    df = pd.concat(frames, ignore_index=True)
    panels = sorted(df["dataset"].unique())
    variants = sorted(df["model"].unique(), key=lambda m: ("+" in m, m))
    with figure_style():
        fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1, 3.0), squeeze=False)
        width = 0.8 / len(variants)
        for ax, ds in zip(axes[0], panels):
            g = df[df["dataset"] == ds]
            settings = sorted(g["setting"].unique())
            for i, v in enumerate(variants):
                r = g[g["model"] == v].set_index("setting").reindex(settings)
                x = np.arange(len(settings)) + (i - (len(variants) - 1) / 2) * width
                label = v.partition("+")[2] or "base"
                bars = ax.bar(x, r["accuracy"], width, yerr=r["se"], capsize=2, label=label)
                ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)  # a zero bar still shows its value
            ax.set_xticks(range(len(settings)))
            ax.set_xticklabels(settings)
            ax.set_ylim(0, 1)
            ax.set_title(f"{ds} (n={int(g['n'].max())})", fontsize=8)
            ax.set_ylabel("accuracy")
        axes[0][-1].legend(fontsize=7, loc="upper right")
        save(fig, Path(out) / "heads_before_after", formats=("png",))
    return out / "heads_before_after.png"


def make_all(retrieval: list, lofit: list, runs: list, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for c in retrieval:
        written += retrieval_heatmaps(c, out)
    for f in lofit:
        written.append(lofit_heatmap(f, out))
    if runs:
        p = before_after(runs, out)
        if p:
            written.append(p)
    return written
