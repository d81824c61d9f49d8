"""GSM8K (openai/gsm8k main test, 1,319) and GSM8K-Hard (reasoning-machines/gsm-hard train, 1,319).

GSM8K's gold is the number after ``####`` in the worked solution, thousands separators removed.
GSM-Hard replaces the numbers with larger ones; its ``target`` is a float (a few are wrong upstream),
scored with :func:`cotbench.scoring.extract.number_equal` (exact, or matching the model's stated rounding).
Both use ``prompts/gsm8k.yaml``; its exemplars are written for cotbench because the GSM8K train
split is not in the local mirror.
"""
from __future__ import annotations

from typing import Any

from cotbench.records import DataError, Example
from cotbench.tasks.base import HubSource, Task, require
from cotbench.tasks.common import mirror, number_gold

BUDGET = {"direct": 32, "cot": 768}


def gsm8k_example(row: dict[str, Any], i: int) -> Example:
    solution = require(row, "answer")
    if "####" not in solution:
        raise DataError("field 'answer' has no '#### <number>' final answer")
    gold = number_gold(solution.rsplit("####", 1)[1].strip(), "answer")
    return Example(id=f"gsm8k/{i}", dataset="gsm8k", question=require(row, "question").strip(),
                   gold=gold, answer_type="number")


def gsm8k_hard_example(row: dict[str, Any], i: int) -> Example:
    gold = number_gold(repr(float(require(row, "target", (int, float)))), "target")
    return Example(id=f"gsm8k_hard/{i}", dataset="gsm8k_hard", question=require(row, "input").strip(),
                   gold=gold, answer_type="number")


TASKS = [
    Task(
        name="gsm8k", group="mathematical", answer_type="number",
        hub=HubSource("openai/gsm8k", "main", "test"),
        local_files=mirror("gsm8k/test.jsonl"),
        to_example=gsm8k_example, prompt_file="gsm8k", max_tokens=BUDGET, expected_count=1319, plan_prompt="plan_gsm8k",
        description="Grade-school math word problems; numeric answer after '####'.",
    ),
    Task(
        name="gsm8k_hard", group="mathematical", answer_type="number",
        hub=HubSource("reasoning-machines/gsm-hard", None, "train"),
        local_files=mirror("gsm8k_hard/train.jsonl"),
        to_example=gsm8k_hard_example, prompt_file="gsm8k", max_tokens=BUDGET, expected_count=1319,
        plan_prompt="plan_gsm8k",
        description="GSM8K with larger numbers (GSM-Hard); float targets, rounding-tolerant match.",
    ),
]
