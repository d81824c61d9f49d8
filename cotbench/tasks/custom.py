"""User-defined datasets: a JSONL file run through the same settings with generic prompts.

Each line is a JSON object with

* ``question`` (string, required);
* ``choices`` (list of strings; required for ``--answer-type choice``, not allowed otherwise);
* ``answer`` (required): for ``choice`` a letter ("B" or "(B)"), a 0-based index (``1``), or the exact
  text of one choice; for ``number`` a number or numeric string ("1,080" and "$5" are accepted); for
  ``boolean`` ``true``/``false`` (JSON booleans, or the strings true/false/yes/no); for ``text`` a string;
* ``aliases`` (optional list of strings, ``text`` only): other answers that count as correct;
* ``id`` (optional): kept as the example id (default: the line number); ids must be unique in the file.

Answers are scored like the built-in tasks: letters, numeric equality, True/False labels, SQuAD-style
exact match for text. Prompts are ``prompts/custom_<answer type>.yaml``, each with a few generic
exemplars so few-shot settings work too. Errors name the file, the line and the field.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotbench.records import AnswerType, DataError, Example, iter_jsonl
from cotbench.tasks.base import Task, check_unique_ids
from cotbench.tasks.common import gold_letter, number_gold

ANSWER_TYPES: dict[str, AnswerType] = {"choice": "choice", "number": "number", "boolean": "label", "text": "text"}
BUDGETS = {"choice": {"direct": 16, "cot": 768}, "number": {"direct": 32, "cot": 768},
           "boolean": {"direct": 16, "cot": 768}, "text": {"direct": 48, "cot": 768}}
_BOOL = {"true": "True", "yes": "True", "false": "False", "no": "False"}


def _gold(row: dict[str, Any], kind: str) -> tuple[str, tuple[str, ...] | None, dict[str, Any]]:
    """(gold, choices, metadata) for one row; raises DataError naming the field."""
    if "answer" not in row or row["answer"] is None:
        raise DataError("missing field 'answer'")
    ans, choices, meta = row["answer"], row.get("choices"), {}
    if kind == "choice":
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise DataError("field 'choices': a list of at least 2 strings is required for answer type choice")
        choices = tuple(choices)
        if isinstance(ans, bool):
            raise DataError(f"field 'answer': {ans!r} is not a letter, index or choice text")
        if isinstance(ans, int):
            return gold_letter(ans, len(choices), "answer"), choices, meta
        s = str(ans).strip()
        letter = s.strip("()").upper()
        if len(letter) == 1 and "A" <= letter <= "Z":
            return gold_letter(ord(letter) - 65, len(choices), "answer"), choices, meta
        if s in choices:
            if choices.count(s) > 1:
                raise DataError(f"field 'answer': {s!r} matches more than one choice")
            return gold_letter(choices.index(s), len(choices), "answer"), choices, meta
        raise DataError(f"field 'answer': {ans!r} is not a letter, a 0-based index or the text of a choice")
    if choices is not None:
        raise DataError(f"field 'choices' is only allowed with answer type choice (this file is {kind})")
    if kind == "number":
        if isinstance(ans, bool):
            raise DataError(f"field 'answer': {ans!r} is not a number")
        return number_gold(ans, "answer"), None, meta
    if kind == "boolean":
        key = str(ans).strip().lower() if not isinstance(ans, bool) else str(ans).lower()
        if key not in _BOOL:
            raise DataError(f"field 'answer': {ans!r} is not true/false")
        return _BOOL[key], None, {"labels": ["True", "False"]}
    if not isinstance(ans, str) or not ans.strip():
        raise DataError("field 'answer': a non-empty string is required for answer type text")
    aliases = row.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise DataError("field 'aliases': expected a list of strings")
    return ans.strip(), None, {"answer_aliases": aliases}


def read_custom(path: Path, answer_type: str, name: str | None = None) -> list[Example]:
    """Parse and validate the whole file up front, so every error names its line."""
    if answer_type not in ANSWER_TYPES:
        raise DataError(f"unknown answer type {answer_type!r}; choose from {', '.join(ANSWER_TYPES)}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}")
    name = name or f"custom/{path.stem}"
    out: list[Example] = []
    where: list[str] = []
    for n, row in iter_jsonl(path):
        try:
            q = row.get("question")
            if not isinstance(q, str) or not q.strip():
                raise DataError("field 'question': a non-empty string is required")
            gold, choices, meta = _gold(row, answer_type)
        except DataError as e:
            raise DataError(f"{path}: line {n}: {e}") from None
        out.append(Example(id=f"{name}/{row.get('id', n)}", dataset=name, question=q.strip(), gold=gold,
                           answer_type=ANSWER_TYPES[answer_type], choices=choices, metadata=meta))
        where.append(f"{path}: line {n}")
    check_unique_ids(out, where)
    if not out:
        raise DataError(f"{path}: no examples (the file is empty)")
    return out


@dataclass(eq=False)  # like Task: identity semantics, usable as a dict key
class FileTask(Task):
    """A task whose rows come from one user file, wherever ``--data-dir`` points (or without one)."""

    user_answer_type: str = "text"

    def load(self, data_dir: str | Path | None = None, limit: int | None = None) -> list[Example]:
        examples = read_custom(Path(self.local_files[0]), self.user_answer_type, self.name)
        return examples if limit is None else examples[:limit]

    def source(self, data_dir: str | Path | None) -> dict[str, Any]:
        return {"local": self.local_files[0]}  # the user's file, wherever --data-dir points


def task_from_file(path: str | Path, answer_type: str, name: str | None = None) -> Task:
    """A Task for a user's JSONL (validated now, so a bad file fails before any model call)."""
    path = Path(path).resolve()
    name = name or f"custom/{path.stem}"
    examples = read_custom(path, answer_type, name)
    kind = ANSWER_TYPES[answer_type]
    return FileTask(
        name=name, group="custom", answer_type=kind, hub=None,
        local_files=(str(path),), to_example=lambda row, i: row, prompt_file=f"custom_{answer_type}",
        max_tokens=BUDGETS[answer_type], labels=("True", "False") if answer_type == "boolean" else None,
        expected_count=len(examples), description=f"user dataset {path.name} ({answer_type} answers)",
        fewshot=True, user_answer_type=answer_type,
    )
