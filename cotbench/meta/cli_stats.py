"""``cotbench meta fit`` and ``cotbench meta plot``: pooled CoT effects from the literature database.

The ``meta`` command group (cotbench/meta/cli.py) calls :func:`register` with its sub-parsers.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from cotbench.paths import data_dir

DEFAULT_DB = data_dir("meta_analysis") / "cot_effects.csv"
METHOD_CHOICES = ("reml", "ml", "dl", "pm", "he", "sj", "fe")
RANDOM = "~ 1 | paper_id/effect_id"  # comparisons nested in papers

__all__ = ["register", "load_effects", "pooled_by_group", "pooled_overall"]


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def load_effects(path: str | Path | None = None):
    """The effects table as a typed, validated DataFrame (``DataError`` names each bad row)."""
    from cotbench.meta.db import load

    return load(path or None)


# ----------------------------------------------------------------------------------------------
# analyses (pure functions of the effects table)
# ----------------------------------------------------------------------------------------------
def _fit_model(d, multilevel: bool, method: str, knha: bool = False, mods: str | None = None,
               level: float = 95):
    """``rma_mv`` with comparisons nested in papers, or the univariate ``rma``, on columns yi/vi of ``d``.

    ``knha`` selects t/F tests: Knapp-Hartung for ``rma``, k - p df for ``rma_mv``.
    """
    from cotbench.meta.models import rma, rma_mv

    yi, vi = d["yi"].to_numpy(), d["vi"].to_numpy()
    if multilevel:
        return rma_mv(yi, vi, random=RANDOM, data=d, mods=mods, method=method, test="t" if knha else "z",
                      level=level)
    return rma(yi, vi, method=method, mods=mods, data=d, test="knha" if knha else "z", level=level)


def _fit_one(d, multilevel: bool, method: str, knha: bool, level: float = 95):
    """Fit one pooled model to rows ``d`` (columns yi, vi, paper_id, effect_id); returns a dict row."""
    from cotbench.meta.models import robust
    from cotbench.meta.numerics import critical_value

    k, papers = len(d), int(d["paper_id"].nunique())
    row: dict[str, Any] = {"k": k, "papers": papers}
    if k == 1:
        se = math.sqrt(float(d["vi"].iloc[0]))
        z = critical_value(level)
        y = float(d["yi"].iloc[0])
        row.update(estimate=y, se=se, ci_lb=y - z * se, ci_ub=y + z * se, pi_lb=float("nan"), pi_ub=float("nan"),
                   model="single effect")
        return row, None
    if multilevel and papers >= 2:
        fit = _fit_model(d, True, "ML" if method == "ML" else "REML", knha, level=level)
        row.update(sigma2_paper=float(fit.sigma2[0]), sigma2_effect=float(fit.sigma2[1]),
                   model=f"rma_mv {fit.method}")
    else:
        meth = method if not (multilevel and method not in ("REML", "ML")) else "REML"
        fit = _fit_model(d, False, meth, knha, level=level)
        row.update(tau2=fit.tau2, I2=fit.I2, model=f"rma {fit.method}" + (" (1 paper)" if multilevel else ""))
    pr = fit.predict()
    row.update(estimate=fit.estimate, se=float(fit.se[0]), ci_lb=pr["ci_lb"], ci_ub=pr["ci_ub"],
               pi_lb=pr["pi_lb"], pi_ub=pr["pi_ub"], pval=float(fit.pval[0]), Q=fit.QE, Q_p=fit.QE_p)
    if papers >= 2:
        rob = robust(fit, d["paper_id"].to_numpy(), type="CR2")
        row.update(cr2_se=float(rob.se[0]), cr2_df=float(rob.df[0]), cr2_ci_lb=float(rob.ci_lb[0]),
                   cr2_ci_ub=float(rob.ci_ub[0]), cr2_pval=float(rob.pval[0]))
    return row, fit


def pooled_overall(df, multilevel: bool = True, method: str = "REML", knha: bool = False) -> dict:
    row, _ = _fit_one(df, multilevel, method.upper(), knha)
    row["group"] = "ALL"
    return row


def pooled_by_group(df, by: str = "category", multilevel: bool = True, method: str = "REML",
                    knha: bool = False):
    """Separate pooled fits per level of ``by`` (subgroup analysis) with CR2-by-paper inference.

    Returns (table, moderator_test). The moderator test is the omnibus test of ``by`` in one
    meta-regression over all rows (multilevel when ``multilevel``), i.e. whether the pooled effects
    differ between groups.
    """
    import pandas as pd

    if by not in df.columns:
        raise ValueError(f"--by {by}: the effects table has no column {by!r}")
    if df[by].isna().any():
        raise ValueError(f"--by {by}: row {int(df[by].isna().to_numpy().nonzero()[0][0])} has no {by}")
    method = method.upper()
    rows = []
    for lvl, d in df.groupby(by, sort=True, observed=True):
        row, _ = _fit_one(d.reset_index(drop=True), multilevel, method, knha)
        rows.append({"group": lvl, **row})
    tab = pd.DataFrame(rows).sort_values("estimate", ascending=False, kind="stable").reset_index(drop=True)
    test: dict[str, Any] = {}
    if tab.shape[0] >= 2:
        formula = f"C(Q('{by}'))"
        if multilevel and df["paper_id"].nunique() >= 2:
            mfit = _fit_model(df, True, "ML" if method == "ML" else "REML", knha, mods=formula)
        else:
            mfit = _fit_model(df, False, method, knha, mods=formula)
        test = {"QM": mfit.QM, "df": list(mfit.QM_df), "p": mfit.QM_p,
                "test": "F" if knha else "chi2", "model": type(mfit).__name__}
    return tab, test


def _prepare(args) -> tuple[Any, dict]:
    from cotbench.meta.effects import effects_table

    df = load_effects(args.file)
    for col in ("paper_id",):
        if col not in df.columns:
            raise ValueError(f"effects table lacks column {col!r}")
    if "effect_id" not in df.columns:
        df = df.assign(effect_id=np.arange(len(df)))
    from cotbench.meta.db import without_pooled

    kept = without_pooled(df, getattr(args, "include_pooled", False))
    if kept.empty:
        raise ValueError("every row is a pooled row; pass --include-pooled to analyse them")
    out, info = effects_table(kept, rho=args.rho, missing_n=args.missing_n)
    info["pooled_left_out"] = int(len(df) - len(kept))
    return out, info


# ----------------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------------
def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _clean(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def _dump_json(obj, out) -> None:
    json.dump(_clean(obj), out, indent=2, default=_json_default)
    out.write("\n")


def _fit_dict(fit, rob) -> dict:
    """The fitted model as a dict, with the CR2 coefficient table when there is one."""
    d = fit.to_dict()
    if rob is not None:
        d["cr2"] = rob.to_frame().reset_index().to_dict(orient="records")
    return d


def _write_fit_csv(fit, rob, out) -> None:
    f = fit.to_frame()
    if rob is not None:
        f = f.join(rob.to_frame().add_prefix("cr2_"))
    f.to_csv(out)


def _fit_text(fit, rob) -> str:
    return fit.summary() + ("\n" + rob.summary() if rob is not None else "")


def _table_text(tab) -> str:
    show = ["group", "k", "papers", "estimate", "ci_lb", "ci_ub", "pi_lb", "pi_ub"]
    extra = [c for c in ("cr2_se", "cr2_df", "cr2_ci_lb", "cr2_ci_ub", "sigma2_paper", "sigma2_effect", "tau2")
             if c in tab.columns and tab[c].notna().any()]
    t = tab[show + extra].copy()
    return t.to_string(index=False, float_format=lambda x: f"{x:.2f}", na_rep="-")


def _cmd_fit(args) -> int:
    df, info = _prepare(args)
    method = args.method.upper()
    if args.multilevel and method not in ("REML", "ML"):
        raise ValueError(f"--multilevel fits by REML or ML, not {args.method}")
    note = (f"{info['rows']} effects; n_items imputed for {info['n_imputed']} (median of the same dataset), "
            f"dropped {info['dropped']}; sampling variances with rho = {info['rho']:g} "
            f"({'conservative independent-proportions bound' if info['rho'] == 0 else 'paired approximation'})"
            + (f"; {info['pooled_left_out']} pooled rows left out (--include-pooled keeps them)"
               if info.get("pooled_left_out") else ""))
    if args.sensitivity and not args.by:
        raise ValueError("--sensitivity compares subgroup estimates: give --by (e.g. --by category)")
    if args.mods:
        if args.by:
            raise ValueError("give either --by (subgroup fits) or --mods (one meta-regression), not both")
        _fit_regression(args, df, info, method, note, sys.stdout)
    elif args.by:
        _fit_subgroups(args, df, info, method, note, sys.stdout)
    else:
        _fit_overall(args, df, info, method, note, sys.stdout)
    return 0


def _fit_regression(args, df, info: dict, method: str, note: str, out) -> None:
    """``meta fit --mods``: one meta-regression, with CR2-by-paper inference when there are enough papers."""
    from cotbench.meta.models import robust

    fit = _fit_model(df, args.multilevel, method, args.knha, mods=args.mods)
    rob = robust(fit, df["paper_id"].to_numpy(), type="CR2") if df["paper_id"].nunique() > fit.p else None
    if args.format == "json":
        _dump_json({**_fit_dict(fit, rob), "data": info}, out)
    elif args.format == "csv":
        _write_fit_csv(fit, rob, out)
    else:
        out.write(_fit_text(fit, rob))
        if rob is None:
            out.write(f"\nNo cluster-robust (CR2) inference: {df['paper_id'].nunique()} papers for "
                      f"{fit.p} coefficients.\n")
        out.write(f"\n{note}\n")


def _fit_subgroups(args, df, info: dict, method: str, note: str, out) -> None:
    """``meta fit --by COLUMN``: pooled fits per group, the overall fit and the test of group differences."""
    import pandas as pd

    tab, test = pooled_by_group(df, by=args.by, multilevel=args.multilevel, method=method, knha=args.knha)
    overall = pooled_overall(df, multilevel=args.multilevel, method=method, knha=args.knha)
    full = pd.concat([tab, pd.DataFrame([overall])], ignore_index=True)
    study = None
    if args.by == "category":
        from cotbench.meta.summaries import category_summary, top_k_vs_rest

        study = {"categories": category_summary(df).to_dict(orient="records")}
        if df["category"].nunique() > 3:
            study["top3_vs_rest"] = top_k_vs_rest(df, k=3)
    sens = None
    if args.sensitivity:
        from cotbench.meta.sensitivity import category_sensitivity

        sens = category_sensitivity(df, by=args.by, multilevel=args.multilevel, method=method, cap=args.cap)
    if args.format == "json":
        _dump_json({"by": args.by, "multilevel": args.multilevel, "method": method,
                    "rows": tab.to_dict(orient="records"), "overall": overall,
                    "moderator_test": test, "study_summary": study, "data": info,
                    **({"sensitivity": sens.to_dict()} if sens is not None else {})}, out)
        return
    if args.format == "csv":
        (sens.table if sens is not None else full).to_csv(out, index=False)
        return
    kind = "multilevel (~ 1 | paper/effect)" if args.multilevel else "random-effects"
    out.write(f"Pooled CoT − direct (accuracy points) by {args.by}: {kind}, {method}"
              f"{', Knapp-Hartung' if args.knha else ''}\n")
    out.write("CI: model-based 95%; PI: 95% prediction interval; cr2_*: cluster-robust (CR2) by paper,"
              " Satterthwaite df\n\n")
    out.write(_table_text(full) + "\n")
    if test:
        stat = "F" if test["test"] == "F" else "QM"
        model = "multilevel meta-regression" if test["model"] == "MvResult" else "meta-regression"
        pv = "p < .0001" if test["p"] < 1e-4 else f"p = {test['p']:.4f}"
        out.write(f"\nTest of {args.by} differences ({model}, model-based): {stat}(df = "
                  f"{', '.join(map(str, test['df']))}) = {test['QM']:.2f}, {pv}\n")
    if study:
        cs = pd.DataFrame(study["categories"])[
            ["category", "n_effects", "n_papers", "mean_delta", "median_delta", "paper_mean_delta"]]
        out.write("\nThe study's unweighted summaries (mean over comparisons; paper_mean: mean of per-paper"
                  " means):\n")
        out.write(cs.to_string(index=False, float_format=lambda x: f"{x:.2f}") + "\n")
        if "top3_vs_rest" in study:
            t3 = study["top3_vs_rest"]
            out.write(f"Top 3 ({', '.join(t3['top_categories'])}): paper-mean delta "
                      f"{t3['top']['paper_mean_delta']:.2f} vs {t3['rest']['paper_mean_delta']:.2f} for the rest "
                      f"(comparison means {t3['top']['mean_delta']:.2f} vs {t3['rest']['mean_delta']:.2f})\n")
    if sens is not None:
        out.write("\n" + sens.text())
    out.write(f"\n{note}\n")


def _fit_overall(args, df, info: dict, method: str, note: str, out) -> None:
    """``meta fit``: one pooled model over all rows, CR2 by paper, and with ``--bias`` the bias checks."""
    from cotbench.meta.models import robust

    fit = _fit_model(df, args.multilevel, method, args.knha)
    rob = robust(fit, df["paper_id"].to_numpy(), type="CR2") if df["paper_id"].nunique() >= 2 else None
    extra: dict[str, Any] = {}
    if args.bias:
        from cotbench.meta.bias import egger_test, leave_one_out, trimfill

        uni = "REML" if method in ("REML", "ML") or args.multilevel else method
        extra["egger"] = egger_test(df["yi"], df["vi"], model="rma", method=uni)
        extra["trimfill"] = trimfill(df["yi"], df["vi"], method=uni)
        extra["loo"] = leave_one_out(df, "paper_id", lambda sub: _fit_model(sub, args.multilevel, method))
    if args.format == "json":
        d = _fit_dict(fit, rob)
        if args.bias:
            tf = extra["trimfill"]
            d["egger"] = extra["egger"].to_dict()
            d["trimfill"] = {"k0": tf.k0, "side": tf.side, "se_k0": tf.se_k0, "estimate": tf.fit.estimate,
                             "ci_lb": float(tf.fit.ci_lb[0]), "ci_ub": float(tf.fit.ci_ub[0])}
            d["leave_one_out"] = extra["loo"].to_dict(orient="records")
        d["data"] = info
        _dump_json(d, out)
    elif args.format == "csv":
        _write_fit_csv(fit, rob, out)
    else:
        out.write(_fit_text(fit, rob))
        if args.bias:
            out.write("\n" + extra["egger"].summary())
            tf = extra["trimfill"]
            out.write(f"\nTrim-and-fill (L0, univariate {tf.fit.method}): {tf.k0} missing on the {tf.side} side "
                      f"(SE = {tf.se_k0:.2f}); adjusted estimate {tf.fit.estimate:.2f} "
                      f"[{float(tf.fit.ci_lb[0]):.2f}, {float(tf.fit.ci_ub[0]):.2f}]\n")
            loo = extra["loo"]
            lo, hi = loo.loc[loo["estimate"].idxmin()], loo.loc[loo["estimate"].idxmax()]
            out.write(f"Leave-one-paper-out: estimate ranges {lo['estimate']:.2f} (without {lo['paper_id']}) "
                      f"to {hi['estimate']:.2f} (without {hi['paper_id']})\n")
        out.write(f"\n{note}\n")


def _cmd_plot(args) -> int:
    from cotbench.figures import literature as plots

    df, info = _prepare(args)
    if args.figure == "fig2":
        plots.fig2(df, out=args.out)
    elif args.figure == "forest":
        tab, _ = pooled_by_group(df, by=args.by, multilevel=not args.univariate, method=args.method.upper())
        overall = pooled_overall(df, multilevel=not args.univariate, method=args.method.upper())
        kind = "univariate random-effects" if args.univariate else "multilevel (~ 1 | paper/effect), REML"
        plots.forest(tab, overall=overall, out=args.out,
                     title=f"Pooled CoT effect by {args.by} ({kind})")
    else:
        from cotbench.meta.bias import trimfill

        fit = _fit_model(df, False, args.method.upper())
        tf = trimfill(df["yi"], df["vi"], method=args.method.upper()) if args.trimfill else None
        plots.funnel(df["yi"], df["vi"], fit.estimate, out=args.out,
                     filled_yi=tf.yi_filled if tf else (), filled_vi=tf.vi_filled if tf else (),
                     xlabel="CoT − direct (accuracy points)",
                     title=f"Funnel plot of CoT deltas (univariate {fit.method}"
                           + (f"; trim-and-fill L0: {tf.k0} imputed on the {tf.side})" if tf else ")"))
    print(f"wrote {args.out}")
    return 0


# ----------------------------------------------------------------------------------------------
# argparse
# ----------------------------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file", default=None, help=f"effects CSV (default: the shipped {DEFAULT_DB.name})")
    p.add_argument("--rho", type=float, default=0.0,
                   help="item-level correlation of CoT and direct correctness for the paired variance "
                        "(default 0: conservative independent-proportions bound)")
    p.add_argument("--missing-n", choices=("impute", "drop"), default="impute",
                   help="rows without n_items: impute the dataset's median n (default) or drop them")
    p.add_argument("--include-pooled", action="store_true",
                   help="keep pooled rows (averages of other rows of the same paper, e.g. BBH/MMLU averages); "
                        "left out by default so no items count twice")


def register(meta_subparsers) -> None:
    """Add ``fit`` and ``plot`` to the ``meta`` command group."""
    f = meta_subparsers.add_parser("fit", help="pool CoT effects (random-effects / multilevel meta-analysis)")
    f.add_argument("--by", default=None, help="subgroup column, e.g. category")
    f.add_argument("--method", choices=METHOD_CHOICES, default="reml", type=str.lower)
    f.add_argument("--multilevel", action="store_true", help="effects nested in papers (~ 1 | paper/effect)")
    f.add_argument("--knha", action="store_true", help="Knapp-Hartung (univariate) / t-tests (multilevel)")
    f.add_argument("--mods", default=None, help="meta-regression formula, e.g. 'category + shots + year'")
    f.add_argument("--bias", action="store_true", help="also Egger's test, trim-and-fill, leave-one-paper-out")
    f.add_argument("--sensitivity", action="store_true",
                   help="with --by: refit each group leaving out one paper at a time, leaving out the largest "
                        "paper, and with each paper's weight capped (--cap), to show whether one paper drives "
                        "the estimates or their ranking (--format csv writes the sensitivity table)")
    f.add_argument("--cap", type=float, default=0.2,
                   help="largest share of a group's weight one paper may carry in the capped analysis "
                        "(default 0.2; groups with fewer than 1/cap papers use equal paper shares)")
    f.add_argument("--format", choices=("table", "csv", "json"), default="table")
    _common(f)
    f.set_defaults(func=_cmd_fit)

    pl = meta_subparsers.add_parser("plot", help="draw the study's Figure 2, a forest plot or a funnel plot")
    pl.add_argument("figure", choices=("fig2", "forest", "funnel"))
    pl.add_argument("--out", required=True, help="output file (.png, .pdf or .svg)")
    pl.add_argument("--by", default="category", help="grouping for the forest plot (default: category)")
    pl.add_argument("--method", choices=METHOD_CHOICES, default="reml", type=str.lower)
    pl.add_argument("--univariate", action="store_true", help="forest: ignore nesting in papers")
    pl.add_argument("--trimfill", action="store_true", help="funnel: add trim-and-fill imputed effects")
    _common(pl)
    pl.set_defaults(func=_cmd_plot)
