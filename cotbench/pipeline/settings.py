"""Prompting settings: shots x mode. Names are the CLI vocabulary (``--settings zs_cot fs_direct``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["direct", "cot", "plan_direct", "plan_cot", "plan_tool"]


@dataclass(frozen=True)
class Setting:
    name: str
    fewshot: bool
    mode: Mode
    description: str


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in [
        Setting("zs_direct", False, "direct", "zero-shot, answer directly"),
        Setting("zs_cot", False, "cot", "zero-shot, think step by step, then answer"),
        Setting("fs_direct", True, "direct", "few-shot exemplars with bare answers"),
        Setting("fs_cot", True, "cot", "few-shot exemplars with worked rationales"),
        Setting("plan_direct", True, "plan_direct", "write a formal plan, then answer directly (Sec. 5)"),
        Setting("plan_cot", True, "plan_cot", "write a formal plan, then execute it step by step in text"),
        Setting("plan_tool", True, "plan_tool", "write a formal plan, executed by a tool (Python / z3)"),
    ]
}
CORE_SETTINGS = ("zs_direct", "zs_cot", "fs_direct", "fs_cot")


def get_setting(name: str) -> Setting:
    try:
        return SETTINGS[name]
    except KeyError:
        raise ValueError(f"unknown setting {name!r}; choose from {', '.join(SETTINGS)}") from None
