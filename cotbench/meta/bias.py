"""Small-study effects and sensitivity: Egger's test, trim-and-fill, leave-one-out, funnel data.

Egger's test comes in metafor's two flavours: the classical weighted regression of the effects on
their standard errors with a multiplicative dispersion (``model="lm"``, fitted with statsmodels' WLS)
and the mixed-effects meta-regression on the standard error (``model="rma"``). Trim-and-fill follows
Duval & Tweedie (2000) with the L0 and R0 estimators, iterating the trimmed fit as metafor's
``trimfill`` does; the side is chosen from the sign of Egger's slope when not given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from scipy import stats

from cotbench.meta.models import RmaResult, rma
from cotbench.meta.numerics import check_yv, critical_value

__all__ = ["egger_test", "EggerResult", "trimfill", "TrimFillResult", "leave_one_out", "funnel_data",
           "EGGER_MODELS", "TRIMFILL_ESTIMATORS"]

EGGER_MODELS = ("rma", "lm")  # Egger test flavours egger_test() accepts
TRIMFILL_ESTIMATORS = ("L0", "R0")  # estimators of the number of missing studies trimfill() accepts


@dataclass
class EggerResult:
    model: str  # "lm" or "rma"
    stat: float  # t (lm) or z (rma) for the slope on the standard error
    df: int | None
    pval: float
    slope: float
    limit: float  # intercept: the estimate as the standard error goes to 0
    limit_ci: tuple[float, float]

    def summary(self) -> str:
        kind = ("weighted regression with multiplicative dispersion" if self.model == "lm"
                else "mixed-effects meta-regression model")
        p = "p < .0001" if self.pval < 1e-4 else f"p = {self.pval:.4f}"
        test = (f"t = {self.stat:.4f}, df = {self.df}, {p}" if self.model == "lm" else f"z = {self.stat:.4f}, {p}")
        return (
            "Regression Test for Funnel Plot Asymmetry\n\n"
            f"Model:     {kind}\nPredictor: standard error\n\n"
            f"Test for Funnel Plot Asymmetry: {test}\n"
            f"Limit Estimate (as sei -> 0):   b = {self.limit:.4f} "
            f"(CI: {self.limit_ci[0]:.4f}, {self.limit_ci[1]:.4f})\n"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "stat": self.stat, "df": self.df, "pval": self.pval,
                "slope": self.slope, "limit": self.limit, "limit_ci": list(self.limit_ci)}


def egger_test(yi, vi, model: str = "rma", method: str = "REML", level: float = 95) -> EggerResult:
    """Egger's regression test for funnel-plot asymmetry (predictor: the standard error)."""
    y, v = check_yv(yi, vi)
    if y.size < 3:
        raise ValueError(f"Egger's test needs at least 3 effects, got {y.size}")
    sei = np.sqrt(v)
    if model == "lm":
        import statsmodels.api as sm

        X = sm.add_constant(sei, has_constant="add")
        fit = sm.WLS(y, X, weights=1.0 / v).fit()
        lo, hi = fit.conf_int(alpha=1 - level / 100)[0]
        return EggerResult("lm", float(fit.tvalues[1]), int(fit.df_resid), float(fit.pvalues[1]),
                           float(fit.params[1]), float(fit.params[0]), (float(lo), float(hi)))
    if model not in EGGER_MODELS:
        raise ValueError(f"model must be 'rma' or 'lm', got {model!r}")
    fit = rma(y, v, method=method, mods=sei, level=level)
    return EggerResult("rma", float(fit.stat[1]), None, float(fit.pval[1]), float(fit.beta[1]),
                       float(fit.beta[0]), (float(fit.ci_lb[0]), float(fit.ci_ub[0])))


@dataclass
class TrimFillResult:
    k0: int
    side: str
    se_k0: float
    p_k0: float | None  # only for R0
    estimator: str
    fit: RmaResult  # model on observed + imputed effects
    yi_filled: np.ndarray
    vi_filled: np.ndarray

    def summary(self) -> str:
        head = f"Estimated number of missing studies on the {self.side} side: {self.k0} (SE = {self.se_k0:.4f})\n"
        if self.p_k0 is not None:
            head += f"Test of H0: no missing studies on the {self.side} side:      p-val = {self.p_k0:.4f}\n"
        return head + "\n" + self.fit.summary()


def trimfill(yi, vi, method: str = "REML", side: str | None = None, estimator: str = "L0",
             maxiter: int = 100) -> TrimFillResult:
    """Duval & Tweedie trim-and-fill; ``method`` is used for the trimmed and the final fits."""
    y, v = check_yv(yi, vi)
    estimator = estimator.upper()
    if estimator not in TRIMFILL_ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(TRIMFILL_ESTIMATORS)}, got {estimator!r}")
    k = y.size
    if k < 3:
        raise ValueError(f"trim-and-fill needs at least 3 effects, got {k}")
    if side is None:
        slope = rma(y, v, method=method, mods=np.sqrt(v)).beta[1]
        side = "right" if slope < 0 else "left"
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    # work on the orientation where missing studies are on the left
    ys = -y if side == "right" else y.copy()
    order = np.argsort(ys, kind="stable")
    ys, vs = ys[order], v[order]
    k0, k0_prev, it = 0, -1, 0
    se_k0 = float("nan")
    beta = 0.0
    while k0 != k0_prev:
        k0_prev = k0
        it += 1
        if it > maxiter:
            raise RuntimeError("trim-and-fill did not converge")
        trimmed = rma(ys[: k - k0], vs[: k - k0], method=method)
        beta = trimmed.estimate
        centred = ys - beta
        ranks = stats.rankdata(np.abs(centred), method="ordinal")
        signed = np.sign(centred) * ranks
        if estimator == "R0":
            neg = -signed[signed < 0]
            k0 = (k - (neg.max() if neg.size else 0)) - 1
            se_k0 = math.sqrt(2 * max(0, k0) + 2)
        else:
            sr = signed[signed > 0].sum()
            k0 = (4 * sr - k * (k + 1)) / (2 * k - 1)
            var_sr = (k * (k + 1) * (2 * k + 1) + 10 * k0**3 + 27 * k0**2 + 17 * k0 - 18 * k * k0**2
                      - 18 * k * k0 + 6 * k**2 * k0) / 24
            se_k0 = 4 * math.sqrt(max(var_sr, 0.0)) / (2 * k - 1)
        k0 = int(max(0, round(k0)))
    fill_y = 2 * beta - ys[k - k0:] if k0 > 0 else np.empty(0)
    fill_v = vs[k - k0:] if k0 > 0 else np.empty(0)
    if side == "right":
        fill_y = -fill_y
    y_all = np.concatenate([y, fill_y])
    v_all = np.concatenate([v, fill_v])
    final = rma(y_all, v_all, method=method)
    p_k0 = 0.5 ** (k0 + 1) if estimator == "R0" else None
    return TrimFillResult(k0=k0, side=side, se_k0=se_k0, p_k0=p_k0, estimator=estimator, fit=final,
                          yi_filled=fill_y, vi_filled=fill_v)


def leave_one_out(df, group: str, fit: Callable[[Any], Any]):
    """Refit leaving out each level of ``group`` (e.g. each paper) in turn.

    ``fit`` takes a DataFrame and returns a fitted model with ``estimate``, ``se``, ``pval``, ``ci_lb`` and
    ``ci_ub`` (of the first coefficient); the heterogeneity columns (tau2, QE, I2, H2, as metafor's
    leave1out) are added when the fit has them.
    """
    import pandas as pd

    if group not in df.columns:
        raise ValueError(f"leave-one-out: no column {group!r}")
    rows = []
    for lvl in pd.unique(df[group]):
        sub = df[df[group] != lvl]
        if sub.empty:
            continue
        res = fit(sub)
        row = {group: lvl, "k": len(sub), "estimate": res.estimate}
        for name in ("se", "pval", "ci_lb", "ci_ub"):
            row[name] = float(np.ravel(getattr(res, name))[0])
        for name in ("tau2", "QE", "I2", "H2"):
            if hasattr(res, name):
                row[name] = float(getattr(res, name))
        rows.append(row)
    return pd.DataFrame(rows)


def funnel_data(yi, vi, estimate: float, level: float = 95):
    """Points and pseudo-confidence region of a funnel plot (effect vs standard error)."""
    import pandas as pd

    y, v = check_yv(yi, vi)
    sei = np.sqrt(v)
    z = critical_value(level)
    se_grid = np.linspace(0, sei.max() * 1.05 if sei.size else 1.0, 50)
    points = pd.DataFrame({"yi": y, "sei": sei})
    region = pd.DataFrame({"sei": se_grid, "lo": estimate - z * se_grid, "hi": estimate + z * se_grid})
    return points, region
