"""Prompt templates are data (``prompts/<name>.yaml``); this module turns them into chat messages.

File format (every key but ``direct``/``cot`` optional)::

    system: "optional system message"
    direct: "zero-shot direct template with {question} and {choices}"
    cot:    "zero-shot CoT template"
    fewshot_direct: "template for few-shot turns (defaults to direct)"
    fewshot_cot:    "template for few-shot turns (defaults to cot)"
    direct_answer: "assistant turn of a direct exemplar, e.g. 'The answer is {answer}.'"
    cot_answer:    "assistant turn of a CoT exemplar, e.g. '{rationale} The answer is {answer}.'"
    prefill: {direct: "The answer is", cot: null}   # assistant prefix where the backend allows
    stop: {direct: ["\n\n"], cot: []}
    exemplars:      # few-shot exemplars, inline (written by us or drawn from a train/dev split)
      - {question: ..., choices: [...], answer: ..., rationale: ...}
    plan: ...       # plan-condition templates (see cotbench.solvers)

Few-shot prompts are multi-turn: each exemplar is a user turn followed by an assistant turn.
Template fields: {question}, {choices} (rendered "(A) text" lines), {letters} ("A, B, C, D"), and any
metadata key of the Example.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cotbench.paths import data_dir
from cotbench.pipeline.settings import Setting
from cotbench.records import LETTERS, DataError, Example, Message

PROMPTS_DIR = data_dir("prompts")


@dataclass(frozen=True)
class Rendered:
    messages: tuple[Message, ...]
    prefill: str | None
    stop: tuple[str, ...]


def format_choice(i: int, choice: str) -> str:
    """One option as every prompt writes it: "(B) text"."""
    return f"({LETTERS[i]}) {choice}"


def format_choices(choices: tuple[str, ...] | list[str] | None) -> str:
    if not choices:
        return ""
    return "\n".join(format_choice(i, c) for i, c in enumerate(choices))


def prompt_fields(question: str, choices, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """The placeholders a prompt template fills: ``metadata``'s keys plus question, choices, letters
    (one helper, so every prompt family fills templates the same way)."""
    f = dict(metadata or {})
    f.update(
        question=question,
        choices=format_choices(choices),
        letters=", ".join(LETTERS[: len(choices)]) if choices else "",
    )
    return f


class _Safe(dict):
    def __missing__(self, key: str) -> str:  # leave unknown placeholders visible rather than crash
        return "{" + key + "}"


def fill(template: str, fields: dict[str, Any]) -> str:
    return template.format_map(_Safe(fields))


def read_prompt_yaml(name: str, prompts_dir: str | None = None, what: str = "prompt") -> tuple[Any, Path]:
    """Parse ``prompts/<name>.yaml``; a missing file or bad YAML is a DataError naming the file."""
    path = Path(prompts_dir or PROMPTS_DIR) / f"{name}.yaml"
    if not path.exists():
        raise DataError(f"{what} file not found: {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")), path
    except yaml.YAMLError as e:
        raise DataError(f"{path}: invalid YAML: {e}") from None


@functools.lru_cache(maxsize=None)
def load_prompt_file(name: str, prompts_dir: str | None = None) -> dict[str, Any]:
    spec, path = read_prompt_yaml(name, prompts_dir)
    if not isinstance(spec, dict) or "direct" not in spec or "cot" not in spec:
        raise DataError(f"{path}: needs at least the keys 'direct' and 'cot'")
    return spec


def _by_mode(value: Any, mode: str, default: Any) -> Any:
    if isinstance(value, dict):
        return value.get(mode, default)
    return default if value is None else value


def render(spec: dict[str, Any], example: Example, setting: Setting, k: int | None = None) -> Rendered:
    """Render one example in one setting (direct/cot modes; plan modes live in cotbench.solvers)."""
    mode = setting.mode
    if mode not in ("direct", "cot"):
        raise ValueError(f"render() handles direct/cot; {setting.name} is rendered by cotbench.solvers")
    msgs: list[Message] = []
    item_fields = prompt_fields(example.question, example.choices, example.metadata)
    system = fill(spec.get("system") or "", item_fields).strip()
    if system:  # a per-item system prompt (e.g. BiGGen's "{system_prompt}") may be empty for some items
        msgs.append({"role": "system", "content": system})
    if setting.fewshot:
        exemplars = spec.get("exemplars") or []
        if not exemplars:
            raise DataError(f"prompt for {example.dataset} has no exemplars; few-shot settings unavailable")
        if k is not None:
            exemplars = exemplars[:k]
        turn_t = spec.get(f"fewshot_{mode}") or spec[mode]
        ans_t = spec.get(f"{mode}_answer") or ("The answer is {answer}." if mode == "direct" else "{rationale} The answer is {answer}.")
        for ex in exemplars:
            f = prompt_fields(ex["question"], ex.get("choices"), ex)
            msgs.append({"role": "user", "content": fill(turn_t, f).strip()})
            msgs.append({"role": "assistant", "content": fill(ans_t, f).strip()})
        target_t = turn_t
    else:
        target_t = spec[mode]
    msgs.append({"role": "user", "content": fill(target_t, item_fields).strip()})
    prefill = _by_mode(spec.get("prefill"), mode, None)
    stop = tuple(_by_mode(spec.get("stop"), mode, []) or [])
    return Rendered(tuple(msgs), prefill, stop)
