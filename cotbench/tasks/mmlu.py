"""MMLU (cais/mmlu ``all`` test, 14,042) and MMLU-Pro (TIGER-Lab/MMLU-Pro test, 12,032).

MMLU keeps ``subject`` in metadata; its few-shot exemplars in ``prompts/mmlu.yaml`` are dev-split rows
drawn with a fixed seed (see :func:`draw_exemplars`; a test checks them against the dev split).
MMLU-Pro has 1-10 options (letters A-J); ``category`` and ``src`` go to metadata.
"""
from __future__ import annotations

import random
from typing import Any

from cotbench.records import Example
from cotbench.tasks.base import HubSource, Task, require
from cotbench.tasks.common import check_letter, gold_letter, mirror

MMLU_FEWSHOT_SEED = 2024


def draw_exemplars(rows: list[dict[str, Any]], k: int, seed: int) -> list[int]:
    """Row indices of a fixed-seed few-shot draw from a train/dev split (sorted, for stable prompts)."""
    return sorted(random.Random(seed).sample(range(len(rows)), k))


def mmlu_example(row: dict[str, Any], i: int) -> Example:
    choices = tuple(str(c) for c in require(row, "choices", list))
    subject = require(row, "subject")
    return Example(
        id=f"mmlu/{i}", dataset="mmlu", question=require(row, "question").strip(),
        gold=gold_letter(require(row, "answer", (int, str)), len(choices), "answer"),
        answer_type="choice", choices=choices,
        metadata={"subject": subject, "subject_name": subject.replace("_", " ")},
    )


def mmlu_pro_example(row: dict[str, Any], i: int) -> Example:
    options = tuple(str(c) for c in require(row, "options", list))
    if not 1 <= len(options) <= 10:
        raise ValueError(f"field 'options' has {len(options)} entries (expected 1-10)")
    gold = check_letter(require(row, "answer"), len(options), "answer")
    if "answer_index" in row and row["answer_index"] is not None:
        if gold_letter(row["answer_index"], len(options), "answer_index") != gold:
            raise ValueError(f"fields 'answer' ({gold}) and 'answer_index' ({row['answer_index']}) disagree")
    return Example(
        id=f"mmlu_pro/{row.get('question_id', i)}", dataset="mmlu_pro",
        question=require(row, "question").strip(), gold=gold, answer_type="choice", choices=options,
        metadata={"category": require(row, "category"), "src": row.get("src", "")},
    )


TASKS = [
    Task(
        name="mmlu", group="knowledge", answer_type="choice",
        hub=HubSource("cais/mmlu", "all", "test"),
        local_files=mirror("mmlu/test.jsonl"),
        to_example=mmlu_example, prompt_file="mmlu", max_tokens={"direct": 16, "cot": 768},
        expected_count=14042, stratum="subject",
        description="57-subject multiple-choice knowledge exam (4 options); subject in metadata.",
    ),
    Task(
        name="mmlu_pro", group="knowledge", answer_type="choice",
        hub=HubSource("TIGER-Lab/MMLU-Pro", None, "test"),
        local_files=mirror("mmlu_pro/test.jsonl"),
        to_example=mmlu_pro_example, prompt_file="mmlu_pro", max_tokens={"direct": 16, "cot": 1024},
        expected_count=12032, stratum="category",
        description="Harder MMLU successor with up to 10 options (A-J), 14 categories.",
    ),
]
