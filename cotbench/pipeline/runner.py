"""tasks x settings -> solvers -> requests -> store/backend -> extract, score -> SampleResult rows.

Every (task, setting, example, sample index) is a *unit* driven by a solver generator
(:mod:`cotbench.solvers.base`). The runner steps all units in lockstep: each round collects the
pending calls of every unit, serves what the store already has, sends the rest to the backend as one
batch, and commits each response to the store the moment it arrives. A rerun of the same command
therefore makes no model call for finished samples and cannot duplicate one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from cotbench.backends.base import Backend
from cotbench.pipeline.prompts import load_prompt_file, render
from cotbench.pipeline.settings import Setting, get_setting
from cotbench.pipeline.store import Store
from cotbench.records import (
    REFUSALS,
    Example,
    Extraction,
    GenParams,
    Request,
    Response,
    SampleResult,
)
from cotbench.scoring.extract import default_extractor, extract_all
from cotbench.solvers.base import Call, SolverGen, SolverOutput, generate, judged
from cotbench.solvers.plan import plan_solver, plan_spec
from cotbench.tasks.base import Task


@dataclass
class RunOptions:
    model_name: str  # what rows are labelled with (registry name or --model value)
    seed: int = 0
    temperature: float = 0.0
    top_p: float = 1.0
    samples: int = 1
    max_tokens_direct: int | None = None
    max_tokens_cot: int | None = None
    fewshot_k: int | None = None
    allow_prefill: bool = False
    extra_body: dict | None = None


@dataclass
class Unit:
    task: Task
    setting: Setting
    example: Example
    sample_index: int
    gen: SolverGen
    pending: Call | None = None
    request: Request | None = None
    output: SolverOutput | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)  # usage of every call this unit made


@dataclass
class RunStats:
    units: int = 0
    calls_total: int = 0
    calls_cached: int = 0
    calls_made: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    rounds: int = 0


# the run option that overrides each call kind's budget (a judge's budget is its task's alone)
_OVERRIDE = {"direct": "max_tokens_direct", "plan_direct": "max_tokens_direct",
             "cot": "max_tokens_cot", "plan": "max_tokens_cot", "plan_cot": "max_tokens_cot"}


def token_budget(task: Task, kind: str, opts: RunOptions, plan: dict[str, int] | None = None) -> int:
    """The one place a call's token budget is decided: the run's override for its kind, else the task's
    (:meth:`Task.budget`; ``plan`` is the plan spec's ``max_tokens`` for plan calls)."""
    field_name = _OVERRIDE.get(kind)
    return (getattr(opts, field_name) if field_name else None) or task.budget(kind, plan)


def make_solver(task: Task, setting: Setting, example: Example, opts: RunOptions) -> SolverGen:
    """The solver for one unit: one rendered call for direct/CoT (then the task's judge, if it has one),
    a plan solver with the task's plan spec otherwise."""
    if setting.mode in ("direct", "cot"):
        spec = load_prompt_file(task.prompt_file)
        r = render(spec, example, setting, k=opts.fewshot_k)
        call = Call(messages=r.messages, max_tokens=token_budget(task, setting.mode, opts), stop=r.stop,
                    prefill=r.prefill if opts.allow_prefill else None)
        if task.judge is not None:  # open-ended: a judge model grades the answer
            return judged(call, example, task.judge, token_budget(task, "judge", opts))
        return generate(call)
    pspec = plan_spec(task)  # plan/execute/tool conditions (Sec. 5)
    budgets = pspec.get("max_tokens")
    answer_kind = "plan_direct" if setting.mode == "plan_direct" else "plan_cot"  # unused by plan_tool
    return plan_solver(example, setting.name, pspec, plan_tokens=token_budget(task, "plan", opts, budgets),
                       answer_tokens=token_budget(task, answer_kind, opts, budgets), labels=task.labels)


def build_units(tasks: dict[Task, list[Example]], settings: Iterable[str], opts: RunOptions) -> list[Unit]:
    units = []
    for task, examples in tasks.items():
        for sname in settings:
            setting = get_setting(sname)
            if setting.fewshot and not task.fewshot and setting.mode in ("direct", "cot"):
                continue  # dataset has no exemplars: few-shot settings do not exist for it
            if setting.mode.startswith("plan") and task.plan_prompt is None:
                continue  # plan settings exist only for tasks that declare a plan prompt
            for ex in examples:
                for i in range(opts.samples):
                    units.append(Unit(task, setting, ex, i, make_solver(task, setting, ex, opts)))
    return units


def to_request(call: Call, unit: Unit, backend: Backend, opts: RunOptions) -> Request:
    params = GenParams(max_tokens=call.max_tokens, temperature=opts.temperature, top_p=opts.top_p,
                       stop=tuple(call.stop), seed=opts.seed,
                       extra_body=json.dumps(opts.extra_body, sort_keys=True) if opts.extra_body else "")
    return Request(model=backend.model_id, model_revision=backend.revision, backend=backend.name,
                   messages=tuple(call.messages), params=params, sample_index=unit.sample_index,
                   prefill=call.prefill)


def _advance(unit: Unit, resp: Response | None) -> None:
    try:
        unit.pending = next(unit.gen) if resp is None else unit.gen.send(resp)
    except StopIteration as stop:
        unit.pending, unit.output = None, stop.value


ProgressFn = Callable[[str, int, int, RunStats], None]  # (phase, done, total, stats)


def execute(units: list[Unit], backend: Backend, store: Store, opts: RunOptions,
            progress: ProgressFn | None = None, judge: Backend | None = None) -> RunStats:
    """Drive every unit to completion; every finished call is in the store before it counts.

    Calls routed to "judge" go to ``judge`` (default: the evaluated model itself).
    """
    routes = {"model": backend, "judge": judge or backend}
    stats = RunStats(units=len(units))
    for u in units:
        _advance(u, None)
    active = [u for u in units if u.pending is not None]
    while active:
        stats.rounds += 1
        by_key: dict[str, Request] = {}
        route_of: dict[str, str] = {}
        for u in active:
            u.request = to_request(u.pending, u, routes[u.pending.route], opts)
            by_key.setdefault(u.request.key, u.request)
            route_of[u.request.key] = u.pending.route
        have = store.get_many(list(by_key))
        misses = [r for k, r in by_key.items() if k not in have]
        stats.calls_total += len(by_key)
        stats.calls_cached += len(have)
        done = 0

        def on_result(req: Request, resp: Response) -> None:
            nonlocal done
            if resp.finish_reason in REFUSALS:  # counted here for every backend, never stored
                routes[route_of[req.key]].stats.note_refusal(resp.finish_reason)
            else:
                store.put(req, resp)  # committed before it counts as done
            have[req.key] = resp
            done += 1
            stats.calls_made += 1
            stats.tokens_in += resp.tokens_in or 0
            stats.tokens_out += resp.tokens_out or 0
            if progress:
                progress("generate", done, len(misses), stats)

        if progress:
            progress("generate", 0, len(misses), stats)
        for route in ("model", "judge"):
            batch = [r for r in misses if route_of[r.key] == route]
            if batch:
                routes[route].generate(batch, on_result)
        for u in active:
            resp = have[u.request.key]
            u.calls.append({"tag": u.pending.tag, "key": u.request.key, "tokens_in": resp.tokens_in,
                            "tokens_out": resp.tokens_out, "latency_s": resp.latency_s,
                            "finish_reason": resp.finish_reason})
            _advance(u, resp)
        active = [u for u in active if u.pending is not None]
    return stats


def _sum(vals: list[Any]) -> Any:
    vals = [v for v in vals if v is not None]
    return sum(vals) if vals else None


def score_unit(u: Unit, model_name: str) -> SampleResult:
    """Extract and score one finished unit (pure given the unit)."""
    out = u.output
    ex = u.example
    last = u.calls[-1] if u.calls else {}
    finish = last.get("finish_reason")  # the backend knows whether the text was cut off
    if out.extraction is not None:  # the solver computed the answer (tool run, judge verdict)
        extraction, extractions = out.extraction, {}
    else:
        extractions = extract_all(out.text, ex, u.task.labels, finish)
        chosen = extractions[default_extractor(ex)]
        extraction = Extraction(chosen["answer"], chosen["method"])
    correct = u.task.score(ex, extraction)
    extra = dict(out.extra)
    if len(u.calls) > 1:
        extra["calls"] = u.calls
    return SampleResult(
        model=model_name, dataset=u.task.name, group=u.task.group, setting=u.setting.name,
        example_id=ex.id, sample_index=u.sample_index, key=last.get("key", ""),
        messages=list(out.messages), response=out.text, extracted=extraction.answer,
        extract_method=extraction.method, parse_status="ok" if extraction.parsed else "unparseable",
        gold=ex.gold, correct=bool(correct), tokens_in=_sum([c["tokens_in"] for c in u.calls]),
        tokens_out=_sum([c["tokens_out"] for c in u.calls]), latency_s=_sum([c["latency_s"] for c in u.calls]),
        finish_reason=finish, question=ex.question,
        choices=list(ex.choices) if ex.choices else None, metadata=dict(ex.metadata), extra=extra,
        extractions=extractions,
    )
