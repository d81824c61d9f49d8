"""Paired significance of CoT vs direct over items, with family-wise correction.

* **Exact McNemar** (statsmodels ``mcnemar(exact=True)``): a binomial test on the discordant items
  (CoT-only correct vs direct-only correct). This is the primary test.
* **Paired bootstrap** (seeded): items are resampled with replacement; the CI of the accuracy
  difference is the percentile interval and the two-sided p-value is the share of resampled
  differences, re-centred on 0 (the null), at least as far from 0 as the observed one. Because a
  resampled mean depends only on how many times each distinct difference value is drawn, resampling
  is done as one multinomial draw over the distinct values — exactly the same distribution as
  index resampling, and fast on 14k-item datasets.
* **Corrections** (statsmodels ``multipletests``): Bonferroni and Holm over the family of
  comparisons. The study's family is its 13 non-math/non-symbolic datasets × 14 models (182 tests,
  it used α/14 per dataset); here the family is the comparisons *present* whose dataset matches the
  family definition: ``"study"`` = groups commonsense, knowledge and soft_reasoning, ``"all"``, or
  an explicit list of dataset names. Rows outside the family get no corrected p-value. Each shots
  setting (zero-/few-shot) is its own family.

The study itself used an unpaired two-proportion z-test ("bernoulli") per model × dataset; we keep
paired tests because the same items are answered under both prompts.
"""
from __future__ import annotations

import zlib
from typing import Iterable

import numpy as np
import pandas as pd
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from cotbench.analysis.gains import comparisons, order_rows
from cotbench.analysis.paired import dataset_family

STUDY_FAMILY_GROUPS = ("commonsense", "knowledge", "soft_reasoning")


def mcnemar_exact(base: np.ndarray, treat: np.ndarray) -> tuple[int, int, float]:
    """(n treat-only correct, n base-only correct, exact two-sided p)."""
    base = np.asarray(base, dtype=bool)
    treat = np.asarray(treat, dtype=bool)
    table = [[int((base & treat).sum()), int((base & ~treat).sum())],
             [int((~base & treat).sum()), int((~base & ~treat).sum())]]
    b, c = table[1][0], table[0][1]
    if b + c == 0:
        return b, c, 1.0
    return b, c, float(mcnemar(table, exact=True).pvalue)


def paired_bootstrap(base: np.ndarray, treat: np.ndarray, n_boot: int = 10_000, seed: int = 0,
                     alpha: float = 0.05) -> dict:
    """Difference mean(treat) − mean(base), percentile CI and bootstrap p-value (see module doc)."""
    d = np.asarray(treat, dtype=float) - np.asarray(base, dtype=float)
    n = d.size
    if n == 0:
        return {"diff": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan}
    values, counts = np.unique(d, return_counts=True)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, counts / n, size=n_boot)  # (n_boot, n_values)
    boot = draws @ values / n
    diff = float(d.mean())
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    p = float(np.mean(np.abs(boot - diff) >= abs(diff) - 1e-12)) if diff != 0 else 1.0
    return {"diff": diff, "ci_low": float(lo), "ci_high": float(hi), "p": p}


def comparison_seed(seed: int, *parts: str) -> int:
    """A per-comparison seed that does not depend on the order comparisons are run in."""
    return int(np.random.SeedSequence([seed, zlib.crc32("\x1f".join(parts).encode("utf-8"))]).generate_state(1)[0])


def in_family(row_dataset: str, row_group: str, family) -> bool:
    if family is None or family == "all":
        return True
    if family == "study":
        return row_group in STUDY_FAMILY_GROUPS
    names = set(family)
    return row_dataset in names or dataset_family(row_dataset) in names


def correct_pvalues(p: Iterable[float], method: str) -> np.ndarray:
    """Bonferroni ("bonferroni") or Holm ("holm") adjusted p-values via statsmodels."""
    p = np.asarray(list(p), dtype=float)
    if p.size == 0:
        return p
    return multipletests(p, method=method)[1]


COLUMNS = ["model", "dataset", "group", "shots", "n", "acc_direct", "acc_cot", "diff", "boot_ci_low",
           "boot_ci_high", "p_bootstrap", "n_cot_only", "n_direct_only", "p_mcnemar", "in_family",
           "p_bonferroni", "p_holm", "significant"]


def significance(df: pd.DataFrame, shots: tuple[str, ...] = ("zs", "fs"), family="study", test: str = "mcnemar",
                 alpha: float = 0.05, n_boot: int = 10_000, seed: int = 0, pool: bool = False) -> pd.DataFrame:
    """One row per model × dataset × shots with both tests; corrections over the family.

    ``test`` picks which p-value ("mcnemar" or "bootstrap") is corrected; ``significant`` is
    Holm-adjusted p < alpha within the family (False outside it). ``pool`` tests sub-tasks pooled
    into their dataset (``bbh/*`` -> ``bbh``), which is how the study counted its 13 datasets.
    """
    if test not in ("mcnemar", "bootstrap"):
        raise ValueError(f"unknown test {test!r}; choose mcnemar or bootstrap")
    rows = []
    for (model, dataset, s), p in comparisons(df, shots, pool):
        base, treat = p["correct_base"].to_numpy(), p["correct_treat"].to_numpy()
        bt = paired_bootstrap(base, treat, n_boot, comparison_seed(seed, model, dataset, s), alpha)
        b, c, pm = mcnemar_exact(base, treat)
        group = p["group"].iloc[0]
        rows.append({
            "model": model, "dataset": dataset, "group": group, "shots": s, "n": len(p),
            "acc_direct": base.mean(), "acc_cot": treat.mean(), "diff": bt["diff"],
            "boot_ci_low": bt["ci_low"], "boot_ci_high": bt["ci_high"], "p_bootstrap": bt["p"],
            "n_cot_only": b, "n_direct_only": c, "p_mcnemar": pm,
            "in_family": in_family(dataset, group, family),
        })
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["p_bonferroni"] = np.nan
    out["p_holm"] = np.nan
    out["significant"] = False
    sizes = {}
    for s in shots:  # one family per shots setting (the study's 182 tests were all zero-shot)
        fam = out["in_family"].astype(bool) & (out["shots"] == s)
        sizes[s] = int(fam.sum())
        if fam.any():
            raw = out.loc[fam, "p_mcnemar" if test == "mcnemar" else "p_bootstrap"]
            out.loc[fam, "p_bonferroni"] = correct_pvalues(raw, "bonferroni")
            out.loc[fam, "p_holm"] = correct_pvalues(raw, "holm")
            out.loc[fam, "significant"] = out.loc[fam, "p_holm"] < alpha
    out = order_rows(out)
    out.attrs["family_size"] = sizes
    out.attrs["test"] = test
    return out
