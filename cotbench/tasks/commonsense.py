"""Commonsense group: CommonsenseQA, StrategyQA, Social IQa, PIQA, WinoGrande.

All but StrategyQA are multiple choice (gold = option letter). StrategyQA is yes/no (labels Yes/No);
the study used the official ``train_filtered`` release (2,821), which is not on the hub, so it loads
only from ``--data-dir`` (``strategyqa/train_filtered.jsonl`` in the hub-schema mirror, or the original
``strategyqa/strategyqa_train_filtered.json``).
"""
from __future__ import annotations

from typing import Any

from cotbench.records import DataError, Example, read_rows_any
from cotbench.tasks.base import HubSource, Task, require
from cotbench.tasks.common import (
    choices_dict,
    gold_letter,
    key_to_letter,
    mirror,
    original,
)

MC_BUDGET = {"direct": 16, "cot": 512}


def csqa_example(row: dict[str, Any], i: int) -> Example:
    texts, labels = choices_dict(row)
    return Example(
        id=f"commonsenseqa/{row.get('id') or i}", dataset="commonsenseqa",
        question=require(row, "question").strip(), choices=texts, answer_type="choice",
        gold=key_to_letter(require(row, "answerKey"), labels, "answerKey"),
        metadata={"concept": row.get("question_concept", "")},
    )


def siqa_example(row: dict[str, Any], i: int) -> Example:
    choices = tuple(require(row, k) for k in ("answerA", "answerB", "answerC"))
    return Example(
        id=f"siqa/{i}", dataset="siqa",
        question=f"{require(row, 'context').strip()} {require(row, 'question').strip()}",
        choices=choices, answer_type="choice",
        gold=gold_letter(int(require(row, "label", (str, int))) - 1, 3, "label"),
    )


def piqa_example(row: dict[str, Any], i: int) -> Example:
    return Example(
        id=f"piqa/{i}", dataset="piqa", question=require(row, "goal").strip(),
        choices=(require(row, "sol1"), require(row, "sol2")), answer_type="choice",
        gold=gold_letter(require(row, "label", (int, str)), 2, "label"),
    )


def winogrande_example(row: dict[str, Any], i: int) -> Example:
    sentence = require(row, "sentence")
    if "_" not in sentence:
        raise DataError("field 'sentence' has no '_' blank")
    return Example(
        id=f"winogrande/{i}", dataset="winogrande", question=sentence.strip(),
        choices=(require(row, "option1"), require(row, "option2")), answer_type="choice",
        gold=gold_letter(int(require(row, "answer", (str, int))) - 1, 2, "answer"),
    )


def strategyqa_example(row: dict[str, Any], i: int) -> Example:
    ans = require(row, "answer", bool)
    return Example(
        id=f"strategyqa/{row.get('qid', i)}", dataset="strategyqa", question=require(row, "question").strip(),
        gold="Yes" if ans else "No", answer_type="label",
        metadata={"labels": ["Yes", "No"], "term": row.get("term", "")},
    )


TASKS = [
    Task(
        name="commonsenseqa", group="commonsense", answer_type="choice",
        hub=HubSource("tau/commonsense_qa", None, "validation"),
        local_files=mirror("commonsense_qa/validation.jsonl"),
        to_example=csqa_example, prompt_file="commonsenseqa", max_tokens=MC_BUDGET, expected_count=1221,
        description="CommonsenseQA: 5-option questions about everyday concepts.",
    ),
    Task(
        name="strategyqa", group="commonsense", answer_type="label", labels=("Yes", "No"),
        hub=None,
        local_files=mirror("strategyqa/train_filtered.jsonl") + original("strategyqa/strategyqa_train_filtered.json"),
        to_example=strategyqa_example, read_rows=read_rows_any, prompt_file="strategyqa",
        max_tokens=MC_BUDGET, expected_count=2821,
        description="StrategyQA (official train_filtered): yes/no questions needing implicit multi-step facts.",
    ),
    Task(
        name="siqa", group="commonsense", answer_type="choice",
        hub=HubSource("allenai/social_i_qa", None, "validation"),
        local_files=mirror("social_i_qa/validation.jsonl"),
        to_example=siqa_example, prompt_file="siqa", max_tokens=MC_BUDGET, expected_count=1954,
        description="Social IQa: 3-option questions about people's motives, reactions and feelings.",
    ),
    Task(
        name="piqa", group="commonsense", answer_type="choice",
        hub=HubSource("ybisk/piqa", None, "validation"),
        local_files=mirror("piqa/validation.jsonl"),
        to_example=piqa_example, prompt_file="piqa", max_tokens=MC_BUDGET, expected_count=1838,
        description="PIQA: pick the more sensible of two solutions to a physical goal.",
    ),
    Task(
        name="winogrande", group="commonsense", answer_type="choice",
        hub=HubSource("allenai/winogrande", "winogrande_debiased", "validation"),
        local_files=mirror("winogrande/validation.jsonl"),
        to_example=winogrande_example, prompt_file="winogrande", max_tokens=MC_BUDGET, expected_count=1267,
        description="WinoGrande: fill the blank with one of two entities (pronoun-style coreference).",
    ),
]
