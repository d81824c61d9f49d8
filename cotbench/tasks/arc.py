"""ARC-Easy and ARC-Challenge (allenai/ai2_arc).

The study used the *validation* splits (570 / 299). The local mirror only has the *test* splits
(2,376 / 1,172), so the loader tries ``<key>/validation.jsonl`` first and falls back to
``<key>/test.jsonl``; the hub source stays the study's validation split. Hub ``answerKey`` values
may be digits ("1".."4"); they are mapped to letters by position.
"""
from __future__ import annotations

from typing import Any

from cotbench.records import Example
from cotbench.tasks.base import HubSource, Task, require
from cotbench.tasks.common import choices_dict, key_to_letter, mirror


def _arc(dataset: str):
    def to_example(row: dict[str, Any], i: int) -> Example:
        texts, labels = choices_dict(row)
        return Example(
            id=f"{dataset}/{row.get('id') or i}", dataset=dataset, question=require(row, "question").strip(),
            choices=texts, answer_type="choice", gold=key_to_letter(require(row, "answerKey"), labels, "answerKey"),
        )

    return to_example


TASKS = [
    Task(
        name=name, group="knowledge", answer_type="choice",
        hub=HubSource("allenai/ai2_arc", config, "validation"),
        local_files=mirror(f"{name}/validation.jsonl", f"{name}/test.jsonl"),
        to_example=_arc(name), prompt_file="arc", max_tokens={"direct": 16, "cot": 512}, expected_count=n,
        description=desc,
    )
    for name, config, n, desc in [
        ("arc_easy", "ARC-Easy", 570, "ARC-Easy: grade-school science multiple choice (easy set)."),
        ("arc_challenge", "ARC-Challenge", 299,
         "ARC-Challenge: grade-school science questions that retrieval and co-occurrence methods miss."),
    ]
]
