"""Intervened runs against their base run: does an edit to some heads move CoT more than direct answers?

Rows of an intervened run carry the model name ``BASE+LABEL`` (e.g. ``smollm2-135m-instruct+ko-top8``;
see the transformers backend). For each such model, dataset and shots (zs/fs), items answered in all
four cells (base/intervened x direct/CoT) are paired, and per item

    d_direct = correct(iv, direct) - correct(base, direct)
    d_cot    = correct(iv, CoT)    - correct(base, CoT)
    did      = d_cot - d_direct

The table gives the mean of each with a seeded paired-bootstrap 95% CI over items. ``did < 0`` means
the intervention hurts CoT more than direct answering (CoT leans on those heads more).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from cotbench.analysis.paired import SHOT_PAIRS

COLUMNS = ["model", "base_model", "intervention", "dataset", "shots", "n", "acc_base_direct", "acc_iv_direct",
           "acc_base_cot", "acc_iv_cot", "d_direct", "d_direct_lo", "d_direct_hi", "d_cot", "d_cot_lo",
           "d_cot_hi", "did", "did_lo", "did_hi"]


def split_model(name: str) -> tuple[str, str]:
    """``"m+ko-top8"`` -> ``("m", "ko-top8")``; a base model gives ``(name, "")``."""
    base, _, label = name.partition("+")
    return base, label


def boot_ci(x: np.ndarray, n_boot: int, rng: np.random.Generator, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap CI of a mean (items resampled with replacement)."""
    if len(x) == 0:
        return float("nan"), float("nan")
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def intervention_effects(df: pd.DataFrame, shots: tuple[str, ...] = ("zs", "fs"), n_boot: int = 10_000,
                         seed: int = 0) -> pd.DataFrame:
    """One row per (intervened model, dataset, shots) with the paired effects described above."""
    first = df[df["sample_index"] == 0] if "sample_index" in df.columns else df
    models = sorted(first["model"].unique())
    rows = []
    for m in models:
        base, label = split_model(m)
        if not label or base not in models:
            continue
        for s in shots:
            d_set, c_set = SHOT_PAIRS[s]
            cells = {}
            for who, name in (("base", base), ("iv", m)):
                for mode, setting in (("direct", d_set), ("cot", c_set)):
                    x = first[(first["model"] == name) & (first["setting"] == setting)]
                    cells[(who, mode)] = x.set_index(["dataset", "example_id"])["correct"].astype(int)
            joined = pd.concat(cells, axis=1, join="inner")
            if joined.empty:
                continue
            for ds, g in joined.groupby(level="dataset", sort=True):
                rng = np.random.default_rng(seed)
                dd = (g[("iv", "direct")] - g[("base", "direct")]).to_numpy(float)
                dc = (g[("iv", "cot")] - g[("base", "cot")]).to_numpy(float)
                did = dc - dd
                row = {"model": m, "base_model": base, "intervention": label, "dataset": ds, "shots": s,
                       "n": len(g), "acc_base_direct": g[("base", "direct")].mean(),
                       "acc_iv_direct": g[("iv", "direct")].mean(), "acc_base_cot": g[("base", "cot")].mean(),
                       "acc_iv_cot": g[("iv", "cot")].mean()}
                for name, x in (("d_direct", dd), ("d_cot", dc), ("did", did)):
                    lo, hi = boot_ci(x, n_boot, rng)
                    row.update({name: float(x.mean()), f"{name}_lo": lo, f"{name}_hi": hi})
                rows.append(row)
    out = pd.DataFrame(rows, columns=COLUMNS)
    num = out.select_dtypes("number").columns.drop("n", errors="ignore")
    out[num] = out[num].round(4)
    return out
