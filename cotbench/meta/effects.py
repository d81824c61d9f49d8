"""Effect sizes and their sampling variances for the CoT meta-analysis.

The study's effect is the raw difference in accuracy, CoT minus direct, in percentage points. Its
sampling variance follows from the number of evaluation items ``n`` when that is known.

Paired-proportion approximation
-------------------------------
Both conditions are scored on the *same* n items, so the two accuracies are paired proportions::

    Var(p_cot - p_dir) = [p_c(1-p_c) + p_d(1-p_d) - 2*rho*sqrt(p_c(1-p_c) p_d(1-p_d))] / n

where ``rho`` is the item-level correlation between "CoT answered correctly" and "direct answered
correctly" (the phi coefficient of the 2x2 agreement table). Papers report only the two accuracies, not
the agreement table, so rho is unknown. We therefore expose rho as a parameter:

* ``rho=0`` (the default, the *conservative fallback*) treats the two scores as independent
  binomial proportions. Item-level correctness of two prompting strategies of the same model is
  positively correlated in practice, and for any rho >= 0 this variance is an upper bound, so the
  resulting weights and standard errors err on the wide side.
* ``rho>0`` is the paired approximation; supply it when item-level agreement is known (for example
  from cotbench's own paired runs of the same items).

Proportions of exactly 0 or 1 would give a zero variance (an infinite weight). The variance is
therefore evaluated at ``(x + 0.5) / (n + 1)`` with ``x = p * n`` (an Agresti–Caffo style adjustment);
the point estimate ``yi`` itself is never adjusted.

Scores are on the 0–100 scale; ``yi`` is returned in points and ``vi`` in points².
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

__all__ = [
    "raw_difference",
    "log_odds_ratio",
    "log_risk_ratio",
    "effects_table",
]


def _arr(x: Iterable[float] | float, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d sequence of numbers, got shape {a.shape}")
    return a


def raw_difference(
    cot_score: Iterable[float],
    direct_score: Iterable[float],
    n_items: Iterable[float] | None,
    rho: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """CoT minus direct accuracy in points, with its sampling variance (points²).

    ``n_items`` may contain NaN (unknown) — the variance is NaN there. See the module docstring for
    the paired approximation and why ``rho=0`` is the conservative default.
    """
    c = _arr(cot_score, "cot_score")
    d = _arr(direct_score, "direct_score")
    if c.shape != d.shape:
        raise ValueError(f"cot_score and direct_score differ in length ({c.size} vs {d.size})")
    if not -1.0 <= rho <= 1.0:
        raise ValueError(f"rho must lie in [-1, 1], got {rho}")
    for name, a in (("cot_score", c), ("direct_score", d)):
        bad = np.flatnonzero(np.isfinite(a) & ((a < 0) | (a > 100)))
        if bad.size:
            raise ValueError(f"{name}: row {int(bad[0])} has {a[bad[0]]}, outside the 0–100 scale")
    yi = c - d
    if n_items is None:
        return yi, np.full_like(yi, np.nan)
    n = _arr(n_items, "n_items")
    if n.shape != c.shape:
        raise ValueError(f"n_items has {n.size} values for {c.size} effects")
    bad = np.flatnonzero(np.isfinite(n) & (n <= 0))
    if bad.size:
        raise ValueError(f"n_items: row {int(bad[0])} has {n[bad[0]]}; the number of items must be > 0")
    with np.errstate(invalid="ignore", divide="ignore"):
        pc = (c / 100 * n + 0.5) / (n + 1)
        pd_ = (d / 100 * n + 0.5) / (n + 1)
        vc = pc * (1 - pc)
        vd = pd_ * (1 - pd_)
        v = (vc + vd - 2 * rho * np.sqrt(vc * vd)) / n
    return yi, v * 1e4


def _other_cell(given, name: str, total, total_name: str, first: np.ndarray) -> np.ndarray:
    """A row's second cell: given, or its row total minus the first cell."""
    if given is not None:
        return _arr(given, name)
    if total is None:
        raise ValueError(f"give either {name} or {total_name}")
    return _arr(total, total_name) - first


def _two_by_two(ai, bi, ci, di, n1i, n2i):
    a = _arr(ai, "ai")
    c = _arr(ci, "ci")
    b = _other_cell(bi, "bi", n1i, "n1i", a)
    d = _other_cell(di, "di", n2i, "n2i", c)
    cells = np.vstack([a, b, c, d])
    if np.any(cells < 0):
        col = int(np.flatnonzero((cells < 0).any(axis=0))[0])
        raise ValueError(f"2x2 table of study {col} has a negative cell count")
    return a, b, c, d


def _add_zero_correction(a, b, c, d, add: float, to: str):
    """metafor's escalc default: add 1/2 to every cell of tables that contain a zero ('only0')."""
    if to == "none" or add == 0:
        return a, b, c, d
    if to == "all":
        mask = np.ones_like(a, dtype=bool)
    elif to == "only0":
        mask = (a == 0) | (b == 0) | (c == 0) | (d == 0)
    else:
        raise ValueError(f"to must be 'only0', 'all' or 'none', got {to!r}")
    return a + add * mask, b + add * mask, c + add * mask, d + add * mask


def log_odds_ratio(ai, ci, bi=None, di=None, n1i=None, n2i=None, add: float = 0.5, to: str = "only0"):
    """Log odds ratio of group 1 vs group 2 with its large-sample variance (as metafor's escalc 'OR')."""
    a, b, c, d = _add_zero_correction(*_two_by_two(ai, bi, ci, di, n1i, n2i), add, to)
    yi = np.log(a / b) - np.log(c / d)
    vi = 1 / a + 1 / b + 1 / c + 1 / d
    return yi, vi


def log_risk_ratio(ai, ci, bi=None, di=None, n1i=None, n2i=None, add: float = 0.5, to: str = "only0"):
    """Log risk ratio of group 1 vs group 2 with its large-sample variance (as metafor's escalc 'RR')."""
    a, b, c, d = _add_zero_correction(*_two_by_two(ai, bi, ci, di, n1i, n2i), add, to)
    n1, n2 = a + b, c + d
    yi = np.log(a / n1) - np.log(c / n2)
    vi = 1 / a - 1 / n1 + 1 / c - 1 / n2
    return yi, vi


def effects_table(df, rho: float = 0.0, missing_n: str = "impute"):
    """Add ``yi`` (the study's delta, points) and ``vi`` (points²) to an effects table.

    ``yi`` is the ``delta`` column (CoT − direct) when present, else ``cot_score - direct_score``.
    ``vi`` comes from :func:`raw_difference` with ``n_items``. When a row lacks ``n_items``:

    * ``missing_n="impute"`` uses the median ``n_items`` of rows with the same ``dataset`` (else the
      median over all rows) and flags the row in ``n_imputed``;
    * ``missing_n="drop"`` removes the row.

    When a row lacks one of the two scores (only a delta was reported), the variance is taken at
    p = 0.5 for both conditions, the largest binomial variance, so such rows are not over-weighted.
    Returns (table, info) where info counts imputed and dropped rows.
    """
    import pandas as pd

    if missing_n not in ("impute", "drop"):
        raise ValueError(f"missing_n must be 'impute' or 'drop', got {missing_n!r}")
    out = df.copy()
    if "delta" in out.columns:
        yi = pd.to_numeric(out["delta"], errors="coerce")
    elif {"cot_score", "direct_score"} <= set(out.columns):
        yi = pd.to_numeric(out["cot_score"], errors="coerce") - pd.to_numeric(out["direct_score"], errors="coerce")
    else:
        raise ValueError("effects table needs a 'delta' column or both 'cot_score' and 'direct_score'")
    bad = yi.isna().to_numpy().nonzero()[0]
    if bad.size:
        raise ValueError(f"row {int(bad[0])}: delta (CoT − direct) is missing or not a number")
    out["yi"] = yi.to_numpy(float)
    n = (pd.to_numeric(out["n_items"], errors="coerce").astype(float) if "n_items" in out.columns
         else pd.Series(np.nan, index=out.index))
    info = {"rows": int(len(out)), "n_imputed": 0, "dropped": 0, "rho": rho, "missing_n": missing_n}
    missing = n.isna()
    if missing.any():
        if missing_n == "drop":
            info["dropped"] = int(missing.sum())
            out, n = out[~missing].copy(), n[~missing]
        else:
            overall = n.median()
            if not np.isfinite(overall):
                raise ValueError("n_items is missing in every row: no sampling variances can be computed")
            by_ds = n.groupby(out["dataset"]).median() if "dataset" in out.columns else pd.Series(dtype=float)
            fill = out["dataset"].map(by_ds) if "dataset" in out.columns else pd.Series(np.nan, index=out.index)
            fill = fill.fillna(overall)
            n = n.where(~missing, fill)
            info["n_imputed"] = int(missing.sum())
    out["n_imputed"] = missing.reindex(out.index).to_numpy(bool)
    out["n_used"] = n.to_numpy(float)
    cot = pd.to_numeric(out.get("cot_score", pd.Series(np.nan, index=out.index)), errors="coerce")
    dire = pd.to_numeric(out.get("direct_score", pd.Series(np.nan, index=out.index)), errors="coerce")
    no_scores = cot.isna() | dire.isna()
    cot = cot.where(~no_scores, 50.0)
    dire = dire.where(~no_scores, 50.0)
    _, vi = raw_difference(cot.to_numpy(float), dire.to_numpy(float), out["n_used"].to_numpy(float), rho=rho)
    out["vi"] = vi
    info["no_scores"] = int(no_scores.sum())
    return out.reset_index(drop=True), info
