"""The CoT effect database: validator, typed loading, queries, importers and merging."""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cotbench.cli import main as cli_main
from cotbench.meta import db, importers, load, query, validate
from cotbench.meta.schema import (
    ALL_COLUMNS,
    ARM_COLUMNS,
    CATEGORIES,
    category_id,
)
from cotbench.records import DataError

FIX = Path(__file__).resolve().parent / "fixtures" / "meta"
EFFECTS = FIX / "effects_small.csv"
SCREENING = FIX / "screening_small.csv"


def rows_of(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        r = csv.DictReader(f)
        return list(r.fieldnames), list(r)


def write(path: Path, header, rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=header, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return path


def category_map(tmp_path: Path, rows) -> Path:
    """A dataset map covering ``rows`` (each dataset with the category the rows give it)."""
    seen = {r["dataset"]: r["category"] for r in rows}
    return write(tmp_path / "map.csv", ["dataset", "category", "note"],
                 [{"dataset": d, "category": c, "note": "test"} for d, c in seen.items()])


def broken(tmp_path: Path, row: int, **changes) -> Path:
    """The fixture with data row ``row`` (0-based) changed; data row i sits on CSV line i + 2."""
    header, rows = rows_of(EFFECTS)
    rows[row].update(changes)
    return write(tmp_path / "broken.csv", header, rows)


# ------------------------------------------------------------------------------ shipped database

def test_shipped_database_validates_and_cross_checks(capsys):
    reports = validate()
    assert [r.kind for r in reports] == ["effects", "screening"]
    for r in reports:
        assert r.ok, "\n".join(r.lines())
    assert cli_main(["meta", "validate"]) == 0
    out = capsys.readouterr().out
    assert "OK:" in out and "comparisons" in out


def test_shipped_database_has_provenance_on_every_row():
    df = load()
    lit = df[df["origin"] == "literature"]
    assert len(lit) > 0
    assert (lit["source_locator"].str.len() > 0).all()
    assert lit["source_url"].str.match(r"https?://").all()
    assert np.allclose(df["delta"], df["cot_score"] - df["direct_score"], atol=0.0100001)
    assert set(df["category"].dropna().unique()) <= set(CATEGORIES)


# ------------------------------------------------------------------------------ typed loading

def test_load_returns_typed_frame():
    df = load(EFFECTS)
    assert len(df) == 9
    assert isinstance(df["category"].dtype, pd.CategoricalDtype)
    assert list(df["category"].cat.categories) == list(CATEGORIES)
    assert str(df["n_items"].dtype) == "Int64" and str(df["k"].dtype) == "Int64" and str(df["year"].dtype) == "Int64"
    assert df["cot_score"].dtype == np.float64
    assert df["n_items"].isna().sum() == 2
    assert df.loc[df["effect_id"] == "E0004", "coder_notes"].item() == "a note, with a comma"
    assert list(df["csv_line"]) == list(range(2, 11))


def test_load_refuses_an_invalid_file(tmp_path):
    with pytest.raises(DataError, match=r"broken\.csv:3: column 'cot_score'"):
        load(broken(tmp_path, 1, cot_score="lots"))
    assert len(load(broken(tmp_path, 1, cot_score="lots"), check=False)) == 9


# ---------------------------------------------------------------------------- broken rows

@pytest.mark.parametrize("row,changes,line,column,fragment", [
    (1, {"cot_score": "lots"}, 3, "cot_score", "'lots' is not a number"),
    (1, {"direct_score": "101.5", "delta": "-22.5"}, 3, "direct_score", "101.5 is outside the 0-100 scale"),
    (2, {"category": "commonsense reasoning"}, 4, "category", "did you mean 'commonsense'"),
    (2, {"category": "astrology"}, 4, "category", "is not one of the 14 category ids"),
    (3, {"delta": "30.2"}, 5, "delta", "cot_score - direct_score = 28.2"),
    (4, {"source_locator": ""}, 6, "source_locator", "is empty"),
    (4, {"source_url": ""}, 6, "source_url", "is empty"),
    (4, {"source_url": "my notes"}, 6, "source_url", "not an http(s) address"),
    (5, {"shots": "one"}, 7, "shots", "'one' is not 'zero' or 'few'"),
    (5, {"k": "4"}, 7, "k", "zero-shot row has k=4"),
    (6, {"n_items": "12.5"}, 8, "n_items", "not a positive integer"),
    (6, {"paper_id": "Smith 2023"}, 8, "paper_id", "is not 'arXiv:"),
    (7, {"year": "twenty"}, 9, "year", "is not a year"),
    (7, {"origin": "blog"}, 9, "origin", "'blog' is not"),
    (7, {"model": ""}, 9, "model", "is empty"),
    (7, {"effect_id": "E0001"}, 9, "effect_id", "already used on line 2"),
])
def test_each_kind_of_broken_row_is_named(tmp_path, capsys, row, changes, line, column, fragment):
    path = broken(tmp_path, row, **changes)
    (rep,) = validate(path)
    assert not rep.ok
    hits = [i for i in rep.errors if i.line == line and i.column == column and fragment in i.message]
    assert hits, [i.format(path) for i in rep.errors]
    assert cli_main(["meta", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"broken.csv:{line}: column '{column}'" in err


def test_duplicate_comparison_names_both_lines(tmp_path):
    header, rows = rows_of(EFFECTS)
    dup = dict(rows[0], effect_id="E0100", coder_notes="same comparison again")
    path = write(tmp_path / "dup.csv", header, rows + [dup])
    (rep,) = validate(path)
    assert [(i.line, i.message) for i in rep.errors] == [
        (11, "duplicate comparison: same paper_id+dataset+model+shots+metric as line 2")]


def test_missing_and_repeated_columns(tmp_path, capsys):
    header, rows = rows_of(EFFECTS)
    short = [h for h in header if h != "source_url"]
    path = write(tmp_path / "short.csv", short, [{k: r[k] for k in short} for r in rows])
    (rep,) = validate(path)
    assert [(i.line, i.column, i.message) for i in rep.errors] == [(1, "source_url", "required column is missing from the header")]
    assert cli_main(["meta", "validate", str(path)]) == 1
    assert "short.csv:1: column 'source_url': required column is missing" in capsys.readouterr().err


def test_ragged_row_and_missing_file_are_data_errors(tmp_path, capsys):
    p = tmp_path / "ragged.csv"
    p.write_text(EFFECTS.read_text().replace("E0002,", "E0002,extra,", 1))
    with pytest.raises(DataError, match=r"ragged\.csv:3: row has 27 fields, the header has 26"):
        validate(p)
    assert cli_main(["meta", "validate", str(tmp_path / "nope.csv")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_extra_columns_are_allowed_and_warnings_are_not_errors(tmp_path):
    header, rows = rows_of(EFFECTS)
    for r in rows:
        r["extraction_date"] = "2026-11-29"
    rows[0]["title"] = ""
    rows[1]["metric"] = "Accuracy %"
    path = write(tmp_path / "extra.csv", header + ["extraction_date"], rows)
    (rep,) = validate(path)
    assert rep.ok and [(w.line, w.column) for w in rep.warnings] == [(2, "title"), (3, "metric")]
    assert cli_main(["meta", "validate", "--strict", str(path)]) == 1


def test_cross_check_between_effects_and_screening(tmp_path):
    reports = validate(EFFECTS, SCREENING)
    assert all(r.ok for r in reports), [r.lines() for r in reports]
    header, rows = rows_of(SCREENING)
    rows = [r for r in rows if r["paper_id"] != "arXiv:2210.03629"]
    rows.append(dict(rows[0], paper_id="arXiv:2401.99999", title="Never coded"))
    path = write(tmp_path / "scr.csv", header, rows)
    eff, _ = validate(EFFECTS, path)
    msgs = [i.message for i in eff.errors]
    assert any("arXiv:2210.03629 has effects but no row" in m for m in msgs)
    assert any("arXiv:2401.99999 is 'included' but has no rows" in m for m in msgs)


def test_screening_file_is_recognised_and_checked(tmp_path):
    (rep,) = validate(SCREENING)
    assert rep.kind == "screening" and rep.ok and "1 excluded" in rep.summary
    header, rows = rows_of(SCREENING)
    rows[1]["decision"] = "maybe"
    (rep,) = validate(write(tmp_path / "s.csv", header, rows))
    assert [(i.line, i.column) for i in rep.errors] == [(3, "decision")]


# ----------------------------------------------------------------------------------------- query

def test_group_by_category_matches_pandas():
    df = load(EFFECTS)
    got = query(df, group_by="category", aggs="n,mean,median,std,min,max").set_index("category")
    exp = df.groupby("category", observed=True)["delta"].agg(["size", "mean", "median", "std", "min", "max"])
    assert list(got.index) == list(exp.index)
    assert (got["n"] == exp["size"]).all()
    for a in ("mean", "median", "min", "max"):
        assert np.allclose(got[a], exp[a])
    assert np.allclose(got["std"].fillna(-1), exp["std"].fillna(-1))
    assert got.loc["math", "n"] == 4 and got.loc["math", "median"] == pytest.approx((28.2 + 10.0) / 2)


def test_filters_and_other_groupings():
    df = load(EFFECTS)
    rows = query(df, category=["commonsense reasoning"], model="palm")
    assert list(rows["effect_id"]) == ["E0003"]
    assert list(query(df, dataset="gsm8k", shots="zero")["effect_id"]) == ["E0004", "E0009"]
    assert list(query(df, paper="paper two", year="2022")["effect_id"]) == ["E0004", "E0005", "E0006"]
    assert list(query(df, venue="ICLR,ACL")["effect_id"]) == ["E0007", "E0008"]
    assert list(query(df, origin="cotbench_run")["effect_id"]) == ["E0009"]
    by_paper = query(df, group_by="paper", aggs="n,papers,mean").set_index("paper")
    assert by_paper.loc["arXiv:2205.11916", "n"] == 3
    assert by_paper.loc["arXiv:2205.11916", "mean"] == pytest.approx((28.2 - 8.0 + 37.6) / 3)
    assert (by_paper["papers"] == 1).all()
    overall = query(df, aggs="n,mean", value="cot_score")
    assert overall.loc[0, "n"] == 9 and overall.loc[0, "mean"] == pytest.approx(df["cot_score"].mean())
    with pytest.raises(ValueError, match="unknown aggregate 'mode'"):
        query(df, group_by="category", aggs="n,mode")
    with pytest.raises(ValueError, match="unknown category 'astrology'"):
        query(df, category="astrology")


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_query_cli_formats(capsys, fmt):
    assert cli_main(["meta", "query", "--file", str(EFFECTS), "--group-by", "category",
                     "--agg", "n,mean,median", "--format", fmt]) == 0
    out = capsys.readouterr().out
    if fmt == "csv":
        got = pd.read_csv(io.StringIO(out))
        assert list(got.columns) == ["category", "n", "mean", "median"]
        assert got.set_index("category").loc["math", "n"] == 4
    elif fmt == "json":
        recs = json.loads(out)
        assert {r["category"]: r["n"] for r in recs}["commonsense"] == 2
    else:
        assert "symbolic_algorithmic" in out and "19.10" in out


# ------------------------------------------------------------------------------------ importers

def test_sheet_import_maps_and_reports_drops(tmp_path):
    rows, rep = importers.import_study_sheet(FIX / "sheet.csv", venue="ICLR 2024", shots="few")
    by_ds = {r["dataset"]: r for r in rows}
    assert set(by_ds) == {"GSM8K", "CommonsenseQA", "Last letter", "RTE"}
    g = by_ds["GSM8K"]
    assert (g["paper_id"], g["category"], g["cot_score"], g["direct_score"], g["delta"]) == \
        ("arXiv:2310.06117", "math", 75.5, 70.0, 5.5)
    assert g["venue"] == "ICLR 2024" and g["year"] == "2024" and g["shots"] == "few"
    assert g["model"] == "unspecified (sheet row 2)" and g["source_locator"] == "study sheet, line 2"
    assert by_ds["CommonsenseQA"]["paper_id"] == "arXiv:2310.06117"
    assert by_ds["CommonsenseQA"]["category"] == "commonsense"
    assert by_ds["Last letter"]["paper_id"] == "url:https://openreview.net/forum?id=abc123"
    assert by_ds["Last letter"]["direct_score"] == 10.0
    assert "differs from CoT - direct" in by_ds["RTE"]["coder_notes"]
    reasons = dict(rep.dropped)
    assert rep.read == 11 and rep.kept == 4 and len(rep.dropped) == 7
    assert any("no category" in w for w in reasons.values())
    assert any("'astrology' does not map" in w for w in reasons.values())
    assert any("missing 'Direct perf.'" in w for w in reasons.values())
    assert any("non-numeric score" in w for w in reasons.values())
    assert any("is not an address" in w for w in reasons.values())
    assert any("outside 0-100" in w for w in reasons.values())
    assert "dropped by reason" in rep.text()
    out = write(tmp_path / "sheet_rows.csv", ALL_COLUMNS, rows)
    (vrep,) = validate(out)
    assert not vrep.ok and any(i.column == "dataset" and "'Last letter' is not in the dataset map" in i.message
                               for i in vrep.errors)
    (vrep,) = validate(out, categories=category_map(tmp_path, rows))
    assert vrep.ok, vrep.lines()


def test_sheet_import_category_map_fraction_scale_and_shots_column(tmp_path):
    rows, _ = importers.import_study_sheet(FIX / "sheet.csv", shots="zero",
                                           category_map={"StrategyQA": "commonsense reasoning"})
    assert "StrategyQA" in {r["dataset"] for r in rows}
    rows, rep = importers.import_study_sheet(FIX / "sheet_fraction.csv")
    assert [(r["model"], r["shots"], r["cot_score"], r["direct_score"]) for r in rows] == \
        [("PaLM 2", "few", 75.5, 70.0), ("Llama 2", "zero", 50.0, 40.0)]
    assert any("'sometimes'" in why for _, why in rep.dropped)
    assert any("fractions" in n for n in rep.notes)
    with pytest.raises(DataError, match="no shots column"):
        importers.import_study_sheet(FIX / "sheet.csv")
    bad = tmp_path / "bad_sheet.csv"
    bad.write_text("Paper link,Dataset\nhttps://arxiv.org/abs/2310.06117,GSM8K\n")
    with pytest.raises(DataError, match="lacks column"):
        importers.import_study_sheet(bad, shots="few")


def test_sheet_import_cli(tmp_path, capsys):
    out, report = tmp_path / "s.csv", tmp_path / "s.txt"
    assert cli_main(["meta", "import", "sheet", str(FIX / "sheet.csv"), "--out", str(out), "--shots", "few",
                     "--categories", str(FIX / "sheet_categories.csv"), "--report", str(report)]) == 0
    assert "kept 5, dropped 6" in report.read_text()
    assert cli_main(["meta", "validate", str(out)]) == 1          # sheet datasets are not in the shipped map
    cmap = category_map(tmp_path, rows_of(out)[1])
    assert cli_main(["meta", "validate", str(out), "--categories", str(cmap)]) == 0
    assert cli_main(["meta", "import", "sheet", str(FIX / "sheet.csv"), "--out", str(out)]) == 2
    assert "no shots column" in capsys.readouterr().err


def test_paper_id_from_link():
    assert importers.paper_id_from_link("https://arxiv.org/abs/2201.11903v6") == "arXiv:2201.11903"
    assert importers.paper_id_from_link("https://doi.org/10.18653/v1/2023.acl-long.1") == "doi:10.18653/v1/2023.acl-long.1"
    assert importers.paper_id_from_link("https://aclanthology.org/2024.naacl-long.1/") == \
        "url:https://aclanthology.org/2024.naacl-long.1/"
    assert importers.paper_id_from_link("see paper") is None


def test_run_import_pairs_settings_and_reports_drops(tmp_path):
    rows, rep = importers.import_runs([FIX / "run_a", FIX / "run_b"])
    got = {(r["paper_id"], r["dataset"], r["shots"]): r for r in rows}
    assert set(got) == {("cotbench:run_a", "gsm8k", "zero"), ("cotbench:run_a", "gsm8k", "few"),
                        ("cotbench:run_a", "bbh/word_sorting", "zero"), ("cotbench:run_b", "folio", "zero")}
    zs = got[("cotbench:run_a", "gsm8k", "zero")]
    assert (zs["cot_score"], zs["direct_score"], zs["delta"], zs["n_items"], zs["k"]) == (30.0, 20.0, 10.0, 50, "")
    fs = got[("cotbench:run_a", "gsm8k", "few")]
    assert (fs["cot_score"], fs["direct_score"], fs["n_items"], fs["k"], fs["year"]) == (50.0, 24.0, 48, 5, "2026")
    assert "different n" in fs["coder_notes"]
    assert got[("cotbench:run_a", "bbh/word_sorting", "zero")]["category"] == "symbolic_algorithmic"
    assert got[("cotbench:run_b", "folio", "zero")]["year"] == ""
    assert all(r["origin"] == "cotbench_run" and r["category"] in CATEGORIES for r in rows)
    why = [w for _, w in rep.dropped]
    assert any("zs_cot has no zs_direct row" in w for w in why)               # commonsenseqa
    assert any("no category for dataset 'mystery_set'" in w for w in why)
    assert any("accuracy missing" in w for w in why)                          # math
    assert rep.read == 13 and rep.kept == 4
    (vrep,) = validate(write(tmp_path / "runs.csv", ALL_COLUMNS, rows), staging=False)
    assert vrep.ok, vrep.lines()
    rows, _ = importers.import_runs([FIX / "run_a"], category_overrides={"mystery_set": "other"})
    assert "mystery_set" in {r["dataset"] for r in rows}


def test_run_import_cli_and_errors(tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert cli_main(["meta", "import", "runs", str(FIX / "run_a"), "--out", str(out),
                     "--map", "mystery_set=other"]) == 0
    assert cli_main(["meta", "validate", str(out)]) == 0
    assert cli_main(["meta", "import", "runs", str(tmp_path), "--out", str(out)]) == 2
    assert "summary.csv: no such file" in capsys.readouterr().err


def test_dataset_category_map():
    assert importers.dataset_category("gsm8k") == "math"
    assert importers.dataset_category("bbh/navigate") == "spatial_temporal"
    assert importers.dataset_category("contexthub/abductive_l2") == "logical_reasoning"
    assert importers.dataset_category("mmlu") == "mixed"
    assert importers.dataset_category("unknown") is None
    assert all(v in CATEGORIES for v in importers.DATASET_CATEGORY.values())
    assert all(v in CATEGORIES for v in importers.BBH_CATEGORY.values())
    assert category_id("Symbolic & Algorithmic (e.g. BBH tasks)") == "symbolic_algorithmic"
    assert category_id("spatial & temporal reasoning") == "spatial_temporal"


# ------------------------------------------------------------------------------------------ merge

def test_merge_renumbers_skips_duplicates_and_keeps_values(tmp_path, capsys):
    into = tmp_path / "effects.csv"
    sinto = tmp_path / "screening.csv"
    shutil.copy(EFFECTS, into)
    shutil.copy(SCREENING, sinto)
    assert cli_main(["meta", "merge", str(FIX / "staging_b.csv"), "--into", str(into), "--screening",
                     str(FIX / "screening_b.csv"), "--screening-into", str(sinto), "--dry-run"]) == 0
    assert into.read_text() == EFFECTS.read_text()
    assert cli_main(["meta", "merge", str(FIX / "staging_b.csv"), "--into", str(into), "--screening",
                     str(FIX / "screening_b.csv"), "--screening-into", str(sinto)]) == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "staging_b.csv:4" in captured.err
    _, merged = rows_of(into)
    assert [r["effect_id"] for r in merged] == [f"E{i:04d}" for i in range(1, 12)]
    _, staged = rows_of(FIX / "staging_b.csv")
    for new, old in zip(merged[9:], staged[:2]):
        assert {k: v for k, v in new.items() if k != "effect_id"} == {k: v for k, v in old.items() if k != "effect_id"}
    _, scr = rows_of(sinto)
    assert [r["paper_id"] for r in scr][-1] == "arXiv:2307.07697" and len(scr) == 6
    reports = validate(into, sinto)
    assert all(r.ok for r in reports), [r.lines() for r in reports]


def test_merge_refuses_an_invalid_staging_file(tmp_path):
    bad = broken(tmp_path, 0, delta="1")
    with pytest.raises(DataError, match="does not validate"):
        db.merge_effects(db.read_table(EFFECTS), db.read_table(bad))


# ------------------------------------------------------------------- database v2 (issue #13)

@pytest.mark.parametrize("row,changes,line,column,fragment", [
    (0, {"cot_shots": "zero", "cot_k": ""}, 2, "cot_shots", "arms in different settings (direct few-shot, CoT zero-shot)"),
    (0, {"direct_k": "4"}, 2, "cot_k", "direct_k=4 but cot_k=8"),
    (0, {"k": "6"}, 2, "k", "k=6 but the arms give 8 exemplars"),
    (3, {"shots": "few"}, 5, "shots", "'few' but both arms are zero-shot"),
    (3, {"direct_k": "3"}, 5, "direct_k", "zero-shot arm has direct_k=3"),
    (3, {"direct_shots": ""}, 5, "direct_shots", "is empty"),
    (1, {"split": "holdout"}, 3, "split", "'holdout' is not one of test, validation, dev, train, unknown"),
    (1, {"split": ""}, 3, "split", "is empty"),
    (1, {"pooled": "yes"}, 3, "pooled", "'yes' is not 'true' or 'false'"),
    (2, {"category": "encyclopedic_knowledge"}, 4, "category",
     "the dataset map gives 'commonsense' for 'CommonsenseQA'"),
    (1, {"dataset": "SVAMP (hard split)"}, 3, "dataset", "'SVAMP (hard split)' is not in the dataset map"),
])
def test_each_v2_problem_is_named(tmp_path, capsys, row, changes, line, column, fragment):
    path = broken(tmp_path, row, **changes)
    (rep,) = validate(path)
    hits = [i for i in rep.errors if i.line == line and i.column == column and fragment in i.message]
    assert hits, [i.format(path) for i in rep.errors]
    assert cli_main(["meta", "validate", str(path)]) == 1
    assert f"broken.csv:{line}: column '{column}'" in capsys.readouterr().err


def test_unknown_dataset_message_tells_the_coder_to_extend_the_map(tmp_path):
    (rep,) = validate(broken(tmp_path, 1, dataset="Brand-new QA"))
    (msg,) = [i.message for i in rep.errors]
    assert "dataset_categories.csv" in msg and "add a line" in msg


def test_v2_columns_required_in_the_database_optional_in_staging(tmp_path, capsys):
    header, rows = rows_of(EFFECTS)
    old = [h for h in header if h not in ARM_COLUMNS]
    path = write(tmp_path / "pre_v2.csv", old, [{k: r[k] for k in old} for r in rows])
    (rep,) = validate(path)                                   # a staging file: warnings only
    assert rep.ok and {w.column for w in rep.warnings if w.line == 1} == set(ARM_COLUMNS)
    (rep,) = validate(path, staging=False)
    assert [(i.line, i.column) for i in rep.errors] == [(1, c) for c in ARM_COLUMNS]
    assert cli_main(["meta", "validate", "--database", str(path)]) == 1
    assert "pre_v2.csv:1: column 'direct_shots': required column is missing" in capsys.readouterr().err
    df = load(path)                                           # analyses see the settings the row claims
    assert (df["direct_shots"] == df["shots"]).all() and not df["pooled"].any()
    assert set(df["split"]) == {"unknown"}


def test_empty_shared_setting_is_a_warning_in_staging_and_an_error_in_the_database(tmp_path):
    path = broken(tmp_path, 0, shots="", k="")
    (rep,) = validate(path, staging=True)
    assert rep.ok and {(w.line, w.column) for w in rep.warnings} >= {(2, "shots"), (2, "k")}
    (rep,) = validate(path, staging=False)
    assert {(i.line, i.column) for i in rep.errors} == {(2, "shots"), (2, "k")}


def test_merge_fills_shared_setting_and_refuses_pre_v2_or_unmapped_staging(tmp_path):
    canonical = db.read_table(EFFECTS)
    header, rows = rows_of(FIX / "staging_b.csv")
    rows[0].update(shots="", k="")
    staged = db.read_table(write(tmp_path / "st.csv", header, rows))
    merged, rep = db.merge_effects(canonical, staged)
    assert rep.added == 2
    new = merged[9]
    assert (new["shots"], new["k"], new["direct_shots"], new["cot_k"]) == ("few", "6", "few", "6")
    old = [h for h in header if h not in ARM_COLUMNS]
    pre = db.read_table(write(tmp_path / "pre.csv", old, [{k: r[k] for k in old} for r in rows]))
    with pytest.raises(DataError, match=r"pre\.csv:1: the staging file lacks the column\(s\) direct_shots"):
        db.merge_effects(canonical, pre)
    rows[1]["dataset"] = "WebQSP-hard"
    unmapped = db.read_table(write(tmp_path / "unmapped.csv", header, rows))
    with pytest.raises(DataError, match=r"unmapped\.csv:3: column 'dataset': 'WebQSP-hard' is not in the dataset map"):
        db.merge_effects(canonical, unmapped)


def test_query_aggregates_leave_out_pooled_rows_unless_asked(tmp_path, capsys):
    path = broken(tmp_path, 0, pooled="true")
    df = load(path)
    assert query(df, aggs="n").iloc[0]["n"] == 8
    assert query(df, aggs="n", include_pooled=True).iloc[0]["n"] == 9
    assert len(query(df)) == 9 and query(df)["pooled"].sum() == 1      # row listings show every row
    assert cli_main(["meta", "query", "--file", str(path), "--agg", "n", "--format", "csv"]) == 0
    got = capsys.readouterr()
    assert got.out.splitlines()[1] == "8"
    assert "1 pooled rows left out of the aggregates" in got.err          # the CLI says what it left out
    assert cli_main(["meta", "query", "--file", str(path), "--agg", "n", "--format", "csv", "--include-pooled"]) == 0
    got = capsys.readouterr()
    assert got.out.splitlines()[1] == "9" and "left out" not in got.err


def test_category_map_file_is_checked(tmp_path, capsys):
    path = write(tmp_path / "map.csv", ["dataset", "category", "note"],
                 [{"dataset": "GSM8K", "category": "math", "note": ""},
                  {"dataset": "GSM8K", "category": "math", "note": "again"},
                  {"dataset": "FOLIO", "category": "logic puzzles", "note": ""}])
    (rep,) = validate(path)
    assert rep.kind == "categories"
    assert [(i.line, i.column) for i in rep.errors] == [(3, "dataset"), (4, "category")]
    with pytest.raises(DataError, match=r"map\.csv:3: column 'dataset': 'GSM8K' already mapped on line 2"):
        validate(EFFECTS, categories=path)
    assert cli_main(["meta", "validate", str(path)]) == 1


def test_shipped_database_v2_invariants():
    df = load()
    assert (df["direct_shots"] == df["cot_shots"]).all() and (df["shots"] == df["direct_shots"]).all()
    both = df["direct_k"].notna() & df["cot_k"].notna()
    assert (df.loc[both, "direct_k"] == df.loc[both, "cot_k"]).all()
    cmap = db.read_category_map()
    assert all(cmap.category(d) == c for d, c in zip(df["dataset"], df["category"]))
    assert set(df.loc[df["dataset"] == "MuSR Object Placements", "category"]) == {"spatial_temporal"}
    assert set(df.loc[df["dataset"].str.startswith("MuSR"), "shots"]) == {"zero"}
    wikitq = df[(df["dataset"] == "WikiTQ") & (df["model"] == "PaLM 2")].iloc[0]
    assert (wikitq["direct_score"], round(wikitq["delta"], 2)) == (60.33, 0.10)
    flan_mmlu = df[(df["paper_id"] == "arXiv:2210.11416") & df["dataset"].str.startswith("MMLU")]
    assert set(flan_mmlu["split"]) == {"validation"} and flan_mmlu["pooled"].all()
    mmlu_subjects = df[df["dataset"].str.match(r"MMLU [a-z]")]
    assert len(mmlu_subjects) and mmlu_subjects.groupby("dataset")["category"].nunique().max() == 1


def test_merge_cli_names_an_unmapped_dataset_and_writes_nothing(tmp_path, capsys):
    into = tmp_path / "effects.csv"
    shutil.copy(EFFECTS, into)
    header, rows = rows_of(FIX / "staging_b.csv")
    rows[0]["dataset"] = "Brand-new QA"
    staged = write(tmp_path / "st.csv", header, rows)
    assert cli_main(["meta", "merge", str(staged), "--into", str(into)]) == 2
    err = capsys.readouterr().err
    assert "st.csv:2: column 'dataset': 'Brand-new QA' is not in the dataset map" in err
    assert into.read_text() == EFFECTS.read_text()


def test_meta_without_subcommand_prints_help_and_exits_2(capsys):
    """Like `batches` and `meta import`: a bare group command is a usage error, not a success."""
    from cotbench.cli import main

    assert main(["meta"]) == 2
    assert "SUBCOMMAND" in capsys.readouterr().out


def test_list_flags_take_spaces_and_commas_alike(capsys):
    """The CLI convention: list-valued flags take space-separated values; the older comma form still works."""
    outs = []
    for agg in (["n", "mean", "median"], ["n,mean,median"]):
        assert cli_main(["meta", "query", "--file", str(EFFECTS), "--group-by", "category",
                         "--agg", *agg, "--format", "csv"]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and outs[0].startswith("category,n,mean,median")


def test_run_import_reads_summary_through_the_one_reader(tmp_path):
    """import-runs reads summary.csv with pipeline.summary.read_summary: an empty dataset cell is an error
    naming its line (it used to become a row for dataset ''), and a model named "NA" stays "NA"."""
    run = tmp_path / "r"
    run.mkdir()
    head = "model,dataset,group,setting,n,accuracy\n"
    (run / "summary.csv").write_text(head + "NA,gsm8k,g,zs_direct,10,0.2\nNA,gsm8k,g,zs_cot,10,0.4\n")
    rows, _ = importers.import_runs([run])
    assert [(r["model"], r["direct_score"], r["cot_score"]) for r in rows] == [("NA", 20.0, 40.0)]
    (run / "summary.csv").write_text(head + "m,gsm8k,g,zs_direct,10,0.2\nm,,g,zs_cot,10,0.4\n")
    with pytest.raises(DataError, match=r"summary.csv: line 3: empty field 'dataset'"):
        importers.import_runs([run])
    (run / "summary.csv").write_text("model,dataset,setting,accuracy\nm,gsm8k,zs_cot,0.4\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['n'\]"):
        importers.import_runs([run])
