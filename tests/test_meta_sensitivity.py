"""Sensitivity of subgroup estimates to single papers (leave-one-out, largest paper out, capped weights)."""
from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from cotbench.cli import main as cli_main
from cotbench.meta.schema import ALL_COLUMNS
from cotbench.meta.sensitivity import (
    cap_shares,
    category_sensitivity,
    group_estimates,
    paper_weights,
)


def effects(spec, n_items: int = 200) -> pd.DataFrame:
    """Rows from (paper, category, delta, rows, n) tuples; small deterministic jitter per row."""
    rows = []
    for paper, cat, delta, k, n in spec:
        for j in range(k):
            y = delta + (j % 3 - 1) * 0.5
            p = 0.5
            rows.append({"paper_id": paper, "category": cat, "yi": y, "vi": 2 * p * (1 - p) / n * 1e4,
                         "effect_id": f"{paper}-{cat}-{j}"})
    return pd.DataFrame(rows)


# One paper (P1, 30 precise rows, +40) carries category A; the five other A papers show no effect.
DOMINATED = [("P1", "A", 40.0, 30, 2000)] + [(f"P{i}", "A", 0.0, 2, 100) for i in range(2, 7)] + \
            [(f"Q{i}", "B", 10.0, 3, 200) for i in range(1, 6)]
# Every paper reports both categories with the same gap.
BALANCED = [(f"P{i}", c, d + 0.3 * i, 4, 300) for i in range(1, 7) for c, d in (("A", 20.0), ("B", 5.0))]


def test_one_dominant_paper_is_flagged_univariate():
    res = category_sensitivity(effects(DOMINATED), multilevel=False, cap=0.2)
    t = res.table.set_index("group")
    assert t.loc["A", "rank"] == 1 and t.loc["A", "estimate"] > 30       # P1's weight swamps the rest
    assert not res.stable and res.ranking_changes == 1                   # only leaving out P1 reorders
    assert t.loc["A", "loo_min"] < 1 and t.loc["A", "loo_min_without"] == "P1"
    assert res.largest_paper == "P1" and t.loc["A", "rank_without_largest"] == 2
    assert t.loc["A", "max_share"] > 0.7
    assert t.loc["A", "capped"] == pytest.approx(0.2 * 40 + 0.8 * 0.0, abs=0.6)   # P1 held to 20 %
    assert t.loc["A", "rank_capped"] == 2
    assert "changes in 1 of 11" in res.text()


def test_one_dominant_paper_is_flagged_multilevel():
    # nesting in papers caps P1 at one paper's worth of weight, so A sits near the mean of paper means
    # (about 40/6); B at +4 is below that only while P1 is in
    spec = [s if s[1] == "A" else (s[0], "B", 4.0, s[3], s[4]) for s in DOMINATED]
    res = category_sensitivity(effects(spec), multilevel=True)
    t = res.table.set_index("group")
    assert not res.stable
    assert t.loc["A", "loo_max"] - t.loc["A", "loo_min"] > 3
    loo_a = res.loo[(res.loo["group"] == "A")].set_index("left_out")
    assert loo_a.loc["P1", "estimate"] == pytest.approx(t.loc["A", "loo_min"])


def test_balanced_papers_are_stable():
    res = category_sensitivity(effects(BALANCED), multilevel=True)
    assert res.stable and res.ranking_changes == 0
    t = res.table.set_index("group")
    assert (t["loo_rank_changes"] == 0).all()
    assert t.loc["A", "loo_max"] - t.loc["A", "loo_min"] < 1.5
    assert list(t["rank_capped"]) == list(t["rank"])
    assert "(stable)" in res.text()


def test_single_paper_group_vanishes_and_is_reported():
    spec = BALANCED + [("Z1", "C", 3.0, 3, 200)]
    res = category_sensitivity(effects(spec))
    t = res.table.set_index("group")
    assert t.loc["C", "vanishes_without"] == "Z1" and not res.stable
    assert "C rests on one paper only (Z1)" in res.text()


def test_cap_shares_water_fills():
    assert np.allclose(cap_shares(np.array([0.7, 0.1, 0.1, 0.1]), 0.4), [0.4, 0.2, 0.2, 0.2])
    assert np.allclose(cap_shares(np.array([0.7, 0.2, 0.05, 0.05]), 0.3), [0.3, 0.3, 0.2, 0.2])
    assert np.allclose(cap_shares(np.array([5.0, 1.0]), 0.2), [0.5, 0.5])      # cap below 1/n -> equal
    assert np.allclose(cap_shares(np.array([0.25, 0.25, 0.5]), 0.9), [0.25, 0.25, 0.5])


def test_paper_weights_reproduce_the_multilevel_estimate():
    d = effects(DOMINATED)
    d = d[d["category"] == "A"].reset_index(drop=True)
    est, s2p, s2e, _ = group_estimates(d.assign(category="A"))["A"]
    pw = paper_weights(d, s2p, s2e)
    assert (pw["share"] * pw["mean"]).sum() == pytest.approx(est, abs=1e-6)


def test_cli_sensitivity(tmp_path, capsys):
    rows = []
    for i, (paper, cat, delta, k, n) in enumerate(DOMINATED):
        ds, category = ("GSM8K", "math") if cat == "A" else ("CommonsenseQA", "commonsense")
        for j in range(k):
            c = 50 + delta / 2 + (j % 3 - 1) * 0.25
            d = 50 - delta / 2
            rows.append({"effect_id": f"E{len(rows) + 1:04d}", "paper_id": f"arXiv:2401.{10000 + i:05d}",
                         "title": paper, "venue": "arXiv", "year": "2024", "source_locator": "Table 1",
                         "source_url": "https://example.org", "dataset": f"{ds}", "category": category,
                         "model": f"model {j}", "shots": "zero", "metric": "accuracy", "cot_score": f"{c:g}",
                         "direct_score": f"{d:g}", "delta": f"{c - d:g}", "n_items": n, "origin": "literature",
                         "direct_shots": "zero", "cot_shots": "zero", "split": "test", "pooled": "false"})
    path = tmp_path / "syn.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=ALL_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    assert cli_main(["meta", "fit", "--file", str(path), "--by", "category", "--sensitivity", "--cap", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "leave one paper out" in out and "changes in 1 of 11" in out
    assert cli_main(["meta", "fit", "--file", str(path), "--sensitivity"]) == 2
    assert "give --by" in capsys.readouterr().err


def test_fit_leaves_out_pooled_rows_unless_asked(tmp_path, capsys):
    from cotbench.meta import load

    df = load()
    n_pooled = int(df["pooled"].sum())
    assert n_pooled > 0
    assert cli_main(["meta", "fit", "--format", "json"]) == 0
    import json
    d = json.loads(capsys.readouterr().out)
    assert d["data"]["rows"] == len(df) - n_pooled and d["data"]["pooled_left_out"] == n_pooled
    assert cli_main(["meta", "fit", "--format", "json", "--include-pooled"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["data"]["rows"] == len(df) and d["data"]["pooled_left_out"] == 0
