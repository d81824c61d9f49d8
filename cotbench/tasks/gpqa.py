"""GPQA (Idavidrein/gpqa): graduate-level science multiple choice.

The study used ``gpqa_main`` (448). Only the diamond subset (198, a strict subset of main) is in the
local mirror (``gpqa/train.jsonl``, hub schema), so local runs cover diamond. The correct answer is
always the ``Correct Answer`` column, so the four options are shuffled with a fixed per-item seed
(``f"{SHUFFLE_SEED}:{Record ID}"``) and the permutation is kept in ``metadata["permutation"]``
(option i shows source answer ``permutation[i]``; 0 = the correct one).
"""
from __future__ import annotations

import random
from typing import Any

from cotbench.records import Example
from cotbench.tasks.base import HubSource, Task, require
from cotbench.tasks.common import mirror

SHUFFLE_SEED = 0
_COLS = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")


def permutation_for(record_id: str) -> list[int]:
    perm = list(range(4))
    random.Random(f"{SHUFFLE_SEED}:{record_id}").shuffle(perm)
    return perm


def gpqa_example(row: dict[str, Any], i: int) -> Example:
    answers = [str(require(row, c, (str, int, float))).strip() for c in _COLS]
    rid = str(row.get("Record ID") or i)
    perm = permutation_for(rid)
    return Example(
        id=f"gpqa/{rid}", dataset="gpqa", question=require(row, "Question").strip(),
        choices=tuple(answers[p] for p in perm), answer_type="choice", gold="ABCD"[perm.index(0)],
        metadata={"permutation": perm, "subdomain": row.get("Subdomain", ""),
                  "domain": row.get("High-level domain", "")},
    )


TASKS = [
    Task(
        name="gpqa", group="mathematical", answer_type="choice",
        hub=HubSource("Idavidrein/gpqa", "gpqa_main", "train"),
        local_files=mirror("gpqa/train.jsonl"), to_example=gpqa_example, prompt_file="gpqa",
        max_tokens={"direct": 16, "cot": 1024}, expected_count=448, stratum="subdomain",
        description="GPQA: Google-proof graduate science questions, 4 options shuffled with a fixed seed.",
    )
]
