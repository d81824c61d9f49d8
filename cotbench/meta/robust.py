"""Cluster-robust inference for fitted meta-analytic models: CR1 as metafor's ``robust()``, CR2 with
Satterthwaite degrees of freedom as clubSandwich's ``vcovCR(type="CR2")`` + ``coef_test()``.

Works on any fit (a ``numerics.Coefficients``: ``RmaResult``, ``MvResult``) that has ``yi``, ``X``,
``coef_names``, ``level`` and ``_cluster_blocks(cl)``, which gives the rows of each cluster, the
fitted marginal covariance of those rows (the CR2 working model) and the model-based ``(X'V^-1X)^-1``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy import linalg

from cotbench.meta.numerics import (
    Coefficients,
    CoefficientTable,
    factor_codes,
    single_thread,
)

__all__ = ["robust", "RobustResult", "TYPES"]

TYPES = ("CR1", "CR2")  # cluster-robust variance estimators robust() accepts


@dataclass
class RobustResult(CoefficientTable):
    """Cluster-robust coefficient table (CR1 as metafor's robust(), CR2 as clubSandwich): t tests and
    intervals on ``df`` (one per coefficient), computed by the same :class:`CoefficientTable` as the
    model-based table."""

    _df_column: ClassVar[bool] = True

    type: str
    coef_names: list[str]
    beta: np.ndarray
    vb: np.ndarray
    df: np.ndarray
    n_clusters: int
    level: float = 95

    @property
    def tval(self) -> np.ndarray:
        return self.stat

    def summary(self) -> str:
        how = "Satterthwaite approx" if self.type == "CR2" else "residual method"
        return (
            f"Cluster-robust inference ({self.n_clusters} clusters; var-cov estimator: {self.type}; df: {how})\n\n"
            + self.to_frame().round(4).to_string()
            + "\n"
        )


def _inv_sqrt_psd(G: np.ndarray) -> np.ndarray:
    """Symmetric inverse square root, pseudo-inverse on numerically zero eigenvalues."""
    vals, vecs = linalg.eigh((G + G.T) / 2)
    tol = max(vals.max(), 0.0) * 1e-12 * G.shape[0]
    inv = np.where(vals > tol, 1.0 / np.sqrt(np.clip(vals, tol, None)), 0.0)
    return (vecs * inv) @ vecs.T


def robust(fit: Coefficients, cluster: Any, type: str = "CR2", data: Any = None) -> RobustResult:
    """Cluster-robust variance for a fitted model; ``cluster`` is labels or a column of ``data``.

    CR1: metafor's robust() default (sandwich times m/(m-p), t with m-p df). CR2: the bias-reduced
    linearisation of Bell & McCaffrey with the fitted model's marginal covariance as working model and
    Satterthwaite df per coefficient, as clubSandwich's vcovCR(type="CR2") + coef_test(). The working
    model must not correlate effects across clusters (clusters must contain whole outer groups).
    """
    with single_thread():
        return _robust(fit, cluster, type, data)


def _robust(fit, cluster, type, data) -> RobustResult:
    type = type.upper()
    if type not in TYPES:
        raise ValueError(f"type must be one of {', '.join(TYPES)}, got {type!r}")
    if isinstance(cluster, str):
        if data is None or cluster not in getattr(data, "columns", []):
            raise ValueError(f"cluster column {cluster!r} not found")
        cluster = data[cluster]
    cl = factor_codes(cluster, "cluster")
    y, X = fit.yi, fit.X
    k, p = X.shape
    if cl.size != k:
        raise ValueError(f"cluster has {cl.size} values for {k} effects")
    # marginal covariance blocks of the fitted model, regrouped by cluster
    idx_list, Phi, Bm = fit._cluster_blocks(cl)
    m = len(idx_list)
    if m <= p:
        raise ValueError(f"{m} clusters for {p} coefficients: cluster-robust inference impossible")
    b = Bm @ sum(X[idx].T @ linalg.solve(P, y[idx], assume_a="pos") for idx, P in zip(idx_list, Phi))
    u_list, q_parts = [], []
    for idx, P in zip(idx_list, Phi):
        Xj, ej = X[idx], y[idx] - X[idx] @ b
        Wj = linalg.inv(P)
        if type == "CR2":
            R = linalg.cholesky(P, lower=False)  # P = R'R
            G = R @ (P - Xj @ Bm @ Xj.T) @ R.T
            Aj = R.T @ _inv_sqrt_psd(G) @ R
        else:
            Aj = np.eye(idx.size)
        u_list.append(Xj.T @ Wj @ Aj @ ej)
        q_parts.append((Aj @ Wj @ Xj, P, Xj))
    meat = sum(np.outer(u, u) for u in u_list)
    V = Bm @ meat @ Bm
    if type == "CR1":
        V = V * m / (m - p)
        df = np.full(p, float(m - p))
    else:
        df = np.empty(p)
        for c in range(p):
            ec = Bm[:, c]
            qs = [AWX @ ec for AWX, _, _ in q_parts]
            ss = np.array([Xj.T @ q for q, (_, _, Xj) in zip(qs, q_parts)])  # m x p
            diag = np.array([q @ P @ q for q, (_, P, _) in zip(qs, q_parts)])
            Om = -ss @ Bm @ ss.T
            Om[np.diag_indices(m)] += diag
            df[c] = np.trace(Om) ** 2 / np.sum(Om * Om)
    return RobustResult(type=type, coef_names=list(fit.coef_names), beta=b, vb=V, df=df, n_clusters=m,
                        level=fit.level)
