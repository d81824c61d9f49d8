"""Plan / execute conditions of Sprague et al. 2024, Section 5, as solvers.

Why: the study separates *planning* (writing a formal solution) from *executing* it, to see where CoT's
gain comes from. Besides the usual few-shot Direct and CoT settings (``fs_direct``, ``fs_cot``), three
settings share one first call — the model writes a formal plan (a PAL-style Python program for math, a
SatLM-style z3 specification for logic) — and differ in who executes it:

* ``plan_direct``: a second call shows the plan and asks for the answer directly;
* ``plan_cot``: a second call asks the model to execute the plan step by step in text;
* ``plan_tool``: no second call; the plan runs in the sandbox (:mod:`cotbench.solvers.sandbox`) — Python
  for GSM8K/GSM8K-Hard, z3 for FOLIO/ContextHub — and the tool's answer, normalised to the task's gold
  format, is the prediction. A plan that cannot be found or run is a recorded, *wrong* (unparseable)
  answer, never an error of the run.

The plan call is identical in the three settings, so with the response store it is generated once.
A task declares its plan prompt (``Task.plan_prompt``, a ``prompts/plan_<dataset>.yaml``): plan settings
exist only for tasks that declare one, and the task's own prompt file may override it with a ``plan:``
key (a file name, or an inline plan spec); see :func:`plan_spec`. Token budgets are resolved by the
caller (the task's budgets and the run's overrides, ``cotbench.pipeline.runner.token_budget``).

``SolverOutput.extra`` keys (stored in the ``extra`` column of samples.jsonl):

* ``plan`` (str): the plan as given to the solver or tool (the code block found, else the raw text);
* ``plan_format`` ("python" | "z3"); ``plan_parse``: how the plan was found — "code_block",
  "open_block" (unterminated fence), "raw" (the whole response parses as Python) or "none";
* ``plan_response`` (str): the raw text of the plan call;
* ``tool``: ``None`` for plan_direct/plan_cot; for plan_tool a dict with ``kind`` (python|z3),
  ``status`` (see :data:`cotbench.solvers.sandbox.STATUSES`), ``answer`` (the tool's raw answer: a
  number string, or entailed|refuted|undetermined), ``mapped`` (the answer in the task's gold format, or
  None), ``value``, ``detail``, ``stdout``/``stderr`` (tails), ``duration_s``, ``isolation``, ``returncode``,
  ``limits_in_force`` / ``limits_missing`` (which containment the run really had, and what could not be set
  up, with why) and ``memory_peak_mb`` (the run's memory cgroup peak, or None). Every field comes from
  :func:`cotbench.solvers.sandbox.run_code`, which reads the sandbox's output as untrusted input and never
  raises for anything the plan does, so a hostile plan cannot crash a run or its resume;
* ``calls``: one dict per model call: ``tag`` (plan|answer), ``tokens_in``, ``tokens_out``,
  ``finish_reason``, ``latency_s``.
"""
from __future__ import annotations

import ast
import functools
import re
from typing import Any

from cotbench.pipeline.prompts import (
    fill,
    format_choice,
    load_prompt_file,
    prompt_fields,
    read_prompt_yaml,
)
from cotbench.records import LETTERS, DataError, Example, Extraction, Message, Response
from cotbench.scoring.extract import normalize_number, strip_think
from cotbench.solvers.base import Call, SolverGen, SolverOutput
from cotbench.solvers.sandbox import Limits, Outcome, run_code
from cotbench.tasks.base import PLAN_CALLS, Task

PLAN_SETTINGS = ("plan_direct", "plan_cot", "plan_tool")
TOOL_LIMITS: dict[str, Limits] = {
    "python": Limits(wall_s=10, cpu_s=5, memory_mb=1024),
    "z3": Limits(wall_s=20, cpu_s=15, memory_mb=2048, z3_timeout_ms=5000),
}
_REQUIRED = ("tool", "plan", "plan_answer", "plan_direct", "plan_direct_answer", "plan_cot",
             "plan_cot_answer", "exemplars")
_UNDETERMINED = ("n/a", "na", "uncertain", "unknown", "undetermined", "cannot be determined", "neither")


# ------------------------------------------------------------------------------------------ prompt specs
def plan_spec(task: Task) -> dict[str, Any]:
    """The plan spec a task uses: its prompt file's ``plan:`` key when it has one, else the plan prompt
    the task declares (``Task.plan_prompt``); a ValueError for a task with neither."""
    return resolve_plan_spec(load_prompt_file(task.prompt_file), task.name, task.plan_prompt)


@functools.lru_cache(maxsize=None)
def load_plan_spec(name: str, prompts_dir: str | None = None) -> dict[str, Any]:
    spec, path = read_prompt_yaml(name, prompts_dir, what="plan prompt")
    return validate_plan_spec(spec, str(path))


def validate_plan_spec(spec: Any, where: str) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise DataError(f"{where}: a plan spec must be a mapping")
    missing = [k for k in _REQUIRED if k not in spec]
    if missing:
        raise DataError(f"{where}: plan spec is missing {', '.join(missing)}")
    if spec["tool"] not in ("python", "z3"):
        raise DataError(f"{where}: field 'tool' must be 'python' or 'z3', not {spec['tool']!r}")
    ex = spec["exemplars"]
    if not isinstance(ex, list) or not ex:
        raise DataError(f"{where}: field 'exemplars' must be a non-empty list")
    for i, e in enumerate(ex, 1):
        for k in ("question", "plan", "execution", "answer"):
            if not isinstance(e, dict) or not isinstance(e.get(k), str) or not e[k].strip():
                raise DataError(f"{where}: exemplar {i}: field {k!r} must be a non-empty string")
    for k, v in (spec.get("tool_limits") or {}).items():
        if k not in Limits.__dataclass_fields__:
            raise DataError(f"{where}: tool_limits: unknown field {k!r}")
    budgets = spec.get("max_tokens") or {}
    if not isinstance(budgets, dict):
        raise DataError(f"{where}: field 'max_tokens' must be a mapping of call kind to tokens")
    for k, v in budgets.items():
        if k not in PLAN_CALLS:
            raise DataError(f"{where}: max_tokens: unknown call kind {k!r}; choose from {', '.join(PLAN_CALLS)}")
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise DataError(f"{where}: max_tokens: {k} must be a positive integer, not {v!r}")
    return spec


def resolve_plan_spec(spec: dict[str, Any] | None, task_name: str, default: str | None) -> dict[str, Any]:
    """The plan spec from a task's prompt file ``spec``: its ``plan:`` override (a file name or an inline
    spec), else the task's declared plan prompt ``default``."""
    override = (spec or {}).get("plan")
    if isinstance(override, dict):
        return validate_plan_spec(override, f"{task_name}: inline 'plan' spec")
    name = override if isinstance(override, str) else default
    if name is None:
        raise ValueError(f"{task_name}: no plan prompt; plan settings exist only for tasks that declare one")
    return load_plan_spec(name)


# ------------------------------------------------------------------------------------------ rendering
def answer_text(answer: str, choices) -> str:
    """An exemplar's answer as the task writes answers: "(B) False" for choice tasks, else as is."""
    if choices:
        for i, c in enumerate(choices):
            if str(c).strip().casefold() == answer.strip().casefold():
                return format_choice(i, c)
    return answer


def _exemplar_fields(ex: dict[str, Any], example: Example) -> dict[str, Any]:
    choices = ex.get("choices") or (example.choices if example.answer_type == "choice" else None)
    f = prompt_fields(ex["question"].strip(), choices, ex)
    f.update(plan=ex["plan"].strip(), execution=" ".join(ex["execution"].split()),
             answer=answer_text(str(ex["answer"]), choices))
    return f


def _messages(pspec: dict[str, Any], user_key: str, answer_key: str, example: Example,
              plan: str | None = None) -> tuple[Message, ...]:
    msgs: list[Message] = []
    if pspec.get("system"):
        msgs.append({"role": "system", "content": pspec["system"].strip()})
    for ex in pspec["exemplars"]:
        f = _exemplar_fields(ex, example)
        msgs.append({"role": "user", "content": fill(pspec[user_key], f).strip()})
        msgs.append({"role": "assistant", "content": fill(pspec[answer_key], f).strip()})
    target = prompt_fields(example.question, example.choices, example.metadata)
    if plan is not None:
        target["plan"] = plan
    msgs.append({"role": "user", "content": fill(pspec[user_key], target).strip()})
    return tuple(msgs)


def plan_messages(pspec: dict[str, Any], example: Example) -> tuple[Message, ...]:
    return _messages(pspec, "plan", "plan_answer", example)


def solve_messages(pspec: dict[str, Any], mode: str, example: Example, plan: str) -> tuple[Message, ...]:
    return _messages(pspec, mode, f"{mode}_answer", example, plan)


# ------------------------------------------------------------------------------------------ plan parsing


def extract_plan(text: str, tool: str) -> tuple[str, str]:
    """(plan, how): the first fenced code block that looks like a plan for ``tool``, else the first
    block, else the whole response if it parses as Python; ("", "none") when there is nothing."""
    t = strip_think(text or "")
    closed = re.findall(r"```[ \t]*[A-Za-z0-9_+-]*[ \t]*\n(.*?)\n?[ \t]*```", t, re.S)
    marker = "solution" if tool == "python" else "premises"
    blocks = [b for b in closed if b.strip()]
    for b in blocks:
        if marker in b:
            return b.strip("\n"), "code_block"
    if blocks:
        return blocks[0].strip("\n"), "code_block"
    m = re.search(r"```[ \t]*[A-Za-z0-9_+-]*[ \t]*\n(.*)$", t, re.S)
    if m and m.group(1).strip():
        return m.group(1).strip("\n"), "open_block"
    # no fence: the longest stretch of lines that parses as Python and mentions the plan's marker
    # (small models sometimes put a sentence before or after bare code)
    lines = t.strip().splitlines()
    n = len(lines)
    for start in range(min(n, 8)):
        for end in range(n, max(start, n - 8), -1):
            s = "\n".join(lines[start:end]).strip()
            if marker not in s and not (tool == "python" and "answer" in s):
                continue
            try:
                ast.parse(s)
            except (SyntaxError, ValueError):
                continue
            return s, "raw"
    return "", "none"


# ------------------------------------------------------------------------------------------ tool answers
def verdict_answer(verdict: str, example: Example, labels: tuple[str, ...] | None = None) -> str | None:
    """z3 verdict (entailed|refuted|undetermined) -> the task's gold format: an option letter for
    choice tasks (ContextHub: True/False/N/A), else one of the labels (FOLIO: True/False/Uncertain)."""
    if example.answer_type == "choice":
        options = list(example.choices or ())
    else:
        options = list(labels or example.metadata.get("labels") or ("True", "False", "Uncertain"))
    want = {"entailed": ("true", "yes"), "refuted": ("false", "no"), "undetermined": _UNDETERMINED}.get(verdict)
    if want is None:
        return None
    for i, opt in enumerate(options):
        o = str(opt).strip().casefold()
        if o in want or any(o.startswith(w + " ") or o.startswith(w + " (") for w in want):
            return LETTERS[i] if example.answer_type == "choice" else str(opt)
    return None


def tool_extraction(outcome: Outcome, tool: str, example: Example,
                    labels: tuple[str, ...] | None = None) -> Extraction:
    """The tool's result as an Extraction: a failed run is unparseable (answer None), method names why."""
    if outcome.status != "ok" or outcome.answer is None:
        return Extraction(None, f"tool_{outcome.status}")
    if tool == "python":
        ans = normalize_number(outcome.answer) if example.answer_type == "number" else outcome.answer
    else:
        ans = verdict_answer(outcome.answer, example, labels)
    return Extraction(ans, f"tool_{tool}" if ans is not None else "tool_unmapped")


def run_plan(plan: str, tool: str, limits: Limits | None = None) -> Outcome:
    """Execute a plan with its tool in the sandbox (never raises for anything the plan does)."""
    return run_code(plan, tool, limits or TOOL_LIMITS[tool])


def _limits(pspec: dict[str, Any], tool: str) -> Limits:
    over = pspec.get("tool_limits") or {}
    if not over:
        return TOOL_LIMITS[tool]
    from dataclasses import replace

    return replace(TOOL_LIMITS[tool], **over)


# ------------------------------------------------------------------------------------------ solver
def _usage(tag: str, r: Response) -> dict[str, Any]:
    return {"tag": tag, "tokens_in": r.tokens_in, "tokens_out": r.tokens_out,
            "finish_reason": r.finish_reason, "latency_s": r.latency_s}


def plan_solver(example: Example, setting_name: str, pspec: dict[str, Any], plan_tokens: int,
                answer_tokens: int, labels: tuple[str, ...] | None = None) -> SolverGen:
    """Solver generator for ``plan_direct`` / ``plan_cot`` / ``plan_tool`` (see the module docstring).

    ``pspec`` is the task's plan spec (:func:`plan_spec`); ``plan_tokens`` and ``answer_tokens`` are the
    budgets of the plan call and of the call that answers after it (unused by ``plan_tool``); ``labels``
    are the task's labels, for mapping a z3 verdict to a label answer.
    """
    if setting_name not in PLAN_SETTINGS:
        raise ValueError(f"plan_solver handles {', '.join(PLAN_SETTINGS)}, not {setting_name!r}")
    tool = pspec["tool"]

    plan_call = Call(messages=plan_messages(pspec, example), max_tokens=plan_tokens, tag="plan")
    plan_resp = yield plan_call
    plan, how = extract_plan(plan_resp.text, tool)
    extra: dict[str, Any] = {"plan": plan if how != "none" else strip_think(plan_resp.text or "").strip(),
                             "plan_format": tool, "plan_parse": how, "plan_response": plan_resp.text,
                             "tool": None, "calls": [_usage("plan", plan_resp)]}

    if setting_name == "plan_tool":
        if how == "none":
            outcome = Outcome(status="no_plan", detail="no code found in the plan response")
        else:
            outcome = run_plan(plan, tool, _limits(pspec, tool))
        extraction = tool_extraction(outcome, tool, example, labels)
        extra["tool"] = dict(kind=tool, **outcome.to_dict(), mapped=extraction.answer)
        return SolverOutput(text=plan_resp.text, messages=plan_call.messages, extraction=extraction, extra=extra)

    mode = setting_name  # plan_direct | plan_cot
    call = Call(messages=solve_messages(pspec, mode, example, extra["plan"]), max_tokens=answer_tokens, tag="answer")
    resp = yield call
    extra["calls"].append(_usage("answer", resp))
    return SolverOutput(text=resp.text, messages=call.messages, extra=extra)
