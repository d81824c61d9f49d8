"""Selective CoT (beyond the study): decide per item whether to pay for a chain of thought.

A policy maps an item to {direct, CoT}; its accuracy and mean output tokens are read off the
runs that already answered every item both ways, so no new model calls are needed. Policies:

* ``never_cot`` / ``always_cot`` — the two baselines;
* ``cot_for:<g1>+<g2>…`` — CoT only for datasets in those category groups (every subset of the
  groups present);
* ``equals_in_question`` — CoT only when the question contains "=" (the study's MMLU finding);
* ``classifier@<q>`` — two ridge-penalised logistic regressions (statsmodels GLM) on cheap
  question features (has "=", share of digits, log length, group) predict P(CoT helps) and
  P(CoT hurts); CoT is used when their difference is above the training score's q-quantile.

Items are split once, by a seeded hash of (dataset, example_id) — the same split for every
model — into a training half (fit the classifier, choose the recommended policy) and a test half
(every number reported). The recommended policy is the cheapest one whose *training* accuracy is at
least always-CoT's training accuracy minus ``tol``; "tokens saved at equal accuracy" is its test
saving, so the choice is not tuned on the numbers it reports.
"""
from __future__ import annotations

import hashlib
import itertools
import warnings

import numpy as np
import pandas as pd

from cotbench.analysis.gains import group_order
from cotbench.analysis.paired import SHOT_PAIRS, pair_settings

QUANTILES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def split_mask(datasets: pd.Series, example_ids: pd.Series, seed: int = 0, train_frac: float = 0.5) -> np.ndarray:
    """True = training item. A hash of (seed, dataset, id): stable across models, runs and row order."""
    u = [int.from_bytes(hashlib.blake2b(f"{seed}\x1f{d}\x1f{e}".encode("utf-8"), digest_size=8).digest(), "big") / 2**64
         for d, e in zip(datasets, example_ids)]
    return np.asarray(u) < train_frac


def features(pairs: pd.DataFrame, groups: list[str]) -> np.ndarray:
    """Cheap features known before answering: "=", digit share, log length, group one-hot."""
    q = pairs["question"].fillna("").astype(str)
    length = q.str.len().to_numpy(dtype=float)
    digits = q.map(lambda s: sum(ch.isdigit() for ch in s)).to_numpy(dtype=float)
    cols = [q.str.contains("=", regex=False).to_numpy(dtype=float),
            digits / np.maximum(length, 1.0),
            np.log1p(length)]
    cols += [(pairs["group"] == g).to_numpy(dtype=float) for g in groups[1:]]  # first group = reference
    return np.column_stack(cols)


def _fit_predict(X_train: np.ndarray, y: np.ndarray, X_all: np.ndarray, alpha: float = 0.01) -> np.ndarray:
    """P(y=1) for every row from a ridge-penalised logistic regression (statsmodels GLM, binomial,
    elastic net with L1_wt=0 — the penalty keeps it finite under separation and collinear
    features); a constant when the training labels do not vary."""
    import statsmodels.api as sm

    if y.min() == y.max():
        return np.full(len(X_all), float(y.mean()))
    mu, sd = X_train.mean(0), X_train.std(0)
    sd[sd == 0] = 1.0
    Xt = sm.add_constant((X_train - mu) / sd, has_constant="add")
    Xa = sm.add_constant((X_all - mu) / sd, has_constant="add")
    penalty = np.full(Xt.shape[1], alpha)
    penalty[0] = 0.0  # never shrink the intercept
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sm.GLM(y, Xt, family=sm.families.Binomial()).fit_regularized(
            method="elastic_net", alpha=penalty, L1_wt=0.0)
    return 1.0 / (1.0 + np.exp(-np.clip(Xa @ np.asarray(res.params), -50, 50)))


def policies(pairs: pd.DataFrame, train: np.ndarray) -> dict[str, np.ndarray]:
    """Every policy's decision (True = CoT) for every paired item."""
    n = len(pairs)
    out: dict[str, np.ndarray] = {"never_cot": np.zeros(n, bool), "always_cot": np.ones(n, bool)}
    groups = group_order(pairs["group"])
    for k in range(1, len(groups)):
        for combo in itertools.combinations(groups, k):
            out["cot_for:" + "+".join(combo)] = pairs["group"].isin(combo).to_numpy()
    out["equals_in_question"] = pairs["question"].fillna("").str.contains("=", regex=False).to_numpy()
    X = features(pairs, groups)
    helps = (pairs["d"] > 0).to_numpy(dtype=float)
    hurts = (pairs["d"] < 0).to_numpy(dtype=float)
    if train.any():
        score = _fit_predict(X[train], helps[train], X) - _fit_predict(X[train], hurts[train], X)
        for q in QUANTILES:
            thr = float(np.quantile(score[train], q))
            out[f"classifier@{q:.1f}"] = score > thr if q > 0 else score >= thr
    return out


def _score(pairs: pd.DataFrame, use_cot: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    c = np.where(use_cot, pairs["correct_treat"], pairs["correct_base"])[mask]
    t = np.where(use_cot, pairs["tokens_out_treat"], pairs["tokens_out_base"]).astype(float)[mask]
    tok = float(np.nanmean(t)) if mask.any() and not np.isnan(t).all() else np.nan
    return (float(c.mean()) if mask.any() else np.nan, tok, float(use_cot[mask].mean()) if mask.any() else np.nan)


def pareto(acc: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """True for points no other point beats on both (≥ accuracy and ≤ tokens, one strictly)."""
    acc, tokens = np.asarray(acc, float), np.asarray(tokens, float)
    keep = np.zeros(len(acc), bool)
    for i in range(len(acc)):
        if np.isnan(acc[i]) or np.isnan(tokens[i]):
            continue
        dominated = ((acc >= acc[i]) & (tokens <= tokens[i]) & ((acc > acc[i]) | (tokens < tokens[i])))
        keep[i] = not dominated.any()
    return keep


POLICY_COLUMNS = ["model", "shots", "policy", "n_test", "accuracy", "mean_tokens_out", "cot_rate",
                  "train_accuracy", "train_mean_tokens_out", "pareto"]
SUMMARY_COLUMNS = ["model", "shots", "n_train", "n_test", "always_cot_accuracy", "always_cot_tokens",
                   "never_cot_accuracy", "never_cot_tokens", "chosen_policy", "chosen_accuracy", "chosen_tokens",
                   "tokens_saved", "tokens_saved_pct"]


def selective(df: pd.DataFrame, shots: str = "zs", seed: int = 0, train_frac: float = 0.5,
              tol: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(policy table, per-model summary) — see the module docstring."""
    base, treat = SHOT_PAIRS[shots]
    allp = pair_settings(df, base, treat)
    prow, srow = [], []
    for model, pairs in allp.groupby("model", sort=True):
        pairs = pairs.reset_index(drop=True)
        train = split_mask(pairs["dataset"], pairs["example_id"], seed, train_frac)
        test = ~train
        if not test.any():
            continue
        pol = policies(pairs, train)
        rows = []
        for name, use in pol.items():
            acc, tok, rate = _score(pairs, use, test)
            tacc, ttok, _ = _score(pairs, use, train)
            rows.append({"model": model, "shots": shots, "policy": name, "n_test": int(test.sum()), "accuracy": acc,
                         "mean_tokens_out": tok, "cot_rate": rate, "train_accuracy": tacc,
                         "train_mean_tokens_out": ttok})
        t = pd.DataFrame(rows)
        t["pareto"] = pareto(t["accuracy"].to_numpy(), t["mean_tokens_out"].to_numpy())
        prow.append(t)
        a = t.set_index("policy")
        chosen = _choose(t, tol)
        srow.append({
            "model": model, "shots": shots, "n_train": int(train.sum()), "n_test": int(test.sum()),
            "always_cot_accuracy": a.at["always_cot", "accuracy"], "always_cot_tokens": a.at["always_cot", "mean_tokens_out"],
            "never_cot_accuracy": a.at["never_cot", "accuracy"], "never_cot_tokens": a.at["never_cot", "mean_tokens_out"],
            "chosen_policy": chosen,
            "chosen_accuracy": a.at[chosen, "accuracy"] if chosen else np.nan,
            "chosen_tokens": a.at[chosen, "mean_tokens_out"] if chosen else np.nan,
        })
    policies_t = pd.concat(prow, ignore_index=True)[POLICY_COLUMNS] if prow else pd.DataFrame(columns=POLICY_COLUMNS)
    summary = pd.DataFrame(srow, columns=SUMMARY_COLUMNS[:-2])
    summary["tokens_saved"] = summary["always_cot_tokens"] - summary["chosen_tokens"]
    summary["tokens_saved_pct"] = summary["tokens_saved"] / summary["always_cot_tokens"]
    return policies_t, summary[SUMMARY_COLUMNS]


def _choose(t: pd.DataFrame, tol: float) -> str | None:
    """Cheapest policy (on training items) at least as accurate as always-CoT there, minus tol."""
    a = t.set_index("policy")
    target = a.at["always_cot", "train_accuracy"] - tol
    ok = t[(t["train_accuracy"] >= target - 1e-12) & t["train_mean_tokens_out"].notna()]
    if ok.empty:
        return None
    ok = ok.sort_values(["train_mean_tokens_out", "train_accuracy", "policy"], ascending=[True, False, True],
                        kind="mergesort")
    return str(ok["policy"].iloc[0])
