"""Column schema and controlled vocabularies of the CoT effect database (``meta_analysis/cot_effects.csv``).

The column names are fixed (other modules and the statistics code rely on them); new columns may be
added at the end. ``meta_analysis/codebook.md`` is the human-readable version of this file.
"""
from __future__ import annotations

import re

__all__ = [
    "COLUMNS", "SCREENING_COLUMNS", "CATEGORIES", "CATEGORY_LABELS", "SHOTS", "ORIGINS", "DECISIONS",
    "DUPLICATE_KEY", "category_id", "STUDY_SHEET_URL", "ARM_COLUMNS", "SPLITS", "BOOLS", "MAP_COLUMNS",
    "ALL_COLUMNS",
]

COLUMNS: tuple[str, ...] = (
    "effect_id", "paper_id", "title", "venue", "year", "source_locator", "source_url", "dataset",
    "category", "model", "model_family", "shots", "k", "metric", "cot_score", "direct_score", "delta",
    "n_items", "origin", "coder_notes",
)
# Database v2 (issue #13): per-arm settings, split and pooled flag, appended after ``coder_notes``. They
# are required in the shipped database and by ``meta merge``; a staging file without them validates with a
# warning so files written before v2 can still be checked.
ARM_COLUMNS: tuple[str, ...] = ("direct_shots", "direct_k", "cot_shots", "cot_k", "split", "pooled")
ALL_COLUMNS: tuple[str, ...] = COLUMNS + ARM_COLUMNS
SPLITS: tuple[str, ...] = ("test", "validation", "dev", "train", "unknown")
BOOLS: tuple[str, ...] = ("true", "false")
# The dataset -> category map (meta_analysis/dataset_categories.csv).
MAP_COLUMNS: tuple[str, ...] = ("dataset", "category", "note")

SCREENING_COLUMNS: tuple[str, ...] = (
    "paper_id", "title", "venue", "year", "decision", "reason", "source_url", "coder",
)

# The study's 14 task categories (Sprague et al. 2024, Sec. 3), as snake_case ids -> the study's label.
CATEGORY_LABELS: dict[str, str] = {
    "symbolic_algorithmic": "symbolic & algorithmic",
    "math": "math",
    "logical_reasoning": "logical reasoning",
    "spatial_temporal": "spatial & temporal reasoning",
    "commonsense": "commonsense reasoning",
    "encyclopedic_knowledge": "encyclopedic knowledge",
    "context_aware_qa": "context-aware QA",
    "multi_hop_qa": "multi-hop QA",
    "generation": "generation",
    "text_classification": "text classification",
    "entailment": "entailment",
    "meta_linguistic": "meta-linguistic",
    "mixed": "mixed datasets",
    "other": "other",
}
CATEGORIES: tuple[str, ...] = tuple(CATEGORY_LABELS)
SHOTS: tuple[str, ...] = ("zero", "few")
ORIGINS: tuple[str, ...] = ("literature", "cotbench_run")
DECISIONS: tuple[str, ...] = ("included", "excluded")

# Two rows with the same values here describe the same comparison.
DUPLICATE_KEY: tuple[str, ...] = ("paper_id", "dataset", "model", "shots", "metric")

# Published meta-analysis sheet of the study (linked from the authors' repository README).
STUDY_SHEET_URL = "https://docs.google.com/spreadsheets/d/1zCxzKUg9BrbNfqJY1BEmNgCN0d38jaF8ads4Dyt5nbE"

PAPER_ID_RE = re.compile(r"^(arXiv:\d{4}\.\d{4,5}(v\d+)?|doi:10\.\d{4,9}/\S+|url:https?://\S+|cotbench:\S+)$")
METRIC_RE = re.compile(r"^[a-z0-9][a-z0-9_@.\-]*$")


def _norm_label(s: str) -> str:
    s = s.split("(")[0].strip().lower().replace("&", " and ")
    return re.sub(r"[\s_\-/]+", " ", s).strip()


_ALIASES: dict[str, str] = {}
for _cid, _label in CATEGORY_LABELS.items():
    _ALIASES[_norm_label(_cid)] = _cid
    _ALIASES[_norm_label(_label)] = _cid
_ALIASES.update({
    "symbolic": "symbolic_algorithmic", "algorithmic": "symbolic_algorithmic", "logic": "logical_reasoning",
    "spatial and temporal": "spatial_temporal", "spatial reasoning": "spatial_temporal",
    "temporal reasoning": "spatial_temporal", "commonsense": "commonsense", "knowledge": "encyclopedic_knowledge",
    "context aware qa": "context_aware_qa", "multihop qa": "multi_hop_qa", "mixed": "mixed",
    "metalinguistic": "meta_linguistic", "nli": "entailment",
})


def category_id(label: str) -> str | None:
    """Map a category label (our id, the study's wording, with or without a '(...)' suffix) to our id."""
    if not isinstance(label, str) or not label.strip():
        return None
    return _ALIASES.get(_norm_label(label))
