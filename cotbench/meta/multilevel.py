"""Multilevel meta-analysis with nested random intercepts (metafor's ``rma.mv(yi, vi, random = ~ 1 |
paper/effect)``), fitted by REML or ML with Fisher scoring; profile-likelihood CIs for the variance
components. ``rma_mv`` is also importable from :mod:`cotbench.meta.models`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import linalg, optimize, stats

from cotbench.meta.numerics import (
    LOG2PI,
    Coefficients,
    check_yv,
    design_matrix,
    factor_codes,
    ll_dropped,
    qgen,
    single_thread,
    tau2_estimate,
)
from cotbench.meta.robust import RobustResult, robust

__all__ = ["rma_mv", "MvResult", "METHODS"]

METHODS = ("REML", "ML")  # variance-component estimators rma_mv accepts


# ----------------------------------------------------------------------------------------------
# marginal covariance and the likelihood
# ----------------------------------------------------------------------------------------------
def _parse_random(random: Any) -> list[str]:
    """'~ 1 | paper/effect' or ['paper', 'effect'] -> ['paper', 'effect'] (outer to inner)."""
    if isinstance(random, str):
        m = re.fullmatch(r"\s*~?\s*1\s*\|\s*(.+?)\s*", random)
        if not m:
            raise ValueError(f"random must look like '~ 1 | paper/effect', got {random!r}")
        parts = [s.strip() for s in m.group(1).split("/")]
    else:
        parts = [str(s) for s in random]
    if not parts or any(not s for s in parts):
        raise ValueError(f"random: empty grouping factor in {random!r}")
    return parts


class _Blocks:
    """Block-diagonal marginal covariance M = diag(v) + sum_j sigma2_j Z_j Z_j' (blocks = outer factor)."""

    def __init__(self, v: np.ndarray, codes: list[np.ndarray]):
        self.v = v
        self.ncomp = len(codes)
        outer = codes[0]
        order = np.argsort(outer, kind="stable")
        bounds = np.flatnonzero(np.diff(outer[order])) + 1
        self.index = np.split(order, bounds)
        self.G = [
            [(c[idx][:, None] == c[idx][None, :]).astype(float) for c in codes] for idx in self.index
        ]

    def inverses(self, theta):
        """Each block's inverse and the log-determinant of M (Cholesky)."""
        out = []
        logdet = 0.0
        for M in self.matrices(theta):
            c = linalg.cho_factor(M, lower=True)
            logdet += 2 * float(np.sum(np.log(np.diag(c[0]))))
            out.append(linalg.cho_solve(c, np.eye(M.shape[0])))
        return out, logdet

    def matrices(self, theta):
        """The blocks of M for variance components ``theta``."""
        Ms = []
        for idx, Gs in zip(self.index, self.G):
            M = np.diag(self.v[idx]).copy()
            for t, G in zip(theta, Gs):
                M += t * G
            Ms.append(M)
        return Ms


def _mv_pieces(y, X, B: _Blocks, theta, reml: bool, want_derivs: bool):
    k, p = X.shape
    Minv, logdet = B.inverses(theta)
    Xs = np.empty_like(X)
    ys = np.empty_like(y)
    for idx, Mi in zip(B.index, Minv):
        Xs[idx] = Mi @ X[idx]
        ys[idx] = Mi @ y[idx]
    A = X.T @ Xs
    cA = linalg.cho_factor(A)
    b = linalg.cho_solve(cA, X.T @ ys)
    r = y - X @ b
    Pr = ys - Xs @ b  # M^-1 r = P y
    rPr = float(r @ Pr)
    logdetA = 2 * float(np.sum(np.log(np.diag(cA[0]))))
    if reml:
        ll = -0.5 * (k - p) * LOG2PI + 0.5 * np.linalg.slogdet(X.T @ X)[1] - 0.5 * logdet - 0.5 * logdetA - 0.5 * rPr
    else:
        ll = -0.5 * k * LOG2PI - 0.5 * logdet - 0.5 * rPr
    out = {"ll": float(ll), "b": b, "vb": linalg.cho_solve(cA, np.eye(p)), "r": r, "Minv": Minv, "Xs": Xs}
    if not want_derivs:
        return out
    q = B.ncomp
    Ainv = out["vb"]
    score = np.zeros(q)
    info = np.zeros((q, q))
    tr_MG = np.zeros(q)
    C = [np.zeros((p, p)) for _ in range(q)]
    D = [[np.zeros((p, p)) for _ in range(q)] for _ in range(q)]
    quad = np.zeros(q)
    trMGMG = np.zeros((q, q))
    for idx, Mi, Gs in zip(B.index, Minv, B.G):
        Xb = Xs[idx]
        prb = Pr[idx]
        MG = [Mi @ G for G in Gs]
        for j in range(q):
            tr_MG[j] += np.trace(MG[j])
            quad[j] += prb @ Gs[j] @ prb
            if reml:
                C[j] += Xb.T @ Gs[j] @ Xb
            for l in range(j, q):
                trMGMG[j, l] += np.sum(MG[j] * MG[l].T)
                if reml:
                    D[j][l] += Xb.T @ Gs[j] @ MG[l] @ Xb
    for j in range(q):
        trPG = tr_MG[j] - (np.trace(Ainv @ C[j]) if reml else 0.0)
        score[j] = -0.5 * trPG + 0.5 * quad[j]
        for l in range(j, q):
            val = trMGMG[j, l]
            if reml:
                val += -2 * np.trace(Ainv @ D[j][l]) + np.trace(Ainv @ C[j] @ Ainv @ C[l])
            info[j, l] = info[l, j] = 0.5 * val
    out["score"], out["info"] = score, info
    return out


def _mv_optimise(y, X, B: _Blocks, reml: bool, start: np.ndarray, fixed: dict[int, float] | None = None,
                 tol: float = 1e-10, maxiter: int = 500):
    """Fisher scoring over sigma^2 >= 0 with step halving as a safeguard; components in ``fixed`` are held.

    Converged when the full (truncated) Fisher step is below ``tol`` (relative), i.e. at a root of the
    score equations, not when a line search stalls on round-off.
    """
    fixed = fixed or {}
    theta = np.maximum(np.asarray(start, dtype=float), 0.0)
    for j, val in fixed.items():
        theta[j] = val
    cur = _mv_pieces(y, X, B, theta, reml, want_derivs=True)
    for it in range(1, maxiter + 1):
        s, I = cur["score"], cur["info"]
        free = np.array([j not in fixed and not (theta[j] <= 0 and s[j] <= 0) for j in range(theta.size)])
        if not free.any():
            return theta, cur, it
        step = np.zeros_like(theta)
        try:
            step[free] = linalg.solve(I[np.ix_(free, free)], s[free], assume_a="pos")
        except (linalg.LinAlgError, ValueError):
            step[free] = s[free] / np.maximum(np.diag(I)[free], 1e-12)
        if np.max(np.abs(np.maximum(theta + step, 0.0) - theta) / (1 + np.abs(theta))) <= tol:
            return theta, cur, it
        t = 1.0
        while True:
            new = np.maximum(theta + t * step, 0.0)
            cand = _mv_pieces(y, X, B, new, reml, want_derivs=False)
            if not ll_dropped(cand["ll"], cur["ll"]) or t < 1e-10:
                break
            t /= 2
        theta = new
        cur = _mv_pieces(y, X, B, theta, reml, want_derivs=True)
    raise RuntimeError(f"multilevel {'REML' if reml else 'ML'} fit did not converge in {maxiter} iterations")


# ----------------------------------------------------------------------------------------------
# fitted model and entry point
# ----------------------------------------------------------------------------------------------
@dataclass
class MvResult(Coefficients):
    """A fitted multilevel meta-analytic model (metafor's rma.mv with nested random intercepts)."""

    _t_test = "t"  # test="t": t and F tests on the model-based vb with k - p df

    factors: list[str]
    codes: list[np.ndarray]
    nlvls: list[int]
    sigma2: np.ndarray
    beta: np.ndarray
    vb: np.ndarray
    logLik: float
    QE: float
    QE_df: int
    QE_p: float
    QM: float | None
    QM_df: tuple[int, ...] | None
    QM_p: float | None
    btt: list[int] | None
    iterations: int
    _blocks: _Blocks = field(repr=False)

    @property
    def sigma2_names(self) -> list[str]:
        return ["/".join(self.factors[: j + 1]) for j in range(len(self.factors))]

    def _pi_variance(self) -> float:
        return float(np.sum(self.sigma2))

    def confint(self, component: int | None = None) -> dict[str, tuple[float, float, float]]:
        """Profile-likelihood CIs for the variance components (as metafor's confint.rma.mv)."""
        with single_thread():
            return self._confint(component)

    def _confint(self, component: int | None) -> dict[str, tuple[float, float, float]]:
        comps = range(self.sigma2.size) if component is None else [component]
        reml = self.method == "REML"
        y, X, B = self.yi, self.X, self._blocks
        crit = 0.5 * stats.chi2.ppf(self.level / 100, 1)
        out = {}
        for j in comps:
            est = float(self.sigma2[j])

            def drop(val, j=j):
                th, cur, _ = _mv_optimise(y, X, B, reml, self.sigma2.copy(), fixed={j: val})
                return self.logLik - cur["ll"] - crit

            xtol = 1e-7 * max(est, 1e-4)  # far below the 4 printed decimals
            lo = 0.0
            if drop(0.0) > 0:
                lo = float(optimize.brentq(drop, 0.0, max(est, 1e-12), xtol=xtol))
            hi_end = max(10.0, 100 * est)
            hi = float("inf")
            if drop(hi_end) > 0:
                hi = float(optimize.brentq(drop, est, hi_end, xtol=xtol))
            out[f"sigma^2.{j + 1}"] = (est, lo, hi)
            out[f"sigma.{j + 1}"] = (math.sqrt(est), math.sqrt(lo), math.sqrt(hi))
        return out

    def robust(self, cluster: Any, type: str = "CR2", data: Any = None) -> RobustResult:
        return robust(self, cluster, type=type, data=data)

    def _cluster_blocks(self, cl: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """Rows, fitted marginal covariance and model-based vb per cluster (the CR2 working model)."""
        outer = self.codes[0]
        for g in np.unique(outer):
            if np.unique(cl[outer == g]).size > 1:
                raise ValueError("clusters split an outer random-effects group; use a coarser cluster")
        Bc = _Blocks(self.vi, [cl, *self.codes])
        return Bc.index, Bc.matrices(np.concatenate([[0.0], self.sigma2])), self.vb

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": "rma_mv", "method": self.method, "test": self.test, "k": self.k,
            "random": self.factors, "nlvls": self.nlvls,
            "sigma2": dict(zip(self.sigma2_names, map(float, self.sigma2))),
            "coefficients": self.to_frame().reset_index().to_dict(orient="records"),
            "logLik": self.logLik, "QE": self.QE, "QE_df": self.QE_df, "QE_p": self.QE_p,
            **self._tests_dict(),
        }

    def summary(self) -> str:
        import pandas as pd

        lines = [f"Multivariate Meta-Analysis Model (k = {self.k}; method: {self.method})", "",
                 "Variance Components:", ""]
        vc = pd.DataFrame(
            {"estim": [f"{s:.4f}" for s in self.sigma2], "sqrt": [f"{math.sqrt(s):.4f}" for s in self.sigma2],
             "nlvls": self.nlvls, "factor": self.sigma2_names},
            index=[f"sigma^2.{j + 1}" for j in range(self.sigma2.size)],
        )
        lines += [vc.to_string(), ""]
        lines += self._tests_and_coefficients(prediction_interval=self.p == 1)
        return "\n".join(lines) + "\n"


def rma_mv(
    yi: Any,
    vi: Any,
    random: Any = "~ 1 | paper/effect",
    data: Any = None,
    mods: Any = None,
    method: str = "REML",
    test: str = "z",
    level: float = 95,
    btt: Sequence[int] | None = None,
    factors: dict[str, Any] | None = None,
) -> MvResult:
    """Multilevel model with nested random intercepts, fitted by REML (default) or ML.

    ``random="~ 1 | paper/effect"`` gives one variance component for papers and one for effects
    within papers; each name is a column of ``data`` (or a key of ``factors``). Inner levels are
    nested automatically (an inner label is only unique together with its outer labels).
    ``test="t"`` uses t/F tests with k - p degrees of freedom.
    """
    method = method.upper()
    if method not in METHODS:
        raise ValueError(f"rma_mv supports method {' or '.join(METHODS)}, got {method!r}")
    test = test.lower()
    if test not in ("z", "t"):
        raise ValueError(f"rma_mv test must be 'z' or 't', got {test!r}")
    y, v = check_yv(yi, vi, data)
    k = y.size
    names = _parse_random(random)
    lookup = factors or {}
    codes: list[np.ndarray] = []
    combined = None
    for name in names:
        if name in lookup:
            col = lookup[name]
        elif data is not None and name in getattr(data, "columns", []):
            col = data[name]
        else:
            raise ValueError(f"random-effects factor {name!r} not found in data")
        col = np.asarray(col, dtype=object)
        if col.size != k:
            raise ValueError(f"random-effects factor {name!r} has {col.size} values for {k} effects")
        c = factor_codes(col, name)
        combined = c if combined is None else factor_codes([f"{a}\x1f{b}" for a, b in zip(combined, c)], name)
        codes.append(combined)
    X, cnames = design_matrix(mods, data, k)
    p = X.shape[1]
    if k <= p:
        raise ValueError(f"{p} coefficients but only {k} effects")
    B = _Blocks(v, codes)
    reml = method == "REML"
    # start: split a DerSimonian-Laird tau^2 of the univariate model evenly over the components
    tau2_dl = tau2_estimate(y, X, v, "DL")[0] if np.all(v > 0) else float(np.var(y))
    start = np.full(len(codes), max(tau2_dl, 1e-4 * float(np.var(y)) + 1e-8) / len(codes))
    with single_thread():
        theta, cur, iters = _mv_optimise(y, X, B, reml, start)
    b, vb = cur["b"], cur["vb"]  # with test="t": t and F tests on this model-based vb, k - p df
    QE = qgen(y, X, v, 0.0) if np.all(v > 0) else float("nan")
    QE_df = k - p
    QE_p = float(stats.chi2.sf(QE, QE_df))
    QM = QM_df = QM_p = None
    btt_l = list(btt) if btt is not None else [j for j, n in enumerate(cnames) if n != "intrcpt"]
    if btt_l:
        bb = b[btt_l]
        wald = float(bb @ linalg.solve(vb[np.ix_(btt_l, btt_l)], bb))
        m = len(btt_l)
        if test == "t":
            QM, QM_df, QM_p = wald / m, (m, k - p), float(stats.f.sf(wald / m, m, k - p))
        else:
            QM, QM_df, QM_p = wald, (m,), float(stats.chi2.sf(wald, m))
    else:
        btt_l = None
    return MvResult(
        method=method, test=test, level=level, yi=y, vi=v, X=X, coef_names=cnames, factors=names,
        codes=codes, nlvls=[int(np.unique(c).size) for c in codes], sigma2=theta, beta=b, vb=vb,
        logLik=cur["ll"], QE=QE, QE_df=QE_df, QE_p=QE_p, QM=QM, QM_df=QM_df, QM_p=QM_p, btt=btt_l,
        iterations=iters, _blocks=B,
    )


