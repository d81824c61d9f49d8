"""BiGGen Bench (prometheus-eval/BiGGen-Bench, test): open-ended tasks graded 1-5 by a judge model.

An answer is correct when the judge scores it 4 or 5 (the study's rule). The task declares its judge
(:data:`JUDGE`): :func:`judge_messages` builds an absolute-grading prompt from the item's rubric and
reference answer, :func:`parse_judge` reads the score back, and the pass score is ``JUDGE.pass_score``.
The runner sends the messages to any model through any backend and stores the verdict like a
generation; ``Task.score`` then reads the verdict against the judge's pass score.

The local copy is the pre-hub release (775 items); ``row_filter`` drops the 10 multimodal
``vision_tasks`` items, which the hub's test split (765) no longer has.
"""
from __future__ import annotations

import re
from typing import Any

from cotbench.records import DataError, Example, Message
from cotbench.tasks.base import HubSource, Judge, Task, require
from cotbench.tasks.common import mirror

_RUBRIC_KEYS = ("criteria", *(f"score{i}_description" for i in range(1, 6)))


def biggen_example(row: dict[str, Any], i: int) -> Example:
    rubric = require(row, "score_rubric", dict)
    missing = [k for k in _RUBRIC_KEYS if not rubric.get(k)]
    if missing:
        raise DataError(f"field 'score_rubric' lacks {missing}")
    return Example(
        id=f"biggen_bench/{row.get('id', i)}", dataset="biggen_bench", question=require(row, "input").strip(),
        gold=require(row, "reference_answer").strip(), answer_type="judge",
        metadata={"capability": require(row, "capability"), "task": require(row, "task"),
                  "system_prompt": row.get("system_prompt") or "",
                  "score_rubric": {k: rubric[k] for k in _RUBRIC_KEYS}},
    )


def not_vision(row: dict[str, Any]) -> bool:
    return row.get("task") != "vision_tasks"


JUDGE_SYSTEM = "You are a fair and strict evaluator of AI assistant responses. You grade against a given rubric."


def judge_messages(example: Example, response_text: str) -> list[Message]:
    """Absolute grading prompt (Prometheus-style output: feedback, then ``[RESULT] <1-5>``)."""
    r = example.metadata["score_rubric"]
    levels = "\n".join(f"Score {i}: {r[f'score{i}_description']}" for i in range(1, 6))
    instruction = example.question
    if example.metadata.get("system_prompt"):
        instruction = f"(System prompt given to the assistant: {example.metadata['system_prompt']})\n\n{instruction}"
    user = (
        "Grade the response below to the instruction, using the score rubric. A reference answer that "
        "would earn the top score is given for comparison.\n"
        "First write brief feedback that judges the response strictly by the rubric (not in general). "
        "Then give an integer score from 1 to 5. Write nothing after the score, and use exactly this "
        'format: "Feedback: <your feedback> [RESULT] <score>"\n\n'
        f"### Instruction:\n{instruction}\n\n"
        f"### Response to grade:\n{response_text}\n\n"
        f"### Reference answer (score 5):\n{example.gold}\n\n"
        f"### Score rubric:\n[{r['criteria']}]\n{levels}\n\n"
        "### Feedback:"
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


_RESULT = re.compile(r"\[RESULT\]\s*\(?\s*([1-5])(?![\d.])")
_SCORE = re.compile(r"\bscore\s*(?:is|of|:|=)?\s*\(?\s*([1-5])\s*(?:/\s*5|out of 5)?\)?(?![\d.])", re.I)


def parse_judge(text: str) -> int | None:
    """The judge's 1-5 score: the last ``[RESULT] N``, else the last "score: N" / "score is N"; else None."""
    if not text:
        return None
    for pattern in (_RESULT, _SCORE):
        found = pattern.findall(text)
        if found:
            return int(found[-1])
    return None


JUDGE = Judge(messages=judge_messages, parse=parse_judge, pass_score=4, max_tokens=512)

TASKS = [
    Task(
        name="biggen_bench", group="soft_reasoning", answer_type="judge",
        hub=HubSource("prometheus-eval/BiGGen-Bench", None, "test"),
        local_files=mirror("biggen_bench/test.jsonl"), to_example=biggen_example, row_filter=not_vision,
        prompt_file="biggen", max_tokens={"direct": 768, "cot": 1536}, fewshot=False, expected_count=765,
        stratum="capability", judge=JUDGE,
        description="BiGGen Bench: open-ended generation in 9 capabilities, judged 1-5 by an LLM "
                    f"(>={JUDGE.pass_score} counts).",
    )
]
