"""Read, check, query and merge the CoT effect database.

The CSV is parsed with the ``csv`` module first (not pandas) so every problem can be reported with the
exact CSV line number and column, then turned into a typed DataFrame. Validation is a pure function of
the parsed rows; I/O stays in ``read_table`` / ``write_table``.
"""
from __future__ import annotations

import csv
import io
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from cotbench.meta.schema import (
    ARM_COLUMNS,
    BOOLS,
    CATEGORIES,
    COLUMNS,
    DECISIONS,
    DUPLICATE_KEY,
    MAP_COLUMNS,
    METRIC_RE,
    ORIGINS,
    PAPER_ID_RE,
    SCREENING_COLUMNS,
    SHOTS,
    SPLITS,
    category_id,
)
from cotbench.paths import data_dir
from cotbench.records import DataError, split_values

__all__ = [
    "Issue", "Report", "Table", "default_path", "default_screening_path", "read_table", "write_table",
    "validate_effects", "validate_screening", "cross_check", "validate", "load", "to_frame", "query",
    "AGGREGATES", "GROUP_COLUMNS", "MergeReport", "merge_effects", "merge_screening", "DELTA_TOL",
    "CategoryMap", "default_categories_path", "read_category_map", "validate_category_map", "without_pooled",
    "parse_number",
]

DELTA_TOL = 0.01
_META_DIR = data_dir("meta_analysis")


def default_path() -> Path:
    """The shipped database: ``$COTBENCH_META_DB`` or ``meta_analysis/cot_effects.csv`` of the checkout."""
    return Path(os.environ.get("COTBENCH_META_DB") or _META_DIR / "cot_effects.csv")


def default_screening_path() -> Path:
    return Path(os.environ.get("COTBENCH_META_SCREENING") or _META_DIR / "screening.csv")


def default_categories_path() -> Path:
    """The dataset -> category map: ``$COTBENCH_META_CATEGORIES`` or ``meta_analysis/dataset_categories.csv``."""
    return Path(os.environ.get("COTBENCH_META_CATEGORIES") or _META_DIR / "dataset_categories.csv")


def _is_default_db(path: str | os.PathLike) -> bool:
    try:
        return Path(path).resolve() == default_path().resolve()
    except OSError:
        return False


@dataclass(frozen=True)
class Issue:
    line: int          # CSV line number (1 = header)
    column: str | None
    message: str

    def format(self, path: str | os.PathLike) -> str:
        col = f" column '{self.column}':" if self.column else ""
        return f"{path}:{self.line}:{col} {self.message}"


@dataclass
class Table:
    """A parsed CSV: header and rows as (line number of the row's first line, {column: raw string})."""
    path: str
    header: list[str]
    rows: list[tuple[int, dict[str, str]]]


@dataclass
class Report:
    path: str
    kind: str                      # "effects" or "screening"
    n_rows: int = 0
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    summary: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors

    def lines(self) -> list[str]:
        return [i.format(self.path) for i in self.errors]


# ---------------------------------------------------------------------------------------------- I/O

def read_table(path: str | os.PathLike) -> Table:
    """Parse a CSV file, keeping the line number at which each record starts."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: no such file") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse_table(text, str(p))


def parse_table(text: str, path: str = "<text>") -> Table:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: empty file (no header row)") from None
    except csv.Error as e:
        raise DataError(f"{path}:1: unreadable CSV header ({e})") from None
    header = [h.strip() for h in header]
    rows: list[tuple[int, dict[str, str]]] = []
    start = reader.line_num + 1
    try:
        for rec in reader:
            if not rec or all(not c.strip() for c in rec):
                start = reader.line_num + 1
                continue
            if len(rec) != len(header):
                raise DataError(f"{path}:{start}: row has {len(rec)} fields, the header has {len(header)}")
            rows.append((start, dict(zip(header, rec))))
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{path}:{start}: unreadable CSV ({e})") from None
    return Table(path, header, rows)


def write_table(path: str | os.PathLike, header: Sequence[str], rows: Iterable[dict[str, object]]) -> None:
    """Write atomically (temp file + rename) so a failed merge never leaves a half-written database."""
    p = Path(path)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(header), lineterminator="\n", extrasaction="raise")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r.get(k) for k in header})
    from cotbench.records import atomic_write

    atomic_write(p, buf.getvalue())


# ------------------------------------------------------------------------------------ cell parsers

def parse_number(s: str) -> float | None:
    """A CSV cell as a number: None when empty, NaN when it is not a number (callers say which)."""
    s = s.strip()
    if not s:
        return None
    try:
        return float(s)
    except ValueError:
        return math.nan


def _int(s: str) -> int | None | str:
    """An int, None for empty, or the string 'bad' when not an integer."""
    f = parse_number(s)
    if f is None:
        return None
    if not math.isfinite(f) or f != int(f):
        return "bad"
    return int(f)


# ------------------------------------------------------------------------------------- validation

def _missing_columns(table: Table, required: Sequence[str]) -> list[Issue]:
    return [Issue(1, c, "required column is missing from the header") for c in required if c not in table.header]


@dataclass(frozen=True)
class CategoryMap:
    """The dataset -> category map: one category per dataset spelling, with the map line for messages."""
    path: str
    entries: dict[str, tuple[str, int]]          # dataset -> (category, CSV line)

    def category(self, dataset: str) -> str | None:
        e = self.entries.get(dataset.strip())
        return e[0] if e else None


def validate_category_map(table: Table) -> Report:
    """Check the map file itself: columns, a known category per line, each dataset listed once."""
    rep = Report(table.path, "categories", len(table.rows))
    rep.errors += _missing_columns(table, MAP_COLUMNS[:2])
    if rep.errors:
        return rep
    seen: dict[str, int] = {}
    for line, r in table.rows:
        ds, cat = (r.get("dataset") or "").strip(), (r.get("category") or "").strip()
        if not ds:
            rep.errors.append(Issue(line, "dataset", "is empty"))
        elif ds in seen:
            rep.errors.append(Issue(line, "dataset", f"{ds!r} already mapped on line {seen[ds]}"))
        else:
            seen[ds] = line
        if cat not in CATEGORIES:
            hint = category_id(cat)
            rep.errors.append(Issue(line, "category", f"{cat!r} is not one of the 14 category ids"
                                    + (f" (did you mean {hint!r}?)" if hint else "")))
    if rep.ok:
        n = Counter((r.get("category") or "").strip() for _, r in table.rows)
        rep.summary = (f"OK: {len(table.rows)} datasets mapped to {len(n)} categories ("
                       + ", ".join(f"{c} {n[c]}" for c in CATEGORIES if n[c]) + ")")
    return rep


def read_category_map(path: str | os.PathLike | None = None) -> CategoryMap:
    """Read and check the dataset -> category map; a broken map is a ``DataError`` naming its lines."""
    p = Path(path) if path is not None else default_categories_path()
    if not p.exists():
        raise DataError(f"{p}: no such file (the dataset -> category map the validator enforces)")
    table = read_table(p)
    rep = validate_category_map(table)
    if not rep.ok:
        raise DataError(f"{p} is not a valid dataset map:\n" + "\n".join(rep.lines()[:20]))
    return CategoryMap(str(p), {r["dataset"].strip(): (r["category"].strip(), line) for line, r in table.rows})


def _check_arms(v: dict[str, str], staging: bool, err, warn) -> None:
    """Matched-arms rule: both arms in one setting, equal to ``shots``/``k`` (codebook, issue #13)."""
    arm: dict[str, object] = {}
    for side in ("direct", "cot"):
        sc, kc = f"{side}_shots", f"{side}_k"
        if not v[sc]:
            err(sc, "is empty (the arm's setting: 'zero' or 'few')")
        elif v[sc] not in SHOTS:
            err(sc, f"{v[sc]!r} is not 'zero' or 'few'")
        else:
            arm[sc] = v[sc]
        k = _int(v[kc])
        if k == "bad" or (isinstance(k, int) and k < 0):
            err(kc, f"{v[kc]!r} is not a non-negative integer")
            continue
        if isinstance(k, int) and arm.get(sc) == "zero" and k > 0:
            err(kc, f"zero-shot arm has {kc}={k}")
        elif isinstance(k, int) and arm.get(sc) == "few" and k == 0:
            err(kc, f"few-shot arm has {kc}=0")
        arm[kc] = k if isinstance(k, int) and k > 0 else None
    ds, cs = arm.get("direct_shots"), arm.get("cot_shots")
    if ds and cs and ds != cs:
        err("cot_shots", f"arms in different settings (direct {ds}-shot, CoT {cs}-shot): code the paper's "
                         "matched pair or leave the row out (codebook: matched arms)")
        return
    dk, ck = arm.get("direct_k"), arm.get("cot_k")
    if dk is not None and ck is not None and dk != ck:
        err("cot_k", f"direct_k={dk} but cot_k={ck}: arms with different exemplar counts are not a matched pair")
        return
    shared = ds if ds and ds == cs else None
    if shared and v["shots"] and v["shots"] in SHOTS and v["shots"] != shared:
        err("shots", f"{v['shots']!r} but both arms are {shared}-shot (shots is the arms' shared setting)")
    elif shared and not v["shots"]:
        (warn if staging else err)("shots", f"is empty; both arms are {shared}-shot"
                                   + (" (meta merge fills it)" if staging else ""))
    k = _int(v["k"])
    if not isinstance(k, int):
        k = None
    arm_k = {x for x in (dk, ck) if x is not None}
    if k and arm_k and k not in arm_k:
        err("k", f"k={k} but the arms give {'/'.join(map(str, sorted(arm_k)))} exemplars")
    elif k and not arm_k:
        (warn if staging else err)("k", f"k={k} but direct_k and cot_k are empty"
                                   + (" (meta merge copies k to both)" if staging else ""))
    elif not k and dk is not None and dk == ck:
        (warn if staging else err)("k", f"is empty but both arms have {dk} exemplars"
                                   + (" (meta merge fills it)" if staging else ""))


def validate_effects(table: Table, categories: CategoryMap | None = None, *, staging: bool = False) -> Report:
    """Check an effects table against the schema; every problem names the CSV line and column.

    ``categories`` is the dataset map (default: :func:`read_category_map`); every literature row's
    dataset must be in it with the row's category. ``staging=True`` (a coder's staging file) makes the
    v2 columns (``ARM_COLUMNS``) optional with a warning, and an empty ``shots``/``k`` that merge can
    fill a warning; in the database (``staging=False``) both are errors.
    """
    rep = Report(table.path, "effects", len(table.rows))
    rep.errors += _missing_columns(table, COLUMNS)
    dup = [c for c, n in Counter(table.header).items() if n > 1]
    rep.errors += [Issue(1, c, "column appears more than once in the header") for c in dup]
    absent = [c for c in ARM_COLUMNS if c not in table.header]
    if absent and not staging:
        rep.errors += _missing_columns(table, ARM_COLUMNS)
    elif absent:
        rep.warnings += [Issue(1, c, "column is missing (optional in a staging file, required by 'meta merge' "
                                     "and in the database)") for c in absent]
    if rep.errors:
        return rep
    if categories is None:
        categories = read_category_map()
    has_arms = not absent
    seen_ids: dict[str, int] = {}
    seen_keys: dict[tuple[str, ...], int] = {}
    for line, r in table.rows:
        err = lambda col, msg: rep.errors.append(Issue(line, col, msg))  # noqa: E731
        warn = lambda col, msg: rep.warnings.append(Issue(line, col, msg))  # noqa: E731
        v = {k: (r.get(k) or "").strip() for k in COLUMNS + (ARM_COLUMNS if has_arms else ())}
        required = ["effect_id", "paper_id", "dataset", "category", "model", "metric", "origin"]
        if not (staging and has_arms):
            required.append("shots")
        for col in required:
            if not v[col]:
                err(col, "is empty")
        if v["effect_id"]:
            if v["effect_id"] in seen_ids:
                err("effect_id", f"{v['effect_id']!r} already used on line {seen_ids[v['effect_id']]}")
            else:
                seen_ids[v["effect_id"]] = line
        if v["paper_id"] and not PAPER_ID_RE.match(v["paper_id"]):
            err("paper_id", f"{v['paper_id']!r} is not 'arXiv:NNNN.NNNNN', 'doi:10.x/...', 'url:https://...' "
                            "or 'cotbench:RUN'")
        if v["category"] and v["category"] not in CATEGORIES:
            hint = category_id(v["category"])
            err("category", f"{v['category']!r} is not one of the 14 category ids"
                + (f" (did you mean {hint!r}?)" if hint else f" ({', '.join(CATEGORIES)})"))
        elif v["category"] and v["dataset"] and v["origin"] == "literature":
            mapped = categories.entries.get(v["dataset"])
            if mapped is None:
                err("dataset", f"{v['dataset']!r} is not in the dataset map {categories.path}; add a line "
                               f"'dataset,category,note' for it there (one category per dataset, by "
                               f"categories.md), or use the spelling the map already has")
            elif mapped[0] != v["category"]:
                err("category", f"{v['category']!r} but the dataset map gives {mapped[0]!r} for "
                                f"{v['dataset']!r} ({categories.path}:{mapped[1]})")
        if v["shots"] and v["shots"] not in SHOTS:
            err("shots", f"{v['shots']!r} is not 'zero' or 'few'")
        if v["origin"] and v["origin"] not in ORIGINS:
            err("origin", f"{v['origin']!r} is not 'literature' or 'cotbench_run'")
        if v["metric"] and not METRIC_RE.match(v["metric"]):
            rep.warnings.append(Issue(line, "metric", f"{v['metric']!r} is not a lower-case name such as "
                                                      "'accuracy' or 'exact_match'"))
        if v["paper_id"].startswith("cotbench:") and v["origin"] == "literature":
            err("paper_id", "'cotbench:' ids are for origin 'cotbench_run' rows")
        year = _int(v["year"])
        if year == "bad" or (isinstance(year, int) and not 1950 <= year <= 2100):
            err("year", f"{v['year']!r} is not a year")
        k = _int(v["k"])
        if k == "bad" or (isinstance(k, int) and k < 0):
            err("k", f"{v['k']!r} is not a non-negative integer")
        elif isinstance(k, int) and v["shots"] == "zero" and k > 0:
            err("k", f"zero-shot row has k={k}")
        elif isinstance(k, int) and v["shots"] == "few" and k == 0:
            err("k", "few-shot row has k=0")
        if has_arms:
            _check_arms(v, staging, err, warn)
            if not v["split"]:
                err("split", f"is empty (one of {', '.join(SPLITS)}; 'unknown' when the paper does not say)")
            elif v["split"] not in SPLITS:
                err("split", f"{v['split']!r} is not one of {', '.join(SPLITS)}")
            if v["pooled"] not in BOOLS:
                err("pooled", f"{v['pooled']!r} is not 'true' or 'false' (true: the row averages other rows "
                              "of the same paper)")
        n = _int(v["n_items"])
        if n == "bad" or (isinstance(n, int) and n < 1):
            err("n_items", f"{v['n_items']!r} is not a positive integer")
        scores = {}
        for col in ("cot_score", "direct_score", "delta"):
            x = parse_number(v[col])
            if x is None:
                err(col, "is empty")
            elif math.isnan(x) or not math.isfinite(x):
                err(col, f"{v[col]!r} is not a number")
            elif col != "delta" and not 0.0 <= x <= 100.0:
                err(col, f"{x:g} is outside the 0-100 scale")
            elif col == "delta" and not -100.0 <= x <= 100.0:
                err(col, f"{x:g} is outside -100..100")
            else:
                scores[col] = x
        if len(scores) == 3:
            expect = scores["cot_score"] - scores["direct_score"]
            if abs(scores["delta"] - expect) > DELTA_TOL + 1e-9:
                err("delta", f"{scores['delta']:g} but cot_score - direct_score = {expect:.4g} "
                             f"(tolerance {DELTA_TOL})")
        if v["origin"] == "literature":
            if not v["source_locator"]:
                err("source_locator", "is empty (say where the number is: 'Table 2', 'abstract', ...)")
            if not v["source_url"]:
                err("source_url", "is empty (address of the copy the number was read from)")
            elif not v["source_url"].startswith(("http://", "https://")):
                err("source_url", f"{v['source_url']!r} is not an http(s) address")
            for col in ("title", "venue", "year"):
                if not v[col]:
                    rep.warnings.append(Issue(line, col, "is empty"))
        shots_key = v["shots"] or (v.get("direct_shots", "") if v.get("direct_shots") == v.get("cot_shots") else "")
        key = tuple(shots_key if c == "shots" else v[c] for c in DUPLICATE_KEY)
        if all(key):
            if key in seen_keys:
                err(None, f"duplicate comparison: same {'+'.join(DUPLICATE_KEY)} as line {seen_keys[key]}")
            else:
                seen_keys[key] = line
    if rep.ok:
        rep.summary = _effects_summary(table)
    return rep


def _effects_summary(table: Table) -> str:
    rows = [r for _, r in table.rows]
    papers = {r["paper_id"] for r in rows}
    cats = Counter(r["category"] for r in rows)
    origins = Counter(r["origin"] for r in rows)
    with_n = sum(1 for r in rows if r["n_items"].strip())
    cat_txt = ", ".join(f"{c} {cats[c]}" for c in CATEGORIES if cats[c])
    org_txt = ", ".join(f"{o} {origins[o]}" for o in ORIGINS if origins[o])
    extra = ""
    if "pooled" in table.header:
        pooled = sum(1 for r in rows if r["pooled"].strip() == "true")
        splits = Counter(r["split"].strip() for r in rows)
        extra = (f"; {pooled} pooled rows (left out of default analyses); splits: "
                 + ", ".join(f"{s} {splits[s]}" for s in SPLITS if splits[s]))
    return (f"OK: {len(rows)} comparisons from {len(papers)} papers/runs in {len(cats)} of {len(CATEGORIES)} "
            f"categories ({org_txt}); {with_n} rows give n_items{extra}.\n  by category: {cat_txt}")


def validate_screening(table: Table) -> Report:
    rep = Report(table.path, "screening", len(table.rows))
    rep.errors += _missing_columns(table, SCREENING_COLUMNS)
    if rep.errors:
        return rep
    seen: dict[str, int] = {}
    for line, r in table.rows:
        v = {k: (r.get(k) or "").strip() for k in SCREENING_COLUMNS}
        err = lambda col, msg: rep.errors.append(Issue(line, col, msg))  # noqa: E731
        for col in ("paper_id", "title", "decision", "reason", "coder"):
            if not v[col]:
                err(col, "is empty")
        if v["paper_id"] and not PAPER_ID_RE.match(v["paper_id"]):
            err("paper_id", f"{v['paper_id']!r} is not an arXiv/doi/url id")
        if v["decision"] and v["decision"] not in DECISIONS:
            err("decision", f"{v['decision']!r} is not 'included' or 'excluded'")
        year = _int(v["year"])
        if year == "bad" or (isinstance(year, int) and not 1950 <= year <= 2100):
            err("year", f"{v['year']!r} is not a year")
        if v["source_url"] and not v["source_url"].startswith(("http://", "https://")):
            err("source_url", f"{v['source_url']!r} is not an http(s) address")
        if v["paper_id"] in seen:
            err("paper_id", f"{v['paper_id']!r} already screened on line {seen[v['paper_id']]}")
        elif v["paper_id"]:
            seen[v["paper_id"]] = line
    if rep.ok:
        d = Counter(r["decision"].strip() for _, r in table.rows)
        rep.summary = f"OK: {len(table.rows)} papers screened ({d['included']} included, {d['excluded']} excluded)"
    return rep


def cross_check(effects: Table, screening: Table) -> list[Issue]:
    """Every literature paper in the effects table is screened as included, and vice versa."""
    status = {r.get("paper_id", "").strip(): (line, r.get("decision", "").strip()) for line, r in screening.rows}
    issues: list[Issue] = []
    reported: set[str] = set()
    coded: set[str] = set()
    for line, r in effects.rows:
        pid = r.get("paper_id", "").strip()
        if r.get("origin", "").strip() != "literature" or not pid:
            continue
        coded.add(pid)
        if pid in reported:
            continue
        if pid not in status:
            issues.append(Issue(line, "paper_id", f"{pid} has effects but no row in {screening.path}"))
            reported.add(pid)
        elif status[pid][1] != "included":
            issues.append(Issue(line, "paper_id", f"{pid} has effects but is screened "
                                                  f"{status[pid][1] or 'without decision'} ({screening.path}:{status[pid][0]})"))
            reported.add(pid)
    for pid, (line, decision) in status.items():
        if decision == "included" and pid not in coded:
            issues.append(Issue(line, "decision", f"{pid} is 'included' but has no rows in {effects.path}"))
    return issues


def validate(path: str | os.PathLike | None = None, screening: str | os.PathLike | None = None, *,
             staging: bool | None = None, categories: str | os.PathLike | None = None) -> list[Report]:
    """Validate an effects, screening or dataset-map CSV (recognised by its header).

    With no path, checks the shipped ``cot_effects.csv`` and ``screening.csv`` and cross-checks them.
    ``staging`` (default: every file but the shipped database) relaxes the v2 columns to warnings.
    ``categories`` is the dataset map to enforce (default: the shipped ``dataset_categories.csv``).
    Returns one report per file; a cross-check problem is added to the effects report.
    """
    if path is None:
        path = default_path()
        if screening is None and default_screening_path().exists():
            screening = default_screening_path()
    table = read_table(path)
    reports = []
    if "decision" in table.header and "cot_score" not in table.header:
        return [validate_screening(table)]
    if set(MAP_COLUMNS[:2]) <= set(table.header) and "cot_score" not in table.header:
        return [validate_category_map(table)]
    if staging is None:
        staging = not _is_default_db(path)
    eff = validate_effects(table, read_category_map(categories), staging=staging)
    reports.append(eff)
    if screening is not None:
        st = read_table(screening)
        srep = validate_screening(st)
        reports.append(srep)
        if eff.ok and srep.ok:
            eff.errors += cross_check(table, st)
            if eff.errors:
                eff.summary = ""
    return reports


# --------------------------------------------------------------------------------- typed frame

_STR_COLS = ("effect_id", "paper_id", "title", "venue", "source_locator", "source_url", "dataset", "model",
             "model_family", "metric", "coder_notes")


def to_frame(table: Table) -> pd.DataFrame:
    """Typed DataFrame of a (validated) effects table; extra columns are kept as strings."""
    recs = [r for _, r in table.rows]
    df = pd.DataFrame.from_records(recs, columns=table.header).fillna("")
    for c in _STR_COLS:
        df[c] = df[c].astype("string").str.strip()
    for c in ("cot_score", "direct_score", "delta"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in ("year", "k", "n_items"):
        df[c] = pd.to_numeric(df[c].replace("", None), errors="coerce").astype("Int64")
    df["category"] = pd.Categorical(df["category"].str.strip(), categories=list(CATEGORIES))
    df["shots"] = pd.Categorical(df["shots"].str.strip(), categories=list(SHOTS))
    df["origin"] = pd.Categorical(df["origin"].str.strip(), categories=list(ORIGINS))
    # v2 columns; a pre-v2 file (validated with warnings) gets the values its ``shots``/``k`` claim.
    for side in ("direct", "cot"):
        if f"{side}_shots" not in df:
            df[f"{side}_shots"] = df["shots"].astype("string")
            df[f"{side}_k"] = df["k"]
        else:
            df[f"{side}_k"] = pd.to_numeric(df[f"{side}_k"].replace("", None), errors="coerce").astype("Int64")
        df[f"{side}_shots"] = pd.Categorical(df[f"{side}_shots"].astype("string").str.strip(),
                                             categories=list(SHOTS))
    split = df["split"].astype("string").str.strip() if "split" in df else ["unknown"] * len(df)
    df["split"] = pd.Categorical(split, categories=list(SPLITS))
    df["pooled"] = (df["pooled"].astype("string").str.strip() == "true").astype(bool) if "pooled" in df else False
    df.insert(0, "csv_line", pd.array([line for line, _ in table.rows], dtype="Int64"))
    return df


def load(path: str | os.PathLike | None = None, *, check: bool = True) -> pd.DataFrame:
    """The effect database as a typed DataFrame (validated unless ``check=False``).

    Raises ``DataError`` listing the problems when the file does not validate. ``csv_line`` holds each
    row's CSV line so analyses can point back to the file.
    """
    table = read_table(path if path is not None else default_path())
    if check:
        rep = validate_effects(table, staging=not _is_default_db(table.path))
        if not rep.ok:
            shown = rep.lines()[:20]
            more = f"\n... and {len(rep.errors) - 20} more" if len(rep.errors) > 20 else ""
            raise DataError(f"{table.path} does not validate ({len(rep.errors)} problem(s)):\n"
                            + "\n".join(shown) + more)
    return to_frame(table)


# ------------------------------------------------------------------------------------------ query

GROUP_COLUMNS = {"category": "category", "paper": "paper_id", "model": "model", "dataset": "dataset",
                 "venue": "venue", "year": "year", "shots": "shots", "origin": "origin",
                 "model_family": "model_family", "metric": "metric", "split": "split", "pooled": "pooled"}
AGGREGATES = ("n", "papers", "mean", "median", "std", "min", "max")


def without_pooled(df: pd.DataFrame, include_pooled: bool = False) -> pd.DataFrame:
    """The rows default analyses use: ``pooled`` rows (averages of other rows of the same paper, which
    would count the same items twice and mix categories) are left out unless ``include_pooled``."""
    if include_pooled or "pooled" not in df:
        return df
    pooled = df["pooled"].astype("string").str.lower().isin(["true", "1"]) if df["pooled"].dtype != bool \
        else df["pooled"]
    return df[~pooled.fillna(False).astype(bool)]


def _match_any(series: pd.Series, needles: Sequence[str]) -> pd.Series:
    s = series.astype("string").str.lower().fillna("")
    out = pd.Series(False, index=series.index)
    for n in needles:
        out |= s.str.contains(n.lower(), regex=False)
    return out


def query(df: pd.DataFrame, *, category=None, dataset=None, model=None, venue=None, year=None, paper=None,
          origin=None, shots=None, split=None, group_by: str | None = None,
          aggs: Sequence[str] | str | None = None, value: str = "delta",
          include_pooled: bool = False) -> pd.DataFrame:
    """Filter the database and optionally aggregate ``value`` per group.

    Text filters (dataset, model, venue, paper) are case-insensitive substrings, several values OR-ed;
    ``paper`` matches the id or the title. Category accepts our ids or the study's labels. Without
    ``group_by`` and ``aggs`` the matching rows are returned (pooled rows included, marked in the
    ``pooled`` column); with ``aggs`` only, one overall row. Aggregates leave out ``pooled`` rows
    (averages of other rows of the same paper, which would count twice) unless ``include_pooled``.
    """
    if value not in ("delta", "cot_score", "direct_score"):
        raise ValueError(f"value must be delta, cot_score or direct_score, got {value!r}")
    m = pd.Series(True, index=df.index)
    cats = split_values(category)
    if cats:
        ids = []
        for c in cats:
            cid = c if c in CATEGORIES else category_id(c)
            if cid is None:
                raise ValueError(f"unknown category {c!r}; choose from {', '.join(CATEGORIES)}")
            ids.append(cid)
        m &= df["category"].isin(ids)
    for col, needles in (("dataset", dataset), ("model", model), ("venue", venue)):
        vals = split_values(needles)
        if vals:
            m &= _match_any(df[col], vals)
    pvals = split_values(paper)
    if pvals:
        m &= _match_any(df["paper_id"], pvals) | _match_any(df["title"], pvals)
    yvals = split_values(year)
    if yvals:
        try:
            years = [int(y) for y in yvals]
        except ValueError:
            raise ValueError(f"--year expects integers, got {', '.join(yvals)}") from None
        m &= df["year"].isin(years).fillna(False).astype(bool)
    for col, vals, vocab in (("origin", origin, ORIGINS), ("shots", shots, SHOTS), ("split", split, SPLITS)):
        vs = split_values(vals)
        bad = [x for x in vs if x not in vocab]
        if bad:
            raise ValueError(f"unknown {col} {bad[0]!r}; choose from {', '.join(vocab)}")
        if vs:
            m &= df[col].isin(vs)
    sub = df[m]
    agg_list = split_values(aggs)
    bad = [a for a in agg_list if a not in AGGREGATES]
    if bad:
        raise ValueError(f"unknown aggregate {bad[0]!r}; choose from {', '.join(AGGREGATES)}")
    if group_by is None and not agg_list:
        cols = ["effect_id", "paper_id", "dataset", "category", "model", "shots", "metric",
                "direct_score", "cot_score", "delta", "n_items", "split", "pooled"]
        return sub[[c for c in cols if c in sub]].reset_index(drop=True)
    sub = without_pooled(sub, include_pooled)
    agg_list = agg_list or ["n", "mean", "median"]
    if group_by is not None and group_by not in GROUP_COLUMNS:
        raise ValueError(f"cannot group by {group_by!r}; choose from {', '.join(GROUP_COLUMNS)}")
    key = GROUP_COLUMNS[group_by] if group_by else None
    funcs = {"n": "size", "papers": lambda s: sub.loc[s.index, "paper_id"].nunique(), "mean": "mean",
             "median": "median", "std": "std", "min": "min", "max": "max"}
    if key is None:
        vals = sub[value]
        row = {a: _apply(funcs[a], vals) for a in agg_list}
        return pd.DataFrame([row])
    g = sub.groupby(key, observed=True, sort=True)[value]
    out = g.agg([(a, funcs[a]) for a in agg_list]).reset_index()
    out = out.rename(columns={key: group_by})
    if "n" in out:
        out["n"] = out["n"].astype(int)
    return out


def _apply(f, s: pd.Series):
    if f == "size":
        return int(s.size)
    if callable(f):
        return f(s)
    return getattr(s, f)()


# ------------------------------------------------------------------------------------------ merge

@dataclass
class MergeReport:
    added: int = 0
    skipped: list[str] = field(default_factory=list)
    renumbered: dict[str, str] = field(default_factory=dict)


def _next_id(ids: Iterable[str], prefix: str = "E") -> int:
    nums = [int(i[len(prefix):]) for i in ids if i.startswith(prefix) and i[len(prefix):].isdigit()]
    return max(nums, default=0) + 1


def _fill_shared_setting(r: dict[str, str]) -> dict[str, str]:
    """``shots``/``k`` repeat the arms' shared setting; fill them (or the arm k's) where one side is empty."""
    new = dict(r)
    ds, cs = new.get("direct_shots", "").strip(), new.get("cot_shots", "").strip()
    if not new.get("shots", "").strip() and ds and ds == cs:
        new["shots"] = ds
    dk, ck, k = (new.get(c, "").strip() for c in ("direct_k", "cot_k", "k"))
    if not k and dk and dk == ck:
        new["k"] = dk
    elif k and not dk and not ck:
        new["direct_k"] = new["cot_k"] = k
    return new


def merge_effects(canonical: Table, staging: Table, prefix: str = "E",
                  categories: CategoryMap | None = None) -> tuple[list[dict[str, str]], MergeReport]:
    """Append a validated staging table to the canonical one.

    Staging rows keep every value except ``effect_id``, which continues the canonical numbering, and an
    empty ``shots``/``k`` (or arm k's), which are filled from the arms' shared setting. The staging file
    must carry the v2 columns and pass the dataset map. A staging row that duplicates a canonical
    comparison (same paper, dataset, model, shots and metric) is skipped and reported, never
    overwritten. The merged table is validated as a database before it is returned.
    """
    absent = [c for c in ARM_COLUMNS if c not in staging.header]
    if absent:
        raise DataError(f"{staging.path}:1: the staging file lacks the column(s) {', '.join(absent)}, which the "
                        "database requires (codebook: direct_shots, direct_k, cot_shots, cot_k, split, pooled)")
    categories = categories if categories is not None else read_category_map()
    for t, staged in ((canonical, False), (staging, True)):
        rep = validate_effects(t, categories, staging=staged)
        if not rep.ok:
            raise DataError(f"{t.path} does not validate; fix it before merging:\n" + "\n".join(rep.lines()[:20]))
    header = list(canonical.header) + [c for c in staging.header if c not in canonical.header]
    out = [dict(r) for _, r in canonical.rows]
    keys = {tuple(r[c].strip() for c in DUPLICATE_KEY): line for line, r in canonical.rows}
    nxt = _next_id((r["effect_id"] for r in out), prefix)
    width = max(4, len(str(nxt + len(staging.rows))))
    rep = MergeReport()
    for line, r in staging.rows:
        new = _fill_shared_setting(r)
        key = tuple(new[c].strip() for c in DUPLICATE_KEY)
        if key in keys:
            rep.skipped.append(f"{staging.path}:{line}: same comparison as {canonical.path}:{keys[key]} "
                               f"({' / '.join(key)})")
            continue
        new_id = f"{prefix}{nxt:0{width}d}"
        rep.renumbered[r["effect_id"]] = new_id
        new["effect_id"] = new_id
        nxt += 1
        out.append(new)
        keys[key] = -1
        rep.added += 1
    rows = [{c: r.get(c, "") for c in header} for r in out]
    merged = Table(f"{canonical.path} (merged)", header, [(i + 2, r) for i, r in enumerate(rows)])
    check = validate_effects(merged, categories, staging=False)
    if not check.ok:
        raise DataError("the merged database would not validate (line numbers of the merged file):\n"
                        + "\n".join(check.lines()[:20]))
    return rows, rep


def merge_screening(canonical: Table, staging: Table) -> tuple[list[dict[str, str]], list[str]]:
    """Append screening rows for papers not yet screened; a paper screened in both is reported."""
    for t in (canonical, staging):
        rep = validate_screening(t)
        if not rep.ok:
            raise DataError(f"{t.path} does not validate:\n" + "\n".join(rep.lines()[:20]))
    out = [dict(r) for _, r in canonical.rows]
    have = {r["paper_id"].strip(): line for line, r in canonical.rows}
    notes = []
    for line, r in staging.rows:
        pid = r["paper_id"].strip()
        if pid in have:
            notes.append(f"{staging.path}:{line}: {pid} already screened in {canonical.path}:{have[pid]}; kept the canonical row")
            continue
        out.append(dict(r))
        have[pid] = -1
    return [{c: r.get(c, "") for c in canonical.header} for r in out], notes
