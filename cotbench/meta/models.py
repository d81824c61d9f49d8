"""Random- and mixed-effects meta-analytic models in the style of R's metafor: the public entry points.

``rma`` fits the univariate model ``y_i = x_i'b + u_i + e_i`` with ``u_i ~ N(0, tau^2)`` and known
sampling variances ``v_i`` (metafor's ``rma.uni``). ``rma_mv`` fits the multilevel model with nested
random intercepts, e.g. comparisons nested in papers (metafor's ``rma.mv(yi, vi, random = ~ 1 |
paper/effect)``), and ``robust`` gives cluster-robust CR1 or CR2 inference with Satterthwaite degrees
of freedom as in clubSandwich.

Where things are: this module holds the design matrices, the univariate tau^2 estimators, the
coefficient inference both result classes share (``_Coefficients``) and ``rma``/``subgroups``;
``multilevel.py`` holds ``rma_mv``/``MvResult``, ``robust.py`` holds ``robust``/``RobustResult``. All
are importable from here.

The formulas follow the metafor documentation and the papers it cites (DerSimonian & Laird 1986;
Paule & Mandel 1982; Sidik & Jonkman 2005; Viechtbauer 2005, 2007; Knapp & Hartung 2003;
Pustejovsky & Tipton 2018). ``tests/test_meta_stats.py`` checks every estimator, with and without
moderators, against values computed with metafor itself (``tests/reference/make_metafor.R`` writes
``tests/reference/metafor.json``).
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Sequence

import numpy as np
from scipy import linalg, optimize, stats

if TYPE_CHECKING:
    from cotbench.meta.multilevel import MvResult, rma_mv
    from cotbench.meta.robust import RobustResult, robust

__all__ = ["rma", "rma_mv", "robust", "subgroups", "RmaResult", "MvResult", "RobustResult", "METHODS"]

METHODS = ("FE", "EE", "DL", "HE", "SJ", "PM", "ML", "REML")
_LOG2PI = math.log(2 * math.pi)

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


def _single_thread():
    """Limit BLAS to one thread: the many small block matrices only lose time to threading."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional speed-up
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _check_yv(yi, vi, data: Any = None) -> tuple[np.ndarray, np.ndarray]:
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



def _codes(values: Any, name: str) -> np.ndarray:
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
def _wls(y: np.ndarray, X: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """b, (X'WX)^-1 and residuals for diagonal weights w."""
    XtW = X.T * w
    vb = linalg.inv(XtW @ X)
    b = vb @ (XtW @ y)
    return b, vb, y - X @ b


def _qgen(y, X, v, tau2) -> float:
    """Generalised Q statistic y'P(tau2)y (the weighted residual sum of squares)."""
    w = 1.0 / (v + tau2)
    _, _, r = _wls(y, X, w)
    return float(np.sum(w * r * r))


def _trace_p(X, w) -> float:
    """tr(P) with P = W - WX(X'WX)^-1X'W."""
    XtW = X.T * w
    return float(np.sum(w) - np.trace(linalg.solve(XtW @ X, XtW * w @ X)))


def _loglik_uni(y, X, v, tau2, reml: bool) -> float:
    k, p = X.shape
    w = 1.0 / (v + tau2)
    _, _, r = _wls(y, X, w)
    if not reml:
        return float(-0.5 * k * _LOG2PI - 0.5 * np.sum(np.log(v + tau2)) - 0.5 * np.sum(w * r * r))
    XtWX = (X.T * w) @ X
    return float(
        -0.5 * (k - p) * _LOG2PI
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


def _ll_dropped(ll_new: float, ll: float) -> bool:
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
        _, _, r = _wls(y, X, w)
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
            if not _ll_dropped(ll_new, ll) or t < 1e-10:
                break
            t /= 2
        tau2, ll = new, ll_new
    raise RuntimeError(f"{'REML' if reml else 'ML'} estimation of tau^2 did not converge in {maxiter} iterations")


def _tau2_pm(y, X, v) -> float:
    k, p = X.shape
    target = k - p
    if _qgen(y, X, v, 0.0) <= target:
        return 0.0
    hi = max(1.0, float(np.var(y)) * 10)
    while _qgen(y, X, v, hi) > target:
        hi *= 10
    return float(optimize.brentq(lambda t: _qgen(y, X, v, t) - target, 0.0, hi, xtol=1e-14, rtol=1e-14))


def _proj(X, w) -> np.ndarray:
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


def _tau2_estimate(y, X, v, method: str) -> tuple[float, float | None, int]:
    """Return (tau2, se_tau2 or None, iterations); the SEs are the ones metafor reports per estimator."""
    k, p = X.shape
    if method in ("FE", "EE"):
        return 0.0, None, 0
    if k - p < 1:
        raise ValueError(f"method {method}: need more effects than coefficients (k={k}, p={p})")
    if method == "DL":
        P = _proj(X, 1.0 / v)
        trP = float(np.trace(P))
        tau2 = max(0.0, (float(y @ P @ y) - (k - p)) / trP)
        return tau2, _qform_se(P, v, tau2) / trP, 0
    if method == "HE":  # Hedges: the OLS residual sum of squares minus its expectation under tau2 = 0
        P = _proj(X, np.ones(k))
        tau2 = max(0.0, (float(y @ P @ y) - float(np.sum(v * np.diag(P)))) / (k - p))
        return tau2, _qform_se(P, v, tau2) / (k - p), 0
    if method == "SJ":
        # Sidik & Jonkman (2005): the start value is the variance of the effects about their plain mean,
        # also with moderators (as metafor), not the variance of the OLS residuals
        tau0 = float(np.mean((y - y.mean()) ** 2))
        if tau0 <= 0:
            return 0.0, 0.0, 0
        P = _proj(X, 1.0 / (v + tau0))
        tau2 = tau0 * float(y @ P @ y) / (k - p)
        return tau2, tau0 * _qform_se(P, v, tau2) / (k - p), 0
    if method == "PM":
        tau2 = _tau2_pm(y, X, v)
        # metafor's SE for PM (and EB): sqrt(2 k^2 / (k - p)) / sum(w)
        return tau2, math.sqrt(2.0 * k * k / (k - p)) / float(np.sum(1.0 / (v + tau2))), 0
    if method in ("ML", "REML"):
        he = _tau2_estimate(y, X, v, "HE")[0]  # start value, as metafor
        tau2, it = _tau2_fisher(y, X, v, reml=method == "REML", start=he)
        w = 1.0 / (v + tau2)
        if method == "REML":
            se = math.sqrt(2.0 / _reml_traces(X, w)[1])
        else:
            se = math.sqrt(2.0 / np.sum(w * w))
        return tau2, se, it
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def _qprofile(y, X, v, alpha: float) -> tuple[float, float]:
    """Q-profile CI for tau^2: the tau^2 values where the generalised Q hits chi^2 quantiles."""
    k, p = X.shape
    df = k - p
    if df < 1:
        return (float("nan"), float("nan"))
    q_lo = stats.chi2.ppf(1 - alpha / 2, df)  # defines the lower bound
    q_hi = stats.chi2.ppf(alpha / 2, df)  # defines the upper bound
    q0 = _qgen(y, X, v, 0.0)

    def solve(target):
        if q0 < target:
            return 0.0
        hi = max(100.0, 10 * float(np.var(y)))
        while _qgen(y, X, v, hi) > target:
            hi *= 10
        return float(optimize.brentq(lambda t: _qgen(y, X, v, t) - target, 0.0, hi, xtol=1e-12, rtol=1e-12))

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


@dataclass
class _Coefficients:
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
    def se(self) -> np.ndarray:
        return np.sqrt(np.diag(self.vb))

    @property
    def df(self) -> int | None:
        return self.k - self.p if self.test == self._t_test else None

    def _crit(self) -> float:
        a = 1 - self.level / 100
        return float(stats.t.ppf(1 - a / 2, self.df) if self.df else stats.norm.ppf(1 - a / 2))

    @property
    def stat(self) -> np.ndarray:
        return self.beta / self.se

    @property
    def _stat_name(self) -> str:
        return "tval" if self.df else "zval"

    @property
    def pval(self) -> np.ndarray:
        s = np.abs(self.stat)
        return 2 * (stats.t.sf(s, self.df) if self.df else stats.norm.sf(s))

    @property
    def ci_lb(self) -> np.ndarray:
        return self.beta - self._crit() * self.se

    @property
    def ci_ub(self) -> np.ndarray:
        return self.beta + self._crit() * self.se

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

    def to_frame(self):
        """Coefficient table as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(
            {
                "estimate": self.beta,
                "se": self.se,
                self._stat_name: self.stat,
                "pval": self.pval,
                "ci_lb": self.ci_lb,
                "ci_ub": self.ci_ub,
            },
            index=pd.Index(self.coef_names, name="term"),
        )

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


# ----------------------------------------------------------------------------------------------
# univariate model
# ----------------------------------------------------------------------------------------------
@dataclass
class RmaResult(_Coefficients):
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
            self.ci_tau2 = _qprofile(self.yi, self.X, self.vi, 1 - self.level / 100)
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
        out: dict[str, Any] = {
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
        }
        if self.QM is not None:
            out.update(QM=self.QM, QM_df=list(self.QM_df or ()), QM_p=self.QM_p, R2=self.R2)
        if self.p == 1:
            out["prediction"] = self.predict()
        return out

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
    y, v = _check_yv(yi, vi, data)
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
        tau2, se_tau2, iters = _tau2_estimate(y, X, v, method)
    else:
        if tau2 < 0:
            raise ValueError(f"tau2 must be >= 0, got {tau2}")
        tau2, se_tau2, iters = float(tau2), None, 0
    w = 1.0 / (v + tau2)
    b, vb, r = _wls(y, X, w)
    if test == "knha":
        if k - p < 1:
            raise ValueError("Knapp-Hartung needs k > p")
        s2 = float(np.sum(w * r * r)) / (k - p)
        vb = vb * s2
    # heterogeneity statistics from the equal-effects fit
    if np.any(v == 0):
        QE, vt = float("nan"), 0.0
    else:
        QE = _qgen(y, X, v, 0.0)
        vt = (k - p) / _trace_p(X, 1.0 / v) if k > p else 0.0
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
                tau2_re = _tau2_estimate(y, np.ones((k, 1)), v, method)[0]
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

    y, v = _check_yv(yi, vi)
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


# ----------------------------------------------------------------------------------------------
# re-exports: rma_mv / MvResult and robust / RobustResult build on this module, so importing them
# here at load time would be circular; they are loaded on first access instead (PEP 562)
# ----------------------------------------------------------------------------------------------
_ELSEWHERE = {"rma_mv": "multilevel", "MvResult": "multilevel", "robust": "robust", "RobustResult": "robust"}


def __getattr__(name: str) -> Any:
    if name in _ELSEWHERE:
        value = getattr(importlib.import_module(f"cotbench.meta.{_ELSEWHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_ELSEWHERE})
