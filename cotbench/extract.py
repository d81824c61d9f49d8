"""Answer extractors: pure functions from model text to a canonical answer (or None = unparseable).

FIRST VERSION (harness bootstrap) — the datasets work extends this module.
Public API used by the runner: ``extract_answer(text, example, labels)`` and ``score(example, extraction)``.
"""
from __future__ import annotations

import re

from cotbench.types import Example, Extraction

THINK_RE = re.compile(r"<think>.*?(</think>|$)", re.S)


def strip_think(text: str) -> str:
    """Drop reasoning-model <think> blocks (a truncated block drops everything after <think>)."""
    return THINK_RE.sub("", text)


_NUM = r"-?\$?\d[\d,]*(?:\.\d+)?"


def _norm_number(s: str) -> str | None:
    s = s.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        v = float(s)
    except ValueError:
        return None
    return str(int(v)) if v == int(v) else repr(v)


def extract_number(text: str) -> Extraction:
    t = strip_think(text)
    m = re.findall(r"answer is[:\s]*\**\s*(" + _NUM + ")", t, re.I)
    if m:
        return Extraction(_norm_number(m[-1]), "the_answer_is")
    nums = re.findall(_NUM, t)
    if nums:
        return Extraction(_norm_number(nums[-1]), "last_number")
    return Extraction(None, "none")


def extract_choice(text: str, n_choices: int) -> Extraction:
    t = strip_think(text)
    letters = "ABCDEFGHIJ"[:n_choices]
    m = re.findall(r"answer is[:\s]*\**\s*\(?([" + letters + r"])\)?(?![A-Za-z])", t, re.I)
    if m:
        return Extraction(m[-1].upper(), "the_answer_is")
    m = re.match(r"\s*\(?([" + letters + r"])\)?(?:[.:)\s]|$)", t)
    if m:
        return Extraction(m.group(1), "leading_letter")
    return Extraction(None, "none")


def extract_answer(text: str, example: Example, labels: tuple[str, ...] | None = None) -> Extraction:
    if example.answer_type == "choice":
        return extract_choice(text, len(example.choices or ()))
    if example.answer_type == "number":
        return extract_number(text)
    raise NotImplementedError(example.answer_type)


def score(example: Example, extraction: Extraction) -> bool:
    if extraction.answer is None:
        return False
    if example.answer_type == "number":
        try:
            return abs(float(extraction.answer) - float(example.gold)) < 1e-6
        except ValueError:
            return False
    return extraction.answer == example.gold
