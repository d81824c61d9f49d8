"""Shared numerics of the meta-analytic estimators: the leaf every estimator module imports.

Input checks (``check_yv``, ``factor_codes``), moderator matrices (``design_matrix``), weighted least
squares and the generalised Q (``wls``, ``qgen``), the univariate tau^2 estimators (``tau2_estimate``,
``qprofile``) and the coefficient inference every result class shares (``Coefficients``). It imports
no other ``cotbench.meta`` module, so ``robust``, ``multilevel`` and ``models`` (the public entry
points) build on it without import cycles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
from scipy import linalg, optimize, stats

__all__ = ["METHODS", "LOG2PI", "design_matrix", "check_yv", "factor_codes", "single_thread", "wls", "qgen",
           "trace_p", "ll_dropped", "proj", "tau2_estimate", "qprofile", "critical_value", "CoefficientTable",
           "Coefficients"]

METHODS = ("FE", "EE", "DL", "HE", "SJ", "PM", "ML", "REML")
LOG2PI = math.log(2 * math.pi)

# ----------------------------------------------------------------------------------------------
# input checks and design matrices
# ----------------------------------------------------------------------------------------------
def design_matrix(mods: Any, data: Any, k: int, intercept: bool = True) -> tuple[np.ndarray, list[str]]:
    """Moderator matrix from None, an array, a DataFrame or a patsy formula (e.g. ``"category + shots"``)."""
    if mods is None:
        return np.ones((k, 1)), ["intrcpt"]
    if isinstance(mods, str):
        if data is None:
            raise ValueError(f"mods formula {mods!r} needs data=")
        import patsy  # installed with statsmodels

        formula = mods.split("~", 1)[1] if "~" in mods else mods
        if hasattr(data, "columns"):
            data = _plain_columns(data)
        try:
            dm = patsy.dmatrix(formula, data, return_type="dataframe", NA_action="raise")
        except patsy.PatsyError as e:
            raise ValueError(f"mods formula {mods!r}: {e}") from None
        names = ["intrcpt" if c == "Intercept" else c for c in dm.columns]
        X = dm.to_numpy(dtype=float)
    else:
        names = list(getattr(mods, "columns", []))
        X = np.asarray(mods, dtype=float)
        if X.ndim == 1:
            X = X[:, None]
            names = names or [str(getattr(mods, "name", None) or "mod")]
        if not names:
            names = [f"mod{j + 1}" for j in range(X.shape[1])]
        names = [str(n) for n in names]
        if intercept:
            X = np.column_stack([np.ones(X.shape[0]), X])
            names = ["intrcpt", *names]
    if X.shape[0] != k:
        raise ValueError(f"moderator matrix has {X.shape[0]} rows for {k} effects")
    if not np.all(np.isfinite(X)):
        raise ValueError("moderators contain missing or non-finite values")
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise ValueError(f"moderator matrix is rank deficient (columns: {', '.join(names)})")
    return X, names


def _plain_columns(df):
    """Drop unused levels of categorical columns and make pandas strings plain objects for patsy."""
    import pandas as pd

    out = {}
    for c in df.columns:
        col = df[c]
        if isinstance(col.dtype, pd.CategoricalDtype):
            col = col.cat.remove_unused_categories()
        elif pd.api.types.is_string_dtype(col.dtype) and col.dtype != object:
            col = col.astype(object)
        elif pd.api.types.is_integer_dtype(col.dtype) and col.dtype.name[0] == "I":  # nullable Int64
            col = col.astype(float)
        out[c] = col
    return pd.DataFrame(out, index=df.index)


def single_thread():
    """Limit BLAS to one thread: the many small block matrices only lose time to threading."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional speed-up
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def check_yv(yi, vi, data: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Effects and sampling variances as float arrays (either may be a column name of ``data``)."""
    if isinstance(yi, str):
        yi = data[yi]
    if isinstance(vi, str):
        vi = data[vi]
    y = np.asarray(yi, dtype=float).ravel()
    v = np.asarray(vi, dtype=float).ravel()
    if y.shape != v.shape:
        raise ValueError(f"yi has {y.size} values but vi has {v.size}")
    bad = np.flatnonzero(~np.isfinite(y) | ~np.isfinite(v))
    if bad.size:
        raise ValueError(f"effect {int(bad[0])}: yi/vi is missing or not finite (drop or impute it first)")
    bad = np.flatnonzero(v < 0)
    if bad.size:
        raise ValueError(f"effect {int(bad[0])}: negative sampling variance {v[bad[0]]}")
    return y, v



def factor_codes(values: Any, name: str) -> np.ndarray:
    """Integer codes for the labels of a grouping factor (random effects, clusters)."""
    import pandas as pd

    arr = np.asarray(values, dtype=object)
    if pd.isna(arr).any():
        raise ValueError(f"random-effects factor {name!r} has missing values")
    _, inv = np.unique(arr.astype(str), return_inverse=True)
    return inv.astype(np.int64)


# ----------------------------------------------------------------------------------------------
# univariate estimation: weighted least squares, the tau^2 estimators and the Q-profile CI
# ----------------------------------------------------------------------------------------------
def wls(y: np.ndarray, X: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """b, (X'WX)^-1 and residuals for diagonal weights w."""
    XtW = X.T * w
    vb = linalg.inv(XtW @ X)
    b = vb @ (XtW @ y)
    return b, vb, y - X @ b


def qgen(y, X, v, tau2) -> float:
    """Generalised Q statistic y'P(tau2)y (the weighted residual sum of squares)."""
    w = 1.0 / (v + tau2)
    _, _, r = wls(y, X, w)
    return float(np.sum(w * r * r))


def trace_p(X, w) -> float:
    """tr(P) with P = W - WX(X'WX)^-1X'W."""
    XtW = X.T * w
    return float(np.sum(w) - np.trace(linalg.solve(XtW @ X, XtW * w @ X)))


def _loglik_uni(y, X, v, tau2, reml: bool) -> float:
    k, p = X.shape
    w = 1.0 / (v + tau2)
    _, _, r = wls(y, X, w)
    if not reml:
        return float(-0.5 * k * LOG2PI - 0.5 * np.sum(np.log(v + tau2)) - 0.5 * np.sum(w * r * r))
    XtWX = (X.T * w) @ X
    return float(
        -0.5 * (k - p) * LOG2PI
        + 0.5 * np.linalg.slogdet(X.T @ X)[1]
        - 0.5 * np.sum(np.log(v + tau2))
        - 0.5 * np.linalg.slogdet(XtWX)[1]
        - 0.5 * np.sum(w * r * r)
    )


def _reml_traces(X, w) -> tuple[float, float]:
    """tr(P) and tr(PP) for P = W - WX(X'WX)^-1X'W without forming the k x k matrix P."""
    XtW = X.T * w
    Ainv = linalg.inv(XtW @ X)
    B2 = Ainv @ (XtW * w) @ X  # A^-1 X'W^2X
    trP = float(np.sum(w) - np.trace(B2))
    trPP = float(np.sum(w * w) - 2 * np.trace(Ainv @ (XtW * w * w) @ X) + np.sum(B2 * B2.T))
    return trP, trPP


def ll_dropped(ll_new: float, ll: float) -> bool:
    """Whether a step lowered the log-likelihood by more than round-off.

    Near the maximum the gain of a Fisher step is below the precision of the log-determinants, so the
    step-halving safeguard must not read that noise as a failed step (it would stall short of the root).
    """
    return ll_new < ll - 1e-10 * (1 + abs(ll))


def _tau2_fisher(y, X, v, reml: bool, start: float, tol: float = 1e-12, maxiter: int = 1000) -> tuple[float, int]:
    """ML/REML tau^2 by Fisher scoring with truncation at zero (as metafor) and step halving as a safeguard.

    Converged when the full Fisher step is below ``tol`` (relative), i.e. at a root of the score equation
    (or at tau^2 = 0 with the score pointing below it).
    """
    tau2 = max(0.0, start)
    ll = _loglik_uni(y, X, v, tau2, reml)
    for it in range(1, maxiter + 1):
        w = 1.0 / (v + tau2)
        _, _, r = wls(y, X, w)
        if reml:
            trP, trPP = _reml_traces(X, w)
            step = (np.sum((w * r) ** 2) - trP) / trPP
        else:
            step = (np.sum(w * w * r * r) - np.sum(w)) / np.sum(w * w)
        if abs(step) <= tol * (1 + tau2) or (tau2 == 0 and step <= 0):
            return tau2, it
        t = 1.0
        while True:
            new = max(0.0, tau2 + t * step)
            ll_new = _loglik_uni(y, X, v, new, reml)
            if not ll_dropped(ll_new, ll) or t < 1e-10:
                break
            t /= 2
        tau2, ll = new, ll_new
    raise RuntimeError(f"{'REML' if reml else 'ML'} estimation of tau^2 did not converge in {maxiter} iterations")


def _tau2_pm(y, X, v) -> float:
    k, p = X.shape
    target = k - p
    if qgen(y, X, v, 0.0) <= target:
        return 0.0
    hi = max(1.0, float(np.var(y)) * 10)
    while qgen(y, X, v, hi) > target:
        hi *= 10
    return float(optimize.brentq(lambda t: qgen(y, X, v, t) - target, 0.0, hi, xtol=1e-14, rtol=1e-14))


def proj(X, w) -> np.ndarray:
    """P = W - WX(X'WX)^-1X'W for diagonal weights w (the k x k residual projector of a weighted fit)."""
    XtW = X.T * w
    return np.diag(w) - XtW.T @ linalg.solve(XtW @ X, XtW)


def _qform_se(P, v, tau2) -> float:
    """SD of the quadratic form y'Py when y ~ N(Xb, diag(v) + tau2 I) and PX = 0.

    Var(y'Py) = 2 tr(PMPM) with M = V + tau2 I, i.e. 2 tr(PVPV) + 4 tau2 tr(PVP) + 2 tau2^2 tr(PP); the
    moment estimators (DL, HE, SJ) are such a form divided by a constant, and metafor gives their SEs so.
    """
    t = max(tau2, 0.0)
    PV = P * v  # P @ diag(v)
    return math.sqrt(2 * np.sum(PV * PV.T) + 4 * t * np.sum(PV * P) + 2 * t * t * np.sum(P * P))


def tau2_estimate(y, X, v, method: str) -> tuple[float, float | None, int]:
    """Return (tau2, se_tau2 or None, iterations); the SEs are the ones metafor reports per estimator."""
    k, p = X.shape
    if method in ("FE", "EE"):
        return 0.0, None, 0
    if k - p < 1:
        raise ValueError(f"method {method}: need more effects than coefficients (k={k}, p={p})")
    if method == "DL":
        P = proj(X, 1.0 / v)
        trP = float(np.trace(P))
        tau2 = max(0.0, (float(y @ P @ y) - (k - p)) / trP)
        return tau2, _qform_se(P, v, tau2) / trP, 0
    if method == "HE":  # Hedges: the OLS residual sum of squares minus its expectation under tau2 = 0
        P = proj(X, np.ones(k))
        tau2 = max(0.0, (float(y @ P @ y) - float(np.sum(v * np.diag(P)))) / (k - p))
        return tau2, _qform_se(P, v, tau2) / (k - p), 0
    if method == "SJ":
        # Sidik & Jonkman (2005): the start value is the variance of the effects about their plain mean,
        # also with moderators (as metafor), not the variance of the OLS residuals
        tau0 = float(np.mean((y - y.mean()) ** 2))
        if tau0 <= 0:
            return 0.0, 0.0, 0
        P = proj(X, 1.0 / (v + tau0))
        tau2 = tau0 * float(y @ P @ y) / (k - p)
        return tau2, tau0 * _qform_se(P, v, tau2) / (k - p), 0
    if method == "PM":
        tau2 = _tau2_pm(y, X, v)
        # metafor's SE for PM (and EB): sqrt(2 k^2 / (k - p)) / sum(w)
        return tau2, math.sqrt(2.0 * k * k / (k - p)) / float(np.sum(1.0 / (v + tau2))), 0
    if method in ("ML", "REML"):
        he = tau2_estimate(y, X, v, "HE")[0]  # start value, as metafor
        tau2, it = _tau2_fisher(y, X, v, reml=method == "REML", start=he)
        w = 1.0 / (v + tau2)
        if method == "REML":
            se = math.sqrt(2.0 / _reml_traces(X, w)[1])
        else:
            se = math.sqrt(2.0 / np.sum(w * w))
        return tau2, se, it
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def qprofile(y, X, v, alpha: float) -> tuple[float, float]:
    """Q-profile CI for tau^2: the tau^2 values where the generalised Q hits chi^2 quantiles."""
    k, p = X.shape
    df = k - p
    if df < 1:
        return (float("nan"), float("nan"))
    q_lo = stats.chi2.ppf(1 - alpha / 2, df)  # defines the lower bound
    q_hi = stats.chi2.ppf(alpha / 2, df)  # defines the upper bound
    q0 = qgen(y, X, v, 0.0)

    def solve(target):
        if q0 < target:
            return 0.0
        hi = max(100.0, 10 * float(np.var(y)))
        while qgen(y, X, v, hi) > target:
            hi *= 10
        return float(optimize.brentq(lambda t: qgen(y, X, v, t) - target, 0.0, hi, xtol=1e-12, rtol=1e-12))

    return solve(q_lo), solve(q_hi)


# ----------------------------------------------------------------------------------------------
# shared by the fitted models: coefficient tests, intervals, predictions and the printed table
# ----------------------------------------------------------------------------------------------
def _fmt_p(p: float) -> str:
    return "<.0001" if p < 1e-4 else f"{p:.4f}"


def _pval_text(p: float) -> str:
    """The p-value as metafor prints it after a test statistic: '< .0001' or '= 0.1234'."""
    return "< .0001" if p < 1e-4 else "= " + format(p, ".4f")


def _stars(p: float) -> str:
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "." if p < 0.1 else ""


def _coef_table(names, b, se, stat, pval, lb, ub, statname) -> str:
    import pandas as pd

    df = pd.DataFrame(
        {
            "estimate": [f"{x:.4f}" for x in b],
            "se": [f"{x:.4f}" for x in se],
            statname: [f"{x:.4f}" for x in stat],
            "pval": [_fmt_p(x) for x in pval],
            "ci.lb": [f"{x:.4f}" for x in lb],
            "ci.ub": [f"{x:.4f}" for x in ub],
            "": [_stars(x) for x in pval],
        },
        index=names,
    )
    if len(names) == 1 and names[0] == "intrcpt":
        return df.to_string(index=False)
    return df.to_string()


def critical_value(level: float, df: Any = None) -> Any:
    """Two-sided critical value of a ``level``% interval: Student t with ``df`` degrees of freedom where
    ``df`` is set (one number, or an array with one per coefficient), the normal otherwise (``df`` None
    or 0, as metafor falls back to z tests when no residual df is left). A float, or an array for array df."""
    q = 1 - (1 - level / 100) / 2
    if _uses_t(df):
        c = stats.t.ppf(q, df)
        return float(c) if np.ndim(c) == 0 else c
    return float(stats.norm.ppf(q))


def _uses_t(df: Any) -> bool:
    return df is not None and (np.ndim(df) > 0 or bool(df))


class CoefficientTable:
    """The inference every coefficient table shares, model-based or cluster-robust: standard errors
    from ``vb``, the test statistic, two-sided p-values and ``level``% confidence intervals, with t
    tests on ``df`` (a number or one per coefficient) where it is set and z tests otherwise.

    Subclasses provide ``beta``, ``vb``, ``level``, ``coef_names`` and ``df``. One implementation so
    that model-based (:class:`Coefficients`) and cluster-robust (``robust.RobustResult``) tables
    compute and print their intervals the same way.
    """

    _df_column: ClassVar[bool] = False  # to_frame shows a df column (per-coefficient Satterthwaite df)

    @property
    def se(self) -> np.ndarray:
        return np.sqrt(np.diag(self.vb))

    def _crit(self) -> Any:
        return critical_value(self.level, self.df)

    @property
    def stat(self) -> np.ndarray:
        return self.beta / self.se

    @property
    def _stat_name(self) -> str:
        return "tval" if _uses_t(self.df) else "zval"

    @property
    def pval(self) -> np.ndarray:
        s = np.abs(self.stat)
        return 2 * (stats.t.sf(s, self.df) if _uses_t(self.df) else stats.norm.sf(s))

    @property
    def ci_lb(self) -> np.ndarray:
        return self.beta - self._crit() * self.se

    @property
    def ci_ub(self) -> np.ndarray:
        return self.beta + self._crit() * self.se

    def to_frame(self):
        """Coefficient table as a pandas DataFrame."""
        import pandas as pd

        cols = {"estimate": self.beta, "se": self.se, self._stat_name: self.stat}
        if self._df_column:
            cols["df"] = self.df
        cols.update(pval=self.pval, ci_lb=self.ci_lb, ci_ub=self.ci_ub)
        return pd.DataFrame(cols, index=pd.Index(self.coef_names, name="term"))


@dataclass
class Coefficients(CoefficientTable):
    """Coefficient inference shared by :class:`RmaResult` and ``MvResult``.

    Subclasses add ``beta``, ``vb``, ``QE``/``QE_df``/``QE_p`` and ``QM``/``QM_df``/``QM_p``/``btt``. Two
    hooks: ``_t_test`` is the value of ``test`` under which coefficients get t tests with k - p df (z tests
    otherwise), and ``_pi_variance()`` is the heterogeneity variance that widens the prediction interval.
    """

    _t_test: ClassVar[str]

    method: str
    test: str
    level: float
    yi: np.ndarray
    vi: np.ndarray
    X: np.ndarray
    coef_names: list[str]

    def _pi_variance(self) -> float:
        raise NotImplementedError

    @property
    def k(self) -> int:
        return int(self.yi.size)

    @property
    def p(self) -> int:
        return int(self.X.shape[1])

    @property
    def df(self) -> int | None:
        return self.k - self.p if self.test == self._t_test else None

    @property
    def estimate(self) -> float:
        """The pooled estimate (first coefficient); for models with moderators, the intercept."""
        return float(self.beta[0])

    def predict(self, newmods: Sequence[float] | None = None) -> dict[str, float]:
        """Predicted average effect with CI and prediction interval (metafor's predict.rma).

        The prediction interval adds all heterogeneity (tau^2, or the sum of the variance components).
        """
        if newmods is None:
            if self.p != 1:
                raise ValueError("model has moderators: give newmods (without the intercept)")
            x = np.ones(1)
        else:
            x = np.asarray(newmods, dtype=float).ravel()
            if x.size == self.p - 1 and self.coef_names[0] == "intrcpt":
                x = np.concatenate([[1.0], x])
            if x.size != self.p:
                raise ValueError(f"newmods needs {self.p - 1} values, got {x.size}")
        pred = float(x @ self.beta)
        se = float(math.sqrt(x @ self.vb @ x))
        c = self._crit()
        spi = math.sqrt(se**2 + self._pi_variance())
        return {
            "pred": pred,
            "se": se,
            "ci_lb": pred - c * se,
            "ci_ub": pred + c * se,
            "pi_lb": pred - c * spi,
            "pi_ub": pred + c * spi,
        }

    def _tests_dict(self, **with_qm: Any) -> dict[str, Any]:
        """The end of every ``to_dict``: the moderator test (with ``with_qm``, e.g. R2) when there is one,
        and the prediction when the model has no moderators."""
        out: dict[str, Any] = {}
        if self.QM is not None:
            out.update(QM=self.QM, QM_df=list(self.QM_df or ()), QM_p=self.QM_p, **with_qm)
        if self.p == 1:
            out["prediction"] = self.predict()
        return out

    def _tests_and_coefficients(self, prediction_interval: bool) -> list[str]:
        """The printout from the heterogeneity test on: moderator test, coefficients, prediction interval."""
        mods = self.QM is not None
        lines = ["Test for Residual Heterogeneity:" if mods else "Test for Heterogeneity:"]
        lines.append(f"{'QE' if mods else 'Q'}(df = {self.QE_df}) = {self.QE:.4f}, p-val {_pval_text(self.QE_p)}")
        if mods and self.btt:
            coefs = ",".join(str(i + 1) for i in self.btt)
            lines += ["", f"Test of Moderators (coefficients {coefs}):"]
            pv = _pval_text(self.QM_p)
            if self.test == self._t_test:
                lines.append(f"F(df1 = {self.QM_df[0]}, df2 = {self.QM_df[1]}) = {self.QM:.4f}, p-val {pv}")
            else:
                lines.append(f"QM(df = {self.QM_df[0]}) = {self.QM:.4f}, p-val {pv}")
        lines += ["", "Model Results:", ""]
        lines.append(_coef_table(self.coef_names, self.beta, self.se, self.stat, self.pval, self.ci_lb,
                                 self.ci_ub, self._stat_name))
        if prediction_interval:
            pr = self.predict()
            lines += ["", f"Prediction interval ({self.level:g}%): [{pr['pi_lb']:.4f}, {pr['pi_ub']:.4f}]"]
        return lines

    def summary(self) -> str:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.summary()
