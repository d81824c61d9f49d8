"""The solver protocol: how one example in one setting turns into model calls and a final answer.

A solver is a generator (inspect_ai's solver idea, made batch-friendly): it *yields* a ``Call``
(rendered messages + generation overrides) and is *sent* the ``Response``; it may yield several calls
(e.g. plan, then execute) and finally *returns* a ``SolverOutput``. The runner steps every example's
solver in lockstep, so each round of calls goes to the backend as one batch, and each call is cached
in the store under its own request key.

Direct and CoT settings use :func:`generate` (one call). Plan settings live in ``cotbench.solvers.plan``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generator

from cotbench.records import Example, Extraction, Message, Response
from cotbench.tasks.base import Judge


@dataclass(frozen=True)
class Call:
    messages: tuple[Message, ...]
    max_tokens: int
    stop: tuple[str, ...] = ()
    prefill: str | None = None
    tag: str = "answer"  # what this call is for ("answer", "plan", "judge", ...)
    route: str = "model"  # which backend serves it: "model" (the evaluated model) or "judge"


@dataclass
class SolverOutput:
    """Final text to extract from (``text``) — or an answer the solver computed itself (``extraction``)."""

    text: str
    messages: tuple[Message, ...]
    extraction: Extraction | None = None  # set when the answer did not come from text (e.g. a tool)
    extra: dict[str, Any] = field(default_factory=dict)  # plan text, tool outcome, per-call usage …


SolverGen = Generator[Call, Response, SolverOutput]


def generate(call: Call) -> SolverGen:
    """One model call; the response text (after any prefill) is what gets extracted."""
    resp = yield call
    text = (call.prefill or "") + resp.text if call.prefill else resp.text
    return SolverOutput(text=text, messages=call.messages)


def judged(call: Call, example: Example, judge: Judge, judge_tokens: int) -> SolverGen:
    """Generate an answer, then have the task's judge model grade it (open-ended tasks such as BiGGen Bench).

    The verdict is a call like any other (stored, cached, resumable); the solver returns the judge's score
    as the extraction (:meth:`Judge.verdict`), which the task's scorer reads against the judge's pass score.
    """
    resp = yield call
    graded = judge.graded_text(resp.text, example)
    extra: dict[str, Any] = {}
    if not graded:
        return SolverOutput(text=resp.text, messages=call.messages,
                            extraction=Extraction(None, "judge_no_response"), extra=extra)
    verdict = yield Call(messages=tuple(judge.messages(example, graded)), max_tokens=judge_tokens, tag="judge",
                         route="judge")
    score_ = judge.parse(verdict.text)
    extra.update(judge_response=verdict.text, judge_score=score_, judged_text=graded)
    return SolverOutput(text=resp.text, messages=call.messages, extraction=judge.verdict(score_), extra=extra)
