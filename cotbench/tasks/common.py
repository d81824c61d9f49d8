"""Helpers shared by the dataset modules: where files may live, and small row parsers.

``--data-dir`` may point at the hub-schema mirror (``shared/data/hf``) or at the folder of original
files above it (``shared/data``). Each task therefore lists candidates in order:

* hub-schema files (``mirror``): ``<key>/<split>.jsonl`` and ``hf/<key>/<split>.jsonl``;
* original-layout files for datasets the mirror lacks (``original``): ``<path>`` and ``../<path>``.

The first candidate that exists is read, so either folder works as ``--data-dir``.
"""
from __future__ import annotations

from typing import Any

from cotbench.records import LETTERS, DataError
from cotbench.scoring.extract import normalize_number


def mirror(*paths: str) -> tuple[str, ...]:
    return tuple(c for p in paths for c in (p, f"hf/{p}"))


def original(*paths: str) -> tuple[str, ...]:
    return tuple(c for p in paths for c in (p, f"../{p}"))


def gold_letter(index: Any, n_choices: int, field: str) -> str:
    """Letter for a 0-based gold index, checked against the number of options."""
    try:
        i = int(index)
    except (TypeError, ValueError):
        raise DataError(f"field {field!r}: expected an option index, got {index!r}") from None
    if not 0 <= i < n_choices:
        raise DataError(f"field {field!r}: index {i} out of range for {n_choices} options")
    return LETTERS[i]


def check_letter(value: Any, n_choices: int, field: str) -> str:
    s = str(value).strip().strip("()").upper()
    if len(s) != 1 or s not in LETTERS[:n_choices]:
        raise DataError(f"field {field!r}: {value!r} is not one of {LETTERS[:n_choices]}")
    return s


def number_gold(value: Any, field: str) -> str:
    v = normalize_number(str(value))
    if v is None:
        raise DataError(f"field {field!r}: {value!r} is not a number")
    return v


def choices_dict(row: dict[str, Any], field: str = "choices") -> tuple[tuple[str, ...], list[str]]:
    """HF ``{"label": [...], "text": [...]}`` choices -> (texts, labels)."""
    ch = row.get(field)
    if not isinstance(ch, dict) or not isinstance(ch.get("text"), list) or not isinstance(ch.get("label"), list):
        raise DataError(f"field {field!r}: expected {{'label': [...], 'text': [...]}}")
    if len(ch["text"]) != len(ch["label"]):
        raise DataError(f"field {field!r}: {len(ch['text'])} texts but {len(ch['label'])} labels")
    return tuple(str(t) for t in ch["text"]), [str(x) for x in ch["label"]]


def key_to_letter(key: Any, labels: list[str], field: str) -> str:
    """Gold key given as one of the row's own labels ("C" or, in some ARC rows, "3") -> letter by position."""
    k = str(key).strip()
    if k not in labels:
        raise DataError(f"field {field!r}: {key!r} is not one of the choice labels {labels}")
    return LETTERS[labels.index(k)]
