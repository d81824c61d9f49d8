"""The analyzer on sample tables with known answers: every number is checked against a hand
computation or against scipy/statsmodels called directly."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from cotbench.analysis import equals, gains, selective, significance
from cotbench.analysis import plan_conditions as plan
from cotbench.analysis.disagreements import disagreements
from cotbench.analysis.load import frame_from_rows, load_run, load_runs
from cotbench.analysis.render import render, text_table
from cotbench.cli import main
from cotbench.published import importer as published
from cotbench.records import DataError, SampleResult

# ---------------------------------------------------------------- builders

def sample(model="m", dataset="ds", group="knowledge", setting="zs_direct", example_id="0", correct=True,
           response="The answer is A", parse_status="ok", question="q?", gold="A", choices=None,
           tokens_out=10, extra=None, sample_index=0) -> dict:
    return asdict(SampleResult(
        model=model, dataset=dataset, group=group, setting=setting, example_id=str(example_id),
        sample_index=sample_index, key="k", messages=[{"role": "user", "content": question}], response=response,
        extracted=None if parse_status == "unparseable" else "A", extract_method="test", parse_status=parse_status,
        gold=gold, correct=bool(correct), tokens_in=5, tokens_out=tokens_out, latency_s=0.01, finish_reason="stop",
        question=question, choices=choices, metadata={}, extra=extra or {}))


def paired_rows(direct, cot, model="m", dataset="ds", group="knowledge", shots="zs", **kw) -> list[dict]:
    """Rows for items answered in both settings with the given correctness vectors."""
    rows = []
    for i, (a, b) in enumerate(zip(direct, cot)):
        rows.append(sample(model, dataset, group, f"{shots}_direct", i, a, **kw))
        rows.append(sample(model, dataset, group, f"{shots}_cot", i, b, **kw))
    return rows


def write_run(path: Path, rows: list[dict]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "samples.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    (path / "manifest.json").write_text("{}", encoding="utf-8")
    return path


def table(rows) -> pd.DataFrame:
    return frame_from_rows([{k: v for k, v in r.items() if k != "messages"} for r in rows])


# d = cot - direct: four +1, one -1, five 0  -> gain 0.3, sd(ddof=1) = sqrt(4.1/9)
DIRECT = [0, 0, 0, 0, 1, 1, 1, 0, 1, 0]
COT = [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]


# ---------------------------------------------------------------- load

def test_sample_table_columns_follow_the_record_type():
    """The loader's defaults and numeric columns come from SampleResult, so a new field needs no second list."""
    from cotbench.analysis.load import DEFAULTS, NUMBER_COLS, SAMPLE_FIELDS

    assert SAMPLE_FIELDS == [f.name for f in dataclasses.fields(SampleResult)]
    assert NUMBER_COLS == ["tokens_in", "tokens_out", "latency_s"]
    assert DEFAULTS["tokens_out"] is None and DEFAULTS["extractions"] is None and DEFAULTS["question"] == ""
    df = table([sample(tokens_out=None)])
    assert all(df[c].dtype == float for c in NUMBER_COLS) and df["tokens_out"].isna().all()


def test_load_reads_run_and_names_bad_input(tmp_path):
    run = write_run(tmp_path / "r", paired_rows(DIRECT, COT))
    df = load_run(run)
    assert len(df) == 20 and "messages" not in df.columns
    assert df["correct"].dtype == bool and df["run"].iloc[0] == str(run)

    with pytest.raises(DataError, match="samples.jsonl"):
        load_run(write_run(tmp_path / "empty", []).parent / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "samples.jsonl").write_text(json.dumps(sample()) + "\n{not json\n")
    with pytest.raises(DataError, match=r"samples.jsonl: line 2: invalid JSON"):
        load_run(bad)
    r = sample()
    del r["setting"]
    (bad / "samples.jsonl").write_text(json.dumps(r) + "\n")
    with pytest.raises(DataError, match=r"line 1: missing field 'setting'"):
        load_run(bad)
    (bad / "samples.jsonl").write_text(json.dumps({**sample(), "correct": "maybe"}) + "\n")
    with pytest.raises(DataError, match="'correct'"):
        load_run(bad)


def test_a_sample_in_two_runs_is_an_error_naming_both(tmp_path):
    """Nothing is merged silently: before, the later run's row replaced the earlier one without a word."""
    a = write_run(tmp_path / "a", paired_rows(DIRECT, COT))
    flipped = [sample("m", "ds", "knowledge", "zs_cot", 9, True)]  # item 9 answered again in another run
    b = write_run(tmp_path / "b", flipped)
    with pytest.raises(DataError, match=rf"1 sample\(s\) appear in more than one run.*example_id='9'.*{a} and {b}"):
        load_runs([a, b])
    with pytest.raises(DataError, match="more than one run"):
        load_runs([a, a])  # the same run given twice
    other = write_run(tmp_path / "other", [sample("m2", "ds", "knowledge", "zs_cot", 9, True)])
    assert len(load_runs([a, other])) == 21  # another model's rows are no conflict: both count


def test_a_sample_twice_in_one_file_is_an_error(tmp_path):
    c = write_run(tmp_path / "c", paired_rows(DIRECT, COT) + [sample("m", "ds", "knowledge", "zs_cot", 9, True)])
    with pytest.raises(DataError, match=r"samples.jsonl: line 21: sample .*example_id='9'.* already at line 20"):
        load_run(c)


def test_summary_and_samples_must_agree_on_n(tmp_path):
    run = write_run(tmp_path / "r", paired_rows(DIRECT, COT))
    (run / "summary.csv").write_text("model,dataset,setting,n,accuracy\nm,ds,zs_direct,10,0.4\nm,ds,zs_cot,10,0.7\n")
    assert len(load_run(run)) == 20
    (run / "summary.csv").write_text("model,dataset,setting,n,accuracy\nm,ds,zs_direct,12,0.4\nm,ds,zs_cot,10,0.7\n")
    with pytest.raises(DataError, match=r"summary.csv: disagrees with samples.jsonl \(m/ds/zs_direct: n=12 in "
                                         r"summary.csv, 10 in samples.jsonl\)"):
        load_run(run)


def test_schema_versions_are_checked(tmp_path):
    from cotbench.records import SCHEMA_VERSION

    rows = [dict(r, schema_version=SCHEMA_VERSION) for r in paired_rows(DIRECT, COT)]
    run = write_run(tmp_path / "r", rows)
    assert len(load_run(run)) == 20  # current version; write_run's rows without the field read as version 1
    rows[3]["schema_version"] = SCHEMA_VERSION + 1
    write_run(run, rows)
    with pytest.raises(DataError, match=rf"samples.jsonl: line 4: written with schema version {SCHEMA_VERSION + 1}"):
        load_run(run)
    write_run(run, paired_rows(DIRECT, COT))
    (run / "manifest.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(DataError, match="manifest.json: written with schema version"):
        load_run(run)


def test_a_run_written_by_the_harness_reads_back(tmp_path):
    """samples.jsonl and manifest.json carry the schema version, and the analyzer accepts them."""
    from cotbench.backends.table import TableBackend
    from cotbench.pipeline.config import build_config
    from cotbench.pipeline.harness import run
    from cotbench.records import SCHEMA_VERSION

    f = tmp_path / "mine.jsonl"
    f.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": i + 1}) + "\n" for i in range(4)))
    out = run(build_config(None, {"dataset_file": str(f), "answer_type": "number", "out": str(tmp_path / "run"),
                                  "settings": ["zs_direct", "zs_cot"], "progress": False}),
              backend=TableBackend(lambda r: "The answer is 2."))
    assert json.loads((out / "manifest.json").read_text())["schema_version"] == SCHEMA_VERSION
    assert all(json.loads(x)["schema_version"] == SCHEMA_VERSION for x in (out / "samples.jsonl").open())
    df = load_run(out)
    assert len(df) == 8 and "schema_version" not in df.columns


# ---------------------------------------------------------------- gains

def test_paired_gain_and_se_by_hand():
    g = gains.gains(table(paired_rows(DIRECT, COT)))
    assert len(g) == 1  # only zero-shot present: no few-shot row, no crash
    r = g.iloc[0]
    assert (r["n"], r["acc_direct"], r["acc_cot"]) == (10, 0.4, 0.7)
    assert r["gain"] == pytest.approx(0.3)
    assert r["se"] == pytest.approx(np.sqrt(4.1 / 9 / 10))
    assert r["se"] == pytest.approx(0.2134374746)
    assert r["ci_low"] == pytest.approx(0.3 - stats.norm.ppf(0.975) * r["se"])
    assert (r["n_cot_only"], r["n_direct_only"]) == (4, 1)
    assert r["group"] == "knowledge" and r["shots"] == "zs"


def test_gain_uses_only_items_in_both_settings():
    rows = paired_rows(DIRECT, COT) + [sample(setting="zs_cot", example_id="extra", correct=True)]
    assert gains.gains(table(rows)).iloc[0]["n"] == 10


def test_aggregates_mean_and_median_per_dataset_and_group():
    rows = []
    # three models on dataset a (gains .1, .2, .6) and dataset b (gains 0, 0, .3), both "commonsense";
    # one model on dataset c in "mathematical" (gain .5)
    for m, ga, gb in (("m1", 1, 0), ("m2", 2, 0), ("m3", 6, 3)):
        rows += paired_rows([0] * 10, [1] * ga + [0] * (10 - ga), m, "a", "commonsense")
        rows += paired_rows([0] * 10, [1] * gb + [0] * (10 - gb), m, "b", "commonsense")
    rows += paired_rows([0] * 10, [1] * 5 + [0] * 5, "m1", "c", "mathematical")
    g = gains.gains(table(rows))
    ds = gains.by_dataset(g).set_index("dataset")
    assert ds.loc["a", "mean_gain"] == pytest.approx(0.3) and ds.loc["a", "median_gain"] == pytest.approx(0.2)
    assert ds.loc["b", "mean_gain"] == pytest.approx(0.1) and ds.loc["b", "median_gain"] == pytest.approx(0.0)
    assert ds.loc["a", "n_models"] == 3
    grp = gains.by_group(g).set_index("group")
    assert list(grp.index) == ["commonsense", "mathematical"]  # the study's category order
    assert grp.loc["commonsense", "mean_gain"] == pytest.approx(np.mean([.1, .2, .6, 0, 0, .3]))
    assert grp.loc["commonsense", "median_gain"] == pytest.approx(0.15)
    assert (grp.loc["commonsense", "n_pairs"], grp.loc["commonsense", "n_datasets"]) == (6, 2)
    gm = gains.by_group_model(g)
    m3 = gm[(gm.group == "commonsense") & (gm.model == "m3")].iloc[0]
    assert m3["mean_gain"] == pytest.approx(0.45)
    assert set(g["group"]) == {"commonsense", "mathematical"}  # every row carries its group


def test_pooling_subtasks_into_their_family():
    rows = paired_rows([0, 0], [1, 1], dataset="bbh/a", group="symbolic") + \
        paired_rows([0, 0], [0, 0], dataset="bbh/b", group="symbolic")
    g = gains.gains(table(rows), pool=True)
    assert list(g["dataset"]) == ["bbh"] and g.iloc[0]["n"] == 4 and g.iloc[0]["gain"] == pytest.approx(0.5)
    assert len(gains.gains(table(rows))) == 2


# ---------------------------------------------------------------- equals split

def _equals_rows():
    items = [
        # (question, cot response, cot parse, direct correct, cot correct, gold text has "=")
        ("Solve x = 2y", "so x is 4", "ok", 0, 1, False),            # "=" in question
        ("What is 2+2?", "2 + 2 = 4. The answer is A", "ok", 0, 1, False),  # "=" in response
        ("Compute it", "the answer is B", "ok", 0, 1, False),       # no "="
        ("Who wrote it?", "The answer is C", "ok", 1, 0, False),     # no "="
        ("Capital?", "The answer is A", "ok", 1, 1, True),           # no "=" unless gold is searched
        ("Hard one", "I am not sure", "unparseable", 1, 0, False),   # no answer
    ]
    rows = []
    for i, (q, resp, ps, a, b, gold_eq) in enumerate(items):
        choices = ["x = 1", "two", "three", "four"] if gold_eq else ["one", "two", "three", "four"]
        rows.append(sample(dataset="mmlu", setting="zs_direct", example_id=i, correct=a, question=q,
                           response="A", choices=choices))
        rows.append(sample(dataset="mmlu", setting="zs_cot", example_id=i, correct=b, question=q, response=resp,
                           parse_status=ps, choices=choices))
    rows += paired_rows([1], [0], dataset="gsm8k", group="mathematical", question="x = 1")  # not an "=" dataset
    return rows


def test_equals_bins_counts_accuracies_and_shares():
    e = equals.equals_split(table(_equals_rows())).set_index("bin")
    assert list(e.index) == ["equals", "no_equals", "no_answer"] and set(e["dataset"]) == {"mmlu"}
    assert e.loc["equals", "n"] == 2 and e.loc["equals", "acc_direct"] == 0 and e.loc["equals", "acc_cot"] == 1
    assert e.loc["equals", "gain"] == pytest.approx(1.0) and e.loc["equals", "se"] == pytest.approx(0.0)
    assert e.loc["no_equals", "n"] == 3
    assert e.loc["no_equals", "acc_direct"] == pytest.approx(2 / 3) and e.loc["no_equals", "acc_cot"] == pytest.approx(2 / 3)
    assert e.loc["no_equals", "gain"] == pytest.approx(0.0)
    assert e.loc["no_equals", "se"] == pytest.approx(np.std([1, -1, 0], ddof=1) / np.sqrt(3))
    assert e.loc["no_answer", "n"] == 1 and e.loc["no_answer", "net_gain_items"] == -1
    # net gained items: equals +2, no_equals 0, no_answer -1 -> total +1; answered +2
    assert e.loc["equals", "share_of_gain"] == pytest.approx(2.0)
    assert e.loc["no_answer", "share_of_gain"] == pytest.approx(-1.0)
    assert e.loc["equals", "share_of_answered_gain"] == pytest.approx(1.0)
    assert np.isnan(e.loc["no_answer", "share_of_answered_gain"])
    lo, hi = e.loc["no_equals", "ci_low"], e.loc["no_equals", "ci_high"]
    assert hi - lo == pytest.approx(2 * stats.norm.ppf(0.975) * e.loc["no_equals", "se"])


def test_equals_include_gold_moves_the_gold_eq_item():
    e = equals.equals_split(table(_equals_rows()), include_gold=True).set_index("bin")
    assert (e.loc["equals", "n"], e.loc["no_equals", "n"]) == (3, 2)
    assert equals.gold_text("A", ["x = 1", "b"]) == "x = 1" and equals.gold_text("42", None) == "42"
    assert equals.assign_bin("q", "r", True, "B", ["a", "b=c"], include_choices=True) == "equals"


# ---------------------------------------------------------------- significance

def test_mcnemar_matches_scipy_binomtest_and_statsmodels():
    rng = np.random.default_rng(3)
    base = rng.random(200) < 0.5
    treat = np.where(rng.random(200) < 0.3, ~base, base)
    b, c, p = significance.mcnemar_exact(base, treat)
    assert b == int((~base & treat).sum()) and c == int((base & ~treat).sum())
    assert p == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-12)
    table_ = [[int((base & treat).sum()), c], [b, int((~base & ~treat).sum())]]
    assert p == pytest.approx(mcnemar(table_, exact=True).pvalue, rel=1e-12)
    assert significance.mcnemar_exact([1, 0], [1, 0])[2] == 1.0


def test_paired_bootstrap_seeded_and_equal_to_index_resampling():
    rng = np.random.default_rng(0)
    base = (rng.random(300) < 0.5).astype(int)
    treat = np.where(rng.random(300) < 0.35, rng.random(300) < 0.75, base).astype(int)
    r1 = significance.paired_bootstrap(base, treat, n_boot=20_000, seed=7)
    assert r1 == significance.paired_bootstrap(base, treat, n_boot=20_000, seed=7)
    few = [significance.paired_bootstrap(base, treat, n_boot=30, seed=s) for s in (1, 2, 3)]
    assert len({(r["ci_low"], r["ci_high"], r["p"]) for r in few}) > 1
    assert r1["diff"] == pytest.approx(treat.mean() - base.mean())
    # the multinomial shortcut has the same distribution as resampling item indices
    d = treat - base
    idx = np.random.default_rng(1).integers(0, 300, size=(20_000, 300))
    naive = d[idx].mean(1)
    lo, hi = np.quantile(naive, [0.025, 0.975])
    assert r1["ci_low"] == pytest.approx(lo, abs=0.006) and r1["ci_high"] == pytest.approx(hi, abs=0.006)
    assert r1["ci_low"] < r1["diff"] < r1["ci_high"]
    naive_p = np.mean(np.abs(naive - d.mean()) >= abs(d.mean()))
    assert r1["p"] == pytest.approx(naive_p, abs=0.005)
    # with this many discordant items the bootstrap and McNemar agree on significance
    assert (r1["p"] < 0.05) == (significance.mcnemar_exact(base, treat)[2] < 0.05)


def test_corrections_match_hand_computation_and_statsmodels():
    p = [0.01, 0.04, 0.03]
    assert significance.correct_pvalues(p, "bonferroni") == pytest.approx([0.03, 0.12, 0.09])
    assert significance.correct_pvalues(p, "holm") == pytest.approx([0.03, 0.06, 0.06])
    assert significance.correct_pvalues([0.5, 0.9], "bonferroni") == pytest.approx([1.0, 1.0])


def test_significance_table_family_and_corrections():
    rows = []
    rng = np.random.default_rng(5)
    spec = [("csqa", "commonsense"), ("mmlu", "knowledge"), ("musr", "soft_reasoning"),
            ("gsm8k", "mathematical"), ("folio", "symbolic")]
    for m in ("m1", "m2"):
        for ds, grp in spec:
            base = (rng.random(80) < 0.5).astype(int)
            treat = np.where(rng.random(80) < (0.4 if grp == "mathematical" else 0.1), 1, base)
            rows += paired_rows(base, treat, m, ds, grp)
    df = table(rows)
    s = significance.significance(df, shots=("zs",), family="study", n_boot=2000, seed=1)
    assert len(s) == 10 and s.attrs["family_size"] == {"zs": 6}
    fam = s[s.in_family]
    assert set(fam["group"]) == {"commonsense", "knowledge", "soft_reasoning"}
    assert s[~s.in_family]["p_holm"].isna().all() and not s[~s.in_family]["significant"].any()
    assert fam["p_bonferroni"].to_numpy() == pytest.approx(np.minimum(1, fam["p_mcnemar"].to_numpy() * 6))
    assert fam["p_holm"].to_numpy() == pytest.approx(multipletests(fam["p_mcnemar"], method="holm")[1])
    assert (fam["significant"] == (fam["p_holm"] < 0.05)).all()
    for _, r in s.iterrows():
        p = df[(df.model == r.model) & (df.dataset == r.dataset)]
        a = p[p.setting == "zs_direct"].sort_values("example_id")["correct"].to_numpy()
        b = p[p.setting == "zs_cot"].sort_values("example_id")["correct"].to_numpy()
        assert r.p_mcnemar == pytest.approx(stats.binomtest(int((b & ~a).sum()), int((a != b).sum()), 0.5).pvalue)
    # an explicit family, and "all"
    s2 = significance.significance(df, shots=("zs",), family=["gsm8k"], n_boot=200)
    assert s2.attrs["family_size"] == {"zs": 2} and set(s2[s2.in_family]["dataset"]) == {"gsm8k"}
    assert significance.significance(df, ("zs",), "all", n_boot=200).attrs["family_size"] == {"zs": 10}
    # bootstrap results do not depend on the order comparisons are run in
    s3 = significance.significance(df.iloc[::-1], shots=("zs",), family="study", n_boot=2000, seed=1)
    pd.testing.assert_frame_equal(s.reset_index(drop=True), s3.reset_index(drop=True))


# ---------------------------------------------------------------- selective CoT

def _selective_rows():
    rows = []
    for m in ("m1", "m2"):
        for i in range(200):
            grp, ds = ("mathematical", "gsm8k") if i % 2 == 0 else ("commonsense", "csqa")
            q = f"x = {i}" if grp == "mathematical" else f"who is {i}?"
            direct = i % 4 == 3  # commonsense items alternate right/wrong; math direct always wrong
            cot = direct or grp == "mathematical"  # CoT helps exactly the math items
            rows.append(sample(m, ds, grp, "zs_direct", i, direct, question=q, tokens_out=5))
            rows.append(sample(m, ds, grp, "zs_cot", i, cot, question=q, tokens_out=100))
    return rows


def test_selective_policies_frontier_and_tokens_saved():
    pol, summ = selective.selective(table(_selective_rows()), "zs", seed=0)
    p = pol[pol.model == "m1"].set_index("policy")
    n_test = p.loc["always_cot", "n_test"]
    assert p.loc["always_cot", "mean_tokens_out"] == 100 and p.loc["never_cot", "mean_tokens_out"] == 5
    assert p.loc["always_cot", "cot_rate"] == 1 and p.loc["never_cot", "cot_rate"] == 0
    # CoT only for math: same accuracy as always-CoT at the token cost of the math share
    math = p.loc["cot_for:mathematical"]
    assert math["accuracy"] == pytest.approx(p.loc["always_cot", "accuracy"])
    assert math["mean_tokens_out"] == pytest.approx(5 + 95 * math["cot_rate"])
    assert p.loc["equals_in_question", "accuracy"] == pytest.approx(math["accuracy"])  # "=" marks exactly the math items
    assert math["pareto"] and p.loc["never_cot", "pareto"] and not p.loc["always_cot", "pareto"]
    s = summ.set_index("model").loc["m1"]
    assert s["n_train"] + s["n_test"] == 200 and s["n_test"] == n_test
    assert s["chosen_accuracy"] >= s["always_cot_accuracy"] - 1e-12
    assert s["tokens_saved"] == pytest.approx(s["always_cot_tokens"] - s["chosen_tokens"])
    assert s["tokens_saved"] > 40 and s["tokens_saved_pct"] == pytest.approx(s["tokens_saved"] / 100)
    # the classifier learns the same rule (features include "=" and the group)
    assert p.filter(like="classifier@", axis=0)["accuracy"].max() == pytest.approx(math["accuracy"])


def test_selective_split_is_stable_and_model_independent():
    ds, ids = pd.Series(["a"] * 1000), pd.Series(range(1000))
    m = selective.split_mask(ds, ids, seed=0)
    assert 430 < m.sum() < 570
    assert (selective.split_mask(ds[::-1], ids[::-1], seed=0) == m[::-1]).all()
    assert not (selective.split_mask(ds, ids, seed=1) == m).all()
    assert selective.pareto(np.array([.5, .6, .6, .4]), np.array([10, 20, 30, 10])).tolist() == [True, True, False, False]


# ---------------------------------------------------------------- published generations

def _published_rows():
    def row(q, choices, key, cot_resp, their_cot, direct_resp, their_direct):
        return {
            "question": q, "answer": choices[ord(key) - 65], "answerKey": key,
            "choices": json.dumps({"label": ["A", "B", "C", "D"], "text": choices}),
            "additional_information": json.dumps({"subject": "algebra"}),
            "zero_shot_cot_model_response": cot_resp, "zero_shot_cot_parsed_model_answer": "?",
            "zero_shot_cot_is_correct": their_cot, "zero_shot_cot_answer_was_parsed": True,
            "zero_shot_cot_errored": False, "zero_shot_cot_messages": json.dumps([{"role": "user", "content": q}]),
            "zero_shot_direct_model_response": direct_resp, "zero_shot_direct_parsed_model_answer": "?",
            "zero_shot_direct_is_correct": their_direct, "zero_shot_direct_answer_was_parsed": True,
            "zero_shot_direct_errored": False, "zero_shot_direct_messages": "[]",
            "few_shot_cot_model_response": published.NOT_RUN, "few_shot_direct_model_response": published.NOT_RUN,
        }

    ch = ["1", "2", "x = 3", "4"]
    return [
        row("What is 1+1?", ch, "B", "1 + 1 = 2.\nThe best answer is B.", True, "Answer: B", True),   # agree
        row("Pick three", ch, "C", "The best answer is D.", True, "Answer: C", True),   # they say right, we say wrong
        row("Pick one", ch, "A", "Let me think.", False, "Answer: B", False),           # both wrong, ours unparseable
    ]


def test_published_import_rescore_and_disagreements(tmp_path):
    f = tmp_path / "mmlu.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in _published_rows()))
    rows = published.import_rows(published.read_file(f), "org/model", "mmlu", source=str(f))
    assert {r["setting"] for r in rows} == {"zs_cot", "zs_direct"}  # not-run few-shot cells skipped
    assert len(rows) == 6 and {r["dataset"] for r in rows} == {"mmlu"} and rows[0]["group"] == "knowledge"
    cot = {r["example_id"]: r for r in rows if r["setting"] == "zs_cot"}
    assert cot["mmlu/0"]["correct"] and cot["mmlu/0"]["gold"] == "B"
    assert not cot["mmlu/1"]["correct"] and cot["mmlu/1"]["extracted"] == "D"
    assert cot["mmlu/2"]["parse_status"] == "unparseable"
    assert cot["mmlu/0"]["metadata"] == {"subject": "algebra"} and cot["mmlu/0"]["messages"][0]["role"] == "user"
    summ, items = disagreements(table(rows))
    s = summ.set_index("setting")
    assert s.loc["zs_cot", "n"] == 3 and s.loc["zs_cot", "n_disagree"] == 1
    assert s.loc["zs_cot", "n_theirs_only_correct"] == 1 and s.loc["zs_cot", "n_ours_only_correct"] == 0
    assert s.loc["zs_cot", "acc_theirs"] == pytest.approx(2 / 3) and s.loc["zs_cot", "acc_ours"] == pytest.approx(1 / 3)
    assert s.loc["zs_direct", "n_disagree"] == 0
    assert list(items["example_id"]) == ["mmlu/1"]
    # their verdicts can replace ours; the comparison still uses ours
    theirs = published.use_their_scores(rows)
    assert sum(r["correct"] for r in theirs if r["setting"] == "zs_cot") == 2
    assert disagreements(table(theirs))[0].set_index("setting").loc["zs_cot", "n_disagree"] == 1
    # a CSV copy of the same rows imports to the same verdicts (string booleans handled)
    c = tmp_path / "mmlu.csv"
    pd.DataFrame(_published_rows()).astype(str).to_csv(c, index=False)
    from_csv = published.import_rows(published.read_file(c), "org/model", "mmlu")
    assert [r["extra"]["published"]["correct"] for r in from_csv] == [r["extra"]["published"]["correct"] for r in rows]
    assert [r["correct"] for r in from_csv] == [r["correct"] for r in rows]
    assert published.hub_repo("meta-llama/Meta-Llama-3.1-8B-Instruct") == \
        "TAUR-Lab/Taur_CoT_Analysis_Project___meta-llama__Meta-Llama-3.1-8B-Instruct"


def test_published_run_dir_has_the_harness_summary(tmp_path):
    """`cotbench published` writes summary.csv with the harness's summarize: the same columns, rounding and
    row order as a run the harness wrote, and empty token cells (the release has no token counts)."""
    from cotbench.pipeline.summary import read_summary, summarize, summary_csv
    from cotbench.records import read_jsonl

    f = tmp_path / "pub.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in _published_rows()))
    out = tmp_path / "pubrun"
    assert main(["published", "--model", "org/model", "--config", "mmlu", "--file", str(f), "--out", str(out)]) == 0
    rows = [SampleResult(**{k: v for k, v in r.items() if k != "schema_version"}) for r in read_jsonl(out / "samples.jsonl")]
    assert (out / "summary.csv").read_text() == summary_csv(summarize(rows))
    s = read_summary(out)
    assert list(s["setting"]) == ["zs_direct", "zs_cot"] and s["mean_tokens_out"].isna().all()
    assert list(s["accuracy"]) == [round(2 / 3, 6), round(1 / 3, 6)] and list(s["context_overflow"]) == [0, 0]


def test_published_bad_rows_are_named(tmp_path):
    r = _published_rows()[0]
    with pytest.raises(DataError, match="row 1: field 'choices' is not valid JSON"):
        published.import_rows([{**r, "choices": "{oops"}], "o/m", "mmlu", source="f.jsonl")
    with pytest.raises(DataError, match="row 1: cannot map gold"):
        published.import_rows([{**r, "answerKey": "Z", "answer": "nope"}], "o/m", "mmlu")
    with pytest.raises(DataError, match="unsupported file type"):
        published.read_file(Path(__file__))


# ---------------------------------------------------------------- plan / tool

def test_plan_table_rates():
    rows = []
    for i in range(4):
        rows.append(sample(setting="fs_direct", example_id=i, correct=i < 1))
        rows.append(sample(setting="fs_cot", example_id=i, correct=i < 2))
        status = ["no_plan", "timeout", "ok", "ok"][i]
        rows.append(sample(setting="plan_tool", example_id=i, correct=i >= 1,
                           extra={"plan_parse": "none" if i == 0 else "code_block",
                                  "tool": {"kind": "python", "status": status, "mapped": "1" if i == 3 else None}}))
        rows.append(sample(setting="plan_cot", example_id=i, correct=False,
                           extra={"plan_parse": "none" if i < 2 else "raw", "tool": None}))
    t = plan.plan_table(table(rows)).set_index("setting")
    assert list(t.index) == ["fs_direct", "fs_cot", "plan_cot", "plan_tool"]
    assert t.loc["plan_tool", "accuracy"] == 0.75 and t.loc["plan_tool", "se"] == pytest.approx(np.sqrt(.75 * .25 / 4))
    # plan not found: item 0; tool not ok or answer not mappable: items 0, 1, 2
    assert t.loc["plan_tool", "plan_fail_rate"] == 0.25 and t.loc["plan_tool", "exec_fail_rate"] == 0.75
    assert t.loc["plan_cot", "plan_fail_rate"] == 0.5 and np.isnan(t.loc["plan_cot", "exec_fail_rate"])
    assert np.isnan(t.loc["fs_cot", "plan_fail_rate"])
    w = plan.plan_wide(plan.plan_table(table(rows)))
    assert list(w.columns) == ["model", "dataset", "group", "fs_direct", "fs_cot", "plan_cot", "plan_tool"]
    st = plan.tool_status_counts(table(rows)).iloc[0]
    assert (st["n"], st["ok"], st["timeout"], st["no_plan"]) == (4, 2, 1, 1)


# ---------------------------------------------------------------- report, figures, CLI

def test_text_table_formats_and_handles_empty():
    out = text_table(pd.DataFrame({"model": ["m"], "gain": [0.25], "p_holm": [1e-5], "ok": [True]}), "T")
    assert "== T ==" in out and "+0.250" in out and "1.00e-05" in out and "yes" in out
    assert "no rows" in text_table(pd.DataFrame(), "empty")
    with pytest.raises(ValueError):
        render({}, "xml")


def _run_for_cli(tmp_path) -> Path:
    rows = _equals_rows() + _selective_rows()
    rows += paired_rows([1, 0, 0, 1], [1, 1, 1, 0], "m1", "folio", "symbolic")
    rows += paired_rows([1, 0, 0, 1], [1, 1, 1, 1], "m1", "siqa", "commonsense", shots="fs")
    return write_run(tmp_path / "run", rows)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.timeout(300)
def test_figures_are_written_and_deterministic(tmp_path):
    from cotbench.figures.study import make_all

    df = load_run(_run_for_cli(tmp_path))
    w1, skipped = make_all(df, tmp_path / "f1")
    w2, _ = make_all(df, tmp_path / "f2")
    names = {p.name for p in w1}
    for stem in ("gains_by_dataset_zs", "gains_by_category_zs", "radar_zs", "equals_zs", "selective_frontier_zs",
                 "gains_by_dataset_fs"):
        assert f"{stem}.png" in names and f"{stem}.pdf" in names
    assert "plan_conditions" in skipped and "radar_fs" in skipped  # no plan settings; one few-shot category
    assert _digest(tmp_path / "f1") == _digest(tmp_path / "f2")
    assert all(p.stat().st_size > 1000 for p in w1)


def test_cli_analyze_table_json_out_and_errors(tmp_path, capsys):
    run = _run_for_cli(tmp_path)
    assert main(["analyze", str(run), "--n-boot", "300", "--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    for title in ("CoT gain", "'=' split", "Paired tests", "Selective CoT", "Plan / execute"):
        assert title in text
    for name in ("gains", "gains_by_group", "equals", "significance", "selective_summary", "plan"):
        assert (tmp_path / "out" / f"{name}.csv").is_file()
    assert (tmp_path / "out" / "analysis.txt").read_text() == text

    assert main(["analyze", str(run), "--format", "json", "--sections", "gains", "equals", "--include-gold-in-equals"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert set(obj) == {"gains", "gains_by_dataset", "gains_by_group", "gains_by_group_model", "equals"}
    eq_rows = {(r["model"], r["bin"]): r for r in obj["equals"]}
    assert eq_rows[("m", "equals")]["n"] == 3  # gold text searched
    g = pd.DataFrame(obj["gains"])
    assert g[(g.dataset == "folio")]["gain"].item() == pytest.approx(0.25)

    assert main(["analyze", str(run), "--format", "csv", "--sections", "plan"]) == 0
    assert capsys.readouterr().out.startswith("# plan\n")

    assert main(["analyze", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["analyze", str(run), "--sections", "gains,bogus"]) == 2


def test_cli_figures_and_published(tmp_path, capsys):
    run = write_run(tmp_path / "small", paired_rows(DIRECT, COT, dataset="mmlu", question="a = b"))
    assert main(["figures", str(run), "--out", str(tmp_path / "figs"), "--formats", "png"]) == 0
    out = capsys.readouterr()
    assert "gains_by_dataset_zs.png" in out.out and "skipped radar_zs" in out.err
    assert (tmp_path / "figs" / "equals_zs.png").is_file()

    f = tmp_path / "pub.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in _published_rows()))
    pub_dir = tmp_path / "pubrun"
    assert main(["published", "--model", "org/model", "--config", "mmlu", "--file", str(f), "--out", str(pub_dir)]) == 0
    capsys.readouterr()
    for name in ("samples.jsonl", "summary.csv", "manifest.json", "published_summary.csv", "published_items.csv"):
        assert (pub_dir / name).is_file()
    assert main(["analyze", str(pub_dir), "--format", "json", "--sections", "gains,published"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["gains"][0]["n"] == 3
    assert {r["setting"]: r["n_disagree"] for r in obj["published_summary"]} == {"zs_cot": 1, "zs_direct": 0}
    assert main(["published", "--model", "o/m", "--config", "mmlu", "csqa", "--file", str(f), "--out", str(pub_dir)]) == 2


# ---------------------------------------------------------------- per-extractor accuracy and gain

def _ext(strict, default, flexible):
    return {"x_strict": {"answer": "A" if strict else None, "method": "t", "correct": strict, "role": "strict"},
            "x": {"answer": "A", "method": "t", "correct": default, "role": "default"},
            "x_flexible": {"answer": "A", "method": "t", "correct": flexible, "role": "flexible"}}


def test_extractor_gains_side_by_side_by_hand():
    from cotbench.analysis import extractors

    rows = []
    for i in range(4):  # direct: right under every extractor on items 0, 1
        rows.append({**sample(setting="zs_direct", example_id=i, correct=i < 2), "extractions": _ext(i < 2, i < 2, i < 2)})
    # CoT: strict reads 1 item right, default 2, flexible 3 (the rest stay unparseable for strict)
    for i in range(4):
        rows.append({**sample(setting="zs_cot", example_id=i, correct=i < 2),
                     "extractions": _ext(i < 1, i < 2, i < 3)})
    v = extractors.verdicts(table(rows))
    assert set(v["verdicts"]) == {"stored"}
    acc = extractors.accuracy_table(v).set_index("setting")
    assert acc.loc["zs_cot", ["acc_strict", "acc_default", "acc_flexible"]].tolist() == [0.25, 0.5, 0.75]
    assert acc.loc["zs_cot", "unparseable_strict"] == 0.75 and acc.loc["zs_cot", "verdicts"] == "stored"
    (g,) = extractors.gains_table(v, ("zs",)).to_dict("records")
    assert (g["gain_strict"], g["gain_default"], g["gain_flexible"]) == (-0.25, 0.0, 0.25)
    assert g["gain_spread"] == 0.5 and g["acc_cot_flexible"] == 0.75 and g["n"] == 4
    # the default column is exactly the ordinary gains table
    assert g["gain_default"] == gains.gains(table(rows), ("zs",))["gain"].iloc[0]


def test_old_rows_are_reextracted_or_reported_as_default_only(tmp_path):
    from cotbench.analysis import extractors

    # rows written before `extractions` existed (no such key in the JSON line)
    old = [sample(dataset="gsm8k", setting="zs_cot", example_id=0, correct=False, gold="18",
                  response="She makes 9 * 2 = $18.\nA: 18"),  # the old default missed the "A: N" ending
           sample(dataset="unknown_ds", setting="zs_cot", example_id=1, correct=True, response="The answer is A")]
    for r in old:
        r.pop("extractions")
    df = load_run(write_run(tmp_path / "old", old))
    assert df["extractions"].tolist() == [{}, {}]
    v = extractors.verdicts(df).set_index("dataset")
    assert v.loc["gsm8k", "verdicts"] == "re-extracted"
    # strict and flexible are read again; the default column stays the stored verdict (as in every other table)
    assert v.loc["gsm8k", ["correct_strict", "correct_default", "correct_flexible"]].tolist() == [False, False, True]
    assert v.loc["unknown_ds", "verdicts"] == "default only"
    assert v.loc["unknown_ds", ["correct_strict", "correct_default", "correct_flexible"]].tolist() == [True] * 3


def test_bad_extractions_field_is_named(tmp_path):
    row = {**sample(), "extractions": ["not", "an", "object"]}
    with pytest.raises(DataError, match="line 1: field 'extractions'"):
        load_run(write_run(tmp_path / "bad", [row]))


def test_cli_reports_extractor_tables(tmp_path, capsys):
    rows = [{**r, "extractions": _ext(r["correct"], r["correct"], True)} for r in paired_rows(DIRECT, COT)]
    run = write_run(tmp_path / "run", rows)
    assert main(["analyze", str(run), "--format", "json", "--sections", "extractors"]) == 0
    out = json.loads(capsys.readouterr().out)
    (g,) = out["extractor_gains"]
    assert g["gain_default"] == pytest.approx(0.3) and g["gain_flexible"] == 0.0
    assert {r["verdicts"] for r in out["extractor_accuracy"]} == {"stored"}
    assert main(["analyze", str(run), "--sections", "extractors", "--out", str(tmp_path / "o")]) == 0
    assert "gain_spread" in (tmp_path / "o" / "extractor_gains.csv").read_text()
