"""The literature database of CoT-vs-direct comparisons (``meta_analysis/cot_effects.csv``).

``load()`` returns it as a typed, validated DataFrame; ``validate()`` checks a file and returns reports.
"""
from __future__ import annotations

from cotbench.meta.db import load, query, validate

__all__ = ["load", "validate", "query"]
