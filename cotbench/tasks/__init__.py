"""Task registry: the study's 20 datasets (some split into sub-tasks) plus user-defined JSONL tasks.

``DATASETS`` maps each of the 20 dataset names to its task names, so ``--datasets bbh`` expands to
the 27 ``bbh/<task>`` tasks; ``get_task`` accepts either a task name or a one-task dataset name.
"""
from __future__ import annotations

from cotbench.records import (
    DataError,  # re-exported: the error every task loader raises
)
from cotbench.tasks import base
from cotbench.tasks.base import Task

_MODULES = (
    "commonsense", "arc", "mmlu", "agieval", "biggen", "musr", "musique",
    "bbh", "folio", "contexthub", "gsm8k", "hendrycks_math", "gpqa",
)


def _load() -> None:
    if base.REGISTRY:
        return
    import importlib

    for mod in _MODULES:
        base.register_all(importlib.import_module(f"cotbench.tasks.{mod}").TASKS)


_load()

# dataset name (the study's 20) -> task names, in the study's group order
DATASETS: dict[str, list[str]] = {
    # commonsense
    "commonsenseqa": ["commonsenseqa"],
    "strategyqa": ["strategyqa"],
    "siqa": ["siqa"],
    "piqa": ["piqa"],
    "winogrande": ["winogrande"],
    # knowledge
    "arc_easy": ["arc_easy"],
    "arc_challenge": ["arc_challenge"],
    "mmlu": ["mmlu"],
    "mmlu_pro": ["mmlu_pro"],
    # soft reasoning
    "agieval": ["agieval/lsat-ar", "agieval/lsat-lr", "agieval/lsat-rc"],
    "biggen_bench": ["biggen_bench"],
    "musr": ["musr/murder_mysteries", "musr/object_placements", "musr/team_allocation"],
    "musique": ["musique"],
    # symbolic
    "bbh": [t.name for t in base.REGISTRY.values() if t.name.startswith("bbh/")],
    "folio": ["folio"],
    "contexthub": ["contexthub/deductive_l1", "contexthub/abductive_l1", "contexthub/deductive_l2",
                   "contexthub/abductive_l2"],
    # mathematical
    "gsm8k": ["gsm8k"],
    "gsm8k_hard": ["gsm8k_hard"],
    "math": ["math"],
    "gpqa": ["gpqa"],
}


def dataset_of(task_name: str) -> str:
    """The study dataset a task belongs to ("bbh/navigate" -> "bbh")."""
    for ds, tasks in DATASETS.items():
        if task_name in tasks:
            return ds
    raise ValueError(f"task {task_name!r} belongs to none of the study's datasets")


def list_tasks() -> list[Task]:
    return list(base.REGISTRY.values())


def get_task(name: str) -> Task:
    if name in base.REGISTRY:
        return base.REGISTRY[name]
    if name in DATASETS and len(DATASETS[name]) == 1:
        return base.REGISTRY[DATASETS[name][0]]
    raise ValueError(
        f"unknown task {name!r}; datasets: {', '.join(DATASETS)}; tasks: {', '.join(base.REGISTRY)}"
    )


def expand(names: list[str] | tuple[str, ...]) -> list[str]:
    """Dataset or task names -> task names (order kept, duplicates dropped); unknown names raise."""
    out: list[str] = []
    for n in names:
        for t in DATASETS.get(n) or [get_task(n).name]:
            if t not in out:
                out.append(t)
    return out


__all__ = ["DATASETS", "DataError", "Task", "dataset_of", "expand", "get_task", "list_tasks"]
