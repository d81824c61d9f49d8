"""BIG-Bench Hard: 27 tasks (``bbh/<task>``), each with its own answer format.

Hub: ``maveriq/bigbenchhard`` (one config per task, split ``train``), as in the study; the mirror holds
``bbh/<task>.jsonl`` in the same ``input``/``target`` schema. Answer types: option letters "(A)".. for
multiple-choice tasks (options parsed from the ``Options:`` block; the question text keeps them as
written), True/False, Yes/No, valid/invalid labels, integers, and exact text for Dyck closings and
word sorting (whitespace-normalised exact match).

Three upstream multiple-choice rows have a target that is not an option letter (the options were split
at commas: movie_recommendation row 164, ruin_names rows 100 and 145, 1-based). They cannot be scored
by letter and are dropped by ``row_filter``, which the study's loader also did (it skipped rows whose
target matched no option). Upstream snarks row 88 (0-based) is cut off after one option; it is kept.
"""
from __future__ import annotations

import re
from typing import Any

from cotbench.records import AnswerType, DataError, Example
from cotbench.tasks.base import HubSource, Task, require
from cotbench.tasks.common import mirror

MC = ("choice", None)
SPEC: dict[str, tuple[AnswerType, tuple[str, ...] | None]] = {
    "boolean_expressions": ("label", ("True", "False")),
    "causal_judgement": ("label", ("Yes", "No")),
    "date_understanding": MC,
    "disambiguation_qa": MC,
    "dyck_languages": ("text", None),
    "formal_fallacies": ("label", ("valid", "invalid")),
    "geometric_shapes": MC,
    "hyperbaton": MC,
    "logical_deduction_five_objects": MC,
    "logical_deduction_seven_objects": MC,
    "logical_deduction_three_objects": MC,
    "movie_recommendation": MC,
    "multistep_arithmetic_two": ("number", None),
    "navigate": ("label", ("Yes", "No")),
    "object_counting": ("number", None),
    "penguins_in_a_table": MC,
    "reasoning_about_colored_objects": MC,
    "ruin_names": MC,
    "salient_translation_error_detection": MC,
    "snarks": MC,
    "sports_understanding": ("label", ("yes", "no")),
    "temporal_sequences": MC,
    "tracking_shuffled_objects_five_objects": MC,
    "tracking_shuffled_objects_seven_objects": MC,
    "tracking_shuffled_objects_three_objects": MC,
    "web_of_lies": ("label", ("Yes", "No")),
    "word_sorting": ("text", None),
}
# full eval-set sizes, and the number of rows dropped for an unusable target
COUNTS = {t: 250 for t in SPEC} | {"causal_judgement": 187, "penguins_in_a_table": 146, "snarks": 178}
DROPPED = {"movie_recommendation": 1, "ruin_names": 2}

_LETTER_TARGET = re.compile(r"^\(([A-Z])\)$")
_OPTION = re.compile(r"^\(([A-Z])\)\s?(.*)$")


def parse_options(text: str) -> tuple[str, ...]:
    """Option texts from the ``Options:`` block, checked to run (A), (B), ... in order."""
    if "Options:" not in text:
        raise DataError("field 'input' has no 'Options:' block")
    block = text.rsplit("Options:", 1)[1].strip().splitlines()
    opts = []
    for n, line in enumerate(block):
        m = _OPTION.match(line.strip())
        if not m or ord(m.group(1)) - 65 != n:
            raise DataError(f"field 'input': option line {n + 1} {line[:30]!r} is not ({chr(65 + n)}) ...")
        opts.append(m.group(2).strip())
    return tuple(opts)


def answer_format(kind: AnswerType, labels: tuple[str, ...] | None, task: str) -> str:
    if kind == "choice":
        return '"The answer is (X)." where X is the letter of the correct option'
    if kind == "label":
        return f'"The answer is Y." where Y is {" or ".join(labels or ())}'
    if kind == "number":
        return '"The answer is N." where N is a number'
    if task == "dyck_languages":
        return '"The answer is S." where S is the closing brackets that complete the sequence, separated by spaces'
    return '"The answer is W." where W is the sorted words separated by single spaces'


def _bbh(task: str):
    kind, labels = SPEC[task]
    fmt = answer_format(kind, labels, task)

    def to_example(row: dict[str, Any], i: int) -> Example:
        text, target = require(row, "input"), require(row, "target").strip()
        meta: dict[str, Any] = {"task": task, "answer_format": fmt}
        choices = None
        if kind == "choice":
            choices = parse_options(text)
            m = _LETTER_TARGET.match(target)
            if not m or ord(m.group(1)) - 65 >= len(choices):
                raise DataError(f"field 'target': {target!r} is not an option letter")
            target = m.group(1)
        elif kind == "label":
            if target not in (labels or ()):
                raise DataError(f"field 'target': {target!r} is not one of {labels}")
            meta["labels"] = list(labels or ())
        elif kind == "number":
            int(target)  # a ValueError here names the row
        else:
            meta["text_match"] = "exact"
        return Example(id=f"bbh/{task}/{i}", dataset=f"bbh/{task}", question=text.strip(), gold=target,
                       answer_type=kind, choices=choices, metadata=meta)

    return to_example


def _keep_letter_targets(row: dict[str, Any]) -> bool:
    return bool(_LETTER_TARGET.match(str(row.get("target", "")).strip()))


TASKS = [
    Task(
        name=f"bbh/{task}", group="symbolic", answer_type=SPEC[task][0], labels=SPEC[task][1],
        hub=HubSource("maveriq/bigbenchhard", task, "train"),
        local_files=mirror(f"bbh/{task}.jsonl"), to_example=_bbh(task), prompt_file="bbh",
        max_tokens={"direct": 96 if task in ("word_sorting", "dyck_languages") else 24, "cot": 1024},
        fewshot=False, expected_count=COUNTS[task] - DROPPED.get(task, 0),
        row_filter=_keep_letter_targets if task in DROPPED else None,
        description=f"BIG-Bench Hard {task.replace('_', ' ')} ({SPEC[task][0]} answers).",
    )
    for task in SPEC
]
