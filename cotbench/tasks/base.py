"""Task specs: where a dataset lives (hub or local mirror), how rows become Examples, how answers are scored.

A task is declarative data plus one row->Example function, in the spirit of lm-eval's task configs, and it
owns everything task-specific about running it (inspect_ai's ``Task(dataset, solver, scorer)``): its prompt
file, its plan prompt (whether plan settings exist for it), its token budget per call kind, its judge when
answers are graded by a model, and so its scorer (:meth:`Task.score`). The run pipeline asks the task and
never imports a dataset module.
Loading order: ``data_dir`` (a local mirror in the hub schema) when given, else the Hugging Face hub.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from cotbench.records import (
    AnswerType,
    DataError,
    Example,
    Extraction,
    Message,
    iter_jsonl,
)
from cotbench.scoring.extract import judge_response
from cotbench.scoring.extract import score as score_answer
from cotbench.tasks.hub import HubSource, load_hub_rows

GROUPS = ("commonsense", "knowledge", "soft_reasoning", "symbolic", "mathematical")


class DataMissing(DataError):
    """None of a task's local files exists under ``--data-dir``: callers that may skip such a task
    (``run --skip-missing``) catch this type rather than reading the message."""


def graded_text(text: str, example: Example) -> str:
    """What a judge grades by default: the response without reasoning blocks, after any "Final response:"."""
    return judge_response(text, example).answer or ""


@dataclass(frozen=True)
class Judge:
    """How a judge model grades a task's open-ended answers. The prompt, the reading of the reply and the
    pass score live here and nowhere else, so the solver that asks the judge and the scorer that reads
    its verdict cannot disagree."""

    messages: Callable[[Example, str], list[Message]]  # (item, text to grade) -> the grading prompt
    parse: Callable[[str], int | None]  # the judge's reply -> its score, None when it gives none
    pass_score: int  # a verdict at or above this counts as correct
    max_tokens: int = 512  # the judge's reply budget
    graded_text: Callable[[str, Example], str] = graded_text  # the part of a response the judge sees

    def passed(self, score: int | None) -> bool:
        return score is not None and score >= self.pass_score

    def verdict(self, score: int | None) -> Extraction:
        """The judge's score as the sample's answer (the form :meth:`correct` reads back)."""
        return Extraction(str(score), "judge_score") if score is not None else Extraction(None, "judge_unparseable")

    def correct(self, extraction: Extraction) -> bool:
        """Whether a recorded verdict passes; anything that is not a verdict (no response, unreadable) fails."""
        ans = extraction.answer
        return extraction.method == "judge_score" and ans is not None and ans.isdigit() and self.passed(int(ans))


PLAN_CALLS = ("plan", "plan_direct", "plan_cot")  # the calls of the plan settings (a plan spec may budget them)
CALL_KINDS = ("direct", "cot", *PLAN_CALLS, "judge")  # every kind of call a task's units make
# budget of a plan call when neither the plan spec nor the task gives one (tokens)
PLAN_BUDGET_FALLBACK = {"plan": 768, "plan_direct": 32, "plan_cot": 768}


@dataclass(eq=False)  # identity semantics: tasks are registry singletons, used as dict keys
class Task:
    """One evaluation dataset (or one sub-task, e.g. a BBH task)."""

    name: str
    group: str
    answer_type: AnswerType
    hub: HubSource | None
    local_files: tuple[str, ...]  # paths relative to --data-dir, tried in order
    to_example: Callable[[dict[str, Any], int], Example]
    prompt_file: str  # name of the file under prompts/ (without .yaml)
    max_tokens: dict[str, int] = field(default_factory=lambda: {"direct": 32, "cot": 512})
    labels: tuple[str, ...] | None = None  # for answer_type == "label"
    fewshot: bool = True  # whether few-shot settings exist
    description: str = ""
    expected_count: int | None = None  # full split size as the study used it
    read_rows: Callable[[Path], list[dict[str, Any]]] | None = None  # custom local reader
    row_filter: Callable[[dict[str, Any]], bool] | None = None  # keep only rows it accepts (e.g. answerable)
    stratum: str | None = None  # metadata key whose value is an item's subject, for a stratified --sample
    plan_prompt: str | None = None  # plan spec under prompts/ (Sec. 5 plan settings exist only with one)
    judge: Judge | None = None  # set for open-ended tasks (answer type "judge"), graded by a judge model

    def budget(self, kind: str, plan: dict[str, int] | None = None) -> int:
        """This task's token budget for one call kind (:data:`CALL_KINDS`), before a run's overrides.

        Plan calls take the plan spec's ``max_tokens`` (``plan``), then the task's own direct / CoT
        budget for the call that answers after the plan, then :data:`PLAN_BUDGET_FALLBACK`."""
        if kind in ("direct", "cot"):
            return self.max_tokens[kind]
        if kind == "judge":
            if self.judge is None:
                raise ValueError(f"{self.name}: no judge, so no judge budget")
            return self.judge.max_tokens
        if kind not in PLAN_CALLS:
            raise ValueError(f"unknown call kind {kind!r}; choose from {', '.join(CALL_KINDS)}")
        plan = plan or {}
        if kind in plan:
            return plan[kind]
        own = self.max_tokens.get(kind.removeprefix("plan_")) if kind != "plan" else None
        return own if own is not None else PLAN_BUDGET_FALLBACK[kind]

    def score(self, example: Example, extraction: Extraction) -> bool:
        """Correctness of one answer: the judge's verdict for judged tasks, else the answer type's rule."""
        if self.judge is not None:
            return self.judge.correct(extraction)
        return score_answer(example, extraction)

    def local_path(self, data_dir: str | Path) -> Path:
        """The first of ``local_files`` that exists under ``data_dir`` (what :meth:`load` reads)."""
        for rel in self.local_files:
            p = Path(data_dir) / rel
            if p.exists():
                return p
        raise DataMissing(
            f"{self.name}: none of {list(self.local_files)} found under data dir {data_dir}"
        )

    def rows_from_local(self, data_dir: Path) -> tuple[list[dict[str, Any]], Path, list[int] | None]:
        """(rows, file, line number of each row or None where the reader has no lines)."""
        p = self.local_path(data_dir)
        if self.read_rows is None:
            pairs = list(iter_jsonl(p))
            return [r for _, r in pairs], p, [n for n, _ in pairs]
        return self.read_rows(p), p, None

    def rows_from_hub(self) -> list[dict[str, Any]]:
        if self.hub is None:
            raise DataError(f"{self.name}: no hub dataset; pass --data-dir with a local copy")
        return load_hub_rows(self.name, self.hub)

    def source(self, data_dir: str | Path | None) -> dict[str, Any]:
        """Where :meth:`load` reads from, for the manifest: a local path, or the hub id and revision."""
        if data_dir is not None:
            return {"local": str(self.local_path(data_dir))}
        h = self.hub
        return {"hub": h.path if h else None, "config": h.config if h else None,
                "split": h.split if h else None, "revision": h.revision if h else None}

    def load(self, data_dir: str | Path | None = None, limit: int | None = None) -> list[Example]:
        lines = None
        if data_dir is not None:
            rows, src, lines = self.rows_from_local(Path(data_dir))
        else:
            rows, src = self.rows_from_hub(), self.hub.path if self.hub else "?"
        indexed = list(enumerate(rows))  # ids and error rows keep the source position when filtering
        if self.row_filter is not None:
            indexed = [(i, r) for i, r in indexed if self.row_filter(r)]
        out, where = [], []
        for i, row in indexed:
            if limit is not None and len(out) >= limit:
                break
            at = f"{src}: line {lines[i]}" if lines else f"{src}: row {i + 1}"
            try:
                out.append(self.to_example(row, i))
            except DataError as e:
                raise DataError(f"{at}: {e}") from None
            except (KeyError, TypeError, ValueError, IndexError) as e:
                raise DataError(f"{at}: cannot read field: {e!r}") from e
            where.append(at)
        check_unique_ids(out, where)
        return out


def check_unique_ids(examples: list[Example], where: list[str]) -> None:
    """Every example id of a dataset names one item: two rows with one id would be one sample to the
    store, the resume logic and the analyzer, so a duplicate is an error naming both places."""
    first: dict[str, str] = {}
    for ex, at in zip(examples, where):
        if ex.id in first:
            raise DataError(f"{at}: duplicate example id {ex.id!r} (first at {first[ex.id].rsplit(': ', 1)[-1]})")
        first[ex.id] = at


def require(row: dict[str, Any], field_name: str, kind: type | tuple[type, ...] = str) -> Any:
    """Fetch a required field with a type check, so loaders fail with the field named."""
    if field_name not in row or row[field_name] is None:
        raise DataError(f"missing field {field_name!r}")
    v = row[field_name]
    if not isinstance(v, kind):
        raise DataError(f"field {field_name!r} has type {type(v).__name__}, expected {kind}")
    return v


REGISTRY: dict[str, Task] = {}


def register(task: Task) -> Task:
    if task.name in REGISTRY:
        raise ValueError(f"task {task.name!r} registered twice")
    if task.group not in GROUPS:
        raise ValueError(f"task {task.name!r}: unknown group {task.group!r}")
    if (task.answer_type == "judge") != (task.judge is not None):
        raise ValueError(f"task {task.name!r}: a task has a judge exactly when its answer type is 'judge'")
    REGISTRY[task.name] = task
    return task


def register_all(tasks: Iterable[Task]) -> None:
    for t in tasks:
        register(t)
