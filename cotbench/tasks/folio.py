"""FOLIO (yale-nlp/FOLIO validation): does a conclusion follow from first-order premises?

Labels True / False / Uncertain; "Unknown" and similar wording are mapped to Uncertain by the label
extractor. The local copy is the official v0.0 validation set (204); in the original file ``premises``
is a list, in the hub schema a newline-joined string; both are read.
"""
from __future__ import annotations

from typing import Any

from cotbench.records import DataError, Example
from cotbench.tasks.base import HubSource, Task, require
from cotbench.tasks.common import mirror, original

LABELS = ("True", "False", "Uncertain")


def folio_example(row: dict[str, Any], i: int) -> Example:
    premises = require(row, "premises", (str, list))
    if isinstance(premises, list):
        premises = "\n".join(str(p) for p in premises)
    label = require(row, "label")
    if label not in LABELS:
        raise DataError(f"field 'label': {label!r} is not one of {LABELS}")
    return Example(
        id=f"folio/{row.get('example_id') if row.get('example_id') is not None else i}", dataset="folio",
        question=f"Premises:\n{premises.strip()}\n\nConclusion: {require(row, 'conclusion').strip()}",
        gold=label, answer_type="label", metadata={"labels": list(LABELS)},
    )


TASKS = [
    Task(
        name="folio", group="symbolic", answer_type="label", labels=LABELS,
        hub=HubSource("yale-nlp/FOLIO", None, "validation"),
        local_files=mirror("folio/validation.jsonl") + original("folio/folio-validation.jsonl"),
        to_example=folio_example, prompt_file="folio", max_tokens={"direct": 16, "cot": 768},
        expected_count=204, plan_prompt="plan_folio",
        description="FOLIO: is a conclusion True, False or Uncertain given first-order-logic premises?",
    )
]
