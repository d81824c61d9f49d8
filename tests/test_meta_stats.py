"""Meta-analysis statistics validated against R's metafor, number for number.

The reference values live in ``tests/reference/metafor.json``, written by
``tests/reference/make_metafor.R`` (metafor and clubSandwich from Debian; the header of the script says
how to rerun it, the JSON's ``meta`` records the versions and the control settings). The JSON carries
the input data too (metafor's dat.bcg, dat.raudenbush1985, dat.konstantopoulos2011, dat.egger2001 and
the CLASP trials), so these tests need no R.

Tolerance: relative 1e-6 (absolute 1e-8 near zero) on every value. metafor's iterative steps ran with
tight controls (Fisher scoring and uniroot tolerances 1e-13, Q-profile/profile-likelihood bounds 1e-12),
so its printing defaults do not limit the comparison. Exceptions are named at the assertion.
"""
from __future__ import annotations

import argparse
import io
import json
from contextlib import redirect_stdout
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cotbench.meta import bias, effects, models, multilevel, numerics, robust, summaries

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "meta_stats"
REF = json.loads((Path(__file__).resolve().parent / "reference" / "metafor.json").read_text())
REL, ABS = 1e-6, 1e-8


# ------------------------------------------------------------------------------------------------
# reading the reference
# ------------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _frame(name: str) -> pd.DataFrame:
    return pd.DataFrame(REF["data"][name])


def data(name: str) -> pd.DataFrame:
    return _frame(name).copy()


def _arr(x) -> np.ndarray:
    """A reference or computed value as a float array (None/null -> nan; JSON scalars -> length 1)."""
    if isinstance(x, (list, tuple, np.ndarray)):
        return np.array([np.nan if e is None else e for e in np.ravel(np.asarray(x, dtype=object))], dtype=float)
    return np.array([np.nan if x is None else x], dtype=float)


KEY = object()  # Compare: take the reference value from the case under the compared name


class Compare:
    """Collects every mismatch of one case, so a failure lists all differing values at once."""

    def __init__(self, case: dict):
        self.id, self.ref, self.bad = case["id"], case["values"], []

    def __call__(self, name: str, ours, ref=KEY, rel: float = REL, abs: float = ABS) -> None:
        want = _arr(self.ref[name] if ref is KEY else ref)
        got = _arr(ours)
        if got.shape != want.shape:
            self.bad.append(f"{name}: shape {got.shape} vs metafor {want.shape} ({got} vs {want})")
        elif not np.allclose(got, want, rtol=rel, atol=abs, equal_nan=True):
            self.bad.append(f"{name}: ours {got.tolist()} vs metafor {want.tolist()}")

    def done(self) -> None:
        assert not self.bad, f"{self.id} differs from metafor:\n  " + "\n  ".join(self.bad)


def cases(section: str) -> list:
    return [pytest.param(c, id=c["id"]) for c in REF[section]]


def _qmdf(df) -> list:
    return [*df, None] if df is not None and len(df) == 1 else df


def _coefficients(cmp: Compare, res) -> None:
    cmp("beta", res.beta)
    cmp("se", res.se)
    cmp("zval", res.stat)
    cmp("pval", res.pval)
    cmp("ci_lb", res.ci_lb)
    cmp("ci_ub", res.ci_ub)


def _prediction(cmp: Compare, res, fixed: bool = False) -> None:
    pr = res.predict(cmp.ref.get("newmods"))
    for key in ("pred", "se", "ci_lb", "ci_ub", "pi_lb", "pi_ub"):
        if fixed and key.startswith("pi"):
            # metafor gives no prediction interval without heterogeneity; ours is the CI (tau^2 = 0)
            cmp(f"predict.{key}", pr[key], cmp.ref["predict"]["ci" + key[2:]])
        else:
            cmp(f"predict.{key}", pr[key], cmp.ref["predict"][key])


# ------------------------------------------------------------------------------------------------
# coverage: every option cotbench accepts has reference cases
# ------------------------------------------------------------------------------------------------
def test_reference_covers_every_option():
    """A new estimator, test or option cannot slip in without metafor reference values."""
    uni = {(c["method"], c["mods"] is not None, c["test"]) for c in REF["rma"]}
    missing = [(m, mods, t) for m in models.METHODS for mods in (False, True) for t in ("z", "knha")
               if (m, mods, t) not in uni]
    assert not missing, f"rma cases missing from tests/reference/metafor.json: {missing}"
    mv = {(c["method"], c["mods"] is not None, c["test"]) for c in REF["rma_mv"]}
    assert {(m, mods, t) for m in multilevel.METHODS for mods in (False, True) for t in ("z", "t")} <= mv
    assert {(mdl, t) for mdl in ("rma", "rma_mv") for t in robust.TYPES} <= {
        (c["model"], c["type"]) for c in REF["robust"]}
    assert set(bias.TRIMFILL_ESTIMATORS) <= {c["estimator"] for c in REF["trimfill"]}
    assert set(bias.EGGER_MODELS) <= {c["model"] for c in REF["regtest"]}
    # more than one data set per estimator, and boundary fits (tau^2 = 0) among them
    assert len({c["data"] for c in REF["rma"]}) >= 3
    assert any(c["values"]["tau2"] == 0 or (c["values"]["tau2"] or 1) < 1e-10
               for c in REF["rma"] if c["method"] not in ("FE", "EE"))
    assert REF["meta"]["metafor"] and REF["meta"]["R"]


# ------------------------------------------------------------------------------------------------
# effect sizes
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, fn, cols", [
    ("bcg", effects.log_risk_ratio, dict(ai="tpos", bi="tneg", ci="cpos", di="cneg")),
    ("clasp", effects.log_odds_ratio, dict(ai="ai", n1i="n1i", ci="ci", n2i="n2i")),
    ("egger2001", effects.log_odds_ratio, dict(ai="ai", n1i="n1i", ci="ci", n2i="n2i")),  # one zero cell
])
def test_escalc_matches_metafor(name, fn, cols):
    d = data(name)
    yi, vi = fn(**{k: d[c] for k, c in cols.items()})
    assert yi == pytest.approx(d.yi.to_numpy(), rel=1e-12, abs=1e-14)
    assert vi == pytest.approx(d.vi.to_numpy(), rel=1e-12)


# ------------------------------------------------------------------------------------------------
# univariate models: every estimator, with and without moderators, z and Knapp-Hartung
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", cases("rma"))
def test_rma_matches_metafor(case):
    res = models.rma("yi", "vi", data=data(case["data"]), mods=case["mods"], method=case["method"],
                     test=case["test"])
    v, cmp = case["values"], Compare(case)
    assert len(res.coef_names) == _arr(v["beta"]).size and res.coef_names[0] == "intrcpt"
    _coefficients(cmp, res)
    cmp("ddf", res.df)
    for ours, theirs in (("tau2", "tau2"), ("se_tau2", "se_tau2"), ("I2", "I2"), ("H2", "H2"), ("QE", "QE"),
                         ("QE_p", "QEp"), ("R2", "R2")):
        cmp(theirs, getattr(res, ours))
    if case["mods"] is not None:  # without moderators metafor's QM tests the intercept (zval^2, checked above)
        cmp("QM", res.QM)
        cmp("QMp", res.QM_p)
        cmp("QMdf", _qmdf(res.QM_df))
    _prediction(cmp, res, fixed=case["method"] in ("FE", "EE"))
    if "confint" in v:  # Q-profile CI of tau^2 and the I^2/H^2 bounds derived from it
        ci = res.confint()
        for ours, theirs in (("tau^2", "tau2"), ("I^2(%)", "I2"), ("H^2", "H2")):
            cmp(f"confint.{theirs}", ci[ours], v["confint"][theirs])
        # at the boundary metafor's ML/REML iterations stop at tau^2 ~ 1e-14 instead of 0 (step halving
        # towards 0 ends on its 1e-13 threshold), which is ~1e-7 in tau = sqrt(tau^2)
        cmp("confint.tau", ci["tau"], v["confint"]["tau"], abs=5e-7)
    cmp.done()


@pytest.mark.parametrize("case", [c for c in cases("rma") if c.values[0]["method"] in ("ML", "REML")
                                  and c.values[0]["test"] == "z"])
def test_ml_reml_tau2_solves_the_score_equation(case):
    """The Fisher scoring stops at the root, not where the likelihood's round-off stalls a line search."""
    res = models.rma("yi", "vi", data=data(case["data"]), mods=case["mods"], method=case["method"])
    w = 1.0 / (res.vi + res.tau2)
    P = numerics.proj(res.X, w)
    Py = P @ res.yi
    if case["method"] == "REML":
        step = (Py @ Py - np.trace(P)) / np.sum(P * P)
    else:
        step = (Py @ Py - np.sum(w)) / np.sum(w * w)
    assert abs(step) <= 1e-10 * (1 + res.tau2) or (res.tau2 == 0 and step <= 0), (res.tau2, step)


@pytest.mark.parametrize("case", [c for c in cases("rma_mv") if c.values[0]["test"] == "z"])
def test_rma_mv_solves_the_score_equations(case):
    res = models.rma_mv("yi", "vi", random=case["random"], data=data(case["data"]), mods=case["mods"],
                        method=case["method"])
    cur = multilevel._mv_pieces(res.yi, res.X, res._blocks, res.sigma2, res.method == "REML", want_derivs=True)
    step = np.linalg.solve(cur["info"], cur["score"])
    assert np.max(np.abs(step) / (1 + res.sigma2)) <= 1e-10, (res.sigma2, step)


def test_rma_summary_prints_metafor_layout():
    case = next(c for c in REF["rma"] if c["id"] == "bcg/ablat + year/REML/z")
    v = case["values"]
    text = models.rma("yi", "vi", mods="ablat + year", data=data("bcg")).summary()
    assert "Mixed-Effects Model (k = 13; tau^2 estimator: REML)" in text
    assert f"{v['tau2']:.4f} (SE = {v['se_tau2']:.4f})" in text
    assert f"QE(df = 10) = {v['QE']:.4f}" in text and "Test of Moderators (coefficients 2,3):" in text
    assert f"QM(df = 2) = {v['QM']:.4f}" in text and f"{v['beta'][1]:.4f}" in text


# ------------------------------------------------------------------------------------------------
# multilevel models (schools in districts)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", cases("rma_mv"))
def test_rma_mv_matches_metafor(case):
    # metafor maximises this likelihood with nlminb over log sigma^2; the log-likelihood is flat to 1e-12
    # near the top, so its sigma^2 are determined to ~1e-7 relative only (nlminb and optim/BFGS differ by
    # that much; the largest difference here, ML with a moderator, is 9e-7 in a CI bound). Ours solve the
    # score equations to 1e-10 (test_rma_mv_solves_the_score_equations), so 1e-6 still holds.
    res = models.rma_mv("yi", "vi", random=case["random"], data=data(case["data"]), mods=case["mods"],
                        method=case["method"], test=case["test"])
    v, cmp = case["values"], Compare(case)
    _coefficients(cmp, res)
    cmp("sigma2", res.sigma2)
    cmp("nlvls", res.nlvls)
    cmp("logLik", res.logLik)
    cmp("QE", res.QE)
    cmp("QEp", res.QE_p)
    if case["mods"] is not None:  # without moderators metafor's QM tests the intercept (zval^2, checked above)
        cmp("QM", res.QM)
        cmp("QMp", res.QM_p)
        cmp("QMdf", _qmdf(res.QM_df))
    _prediction(cmp, res)
    if "confint" in v:  # profile-likelihood CIs of the variance components
        ci = res.confint()
        for j, ref in enumerate(v["confint"]):
            cmp(f"confint.sigma2.{j + 1}", ci[f"sigma^2.{j + 1}"], ref)
    cmp.done()


def test_single_level_rma_mv_equals_rma():
    d = data("konstantopoulos2011")
    uni = models.rma("yi", "vi", data=d)
    mv = models.rma_mv("yi", "vi", random="~ 1 | study", data=d)
    assert mv.sigma2[0] == pytest.approx(uni.tau2, abs=1e-8) and mv.estimate == pytest.approx(uni.estimate, abs=1e-8)


# ------------------------------------------------------------------------------------------------
# cluster-robust inference
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", cases("robust"))
def test_robust_matches_metafor_and_clubsandwich(case):
    d = data(case["data"])
    if case["model"] == "rma":
        fit = models.rma("yi", "vi", data=d, mods=case["mods"], method=case["method"])
    else:
        fit = models.rma_mv("yi", "vi", random=case["random"], data=d, mods=case["mods"], method=case["method"])
    rob = models.robust(fit, case["cluster"], type=case["type"], data=d)
    cmp = Compare(case)
    for name in ("beta", "se", "tval", "df", "pval", "ci_lb", "ci_ub"):
        cmp(name, getattr(rob, name))
    cmp.done()


def test_cr2_reduces_to_hc2_for_independent_ols():
    # one effect per cluster, equal variances, no heterogeneity: CR2 is the HC2 sandwich of OLS
    import statsmodels.api as sm

    rng = np.random.default_rng(3)
    x = rng.normal(size=12)
    y = 0.5 + 0.3 * x + rng.normal(size=12)
    fit = models.rma(y, np.ones(12), method="FE", mods=x)
    rob = models.robust(fit, np.arange(12), type="CR2")
    hc2 = sm.OLS(y, sm.add_constant(x)).fit(cov_type="HC2")
    assert np.sqrt(np.diag(rob.vb)) == pytest.approx(hc2.bse, rel=1e-10)


# ------------------------------------------------------------------------------------------------
# subgroups, small-study effects and sensitivity
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", cases("subgroups"))
def test_subgroups_match_metafor(case):
    d = data(case["data"])
    tab, test = models.subgroups(d.yi, d.vi, d[case["groups"]], method=case["method"])
    tab = tab.set_index("group").loc[case["values"]["group"]]
    cmp = Compare(case)
    for name in ("k", "estimate", "se", "ci_lb", "ci_ub", "tau2", "QE"):
        cmp(name, tab[name].to_numpy())
    for name in ("Q_between", "df", "p"):
        cmp(name, test[name])
    cmp.done()


@pytest.mark.parametrize("case", cases("regtest"))
def test_egger_regression_test_matches_metafor(case):
    d = data(case["data"])
    eg = bias.egger_test(d.yi, d.vi, model=case["model"], method=case["method"] or "REML")
    cmp = Compare(case)
    for name in ("stat", "pval", "df", "slope", "limit", "limit_ci"):
        cmp(name, getattr(eg, name))
    cmp.done()


@pytest.mark.parametrize("case", cases("trimfill"))
def test_trimfill_matches_metafor(case):
    d = data(case["data"])
    tf = bias.trimfill(d.yi, d.vi, method=case["method"], estimator=case["estimator"])
    v, cmp = case["values"], Compare(case)
    assert tf.side == v["side"]
    for name in ("k0", "se_k0", "p_k0", "yi_filled", "vi_filled"):
        cmp(name, getattr(tf, name))
    _coefficients(cmp, tf.fit)
    cmp("k", tf.fit.k)
    for name in ("tau2", "se_tau2", "QE"):
        cmp(name, getattr(tf.fit, name))
    cmp.done()


@pytest.mark.parametrize("case", cases("leave1out"))
def test_leave_one_out_matches_metafor(case):
    d = data(case["data"]).assign(row=lambda x: np.arange(len(x)))
    loo = bias.leave_one_out(d, "row", lambda sub: models.rma(sub.yi, sub.vi, method=case["method"]))
    cmp = Compare(case)
    names = ["estimate", "se", "pval", "ci_lb", "ci_ub", "QE", "I2", "H2"]
    if case["method"] not in ("FE", "EE"):  # metafor has no tau^2 column for equal-effects fits
        names.append("tau2")
    for name in names:
        cmp(name, loo[name].to_numpy())
    cmp.done()


@pytest.fixture(scope="module")
def bcg() -> pd.DataFrame:
    return data("bcg")


@pytest.fixture(scope="module")
def konst() -> pd.DataFrame:
    return data("konstantopoulos2011")


# ------------------------------------------------------------------------------------------------
# cross-checks against statsmodels and hand computations
# ------------------------------------------------------------------------------------------------
def test_raw_difference_variance():
    yi, vi = effects.raw_difference([60.0], [40.0], [200])
    assert yi[0] == 20.0
    pc, pd_ = (120 + 0.5) / 201, (80 + 0.5) / 201
    assert vi[0] == pytest.approx((pc * (1 - pc) + pd_ * (1 - pd_)) / 200 * 1e4)
    _, v_paired = effects.raw_difference([60.0], [40.0], [200], rho=0.6)
    assert 0 < v_paired[0] < vi[0]  # positive correlation shrinks the variance: rho=0 is conservative
    _, v_edge = effects.raw_difference([100.0], [0.0], [50])
    assert np.isfinite(v_edge[0]) and v_edge[0] > 0  # no zero variance at the boundaries
    _, v_na = effects.raw_difference([50.0], [40.0], [np.nan])
    assert np.isnan(v_na[0])


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(cot_score=[101.0], direct_score=[40.0], n_items=[10]), "cot_score: row 0"),
        (dict(cot_score=[50.0], direct_score=[40.0], n_items=[0]), "n_items: row 0"),
        (dict(cot_score=[50.0], direct_score=[40.0], n_items=[10], rho=2), "rho"),
    ],
)
def test_raw_difference_rejects_bad_input(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        effects.raw_difference(**kwargs)


def test_effects_table_imputes_or_drops_missing_n():
    df = pd.DataFrame({
        "paper_id": ["a", "b", "c"], "dataset": ["gsm8k", "gsm8k", "other"],
        "cot_score": [60.0, 70.0, 50.0], "direct_score": [50.0, 55.0, 49.0],
        "delta": [10.0, 15.0, 1.0], "n_items": [1000, None, None],
    })
    out, info = effects.effects_table(df)
    assert info["n_imputed"] == 2 and out["n_used"].tolist() == [1000, 1000, 1000]
    assert out["n_imputed"].tolist() == [False, True, True]
    assert out["yi"].tolist() == [10.0, 15.0, 1.0]
    out2, info2 = effects.effects_table(df, missing_n="drop")
    assert len(out2) == 1 and info2["dropped"] == 2
    with pytest.raises(ValueError, match="row 1"):
        effects.effects_table(df.assign(delta=[1.0, None, 2.0]))
    # nullable integers (as the database loader returns them) with a non-integer median
    nul = pd.DataFrame({"dataset": ["d", "d", "d"], "delta": [1.0, 2.0, 3.0], "cot_score": [51.0, 52.0, 53.0],
                        "direct_score": [50.0] * 3, "n_items": pd.array([100, 101, None], dtype="Int64")})
    out3, _ = effects.effects_table(nul)
    assert out3["n_used"].tolist() == [100, 101, 100.5] and np.isfinite(out3["vi"]).all()


def test_dl_pm_and_hksj_agree_with_statsmodels(bcg):
    from statsmodels.stats.meta_analysis import combine_effects

    for ours, theirs in (("DL", "dl"), ("PM", "iterated")):
        sm = combine_effects(bcg.yi.to_numpy(), bcg.vi.to_numpy(), method_re=theirs)
        res = models.rma(bcg.yi, bcg.vi, method=ours)
        assert res.tau2 == pytest.approx(sm.tau2, abs=1e-8)
        assert res.estimate == pytest.approx(sm.mean_effect_re, abs=1e-8)
        assert res.se[0] == pytest.approx(sm.sd_eff_w_re, abs=1e-8)
        kh = models.rma(bcg.yi, bcg.vi, method=ours, test="knha")
        assert kh.se[0] == pytest.approx(sm.sd_eff_w_re_hksj, abs=1e-8)  # Hartung-Knapp-Sidik-Jonkman
        assert kh.df == 12 and kh.pval[0] > res.pval[0]


def test_leave_one_out_and_funnel_data(konst):
    loo = bias.leave_one_out(konst, "district", lambda d: models.rma(d.yi, d.vi))
    assert len(loo) == 11 and (loo["k"] < 56).all()
    drop86 = loo.set_index("district").loc[86, "estimate"]
    assert drop86 == pytest.approx(models.rma(konst.yi[konst.district != 86], konst.vi[konst.district != 86]).estimate)
    pts, region = bias.funnel_data(konst.yi, konst.vi, 0.13)
    assert len(pts) == 56 and region["hi"].iloc[0] == pytest.approx(0.13)


# ------------------------------------------------------------------------------------------------
# input errors
# ------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors(konst):
    with pytest.raises(ValueError, match="effect 1"):
        models.rma([0.1, float("nan")], [0.1, 0.1])
    with pytest.raises(ValueError, match="negative sampling variance"):
        models.rma([0.1, 0.2], [0.1, -0.1])
    with pytest.raises(ValueError, match="unknown method"):
        models.rma([0.1, 0.2], [0.1, 0.1], method="XYZ")
    with pytest.raises(ValueError, match="'classroom' not found"):
        models.rma_mv("yi", "vi", random="~ 1 | district/classroom", data=konst)
    with pytest.raises(ValueError, match="rank deficient"):
        models.rma("yi", "vi", data=konst.assign(a=1.0), mods="a")


# ------------------------------------------------------------------------------------------------
# the study's summaries, plots and the CLI on a small synthetic fixture
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return pd.read_csv(FIXTURES / "effects_small.csv")


def test_summaries_hand_example():
    df = pd.DataFrame({"paper_id": ["p1", "p1", "p2", "p3", "p3"], "category": ["math", "math", "math", "qa", "qa"],
                       "delta": [10.0, 20.0, 6.0, 1.0, -3.0]})
    pc = summaries.paper_category_means(df)
    assert pc.set_index(["category", "paper_id"])["mean_delta"].to_dict() == {
        ("math", "p1"): 15.0, ("math", "p2"): 6.0, ("qa", "p3"): -1.0}
    cs = summaries.category_summary(df).set_index("category")
    assert cs.loc["math", "mean_delta"] == 12.0 and cs.loc["math", "paper_mean_delta"] == 10.5
    assert cs.loc["math", "median_delta"] == 10.0 and cs.loc["qa", "n_papers"] == 1
    top = summaries.top_k_vs_rest(df, k=1)
    assert top["top_categories"] == ["math"] and top["difference_paper_mean"] == 11.5
    with pytest.raises(ValueError, match="cannot split"):
        summaries.top_k_vs_rest(df, k=2)


def test_plots_are_deterministic(small, tmp_path):
    from cotbench.figures import literature as plots

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plots.fig2(small, out=a)
    plots.fig2(small, out=b)
    assert a.read_bytes() == b.read_bytes() and a.stat().st_size > 10_000
    tab = pd.DataFrame({"group": ["x", "y"], "estimate": [1.0, 2.0], "ci_lb": [0.0, 1.0], "ci_ub": [2.0, 3.0],
                        "pi_lb": [-1.0, 0.0], "pi_ub": [3.0, 4.0], "k": [3, 4], "papers": [2, 3]})
    plots.forest(tab, overall={"estimate": 1.5, "ci_lb": 1.0, "ci_ub": 2.0, "k": 7}, out=tmp_path / "f.png")
    plots.funnel([0.1, 0.3, 0.2], [0.01, 0.04, 0.02], 0.2, out=tmp_path / "u.png")
    assert (tmp_path / "f.png").exists() and (tmp_path / "u.png").exists()
    with pytest.raises(ValueError, match="must end in"):
        plots.fig2(small, out=tmp_path / "x.jpg")


def _run_cli(argv: list[str]) -> tuple[int, str]:
    from cotbench.meta import cli_stats

    parser = argparse.ArgumentParser()
    cli_stats.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = args.func(args)
    return rc, buf.getvalue()


def test_cli_fit_by_category_multilevel(small):
    f = str(FIXTURES / "effects_small.csv")
    rc, out = _run_cli(["fit", "--by", "category", "--multilevel", "--file", f])
    assert rc == 0
    for cat in small["category"].unique():
        assert cat in out
    assert "ALL" in out and "Test of category differences" in out and "imputed for 6" in out
    assert "Top 3 (" in out and "unweighted summaries" in out
    rc, out = _run_cli(["fit", "--by", "category", "--multilevel", "--file", f, "--format", "json"])
    data = json.loads(out)
    rows = {r["group"]: r for r in data["rows"]}
    sym = small[small.category == "symbolic_algorithmic"]
    assert rows["symbolic_algorithmic"]["k"] == len(sym) and rows["symbolic_algorithmic"]["papers"] == sym.paper_id.nunique()
    assert rows["symbolic_algorithmic"]["ci_lb"] < rows["symbolic_algorithmic"]["estimate"] < rows["symbolic_algorithmic"]["ci_ub"]
    # the subgroup estimate is the multilevel fit on that category alone
    tab, _ = effects.effects_table(small)
    one = models.rma_mv("yi", "vi", random="~ 1 | paper_id/effect_id", data=tab[tab.category == "symbolic_algorithmic"])
    assert rows["symbolic_algorithmic"]["estimate"] == pytest.approx(one.estimate, abs=1e-10)
    assert data["overall"]["k"] == len(small)


def test_cli_fit_other_modes(small, tmp_path):
    f = str(FIXTURES / "effects_small.csv")
    rc, out = _run_cli(["fit", "--multilevel", "--bias", "--file", f])
    assert rc == 0 and "Multivariate Meta-Analysis Model (k = 43" in out and "Trim-and-fill" in out
    rc, out = _run_cli(["fit", "--mods", "category", "--method", "dl", "--knha", "--file", f, "--format", "csv"])
    assert rc == 0 and out.splitlines()[0].startswith("term,estimate")
    for fig in ("fig2", "forest", "funnel"):
        rc, out = _run_cli(["plot", fig, "--out", str(tmp_path / f"{fig}.png"), "--file", f])
        assert rc == 0 and (tmp_path / f"{fig}.png").stat().st_size > 5_000
    with pytest.raises(ValueError, match="no column 'nope'"):
        _run_cli(["fit", "--by", "nope", "--file", f])
    with pytest.raises(FileNotFoundError):
        _run_cli(["fit", "--file", str(tmp_path / "missing.csv")])


def test_one_critical_value_for_every_interval():
    """Model-based, cluster-robust and single-effect intervals use numerics.critical_value: z without df,
    t with one df or one df per coefficient, at the level asked for (the single-effect row used to
    hard-code the 95% z)."""
    from scipy import stats

    from cotbench.meta.cli_stats import _fit_one

    assert numerics.critical_value(95) == pytest.approx(stats.norm.ppf(0.975))
    assert numerics.critical_value(90, 7) == pytest.approx(stats.t.ppf(0.95, 7))
    assert numerics.critical_value(95, 0) == numerics.critical_value(95)  # no residual df left: z, as metafor
    np.testing.assert_allclose(numerics.critical_value(95, np.array([3.0, 9.0])), stats.t.ppf(0.975, [3, 9]))
    one = pd.DataFrame({"yi": [2.0], "vi": [4.0], "paper_id": ["p"], "effect_id": ["e"]})
    row, _ = _fit_one(one, True, "REML", False, level=90)
    assert row["ci_ub"] == pytest.approx(2.0 + stats.norm.ppf(0.95) * 2.0)
    yi, vi = np.array([0.1, 0.3, -0.2, 0.5, 0.05, 0.4]), np.full(6, 0.04)
    fit = models.rma(yi, vi, method="REML")
    rob = robust.robust(fit, [0, 0, 1, 1, 2, 2], type="CR1")
    assert isinstance(rob, numerics.CoefficientTable) and isinstance(fit, numerics.CoefficientTable)
    assert list(rob.to_frame().columns) == ["estimate", "se", "tval", "df", "pval", "ci_lb", "ci_ub"]
    assert rob.ci_ub[0] == pytest.approx(rob.beta[0] + stats.t.ppf(0.975, rob.df[0]) * rob.se[0])
