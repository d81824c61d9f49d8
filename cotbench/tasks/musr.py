"""MuSR: murder mysteries, object placements and team allocation (long narratives, multiple choice).

Sources, tried in order under ``--data-dir``: the hub schema of ``TAUR-Lab/MuSR`` (``musr/<split>.jsonl``
with ``narrative``, ``question``, ``choices`` and ``answer_index``); the original MuSR release
(``musr/<domain>.json``, a list of ``{"context", "questions": [...]}``); and the MuSR viewer samples
(``musr/small_<domain>.json``, same schema). Only the samples are in the local data (5, 20 and 5
questions), so local runs are loader checks, not the study's evaluation (250 / 256 / 250).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from cotbench.records import DataError, Example, read_json, read_jsonl
from cotbench.tasks.base import HubSource, Task, require
from cotbench.tasks.common import gold_letter, mirror, original

HINTS = {
    "murder_mysteries": (
        "The murderer is the suspect who had all three of means (access to the weapon), motive (a reason "
        "to kill) and opportunity (access to the crime scene); an innocent suspect may have one or two."
    ),
    "object_placements": (
        "Track where the person last saw the object: they only know about a move if they saw it happen."
    ),
    "team_allocation": (
        "Use what the story says about each person's skill at each task and how well the people work "
        "together to find the assignment that gets both tasks done best."
    ),
}


def read_musr(path: Path) -> list[dict[str, Any]]:
    """Hub-schema JSONL as is; original/viewer JSON flattened to one row per question."""
    if Path(path).suffix == ".jsonl":
        return read_jsonl(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of stories")
    rows = []
    for s, story in enumerate(data):
        if not isinstance(story, dict) or not isinstance(story.get("questions"), list):
            raise DataError(f"{path}: story {s + 1}: missing field 'questions'")
        for q in story["questions"]:
            rows.append({"narrative": story.get("context"), "question": q.get("question"),
                         "choices": q.get("choices"), "answer_index": q.get("answer"), "story": s})
    return rows


def _musr(domain: str):
    def to_example(row: dict[str, Any], i: int) -> Example:
        choices = require(row, "choices", (list, str))
        if isinstance(choices, str):  # the hub stores the list as its Python repr
            choices = ast.literal_eval(choices)
        choices = tuple(str(c) for c in choices)
        return Example(
            id=f"musr/{domain}/{i}", dataset=f"musr/{domain}",
            question=f"{require(row, 'narrative').strip()}\n\n{require(row, 'question').strip()}",
            choices=choices, answer_type="choice",
            gold=gold_letter(require(row, "answer_index", (int, str)), len(choices), "answer_index"),
            metadata={"hint": HINTS[domain]},
        )

    return to_example


TASKS = [
    Task(
        name=f"musr/{domain}", group="soft_reasoning", answer_type="choice",
        hub=HubSource("TAUR-Lab/MuSR", None, domain),
        local_files=mirror(f"musr/{domain}.jsonl") + original(f"musr/{orig}.json", f"musr/small_{orig}.json"),
        to_example=_musr(domain), read_rows=read_musr, prompt_file="musr",
        max_tokens={"direct": 16, "cot": 1024}, fewshot=False, expected_count=n, description=desc,
    )
    for domain, orig, n, desc in [
        ("murder_mysteries", "murder_mystery", 250, "MuSR murder mysteries: who is the most likely murderer?"),
        ("object_placements", "object_placements", 256,
         "MuSR object placements: where does a character believe an object is?"),
        ("team_allocation", "team_allocation", 250, "MuSR team allocation: assign people to two tasks."),
    ]
]
