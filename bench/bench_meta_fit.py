"""Time the multilevel meta-analysis on a database the size of the study's (1,218 effects, 110 papers).

The data are synthetic (seeded): papers contribute unequal numbers of comparisons across the 14
categories, true effects vary between papers and between comparisons, and sampling variances come
from the paired-proportion formula with known item counts. Timed: the three-level REML and ML fits,
the category meta-regression, CR2 cluster-robust inference by paper, profile-likelihood CIs, and the
univariate estimators next to statsmodels' ``combine_effects`` (and PyMARE when it is installed).

    python bench/bench_meta_fit.py [--repeat 3] [--out results/bench/meta_fit.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy
import statsmodels

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cotbench.meta.effects import raw_difference  # noqa: E402
from cotbench.meta.models import rma, rma_mv, robust  # noqa: E402
from cotbench.meta.schema import CATEGORIES  # noqa: E402


def synthetic(n_effects: int = 1218, n_papers: int = 110, seed: int = 2024) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    per_paper = 1 + rng.multinomial(n_effects - n_papers, rng.dirichlet(np.full(n_papers, 0.8)))
    cat_mu = dict(zip(CATEGORIES, rng.normal(3, 5, len(CATEGORIES))))
    rows = []
    for p, m in enumerate(per_paper):
        paper_u = rng.normal(0, 4)
        cats = rng.choice(CATEGORIES, size=rng.integers(1, 4), replace=False)
        for j in range(m):
            cat = cats[j % len(cats)]
            n = int(rng.choice([100, 250, 500, 1000, 1319, 5000]))
            direct = rng.uniform(20, 80)
            true = cat_mu[cat] + paper_u + rng.normal(0, 6)
            cot = float(np.clip(direct + true + rng.normal(0, 100 * np.sqrt(0.5 / n)), 0, 100))
            rows.append({"paper_id": f"P{p:03d}", "effect_id": f"E{len(rows):04d}", "category": cat,
                         "cot_score": cot, "direct_score": direct, "n_items": n})
    df = pd.DataFrame(rows)
    df["yi"], df["vi"] = raw_difference(df.cot_score, df.direct_score, df.n_items)
    return df


def timed(fn, repeat: int) -> tuple[float, list[float], object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def machine() -> dict:
    """The shared machine description (bench/_common.py) plus this benchmark's numeric libraries."""
    from _common import machine as base

    return {**base(), "numpy": np.__version__, "scipy": scipy.__version__, "pandas": pd.__version__,
            "statsmodels": statsmodels.__version__, "threadpoolctl": _version("threadpoolctl"),
            "load_average_1min": os.getloadavg()[0]}


def _version(mod: str) -> str | None:
    try:
        return __import__(mod).__version__
    except ImportError:
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--effects", type=int, default=1218)
    ap.add_argument("--papers", type=int, default=110)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench" / "meta_fit.json"))
    args = ap.parse_args(argv)
    df = synthetic(args.effects, args.papers)
    y, v = df["yi"].to_numpy(), df["vi"].to_numpy()
    rnd = "~ 1 | paper_id/effect_id"
    res: dict = {"data": {"effects": len(df), "papers": int(df.paper_id.nunique()),
                          "categories": int(df.category.nunique()), "seed": 2024,
                          "max_effects_per_paper": int(df.groupby("paper_id").size().max())},
                 "machine": machine(), "repeat": args.repeat, "timings_s": {}, "results": {}}
    T, R = res["timings_s"], res["results"]

    def record(name, fn, summarise):
        med, all_t, out = timed(fn, args.repeat)
        T[name] = {"median": round(med, 4), "all": [round(t, 4) for t in all_t]}
        R[name] = summarise(out)
        print(f"{name:<34} {med:8.3f} s   {R[name]}")
        return out

    ml = record("rma_mv_reml_intercept", lambda: rma_mv(y, v, random=rnd, data=df),
                lambda f: {"estimate": f.estimate, "se": float(f.se[0]), "sigma2": f.sigma2.tolist(),
                           "iterations": f.iterations})
    record("rma_mv_ml_intercept", lambda: rma_mv(y, v, random=rnd, data=df, method="ML"),
           lambda f: {"estimate": f.estimate, "sigma2": f.sigma2.tolist(), "iterations": f.iterations})
    record("rma_mv_reml_category_mods", lambda: rma_mv(y, v, random=rnd, data=df, mods="C(category)"),
           lambda f: {"p": f.p, "QM": f.QM, "iterations": f.iterations})
    record("robust_cr2_by_paper", lambda: robust(ml, df.paper_id, type="CR2"),
           lambda r: {"se": float(r.se[0]), "df": float(r.df[0])})
    record("profile_ci_sigma2", lambda: ml.confint(),
           lambda c: {k: [round(x, 4) for x in c[k]] for k in ("sigma^2.1", "sigma^2.2")})
    for meth in ("REML", "DL", "PM"):
        record(f"rma_{meth.lower()}_univariate", lambda meth=meth: rma(y, v, method=meth),
               lambda f: {"estimate": f.estimate, "tau2": f.tau2})
    from statsmodels.stats.meta_analysis import combine_effects

    for meth, name in (("dl", "statsmodels_combine_effects_dl"), ("iterated", "statsmodels_combine_effects_pm")):
        record(name, lambda meth=meth: combine_effects(y, v, method_re=meth),
               lambda r: {"estimate": float(r.mean_effect_re), "tau2": float(r.tau2)})
    try:
        from pymare import Dataset
        from pymare.estimators import VarianceBasedLikelihoodEstimator
    except ImportError:
        res["pymare"] = "not installed"
    else:
        def pymare_reml():
            est = VarianceBasedLikelihoodEstimator(method="REML")
            est.fit_dataset(Dataset(y=y, v=v))
            return est.summary()

        record("pymare_reml_univariate", pymare_reml,
               lambda s: {"estimate": float(np.ravel(s.get_fe_stats()["est"])[0]), "tau2": float(np.ravel(s.tau2)[0])})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
