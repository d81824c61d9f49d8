"""Random- and mixed-effects meta-analytic models in the style of R's metafor: the public entry points.

``rma`` fits the univariate model ``y_i = x_i'b + u_i + e_i`` with ``u_i ~ N(0, tau^2)`` and known
sampling variances ``v_i`` (metafor's ``rma.uni``). ``rma_mv`` fits the multilevel model with nested
random intercepts, e.g. comparisons nested in papers (metafor's ``rma.mv(yi, vi, random = ~ 1 |
paper/effect)``), and ``robust`` gives cluster-robust CR1 or CR2 inference with Satterthwaite degrees
of freedom as in clubSandwich.

Where things are (imports run one way, numerics <- robust <- multilevel <- models): ``numerics.py``
holds the design matrices, the univariate tau^2 estimators and the coefficient inference every result
class shares (``Coefficients``); ``robust.py`` holds ``robust``/``RobustResult``, ``multilevel.py``
``rma_mv``/``MvResult``; this module holds ``rma``/``subgroups`` and re-exports the others.

The formulas follow the metafor documentation and the papers it cites (DerSimonian & Laird 1986;
Paule & Mandel 1982; Sidik & Jonkman 2005; Viechtbauer 2005, 2007; Knapp & Hartung 2003;
Pustejovsky & Tipton 2018). ``tests/test_meta_stats.py`` checks every estimator, with and without
moderators, against values computed with metafor itself (``tests/reference/make_metafor.R`` writes
``tests/reference/metafor.json``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import linalg, stats

from cotbench.meta.multilevel import MvResult, rma_mv
from cotbench.meta.numerics import (
    METHODS,
    Coefficients,
    check_yv,
    design_matrix,
    qgen,
    qprofile,
    tau2_estimate,
    trace_p,
    wls,
)
from cotbench.meta.robust import RobustResult, robust

__all__ = ["rma", "rma_mv", "robust", "subgroups", "RmaResult", "MvResult", "RobustResult", "METHODS"]

# ----------------------------------------------------------------------------------------------
# univariate model
# ----------------------------------------------------------------------------------------------
@dataclass
class RmaResult(Coefficients):
    """A fitted (mixed-effects) meta-analytic model; fields mirror metafor's rma.uni object."""

    beta: np.ndarray
    vb: np.ndarray
    tau2: float
    se_tau2: float | None
    QE: float
    QE_df: int
    QE_p: float
    I2: float
    H2: float
    vt: float  # 'typical' sampling variance used for I^2 and H^2
    QM: float | None
    QM_df: tuple[int, ...] | None
    QM_p: float | None
    btt: list[int] | None
    R2: float | None
    iterations: int = 0
    ci_tau2: tuple[float, float] | None = field(default=None, repr=False)

    _t_test = "knha"  # Knapp-Hartung: t and F tests with k - p df

    @property
    def weights(self) -> np.ndarray:
        """Model weights in percent, as metafor's weights()."""
        w = 1.0 / (self.vi + self.tau2)
        return 100 * w / w.sum()

    def _pi_variance(self) -> float:
        return self.tau2

    def confint(self) -> dict[str, tuple[float, float, float]]:
        """Q-profile confidence intervals for tau^2, tau, I^2 and H^2 (Viechtbauer 2007)."""
        if self.ci_tau2 is None:
            self.ci_tau2 = qprofile(self.yi, self.X, self.vi, 1 - self.level / 100)
        lo, hi = self.ci_tau2
        vt = self.vt

        def i2(t):
            return 100 * t / (vt + t)

        def h2(t):
            return (vt + t) / vt

        return {
            "tau^2": (self.tau2, lo, hi),
            "tau": (math.sqrt(self.tau2), math.sqrt(lo), math.sqrt(hi)),
            "I^2(%)": (self.I2, i2(lo), i2(hi)),
            "H^2": (self.H2, h2(lo), h2(hi)),
        }

    def _cluster_blocks(self, cl: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """Rows, fitted marginal covariance and model-based vb per cluster (the CR2 working model)."""
        order = np.argsort(cl, kind="stable")
        idx_list = np.split(order, np.flatnonzero(np.diff(cl[order])) + 1)
        Phi = [np.diag(self.vi[idx] + self.tau2) for idx in idx_list]
        w = 1.0 / (self.vi + self.tau2)
        return idx_list, Phi, linalg.inv((self.X.T * w) @ self.X)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": "rma",
            "method": self.method,
            "test": self.test,
            "k": self.k,
            "coefficients": self.to_frame().reset_index().to_dict(orient="records"),
            "tau2": self.tau2,
            "se_tau2": self.se_tau2,
            "I2": self.I2,
            "H2": self.H2,
            "QE": self.QE,
            "QE_df": self.QE_df,
            "QE_p": self.QE_p,
            **self._tests_dict(R2=self.R2),
        }

    def summary(self) -> str:
        """Text in the layout of metafor's print.rma.uni."""
        fe = self.method in ("FE", "EE")
        mods = self.QM is not None
        lines = []
        if fe:
            kind = "Fixed-Effects with Moderators Model" if mods else "Equal-Effects Model"
            lines.append(f"{kind} (k = {self.k})")
        else:
            kind = "Mixed-Effects Model" if mods else "Random-Effects Model"
            lines.append(f"{kind} (k = {self.k}; tau^2 estimator: {self.method})")
        lines.append("")
        what = "residual" if mods else "total"
        if not fe:
            se = f" (SE = {self.se_tau2:.4f})" if self.se_tau2 is not None else ""
            lines.append(f"tau^2 (estimated amount of {what} heterogeneity): {self.tau2:.4f}{se}")
            lines.append(f"tau (square root of estimated tau^2 value):      {math.sqrt(self.tau2):.4f}")
        if mods:
            lines.append(f"I^2 (residual heterogeneity / unaccounted variability): {self.I2:.2f}%")
            lines.append(f"H^2 (unaccounted variability / sampling variability):   {self.H2:.2f}")
            if self.R2 is not None:
                lines.append(f"R^2 (amount of heterogeneity accounted for):            {self.R2:.2f}%")
        else:
            lines.append(f"I^2 ({what} heterogeneity / total variability):   {self.I2:.2f}%")
            lines.append(f"H^2 (total variability / sampling variability):  {self.H2:.2f}")
        lines.append("")
        lines += self._tests_and_coefficients(prediction_interval=self.p == 1 and not fe)
        return "\n".join(lines) + "\n"


def rma(
    yi: Iterable[float],
    vi: Iterable[float],
    method: str = "REML",
    test: str = "z",
    mods: Any = None,
    data: Any = None,
    level: float = 95,
    btt: Sequence[int] | None = None,
    intercept: bool = True,
    tau2: float | None = None,
) -> RmaResult:
    """Fit a random-effects (or, with ``mods``, mixed-effects) meta-analytic model.

    ``method``: FE/EE (no heterogeneity), DL, HE, SJ, PM, ML or REML. ``test``: "z" or "knha"
    (Knapp–Hartung: t and F tests with the residual-based scale factor, unrestricted as metafor's
    default). ``yi``/``vi`` may be column names when ``data`` is a DataFrame. ``btt``: 0-based indices
    of the coefficients in the omnibus test (default: all but the intercept). ``tau2`` fixes tau^2
    at a given value instead of estimating it.
    """
    method = method.upper()
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    test = test.lower()
    if test not in ("z", "knha", "t"):
        raise ValueError(f"test must be 'z' or 'knha', got {test!r}")
    if test == "t":
        test = "knha"
    y, v = check_yv(yi, vi, data)
    k = y.size
    if k < 1:
        raise ValueError("no effects to pool")
    X, names = design_matrix(mods, data, k, intercept=intercept)
    p = X.shape[1]
    if k < p:
        raise ValueError(f"{p} coefficients but only {k} effects")
    if method not in ("FE", "EE") and np.all(v == 0):
        raise ValueError("all sampling variances are zero")
    if tau2 is None:
        tau2, se_tau2, iters = tau2_estimate(y, X, v, method)
    else:
        if tau2 < 0:
            raise ValueError(f"tau2 must be >= 0, got {tau2}")
        tau2, se_tau2, iters = float(tau2), None, 0
    w = 1.0 / (v + tau2)
    b, vb, r = wls(y, X, w)
    if test == "knha":
        if k - p < 1:
            raise ValueError("Knapp-Hartung needs k > p")
        s2 = float(np.sum(w * r * r)) / (k - p)
        vb = vb * s2
    # heterogeneity statistics from the equal-effects fit
    if np.any(v == 0):
        QE, vt = float("nan"), 0.0
    else:
        QE = qgen(y, X, v, 0.0)
        vt = (k - p) / trace_p(X, 1.0 / v) if k > p else 0.0
    QE_df = k - p
    QE_p = float(stats.chi2.sf(QE, QE_df)) if QE_df > 0 else float("nan")
    I2 = 100 * tau2 / (vt + tau2) if (vt + tau2) > 0 else 0.0
    H2 = (vt + tau2) / vt if vt > 0 else float("nan")
    if method in ("FE", "EE") and QE_df > 0:
        I2 = max(0.0, 100 * (QE - QE_df) / QE)
        H2 = QE / QE_df
    QM = QM_df = QM_p = R2 = None
    btt_l: list[int] | None = None
    if p > 1 or (btt is not None):
        btt_l = list(btt) if btt is not None else [j for j, n in enumerate(names) if n != "intrcpt"]
        if not btt_l:
            btt_l = None
        else:
            bb = b[btt_l]
            Vb = vb[np.ix_(btt_l, btt_l)]
            wald = float(bb @ linalg.solve(Vb, bb))
            m = len(btt_l)
            if test == "knha":
                QM, QM_df = wald / m, (m, k - p)
                QM_p = float(stats.f.sf(QM, m, k - p))
            else:
                QM, QM_df = wald, (m,)
                QM_p = float(stats.chi2.sf(QM, m))
            if method not in ("FE", "EE") and names[0] == "intrcpt":
                tau2_re = tau2_estimate(y, np.ones((k, 1)), v, method)[0]
                R2 = max(0.0, 100 * (tau2_re - tau2) / tau2_re) if tau2_re > 0 else 0.0
            elif method in ("FE", "EE") and names[0] == "intrcpt":
                R2 = _r2_weighted_ls(y, X, 1.0 / v, b)
    return RmaResult(
        method=method, test=test, level=level, yi=y, vi=v, X=X, coef_names=names, beta=b, vb=vb,
        tau2=tau2, se_tau2=se_tau2, QE=QE, QE_df=QE_df, QE_p=QE_p, I2=I2, H2=H2, vt=vt,
        QM=QM, QM_df=QM_df, QM_p=QM_p, btt=btt_l, R2=R2, iterations=iters,
    )


def _r2_weighted_ls(y, X, w, b) -> float:
    """R^2 of an equal-effects meta-regression: the adjusted R^2 (%) of the weighted least-squares fit.

    metafor's definition (there is no tau^2 to explain), i.e. R's summary(lm(y ~ X, weights = w)).
    """
    k, p = X.shape
    if np.ptp(y) == 0 or k <= p:
        return 0.0
    fitted = X @ b
    rss = float(np.sum(w * (y - fitted) ** 2))
    mss = float(np.sum(w * (fitted - np.sum(w * fitted) / np.sum(w)) ** 2))
    r2 = mss / (mss + rss)
    return max(0.0, 100 * (1 - (1 - r2) * (k - 1) / (k - p)))


def subgroups(yi, vi, groups, method: str = "REML", test: str = "z", level: float = 95):
    """Separate random-effects fits per subgroup plus the test of subgroup differences.

    Returns (table DataFrame, dict with the Q-between test computed from the subgroup estimates,
    a fixed-effect meta-analysis of the subgroup means as in Borenstein et al. 2009, ch. 19).
    """
    import pandas as pd

    y, v = check_yv(yi, vi)
    g = np.asarray(groups, dtype=object)
    if g.size != y.size:
        raise ValueError(f"groups has {g.size} values for {y.size} effects")
    rows = []
    for lvl in pd.unique(g):
        m = g == lvl
        kk = int(m.sum())
        meth = method if kk >= 2 else "FE"
        res = rma(y[m], v[m], method=meth, test=test if kk >= 2 else "z", level=level)
        pr = res.predict()
        rows.append({
            "group": lvl, "k": kk, "estimate": res.estimate, "se": float(res.se[0]),
            "ci_lb": float(res.ci_lb[0]), "ci_ub": float(res.ci_ub[0]),
            "pi_lb": pr["pi_lb"], "pi_ub": pr["pi_ub"], "pval": float(res.pval[0]),
            "tau2": res.tau2, "I2": res.I2, "QE": res.QE,
        })
    tab = pd.DataFrame(rows)
    if len(tab) >= 2:
        qb = rma(tab["estimate"], tab["se"] ** 2, method="FE").QE
        test_out = {"Q_between": qb, "df": len(tab) - 1, "p": float(stats.chi2.sf(qb, len(tab) - 1))}
    else:
        test_out = {"Q_between": float("nan"), "df": 0, "p": float("nan")}
    return tab, test_out

