"""MATH (Hendrycks et al.): competition problems with LaTeX answers, scored through math-verify.

The study loaded ``lighteval/MATH`` (config ``all``, test, 5,000). Gold is the ``answer`` column when
the mirror has one (the local copy does), otherwise the last ``\\boxed{}`` of ``solution``.
"""
from __future__ import annotations

from typing import Any

from cotbench.records import DataError, Example
from cotbench.scoring.extract import _boxed_contents
from cotbench.tasks.base import HubSource, Task, require
from cotbench.tasks.common import mirror


def math_example(row: dict[str, Any], i: int) -> Example:
    gold = row.get("answer")
    if gold is None:
        boxes = _boxed_contents(require(row, "solution"))
        if not boxes:
            raise DataError("field 'solution' has no \\boxed{} answer and there is no 'answer' field")
        gold = boxes[-1]
    gold = str(gold).strip()
    if not gold:
        raise DataError("field 'answer' is empty")
    return Example(
        id=f"math/{i}", dataset="math", question=require(row, "problem").strip(), gold=gold,
        answer_type="math", metadata={"type": row.get("type") or "", "level": row.get("level") or ""},
    )


TASKS = [
    Task(
        name="math", group="mathematical", answer_type="math",
        hub=HubSource("lighteval/MATH", "all", "test"),
        local_files=mirror("math/test.jsonl"), to_example=math_example, prompt_file="math",
        max_tokens={"direct": 64, "cot": 1024}, expected_count=5000, stratum="type",
        description="MATH: competition mathematics, LaTeX answers checked for equivalence with math-verify.",
    )
]
