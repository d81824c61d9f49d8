"""AGIEval LSAT-AR, LSAT-LR and LSAT-RC (the study's three AGIEval tasks).

The study loaded AGIEval v1's own JSONL files, which are not a hub dataset, so these tasks load from
``--data-dir`` only (``agieval/<task>.jsonl``; the mirror and the original layout agree).
Options come as "(A) text"; the prefix is stripped to get the option text.
"""
from __future__ import annotations

import re
from typing import Any

from cotbench.records import DataError, Example
from cotbench.tasks.base import Task, require
from cotbench.tasks.common import check_letter, mirror

_PREFIX = re.compile(r"^\s*\(?([A-J])\)\s*")


def _agieval(name: str):
    def to_example(row: dict[str, Any], i: int) -> Example:
        options = require(row, "options", list)
        texts = []
        for j, opt in enumerate(options):
            m = _PREFIX.match(str(opt))
            if not m or m.group(1) != "ABCDEFGHIJ"[j]:
                raise DataError(f"field 'options'[{j}]: {str(opt)[:40]!r} does not start with ({'ABCDEFGHIJ'[j]})")
            texts.append(str(opt)[m.end():].strip())
        passage = (row.get("passage") or "").strip()
        question = require(row, "question").strip()
        return Example(
            id=f"agieval/{name}/{i}", dataset=f"agieval/{name}",
            question=f"{passage}\n\n{question}" if passage else question,
            choices=tuple(texts), answer_type="choice",
            gold=check_letter(require(row, "label"), len(texts), "label"),
        )

    return to_example


TASKS = [
    Task(
        name=f"agieval/{name}", group="soft_reasoning", answer_type="choice", hub=None,
        local_files=mirror(f"agieval/{name}.jsonl"), to_example=_agieval(name), prompt_file="agieval",
        max_tokens={"direct": 16, "cot": 1024}, expected_count=n, fewshot=False, description=desc,
    )
    for name, n, desc in [
        ("lsat-ar", 230, "AGIEval LSAT analytical reasoning: constraint puzzles (5 options)."),
        ("lsat-lr", 510, "AGIEval LSAT logical reasoning: argument analysis (5 options)."),
        ("lsat-rc", 269, "AGIEval LSAT reading comprehension: long passages (5 options)."),
    ]
]
