"""ContextHub deductive and abductive logic, levels 1 and 2 (``contexthub/<logic>_l<level>``).

ContextHub has no hub dataset; files are read in the original layout from ``--data-dir``
(``contexthub/data_level<L>/<logic>_logic_traincot.json``, else ``<logic>_logic.json``, which has the
same questions without ``gold_cot``; each also tried under ``../`` so the hub-schema mirror folder works
as ``--data-dir`` too). Every template instance with natural-language text (``<nl>``) becomes one
question, including the ``abstract`` category, as in the study's loader. As in the study, it is asked as
a 3-way multiple choice: (A) True, (B) False, (C) N/A (cannot be determined).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cotbench.records import DataError, Example, read_json
from cotbench.tasks.base import Task, require
from cotbench.tasks.common import original

CHOICES = ("True", "False", "N/A")
_GOLD = {True: "A", False: "B", "N/A": "C"}


def read_contexthub(path: Path) -> list[dict[str, Any]]:
    """Templates x categories x topics -> one row per instantiated question."""
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of templates")
    rows = []
    for t, tpl in enumerate(data):
        if "answer" not in tpl:
            raise DataError(f"{path}: template {t + 1}: missing field 'answer'")
        for category, topics in tpl.items():
            if category in ("question", "answer") or not isinstance(topics, dict):
                continue
            for topic, inst in topics.items():
                if isinstance(inst, dict) and inst.get("<nl>"):
                    rows.append({"nl": inst["<nl>"], "answer": tpl["answer"], "template": t,
                                 "category": category, "topic": topic})
    return rows


def _contexthub(name: str):
    def to_example(row: dict[str, Any], i: int) -> Example:
        ans = row.get("answer")
        if ans not in _GOLD:
            raise DataError(f"field 'answer': {ans!r} is not true, false or 'N/A'")
        return Example(
            id=f"contexthub/{name}/{i}", dataset=f"contexthub/{name}",
            question=" ".join(require(row, "nl").split("\n")).strip(), choices=CHOICES, answer_type="choice",
            gold=_GOLD[ans], metadata={"template": row["template"], "category": row["category"],
                                       "topic": row["topic"]},
        )

    return to_example


TASKS = [
    Task(
        name=f"contexthub/{logic}_l{level}", group="symbolic", answer_type="choice", hub=None,
        local_files=original(f"contexthub/data_level{level}/{logic}_logic_traincot.json",
                             f"contexthub/data_level{level}/{logic}_logic.json"),
        to_example=_contexthub(f"{logic}_l{level}"), read_rows=read_contexthub, prompt_file="contexthub",
        max_tokens={"direct": 16, "cot": 768}, expected_count=n, stratum="category",
        plan_prompt="plan_contexthub",
        description=f"ContextHub {logic} logic, level {level}: True / False / N/A (undetermined).",
    )
    for logic, level, n in [("deductive", 1, 600), ("abductive", 1, 360), ("deductive", 2, 2400), ("abductive", 2, 2400)]
]
