"""CoT gain = CoT accuracy − direct accuracy, per model × dataset × shots, and its aggregates.

The standard error is the paired one: items are answered under both prompts, so the SE of the
gain is sd(d)/sqrt(n) over per-item differences d = correct_cot − correct_direct (sample sd,
ddof=1). It is smaller than the unpaired sqrt(p1(1−p1)/n + p2(1−p2)/n) whenever the two prompts
tend to get the same items right, which they do.

Aggregates follow the study (Fig. 3): a dataset's gain across models is the mean (and median) of
the per-model gains; a category's gain is the mean (median) over its model × dataset gains, and a
model's category gain is the mean of its dataset gains in that category.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd
from scipy import stats

from cotbench.analysis.paired import dataset_family, pair_shots
from cotbench.tasks.base import GROUPS

Z95 = float(stats.norm.ppf(0.975))


def group_order(groups) -> list[str]:
    """The study's category order, then any other group names alphabetically."""
    present = list(dict.fromkeys(groups))
    return [g for g in GROUPS if g in present] + sorted(g for g in present if g not in GROUPS)


def paired_gain(d: np.ndarray) -> tuple[float, float]:
    """Mean of per-item differences and its standard error (ddof=1; NaN below two items)."""
    d = np.asarray(d, dtype=float)
    n = d.size
    if n == 0:
        return float("nan"), float("nan")
    se = float(np.std(d, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return float(d.mean()), se


def pool_families(df: pd.DataFrame) -> pd.DataFrame:
    """Rename sub-tasks to their family (``bbh/x`` -> ``bbh``) so their items are pooled, as the
    study pooled BBH, AGIEval-LSAT, MuSR and ContextHub. Example ids get the sub-task prefixed so
    they stay unique; a family spanning several groups takes its most frequent group."""
    out = df.copy()
    fam = out["dataset"].map(dataset_family)
    out["example_id"] = out["dataset"] + "::" + out["example_id"].astype(str)
    out["dataset"] = fam
    if "group" in out.columns:
        mode = out.groupby("dataset")["group"].agg(lambda s: s.value_counts().sort_index().idxmax())
        out["group"] = out["dataset"].map(mode)
    return out


def _summarise(p: pd.DataFrame) -> dict:
    gain, se = paired_gain(p["d"].to_numpy())
    return {
        "n": len(p),
        "acc_direct": p["correct_base"].mean(),
        "acc_cot": p["correct_treat"].mean(),
        "gain": gain,
        "se": se,
        "ci_low": gain - Z95 * se,
        "ci_high": gain + Z95 * se,
        "n_cot_only": int((p["d"] > 0).sum()),
        "n_direct_only": int((p["d"] < 0).sum()),
    }


GAIN_COLUMNS = ["model", "dataset", "group", "shots", "n", "acc_direct", "acc_cot", "gain", "se",
                "ci_low", "ci_high", "n_cot_only", "n_direct_only"]


def comparisons(df: pd.DataFrame, shots: tuple[str, ...], pool: bool = False
                ) -> Iterator[tuple[tuple[str, str, str], pd.DataFrame]]:
    """((model, dataset, shots), paired items) for each direct-vs-CoT comparison, in a fixed order: what
    every per-comparison table (gains, significance) iterates over. ``pool`` pools sub-tasks first."""
    if pool:
        df = pool_families(df)
    pairs = pair_shots(df, shots)
    if len(pairs):
        yield from pairs.groupby(["model", "dataset", "shots"], sort=True)


def gains(df: pd.DataFrame, shots: tuple[str, ...] = ("zs", "fs"), pool: bool = False) -> pd.DataFrame:
    """Per model × dataset × shots gain table (rows only where both settings exist)."""
    rows = [{"model": model, "dataset": dataset, "group": p["group"].iloc[0], "shots": s, **_summarise(p)}
            for (model, dataset, s), p in comparisons(df, shots, pool)]
    out = pd.DataFrame(rows, columns=GAIN_COLUMNS)
    return order_rows(out)


def order_rows(out: pd.DataFrame) -> pd.DataFrame:
    """Fixed row order: shots (zs, fs), category (study order), dataset, model."""
    if out.empty:
        return out.reset_index(drop=True)
    order = {g: i for i, g in enumerate(group_order(out["group"]))}
    out = out.assign(_g=out["group"].map(order), _s=out["shots"].map({"zs": 0, "fs": 1}))
    sort = ["_s", "_g"] + [c for c in ("dataset", "model") if c in out.columns]
    return out.sort_values(sort, kind="mergesort").drop(columns=["_g", "_s"]).reset_index(drop=True)


def by_dataset(g: pd.DataFrame) -> pd.DataFrame:
    """Per dataset × shots, across models: mean and median gain."""
    cols = ["dataset", "group", "shots", "n_models", "mean_gain", "median_gain", "min_gain", "max_gain"]
    if g.empty:
        return pd.DataFrame(columns=cols)
    agg = (g.groupby(["dataset", "group", "shots"], sort=False)["gain"]
           .agg(n_models="count", mean_gain="mean", median_gain="median", min_gain="min", max_gain="max")
           .reset_index())
    return order_rows(agg)[cols]


def by_group(g: pd.DataFrame) -> pd.DataFrame:
    """Per category × shots, over all model × dataset gains in it: mean and median."""
    cols = ["group", "shots", "n_models", "n_datasets", "n_pairs", "mean_gain", "median_gain"]
    if g.empty:
        return pd.DataFrame(columns=cols)
    agg = (g.groupby(["group", "shots"], sort=False)
           .agg(n_models=("model", "nunique"), n_datasets=("dataset", "nunique"), n_pairs=("gain", "count"),
                mean_gain=("gain", "mean"), median_gain=("gain", "median"))
           .reset_index())
    return order_rows(agg)[cols]


def by_group_model(g: pd.DataFrame) -> pd.DataFrame:
    """Per category × model × shots: mean of that model's dataset gains (the study's Fig. 3 left)."""
    cols = ["group", "model", "shots", "n_datasets", "mean_gain", "median_gain"]
    if g.empty:
        return pd.DataFrame(columns=cols)
    agg = (g.groupby(["group", "model", "shots"], sort=False)["gain"]
           .agg(n_datasets="count", mean_gain="mean", median_gain="median").reset_index())
    return order_rows(agg)[cols]
