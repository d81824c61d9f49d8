"""Meta-analysis statistics validated against R's metafor, number for number.

Raw data (copied from the public sources named here, nothing invented):
* BCG vaccine trials (metafor's dat.bcg): wviechtb/metadat, data-raw/dat.colditz1994.txt
  (data-raw/dat.bcg.r notes dat.bcg is the same data as dat.colditz1994).
* Konstantopoulos (2011) school calendars: wviechtb/metadat, data-raw/dat.konstantopoulos2011.txt.
* Egger et al. (2001) magnesium trials: wviechtb/metadat, data-raw/dat.egger2001.txt.
* CLASP trials: wviechtb/metafor, tests/testthat/test_analysis_example_dersimonian2007.r.

Reference outputs (metafor 4.7-4 pkgdown site in wviechtb/metafor docs/reference/, and metafor's
own testthat files):
* rma.uni.html — BCG random- and mixed-effects printouts; confint.rma.html — Q-profile CIs;
  trimfill.html — trim-and-fill printouts and filled values; regtest.html — Egger tests;
  robust.html — CR1/CR2 results for the three-level model.
* tests/testthat/test_analysis_example_konstantopoulos2011.r, test_misc_metan_vs_rma.uni_with_dat.bcg.r,
  test_misc_pub_bias.r, test_misc_robust.r, test_analysis_example_dersimonian2007.r.

Tolerance: absolute 1e-4 against values metafor prints with four decimals. Exceptions, each noted at
the assertion: (a) where metafor's own stopping rule (tau^2 change < 1e-5) moves the fourth digit of a
quantity that is very sensitive to tau^2 we compare with relative 1e-4; (b) the I^2/H^2 bounds of the
Q-profile CI inherit uniroot's tolerance (~1.2e-4 on tau^2) in metafor; (c) Satterthwaite df are
printed with two decimals.
"""
from __future__ import annotations

import argparse
import io
import json
import math
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cotbench.meta import bias, effects, models, summaries

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "meta_stats"
A = 1e-4  # absolute tolerance against 4-decimal metafor output


def approx(x, tol=A):
    return pytest.approx(x, abs=tol)


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
# trial, tpos, tneg, cpos, cneg, ablat, year, alloc   (metadat data-raw/dat.colditz1994.txt)
BCG_ROWS = """\
1 4 119 11 128 44 1948 random
2 6 300 29 274 55 1949 random
3 3 228 11 209 42 1960 random
4 62 13536 248 12619 52 1977 random
5 33 5036 47 5761 13 1973 alternate
6 180 1361 372 1079 44 1953 alternate
7 8 2537 10 619 19 1973 random
8 505 87886 499 87892 13 1980 random
9 29 7470 45 7232 27 1968 random
10 17 1699 65 1600 42 1961 systematic
11 186 50448 141 27197 18 1974 systematic
12 5 2493 3 2338 33 1969 systematic
13 27 16886 29 17825 33 1976 systematic
"""

# district, study, yi, vi, year   (metadat data-raw/dat.konstantopoulos2011.txt)
KONST_ROWS = """\
11 1 -0.18 0.118 1976
11 2 -0.22 0.118 1976
11 3 0.23 0.144 1976
11 4 -0.30 0.144 1976
12 5 0.13 0.014 1989
12 6 -0.26 0.014 1989
12 7 0.19 0.015 1989
12 8 0.32 0.024 1989
18 9 0.45 0.023 1994
18 10 0.38 0.043 1994
18 11 0.29 0.012 1994
27 12 0.16 0.020 1976
27 13 0.65 0.004 1976
27 14 0.36 0.004 1976
27 15 0.60 0.007 1976
56 16 0.08 0.019 1997
56 17 0.04 0.007 1997
56 18 0.19 0.005 1997
56 19 -0.06 0.004 1997
58 20 -0.18 0.020 1976
58 21 0.00 0.018 1976
58 22 0.00 0.019 1976
58 23 -0.28 0.022 1976
58 24 -0.04 0.020 1976
58 25 -0.30 0.021 1976
58 26 0.07 0.006 1976
58 27 0.00 0.007 1976
58 28 0.05 0.007 1976
58 29 -0.08 0.007 1976
58 30 -0.09 0.007 1976
71 31 0.30 0.015 1997
71 32 0.98 0.011 1997
71 33 1.19 0.010 1997
86 34 -0.07 0.001 1997
86 35 -0.05 0.001 1997
86 36 -0.01 0.001 1997
86 37 0.02 0.001 1997
86 38 -0.03 0.001 1997
86 39 0.00 0.001 1997
86 40 0.01 0.001 1997
86 41 -0.10 0.001 1997
91 42 0.50 0.010 2000
91 43 0.66 0.011 2000
91 44 0.20 0.010 2000
91 45 0.00 0.009 2000
91 46 0.05 0.013 2000
91 47 0.07 0.013 2000
108 48 -0.52 0.031 2000
108 49 0.70 0.031 2000
108 50 -0.03 0.030 2000
108 51 0.27 0.030 2000
108 52 -0.34 0.030 2000
644 53 0.12 0.087 1995
644 54 0.61 0.082 1995
644 55 0.04 0.067 1994
644 56 -0.05 0.067 1994
"""

# ai, n1i, ci, n2i   (metadat data-raw/dat.egger2001.txt; the last row is ISIS-4)
EGGER_ROWS = """\
1 40 2 36
9 135 23 135
2 200 7 200
1 48 1 46
10 150 8 148
1 59 9 56
1 25 3 23
0 22 1 21
6 76 11 75
1 27 7 27
2 89 12 80
5 23 13 33
4 130 8 122
90 1159 118 1157
4 107 17 108
2216 29011 2103 29039
"""


def _table(rows: str, cols: list[str]) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(rows), sep=r"\s+", header=None, names=cols)


@pytest.fixture(scope="module")
def bcg() -> pd.DataFrame:
    d = _table(BCG_ROWS, ["trial", "tpos", "tneg", "cpos", "cneg", "ablat", "year", "alloc"])
    d["yi"], d["vi"] = effects.log_risk_ratio(ai=d.tpos, bi=d.tneg, ci=d.cpos, di=d.cneg)
    return d


@pytest.fixture(scope="module")
def konst() -> pd.DataFrame:
    return _table(KONST_ROWS, ["district", "study", "yi", "vi", "year"])


@pytest.fixture(scope="module")
def egger() -> pd.DataFrame:
    d = _table(EGGER_ROWS, ["ai", "n1i", "ci", "n2i"])
    d["yi"], d["vi"] = effects.log_odds_ratio(ai=d.ai, n1i=d.n1i, ci=d.ci, n2i=d.n2i)
    return d


@pytest.fixture(scope="module")
def konst_ml(konst):
    return models.rma_mv("yi", "vi", random="~ 1 | district/study", data=konst)


# ------------------------------------------------------------------------------------------------
# effect sizes
# ------------------------------------------------------------------------------------------------
def test_escalc_rr_matches_metafor(bcg):
    # trimfill.html prints yi and vi of the BCG log risk ratios to 8-9 significant digits
    assert bcg.yi.to_numpy() == pytest.approx(
        [-0.88931133, -1.58538866, -1.34807315, -1.44155119, -0.21754732, -0.78611559, -1.62089822,
         0.01195233, -0.46941765, -1.37134480, -0.33935883, 0.44591340, -0.01731395], abs=1e-8)
    assert bcg.vi.to_numpy()[[0, 3, 5, 7]] == pytest.approx(
        [0.325584765, 0.020010032, 0.006905618, 0.003961579], abs=1e-9)


def test_escalc_or_with_zero_cell_matches_metafor(egger):
    # regtest.html prints dat$yi for the 15 trials without ISIS-4; trial 8 has a zero cell (+1/2 added)
    assert egger.yi.to_numpy()[:15] == pytest.approx(
        [-0.83034830, -1.05605267, -1.27833981, -0.04348511, 0.22314355, -2.40751999, -1.28093385,
         -1.19170271, -0.69574796, -2.20827441, -2.03815988, -0.85015093, -0.79323064, -0.29933987,
         -1.57078846], abs=1e-8)


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


# ------------------------------------------------------------------------------------------------
# univariate models: BCG
# ------------------------------------------------------------------------------------------------
def test_bcg_reml_matches_metafor(bcg):
    res = models.rma(bcg.yi, bcg.vi)  # rma.uni.html, rma(yi, vi, data=dat, method="REML")
    assert res.estimate == approx(-0.7145)
    assert res.se[0] == approx(0.1798)
    assert res.stat[0] == approx(-3.9744)
    assert (res.ci_lb[0], res.ci_ub[0]) == (approx(-1.0669), approx(-0.3622))
    assert res.tau2 == approx(0.3132) and res.se_tau2 == approx(0.1664)
    assert res.QE == approx(152.2330) and res.QE_df == 12
    ci = res.confint()  # confint.rma.html
    assert ci["I^2(%)"][0] == approx(92.2214)
    assert ci["H^2"][0] == approx(12.8558)
    assert ci["tau^2"][1:] == (approx(0.1197), approx(1.1115))
    assert ci["tau"][1:] == (approx(0.3460), approx(1.0543))
    # (b) metafor finds the bounds with uniroot's default tolerance, which moves I^2/H^2 by <0.005
    assert ci["I^2(%)"][1:] == (approx(81.9177, 0.005), approx(97.6781, 0.005))
    assert ci["H^2"][1:] == (approx(5.5303, 0.005), approx(43.0680, 0.005))
    text = res.summary()
    assert "Random-Effects Model (k = 13; tau^2 estimator: REML)" in text
    assert "Q(df = 12) = 152.2330, p-val < .0001" in text and "-0.7145" in text


def test_bcg_dl_and_fe_match_metafor(bcg):
    # test_misc_metan_vs_rma.uni_with_dat.bcg.r (checked there against Stata's metan)
    dl = models.rma(bcg.yi, bcg.vi, method="DL")
    assert dl.estimate == approx(-0.7141) and dl.tau2 == approx(0.3088) and dl.I2 == approx(92.1173)
    assert (dl.ci_lb[0], dl.ci_ub[0], dl.stat[0]) == (approx(-1.0644), approx(-0.3638), approx(-3.9952))
    fe = models.rma(bcg.yi, bcg.vi, method="FE")
    assert fe.estimate == approx(-0.4303) and fe.stat[0] == approx(-10.6247) and fe.QE == approx(152.2330)
    assert (fe.ci_lb[0], fe.ci_ub[0]) == (approx(-0.5097), approx(-0.3509))


def test_bcg_meta_regression_matches_metafor(bcg):
    res = models.rma("yi", "vi", mods="ablat + year", data=bcg)  # rma.uni.html
    assert res.tau2 == approx(0.1108) and res.se_tau2 == approx(0.0845)
    assert res.QE == approx(28.3251) and res.QE_df == 10
    assert res.R2 == approx(64.63, 0.005) and res.I2 == approx(71.98, 0.005)  # printed with 2 decimals
    # (a) the intercept (|d b0 / d tau^2| ~ 60) and QM move in metafor's 4th digit with its 1e-5 stop rule
    assert res.QM == pytest.approx(12.2043, rel=1e-4) and res.QM_p == approx(0.0022)
    assert res.beta[0] == pytest.approx(-3.5455, rel=1e-4) and res.se[0] == pytest.approx(29.0959, rel=1e-4)
    assert res.beta[1:] == pytest.approx([-0.0280, 0.0019], abs=A)
    assert res.se[1:] == pytest.approx([0.0102, 0.0147], abs=A)
    assert res.stat[1:] == pytest.approx([-2.7371, 0.1299], abs=A)
    assert "Test of Moderators (coefficients 2,3):" in res.summary()


def test_bcg_factor_moderator_and_subgroups_match_metafor(bcg):
    res = models.rma("yi", "vi", mods="C(alloc)", data=bcg)  # rma.uni.html, mods = ~ factor(alloc)
    assert res.tau2 == approx(0.3615) and res.QE == approx(132.3676) and res.QM == approx(1.7675)
    assert res.beta == pytest.approx([-0.5180, -0.4478, 0.0890], abs=A)
    tab, test = models.subgroups(bcg.yi, bcg.vi, bcg.alloc)
    t = tab.set_index("group")
    assert (t.loc["alternate", "estimate"], t.loc["alternate", "se"]) == (approx(-0.5408), approx(0.2816))
    assert (t.loc["random", "estimate"], t.loc["random", "se"]) == (approx(-0.9710), approx(0.2760))
    assert (t.loc["alternate", "tau2"], t.loc["random", "tau2"]) == (approx(0.1326), approx(0.3925))
    assert t["QE"].sum() == approx(132.3676)  # within-subgroup Q values add up to QE
    assert test["df"] == 2 and 0 <= test["p"] <= 1


def test_cr1_robust_matches_metafor(bcg):
    res = models.rma(bcg.yi, bcg.vi)
    rob = models.robust(res, bcg.trial, type="CR1")  # test_misc_robust.r
    assert rob.vb[0, 0] == pytest.approx(0.032106, abs=1e-6)
    assert rob.vb[0, 0] * 12 / 13 == pytest.approx(0.029636, abs=1e-6)  # the unadjusted sandwich


# ------------------------------------------------------------------------------------------------
# estimators: CLASP (DerSimonian & Kacker 2007, Tables 3 and 4, as checked by metafor)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clasp():
    return effects.log_odds_ratio(ai=[5, 5, 12, 69, 9, 313], n1i=[156, 303, 565, 1570, 103, 4659],
                                  ci=[8, 17, 9, 94, 11, 352], n2i=[74, 303, 477, 1565, 105, 4650])


@pytest.mark.parametrize(
    "method, tau, mu, se",
    [("PM", 0.3681, -0.3811, 0.2060), ("HE", 0.4410, -0.4035, 0.2327), ("DL", 0.2323, -0.3240, 0.1540),
     ("REML", 0.1843, -0.2980, 0.1343), ("SJ", 0.4572, -0.4079, 0.2386)],
)
def test_tau2_estimators_match_metafor(clasp, method, tau, mu, se):
    res = models.rma(*clasp, method=method)
    assert math.sqrt(res.tau2) == approx(tau) and res.estimate == approx(mu) and res.se[0] == approx(se)


def test_ml_estimator_reaches_the_boundary(clasp):
    # metafor reports tau = 0.0023 for ML: its Fisher scoring stops (tau^2 change < 1e-5) next to the
    # boundary. The ML maximum is at tau^2 = 0 — the log-likelihood is lower at metafor's value — and
    # with tau^2 fixed at metafor's value we reproduce its estimate and SE.
    y, v = clasp
    res = models.rma(y, v, method="ML")
    assert res.tau2 == 0.0
    X = np.ones((6, 1))
    assert models._loglik_uni(y, X, v, 0.0, reml=False) > models._loglik_uni(y, X, v, 0.0023**2, reml=False)
    fixed = models.rma(y, v, tau2=0.0023**2)
    assert fixed.estimate == approx(-0.1974) and fixed.se[0] == approx(0.0694)


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


# ------------------------------------------------------------------------------------------------
# multilevel model: Konstantopoulos (2011)
# ------------------------------------------------------------------------------------------------
def test_two_level_matches_metafor(konst):
    res = models.rma("yi", "vi", data=konst)  # Table 4 of the paper via metafor's test file
    assert (res.estimate, res.se[0], res.tau2, res.se_tau2) == (
        approx(0.1279), approx(0.0439), approx(0.0884), approx(0.0202))
    assert res.confint()["tau^2"][1:] == (approx(0.0564), approx(0.1388))
    mv = models.rma_mv("yi", "vi", random="~ 1 | study", data=konst)
    assert mv.sigma2[0] == pytest.approx(res.tau2, abs=1e-8) and mv.estimate == pytest.approx(res.estimate, abs=1e-8)
    mixed = models.rma("yi", "vi", data=konst.assign(yc=konst.year - konst.year.mean()), mods="yc")
    assert mixed.beta == pytest.approx([0.1258, 0.0052], abs=A) and mixed.se == pytest.approx([0.0440, 0.0044], abs=A)
    assert mixed.tau2 == approx(0.0889) and mixed.confint()["tau^2"][1:] == (approx(0.0560), approx(0.1376))


def test_three_level_reml_matches_metafor(konst_ml):
    res = konst_ml
    # test_analysis_example_konstantopoulos2011.r ('restart' test prints 7-8 digits)
    assert res.estimate == pytest.approx(0.1847132, abs=1e-6)
    assert res.se[0] == pytest.approx(0.08455592, abs=1e-7)
    assert res.sigma2 == pytest.approx([0.06506194, 0.03273652], abs=1e-7)
    assert res.logLik == approx(-7.9587)
    assert res.sigma2[0] / res.sigma2.sum() == approx(0.6653)
    assert res.QE == approx(578.8640) and res.nlvls == [11, 56]
    assert res.stat[0] == approx(2.1845) and (res.ci_lb[0], res.ci_ub[0]) == (approx(0.0190), approx(0.3504))
    assert "sigma^2.2" in res.summary() and "district/study" in res.summary()


def test_three_level_profile_cis_match_metafor(konst_ml):
    ci = konst_ml.confint()  # confint.rma.html and the test file
    assert ci["sigma^2.1"][1:] == (approx(0.0222), approx(0.2072))
    assert ci["sigma.1"][1:] == (approx(0.1491), approx(0.4552))
    assert ci["sigma^2.2"][1:] == (approx(0.0163), approx(0.0628))
    assert ci["sigma.2"][1:] == (approx(0.1276), approx(0.2507))


def test_three_level_ml_matches_metafor(konst):
    res = models.rma_mv("yi", "vi", random="~ 1 | district/study", data=konst, method="ML")
    assert res.estimate == approx(0.1845) and res.se[0] == approx(0.0805)
    assert res.sigma2 == pytest.approx([0.0577, 0.0329], abs=A)
    pr = res.predict()
    assert (pr["pi_lb"], pr["pi_ub"]) == (approx(-0.4262), approx(0.7951))
    reg = models.rma_mv("yi", "vi", random="~ 1 | district/study", method="ML",
                        data=konst.assign(yc=konst.year - konst.year.mean()), mods="yc")
    assert reg.beta == pytest.approx([0.1780, 0.0051], abs=A) and reg.se == pytest.approx([0.0805, 0.0085], abs=A)
    assert reg.sigma2 == pytest.approx([0.0565, 0.0329], abs=A)


def test_cluster_robust_cr1_and_cr2_match_metafor_and_clubsandwich(konst, konst_ml):
    cr1 = models.robust(konst_ml, "district", type="CR1", data=konst)  # robust.html
    assert cr1.se[0] == approx(0.0845) and cr1.tval[0] == approx(2.1859) and cr1.df[0] == 10
    assert cr1.pval[0] == approx(0.0537) and (cr1.ci_lb[0], cr1.ci_ub[0]) == (approx(-0.0036), approx(0.3730))
    cr2 = models.robust(konst_ml, "district", type="CR2", data=konst)  # robust(..., clubSandwich=TRUE)
    assert cr2.se[0] == approx(0.0845) and cr2.tval[0] == approx(2.1870)
    assert cr2.df[0] == approx(9.86, 0.005)  # (c) printed with two decimals
    assert cr2.pval[0] == approx(0.0540) and (cr2.ci_lb[0], cr2.ci_ub[0]) == (approx(-0.0038), approx(0.3733))


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
# publication bias
# ------------------------------------------------------------------------------------------------
def test_egger_tests_match_metafor(egger):
    d = egger.iloc[:15]  # regtest.html removes ISIS-4
    lm = bias.egger_test(d.yi, d.vi, model="lm")
    assert (lm.stat, lm.df, lm.pval) == (approx(-3.1783), 13, approx(0.0073))
    assert lm.limit == approx(-0.1512) and lm.limit_ci == (approx(-0.5130), approx(0.2106))
    me = bias.egger_test(d.yi, d.vi, model="rma")
    assert (me.stat, me.pval) == (approx(-2.8062), approx(0.0050))
    assert me.limit == approx(-0.1639) and me.limit_ci == (approx(-0.5681), approx(0.2402))
    assert models.rma(d.yi, d.vi).estimate == approx(-0.8745)
    full = bias.egger_test(egger.yi, egger.vi, model="rma")  # test_misc_pub_bias.r, all 16 trials
    assert full.stat == approx(-4.6686)


def test_trimfill_matches_metafor(bcg):
    ee = bias.trimfill(bcg.yi, bcg.vi, method="EE")  # trimfill.html
    assert (ee.k0, ee.side, ee.se_k0) == (4, "right", approx(2.3853))
    assert ee.fit.k == 17 and ee.fit.QE == approx(262.7316)
    assert (ee.fit.estimate, ee.fit.se[0], ee.fit.stat[0]) == (approx(-0.2910), approx(0.0383), approx(-7.6057))
    assert (ee.fit.ci_lb[0], ee.fit.ci_ub[0]) == (approx(-0.3660), approx(-0.2160))
    assert ee.yi_filled == pytest.approx([0.78929282, 0.85949921, 1.00333667, 1.03884624], abs=1e-8)
    assert ee.vi_filled == pytest.approx([0.073024794, 0.020010032, 0.194581121, 0.223017248], abs=1e-9)
    r0 = bias.trimfill(bcg.yi, bcg.vi, method="EE", estimator="R0")
    assert (r0.k0, r0.se_k0, r0.p_k0) == (4, approx(3.1623), approx(0.0312))
    re = bias.trimfill(bcg.yi, bcg.vi, method="REML")
    assert (re.k0, re.side, re.se_k0) == (1, "right", approx(2.4528))
    assert (re.fit.estimate, re.fit.se[0], re.fit.stat[0]) == (approx(-0.6571), approx(0.1785), approx(-3.6805))
    assert (re.fit.tau2, re.fit.se_tau2, re.fit.QE) == (approx(0.3313), approx(0.1701), approx(154.6750))
    # the "equal-random" approach: REML on the EE-filled data
    er = models.rma(np.r_[bcg.yi, ee.yi_filled], np.r_[bcg.vi, ee.vi_filled])
    assert (er.estimate, er.se[0], er.tau2) == (approx(-0.3422), approx(0.2223), approx(0.7164))


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
    with pytest.raises(ValueError, match="'school' not found"):
        models.rma_mv("yi", "vi", random="~ 1 | district/school", data=konst)
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
    from cotbench.meta import plots

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
