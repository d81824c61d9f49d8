"""Map other sources onto the effect schema, reporting every row that was dropped and why.

* ``import_study_sheet``: the study authors' published meta-analysis sheet (columns "Paper link",
  "Category", "Dataset", "Direct perf.", "CoT perf.", "Delta"; optional "Model", "Shots", "Title",
  "Venue", "Year", "Metric", "N").
* ``import_runs``: cotbench run directories (``summary.csv``; ``manifest.json`` when present). Each
  model x dataset with both arms of a setting pair (zs_direct/zs_cot, fs_direct/fs_cot) becomes a row.

Both return ``(rows, ImportReport)``; rows are dicts over ``ALL_COLUMNS`` ready for ``write_table``.
"""
from __future__ import annotations

import io
import math
import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from cotbench.analysis.load import read_manifest
from cotbench.meta.db import parse_number
from cotbench.meta.schema import ALL_COLUMNS, CATEGORIES, STUDY_SHEET_URL, category_id
from cotbench.pipeline.summary import read_summary
from cotbench.records import DataError

__all__ = ["ImportReport", "import_study_sheet", "import_runs", "dataset_category", "DATASET_CATEGORY",
           "BBH_CATEGORY", "read_sheet", "paper_id_from_link"]


@dataclass
class ImportReport:
    source: str
    read: int = 0
    kept: int = 0
    dropped: list[tuple[str, str]] = field(default_factory=list)   # (where, why)
    notes: list[str] = field(default_factory=list)

    def drop(self, where: str, why: str) -> None:
        self.dropped.append((where, why))

    def text(self) -> str:
        lines = [f"{self.source}: read {self.read}, kept {self.kept}, dropped {len(self.dropped)}"]
        why = pd.Series([w for _, w in self.dropped], dtype="string")
        if len(why):
            lines.append("dropped by reason:")
            for reason, n in why.str.replace(r"'[^']*'", "'…'", regex=True).value_counts().items():
                lines.append(f"  {n:5d}  {reason}")
            lines.append("dropped rows:")
            lines += [f"  {where}: {reason}" for where, reason in self.dropped]
        if self.notes:
            lines.append("notes:")
            lines += [f"  {n}" for n in self.notes]
        return "\n".join(lines)


# ------------------------------------------------------------------------------ the study's sheet

SHEET_REQUIRED = ("Paper link", "Category", "Dataset", "Direct perf.", "CoT perf.", "Delta")
_OPTIONAL = {"model": ("Model", "LLM"), "shots": ("Shots", "Setting", "Few-shot", "Zero/few-shot"),
             "title": ("Title", "Paper title"), "venue": ("Venue", "Conference"), "year": ("Year",),
             "metric": ("Metric",), "n_items": ("N", "n", "n_items", "# examples")}

_ARXIV_RE = re.compile(r"arxiv\.org/(?:abs|pdf|html)/(\d{4}\.\d{4,5})(v\d+)?", re.I)
_DOI_RE = re.compile(r"(?:doi\.org/|^doi:)(10\.\d{4,9}/[^\s?#]+)", re.I)


def paper_id_from_link(link: str) -> str | None:
    """'arXiv:NNNN.NNNNN' for arXiv links, 'doi:...' for DOI links, else 'url:<link>' (None if not a URL)."""
    link = (link or "").strip()
    m = _ARXIV_RE.search(link)
    if m:
        return f"arXiv:{m.group(1)}"
    m = _DOI_RE.search(link)
    if m:
        return f"doi:{m.group(1).rstrip('.')}"
    if link.startswith(("http://", "https://")):
        return f"url:{link.split()[0]}"
    return None


def read_sheet(src: str | Path) -> tuple[pd.DataFrame, str]:
    """Read a CSV export from a local path or an http(s) address (Google-sheet links become CSV exports)."""
    s = str(src)
    if s.startswith(("http://", "https://")):
        url = s
        m = re.match(r"(https://docs\.google\.com/spreadsheets/d/[\w-]+)(?:/edit[^#]*)?(?:#gid=(\d+))?$", s)
        if m and "export" not in s:
            url = m.group(1) + "/export?format=csv" + (f"&gid={m.group(2)}" if m.group(2) else "")
        try:
            with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 (user-given address)
                text = resp.read().decode("utf-8-sig")
        except OSError as e:
            raise OSError(f"cannot download the sheet from {url}: {e}") from None
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False), url
    p = Path(s)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    return pd.read_csv(p, dtype=str, keep_default_na=False, encoding="utf-8-sig"), str(p)


def _pct(cell: str) -> float | None:
    """A score cell, "%" allowed: None when empty, NaN when not a number."""
    return parse_number((cell or "").strip().rstrip("%"))


def _shots(cell: str) -> str | None:
    c = (cell or "").strip().lower()
    if not c:
        return None
    if c.startswith(("zero", "0")) or c in ("zs", "zero-shot", "0-shot"):
        return "zero"
    if c.startswith(("few", "one", "1", "2", "3", "4", "5", "6", "7", "8", "9")) or c in ("fs", "few-shot"):
        return "few"
    return "bad"


def import_study_sheet(src: str | Path, *, venue: str = "", shots: str | None = None, metric: str = "accuracy",
                       scale: str = "auto", source_url: str | None = None,
                       category_map: dict[str, str] | None = None) -> tuple[list[dict], ImportReport]:
    """Map the study's sheet onto our schema.

    ``shots`` states the setting for every row when the sheet has no shots column (the six published
    columns do not say it). ``scale`` is 'percent', 'fraction' or 'auto' (fraction when every score is
    <= 1). ``category_map`` maps dataset -> category label for rows whose Category cell is empty, like
    the study's separate category sheet. ``source_url`` defaults to the address read, or the published
    sheet for a local export.
    """
    df, where = read_sheet(src)
    if shots is not None and shots not in ("zero", "few"):
        raise ValueError(f"shots must be 'zero' or 'few', got {shots!r}")
    return map_study_sheet(df, where, venue=venue, shots=shots, metric=metric, scale=scale,
                           source_url=source_url, category_map=category_map)


def map_study_sheet(df: pd.DataFrame, where: str, *, venue: str = "", shots: str | None = None,
                    metric: str = "accuracy", scale: str = "auto", source_url: str | None = None,
                    category_map: dict[str, str] | None = None) -> tuple[list[dict], ImportReport]:
    missing = [c for c in SHEET_REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"{where}: sheet lacks column(s) {', '.join(repr(c) for c in missing)} "
                        f"(expected {', '.join(SHEET_REQUIRED)})")
    opt = {k: next((c for c in names if c in df.columns), None) for k, names in _OPTIONAL.items()}
    if shots is None and opt["shots"] is None:
        raise DataError(f"{where}: the sheet has no shots column; pass shots='zero' or 'few' (--shots) to state "
                        "the setting of its rows")
    if scale not in ("auto", "percent", "fraction"):
        raise ValueError(f"scale must be auto, percent or fraction, got {scale!r}")
    url = source_url or (where if where.startswith("http") else STUDY_SHEET_URL)
    rep = ImportReport(where, read=len(df))
    direct = dict(zip(df.index, (_pct(x) for x in df["Direct perf."])))
    cot = dict(zip(df.index, (_pct(x) for x in df["CoT perf."])))
    if scale == "auto":
        vals = [v for v in list(direct.values()) + list(cot.values()) if v is not None and math.isfinite(v)]
        factor = 100.0 if vals and all(abs(v) <= 1.0 for v in vals) else 1.0
        if factor == 100.0:
            rep.notes.append("all scores are <= 1: read as fractions and multiplied by 100")
    else:
        factor = 100.0 if scale == "fraction" else 1.0
    cmap = {str(k).strip().lower(): v for k, v in (category_map or {}).items()}
    year_re = re.search(r"(19|20)\d\d", venue or "")
    rows: list[dict] = []
    keys: dict[tuple, int] = {}
    for i, r in df.iterrows():
        line = int(i) + 2
        loc = f"{where}:{line}"
        pid = paper_id_from_link(r["Paper link"])
        if pid is None:
            rep.drop(loc, f"'Paper link' {r['Paper link']!r} is not an address")
            continue
        dataset = str(r["Dataset"]).strip()
        if not dataset:
            rep.drop(loc, "empty 'Dataset'")
            continue
        label = str(r["Category"]).strip() or cmap.get(dataset.lower(), "")
        cat = category_id(label)
        if cat is None:
            rep.drop(loc, f"category {label!r} does not map to one of the 14 categories" if label
                     else "no category (empty 'Category' and no category map entry)")
            continue
        d, c = direct[i], cot[i]
        if d is None or c is None:
            rep.drop(loc, "missing 'Direct perf.' or 'CoT perf.'")
            continue
        if math.isnan(d) or math.isnan(c):
            rep.drop(loc, f"non-numeric score ({r['Direct perf.']!r}, {r['CoT perf.']!r})")
            continue
        d, c = d * factor, c * factor
        if not (0 <= d <= 100 and 0 <= c <= 100):
            rep.drop(loc, f"score outside 0-100 after scaling ({d:g}, {c:g})")
            continue
        row_shots = shots
        if opt["shots"] is not None and str(r[opt["shots"]]).strip():
            row_shots = _shots(str(r[opt["shots"]]))
        if row_shots not in ("zero", "few"):
            rep.drop(loc, f"shots {str(r[opt['shots']]) if opt['shots'] else ''!r} is neither zero- nor few-shot")
            continue
        model = str(r[opt["model"]]).strip() if opt["model"] else ""
        notes = ["imported from the study authors' meta-analysis sheet"]
        if not model:
            model = f"unspecified (sheet row {line})"
            notes.append("the sheet does not name the model")
        delta = round(c - d, 4)
        sheet_delta = _pct(str(r["Delta"]))
        if sheet_delta is not None and not math.isnan(sheet_delta):
            if abs(sheet_delta * factor - delta) > 0.05:
                notes.append(f"sheet Delta {r['Delta']} differs from CoT - direct ({delta:g}); recomputed")
        n_items = ""
        if opt["n_items"] and str(r[opt["n_items"]]).strip():
            try:
                n_items = int(float(str(r[opt["n_items"]]).replace(",", "")))
            except ValueError:
                notes.append(f"unreadable N {r[opt['n_items']]!r} ignored")
        row_metric = (str(r[opt["metric"]]).strip().lower().replace(" ", "_") if opt["metric"] else "") or metric
        row_venue = (str(r[opt["venue"]]).strip() if opt["venue"] else "") or venue
        year = str(r[opt["year"]]).strip() if opt["year"] else ""
        if not year:
            m = re.search(r"(19|20)\d\d", row_venue) or year_re
            year = m.group(0) if m else ""
        key = (pid, dataset, model, row_shots, row_metric)
        if key in keys:
            rep.drop(loc, f"same paper/dataset/model/shots/metric as sheet line {keys[key]}")
            continue
        keys[key] = line
        rows.append({
            "effect_id": "", "paper_id": pid, "title": str(r[opt["title"]]).strip() if opt["title"] else "",
            "venue": row_venue, "year": year, "source_locator": f"study sheet, line {line}", "source_url": url,
            "dataset": dataset, "category": cat, "model": model, "model_family": "", "shots": row_shots, "k": "",
            "metric": row_metric, "cot_score": round(c, 4), "direct_score": round(d, 4), "delta": delta,
            "n_items": n_items, "origin": "literature", "coder_notes": "; ".join(notes),
            # the sheet states one setting per row; per-arm settings and the split are not in it
            "direct_shots": row_shots, "cot_shots": row_shots, "direct_k": "", "cot_k": "", "split": "unknown",
            "pooled": "false",
        })
    for j, row in enumerate(rows, 1):
        row["effect_id"] = f"S{j:04d}"
    rep.kept = len(rows)
    return rows, rep


# ---------------------------------------------------------------------------------- cotbench runs

# Our dataset names -> the study's categories, assigned by what the task asks (see codebook.md).
DATASET_CATEGORY: dict[str, str] = {
    "gsm8k": "math", "gsm8k_hard": "math", "math": "math",
    "commonsenseqa": "commonsense", "commonsense_qa": "commonsense", "strategyqa": "commonsense",
    "siqa": "commonsense", "social_i_qa": "commonsense", "piqa": "commonsense", "winogrande": "commonsense",
    "arc_easy": "encyclopedic_knowledge", "arc_challenge": "encyclopedic_knowledge",
    "gpqa": "encyclopedic_knowledge", "mmlu": "mixed", "mmlu_pro": "mixed", "bbh": "mixed",
    "folio": "logical_reasoning", "prontoqa": "logical_reasoning",
    "musique": "multi_hop_qa", "biggen_bench": "mixed",
    "musr/murder_mysteries": "logical_reasoning", "musr/object_placements": "spatial_temporal",
    "musr/team_allocation": "logical_reasoning",
    "agieval/lsat-ar": "logical_reasoning", "agieval/lsat-lr": "logical_reasoning",
    "agieval/lsat-rc": "context_aware_qa", "agieval/sat-math": "math", "agieval/aqua-rat": "math",
}
BBH_CATEGORY: dict[str, str] = {
    "boolean_expressions": "symbolic_algorithmic", "causal_judgement": "commonsense",
    "date_understanding": "spatial_temporal", "disambiguation_qa": "meta_linguistic",
    "dyck_languages": "symbolic_algorithmic", "formal_fallacies": "logical_reasoning",
    "geometric_shapes": "spatial_temporal", "hyperbaton": "meta_linguistic",
    "logical_deduction_five_objects": "logical_reasoning", "logical_deduction_seven_objects": "logical_reasoning",
    "logical_deduction_three_objects": "logical_reasoning", "movie_recommendation": "encyclopedic_knowledge",
    "multistep_arithmetic_two": "math", "navigate": "spatial_temporal", "object_counting": "symbolic_algorithmic",
    "penguins_in_a_table": "context_aware_qa", "reasoning_about_colored_objects": "context_aware_qa",
    "ruin_names": "meta_linguistic", "salient_translation_error_detection": "meta_linguistic",
    "snarks": "text_classification", "sports_understanding": "commonsense",
    "temporal_sequences": "spatial_temporal", "tracking_shuffled_objects_five_objects": "symbolic_algorithmic",
    "tracking_shuffled_objects_seven_objects": "symbolic_algorithmic",
    "tracking_shuffled_objects_three_objects": "symbolic_algorithmic", "web_of_lies": "logical_reasoning",
    "word_sorting": "symbolic_algorithmic",
}


def dataset_category(name: str, overrides: dict[str, str] | None = None) -> str | None:
    """Category of a cotbench dataset name ('gsm8k', 'bbh/word_sorting', 'contexthub/deductive_l1', ...)."""
    n = name.strip().lower()
    if overrides and n in overrides:
        return overrides[n]
    if n in DATASET_CATEGORY:
        return DATASET_CATEGORY[n]
    head, _, tail = n.partition("/")
    if head == "bbh" and tail:
        return BBH_CATEGORY.get(tail)
    if head == "contexthub":
        return "logical_reasoning"
    return None


_PAIRS = (("zero", "zs_direct", "zs_cot"), ("few", "fs_direct", "fs_cot"))
SUMMARY_REQUIRED = ("model", "dataset", "setting", "n", "accuracy")


def _cell(v) -> float | None:
    """A summary.csv number: None when the cell is empty, NaN when it is not a number."""
    if isinstance(v, str):
        return _pct(v)
    return None if pd.isna(v) else float(v)


def import_runs(run_dirs: Iterable[str | Path], *, category_overrides: dict[str, str] | None = None
                ) -> tuple[list[dict], ImportReport]:
    """Turn cotbench run results into effect rows (origin 'cotbench_run', scores x100)."""
    dirs = [Path(d) for d in run_dirs]
    rep = ImportReport(", ".join(str(d) for d in dirs) or "(no run directories)")
    if not dirs:
        raise ValueError("give at least one run directory")
    overrides = {}
    for k, v in (category_overrides or {}).items():
        cid = v if v in CATEGORIES else category_id(v)
        if cid is None:
            raise ValueError(f"category override {k}={v}: unknown category")
        overrides[k.strip().lower()] = cid
    rows: list[dict] = []
    for run in dirs:
        summ = run / "summary.csv"
        df = read_summary(run, required=SUMMARY_REQUIRED)
        man = read_manifest(run) if (run / "manifest.json").is_file() else {}
        cfg = man.get("config", {}) if isinstance(man.get("config"), dict) else {}
        k_cfg = cfg.get("fewshot_k")
        year = str(man.get("started_iso", ""))[:4]
        run_id = run.resolve().name
        rep.read += len(df)
        lines = {i: i + 2 for i in df.index}
        seen: dict[tuple, int] = {}
        cells: dict[tuple[str, str, str], int] = {}
        for i, r in df.iterrows():
            key = (r["model"].strip(), r["dataset"].strip(), r["setting"].strip())
            if key in cells:
                rep.drop(f"{summ}:{lines[i]}", f"repeats model/dataset/setting of line {lines[cells[key]]}")
                continue
            cells[key] = i
        used: set[int] = set()
        for (model, dataset, setting), i in sorted(cells.items()):
            for shots, d_set, c_set in _PAIRS:
                if setting != c_set:
                    continue
                j = cells.get((model, dataset, d_set))
                if j is None:
                    continue
                used |= {i, j}
                where = f"{summ}:{lines[j]}+{lines[i]}"
                d_acc, c_acc = _cell(df.at[j, "accuracy"]), _cell(df.at[i, "accuracy"])
                if d_acc is None or c_acc is None or math.isnan(d_acc) or math.isnan(c_acc):
                    rep.drop(where, f"{model} {dataset}: accuracy missing or not a number")
                    continue
                if not (0 <= d_acc <= 1 and 0 <= c_acc <= 1):
                    rep.drop(where, f"{model} {dataset}: accuracy outside 0-1 ({d_acc:g}, {c_acc:g})")
                    continue
                cat = dataset_category(dataset, overrides)
                if cat is None:
                    rep.drop(where, f"no category for dataset {dataset!r} (add --map {dataset}=CATEGORY)")
                    continue
                nd, nc = _cell(df.at[j, "n"]), _cell(df.at[i, "n"])
                notes = [f"{d_set} vs {c_set} from summary.csv"]
                n_items: int | str = ""
                if nd and nc and not (math.isnan(nd) or math.isnan(nc)):
                    n_items = int(min(nd, nc))
                    if nd != nc:
                        notes.append(f"arms scored on different n ({int(nd)} direct, {int(nc)} CoT); n_items = smaller")
                c, d = round(c_acc * 100, 4), round(d_acc * 100, 4)
                key2 = (model, dataset, shots)
                if key2 in seen:
                    continue
                seen[key2] = i
                rows.append({
                    "effect_id": "", "paper_id": f"cotbench:{run_id}", "title": f"cotbench run {run_id}",
                    "venue": "cotbench", "year": year, "source_locator": f"summary.csv lines {lines[j]} and {lines[i]}",
                    "source_url": str(run), "dataset": dataset, "category": cat, "model": model,
                    "model_family": "", "shots": shots,
                    "k": (k_cfg if shots == "few" and isinstance(k_cfg, int) and k_cfg > 0 else ""),
                    # a run pairs zs_direct/zs_cot and fs_direct/fs_cot with the same fewshot_k
                    "direct_shots": shots, "cot_shots": shots,
                    "direct_k": (k_cfg if shots == "few" and isinstance(k_cfg, int) and k_cfg > 0 else ""),
                    "cot_k": (k_cfg if shots == "few" and isinstance(k_cfg, int) and k_cfg > 0 else ""),
                    "split": "unknown", "pooled": "false",
                    "metric": "accuracy", "cot_score": c, "direct_score": d, "delta": round(c - d, 4),
                    "n_items": n_items, "origin": "cotbench_run", "coder_notes": "; ".join(notes),
                })
        for i in df.index:
            if i in used or cells.get((df.at[i, "model"].strip(), df.at[i, "dataset"].strip(),
                                       df.at[i, "setting"].strip())) != i:
                continue
            s = df.at[i, "setting"].strip()
            partner = {"zs_direct": "zs_cot", "zs_cot": "zs_direct", "fs_direct": "fs_cot", "fs_cot": "fs_direct"}.get(s)
            why = (f"setting {s!r} is not part of a direct/CoT pair" if partner is None
                   else f"{df.at[i, 'model']} {df.at[i, 'dataset']}: {s} has no {partner} row to pair with")
            rep.drop(f"{summ}:{lines[i]}", why)
    for j, row in enumerate(rows, 1):
        row["effect_id"] = f"R{j:04d}"
    rep.kept = len(rows)
    return [{c: r.get(c, "") for c in ALL_COLUMNS} for r in rows], rep
