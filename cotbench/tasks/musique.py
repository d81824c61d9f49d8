"""MuSiQue (answerable dev): multi-hop reading comprehension with free-text answers.

Hub ``dgslibisey/MuSiQue`` split ``validation``, as in the study; rows with ``answerable`` false are
dropped (the field is absent in the answerable-only release). Like the study, the context is the
question's *supporting* paragraphs. Scored by SQuAD-style exact match against the answer and its
aliases (``cotbench.scoring.extract.text_em``); token F1 is available as ``cotbench.scoring.extract.text_f1``.
MuSiQue is not in the local data; local files are looked for as ``musique/validation.jsonl`` (hub schema)
or the original ``musique/musique_ans_v1.0_dev.jsonl`` / ``musique_full_v1.0_dev.jsonl`` (same fields).
"""
from __future__ import annotations

from typing import Any

from cotbench.records import DataError, Example
from cotbench.tasks.base import HubSource, Task, require
from cotbench.tasks.common import mirror, original


def musique_example(row: dict[str, Any], i: int) -> Example:
    paragraphs = require(row, "paragraphs", list)
    support = [p for p in paragraphs if isinstance(p, dict) and p.get("is_supporting")]
    if not support:
        raise DataError("field 'paragraphs' has no supporting paragraph")
    context = "\n\n".join(
        f"{p['title']}: {p['paragraph_text'].strip()}" if p.get("title") else p["paragraph_text"].strip()
        for p in support
    )
    aliases = row.get("answer_aliases") or []
    return Example(
        id=f"musique/{row.get('id', i)}", dataset="musique",
        question=f"{context}\n\nQuestion: {require(row, 'question').strip()}",
        gold=require(row, "answer").strip(), answer_type="text",
        metadata={"answer_aliases": [str(a) for a in aliases]},
    )


def answerable(row: dict[str, Any]) -> bool:
    return row.get("answerable", True) is not False


TASKS = [
    Task(
        name="musique", group="soft_reasoning", answer_type="text",
        hub=HubSource("dgslibisey/MuSiQue", None, "validation"),
        local_files=mirror("musique/validation.jsonl")
        + original("musique/musique_ans_v1.0_dev.jsonl", "musique/musique_full_v1.0_dev.jsonl"),
        to_example=musique_example, row_filter=answerable, prompt_file="musique",
        max_tokens={"direct": 32, "cot": 768}, fewshot=False,
        expected_count=2417,  # MuSiQue-Ans dev size as published; not checkable here (no local copy)
        description="MuSiQue: 2-4 hop questions over supporting paragraphs; exact match / F1 on short answers.",
    )
]
