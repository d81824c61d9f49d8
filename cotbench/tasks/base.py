"""Task specs: where a dataset lives (hub or local mirror), how rows become Examples, how answers are scored.

A task is declarative data plus one row->Example function, in the spirit of lm-eval's task configs.
Loading order: ``data_dir`` (a local mirror in the hub schema) when given, else the Hugging Face hub.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from cotbench.types import AnswerType, Example

GROUPS = ("commonsense", "knowledge", "soft_reasoning", "symbolic", "mathematical")


class DataError(ValueError):
    """Bad or missing data; the message names the file, row and field."""


class HubUnavailable(DataError):
    """The Hugging Face hub could not be reached or lacks the dataset (offline machine, no access)."""


@dataclass(frozen=True)
class HubSource:
    path: str
    config: str | None = None
    split: str = "test"
    revision: str | None = None


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

    def rows_from_local(self, data_dir: Path) -> tuple[list[dict[str, Any]], Path]:
        for rel in self.local_files:
            p = Path(data_dir) / rel
            if p.exists():
                reader = self.read_rows or read_jsonl
                return reader(p), p
        raise DataError(
            f"{self.name}: none of {list(self.local_files)} found under data dir {data_dir}"
        )

    def rows_from_hub(self) -> list[dict[str, Any]]:
        if self.hub is None:
            raise DataError(f"{self.name}: no hub dataset; pass --data-dir with a local copy")
        import datasets  # heavy import kept at the edge

        try:
            ds = datasets.load_dataset(
                self.hub.path, self.hub.config, split=self.hub.split, revision=self.hub.revision
            )
        except Exception as e:  # network, auth or missing-dataset errors all mean "not from the hub"
            raise HubUnavailable(
                f"{self.name}: cannot load {self.hub.path} ({self.hub.config or 'default'}, {self.hub.split}) "
                f"from the Hugging Face hub: {e.__class__.__name__}: {str(e)[:200]}; pass --data-dir DIR "
                f"(a local mirror in the hub schema) or set COTBENCH_DATA_DIR"
            ) from None
        return [dict(r) for r in ds]

    def load(self, data_dir: str | Path | None = None, limit: int | None = None) -> list[Example]:
        if data_dir is not None:
            rows, src = self.rows_from_local(Path(data_dir))
        else:
            rows, src = self.rows_from_hub(), self.hub.path if self.hub else "?"
        indexed = list(enumerate(rows))  # ids and error rows keep the source position when filtering
        if self.row_filter is not None:
            indexed = [(i, r) for i, r in indexed if self.row_filter(r)]
        out = []
        for i, row in indexed:
            if limit is not None and len(out) >= limit:
                break
            try:
                out.append(self.to_example(row, i))
            except DataError as e:
                raise DataError(f"{src}: row {i + 1}: {e}") from None
            except (KeyError, TypeError, ValueError, IndexError) as e:
                raise DataError(f"{src}: row {i + 1}: cannot read field: {e!r}") from e
        return out


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a bad line raises DataError naming file and line."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {n}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}: line {n}: expected a JSON object")
            yield n, obj


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL file; a bad line raises DataError naming file and line."""
    return [obj for _, obj in iter_jsonl(path)]


def require(row: dict[str, Any], field_name: str, kind: type | tuple[type, ...] = str) -> Any:
    """Fetch a required field with a type check, so loaders fail with the field named."""
    if field_name not in row or row[field_name] is None:
        raise DataError(f"missing field {field_name!r}")
    v = row[field_name]
    if not isinstance(v, kind):
        raise DataError(f"field {field_name!r} has type {type(v).__name__}, expected {kind}")
    return v


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def letter(i: int) -> str:
    return LETTERS[i]


REGISTRY: dict[str, Task] = {}


def register(task: Task) -> Task:
    if task.name in REGISTRY:
        raise ValueError(f"task {task.name!r} registered twice")
    if task.group not in GROUPS:
        raise ValueError(f"task {task.name!r}: unknown group {task.group!r}")
    REGISTRY[task.name] = task
    return task


def register_all(tasks: Iterable[Task]) -> None:
    for t in tasks:
        register(t)
