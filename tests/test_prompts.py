"""Prompt files: every task renders in each of its settings, exemplars are valid and answer in the
format their own prompt asks for, and user-defined datasets run through generic prompts."""
from __future__ import annotations

import functools
import json
import string
from pathlib import Path

import pytest

from cotbench.pipeline.prompts import PROMPTS_DIR, fill, load_prompt_file, render
from cotbench.pipeline.settings import CORE_SETTINGS, SETTINGS
from cotbench.records import LETTERS, DataError, Example
from cotbench.scoring.extract import extract_answer, normalize_number, score
from cotbench.tasks import get_task, list_tasks
from cotbench.tasks.custom import ANSWER_TYPES, task_from_file
from cotbench.tasks.mmlu import MMLU_FEWSHOT_SEED, draw_exemplars

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ALL_TASKS = [t.name for t in list_tasks()]
LOCAL = [n for n in ALL_TASKS if n != "musique"]


def _placeholders(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def _settings(task):
    return [s for s in CORE_SETTINGS if task.fewshot or not SETTINGS[s].fewshot]


@functools.lru_cache(maxsize=None)
def _first(name: str, data_dir: str):
    return tuple(get_task(name).load(data_dir, limit=2))


def _check_rendered(spec, example, setting, rendered):
    msgs = rendered.messages
    body = [m for m in msgs if m["role"] != "system"]
    assert [m["role"] for m in body] == ["user", "assistant"] * ((len(body) - 1) // 2) + ["user"]
    assert len(body) > 1 if setting.fewshot else len(body) == 1
    last = body[-1]["content"]
    assert example.question[:200] in last
    if example.choices and "{choices}" in spec[setting.mode]:
        assert f"({LETTERS[len(example.choices) - 1]}) {example.choices[-1]}".strip() in last
    fields = {"question", "choices", "letters", *example.metadata}
    assert _placeholders(spec[setting.mode]) <= fields, "template uses a field the example lacks"


@pytest.mark.parametrize("name", LOCAL)
def test_every_task_renders_in_its_settings(name, loader_data):
    task = get_task(name)
    spec = load_prompt_file(task.prompt_file)
    assert task.fewshot == bool(spec.get("exemplars")), "few-shot flag must match the prompt file"
    for ex in _first(name, str(loader_data)):
        for s in _settings(task):
            setting = SETTINGS[s]
            _check_rendered(spec, ex, setting, render(spec, ex, setting))


def test_musique_renders(tmp_path):
    (tmp_path / "musique").mkdir()
    (tmp_path / "musique" / "validation.jsonl").write_bytes((FIXTURES / "musique_tiny.jsonl").read_bytes())
    task = get_task("musique")
    spec = load_prompt_file(task.prompt_file)
    for ex in task.load(tmp_path):
        for s in _settings(task):
            _check_rendered(spec, ex, SETTINGS[s], render(spec, ex, SETTINGS[s]))


def _prompt_users() -> dict[str, object]:
    users = {}
    for t in list_tasks():
        users.setdefault(t.prompt_file, t)
    for kind in ANSWER_TYPES:
        users[f"custom_{kind}"] = kind
    return users


def _exemplar_example(task_or_kind, ex: dict) -> tuple[Example, tuple[str, ...] | None]:
    if isinstance(task_or_kind, str):  # a custom answer type
        kind = ANSWER_TYPES[task_or_kind]
        labels = ("True", "False") if task_or_kind == "boolean" else None
    else:
        kind, labels = task_or_kind.answer_type, task_or_kind.labels
    choices = tuple(ex["choices"]) if ex.get("choices") else None
    return Example("exemplar", "exemplar", ex["question"], str(ex["answer"]), kind, choices), labels


@pytest.mark.parametrize("prompt_file,user", sorted(_prompt_users().items()))
def test_exemplars_are_valid_and_follow_their_format(prompt_file, user):
    spec = load_prompt_file(prompt_file)
    for key in ("direct", "cot", "direct_answer", "cot_answer"):
        assert spec.get(key), f"{prompt_file}.yaml lacks {key}"
    for i, ex in enumerate(spec.get("exemplars") or []):
        assert ex.get("question") and ex.get("rationale") and "answer" in ex, (prompt_file, i)
        for mode in ("direct", "cot"):
            turn = spec.get(f"fewshot_{mode}") or spec[mode]
            assert _placeholders(turn) <= {"question", "choices", "letters", *ex}, (prompt_file, i)
        e, labels = _exemplar_example(user, ex)
        if e.answer_type == "choice":
            assert e.choices and e.gold in LETTERS[: len(e.choices)]
        elif e.answer_type == "number":
            assert normalize_number(e.gold) == e.gold
        elif e.answer_type == "label":
            assert e.gold in labels
        for mode in ("direct", "cot"):
            text = fill(spec[f"{mode}_answer"], ex)
            assert score(e, extract_answer(text, e, labels=labels)), (prompt_file, i, mode, text)
    golds = [str(x["answer"]) for x in spec.get("exemplars") or []]
    if len(golds) >= 3 and not isinstance(user, str) and user.answer_type == "choice":
        assert len(set(golds)) > 1, "exemplar answers should not all be the same letter"


def test_mmlu_exemplars_are_the_seeded_dev_draw(hf_data):
    spec = load_prompt_file("mmlu")
    dev = [json.loads(x) for x in open(hf_data / "mmlu" / "dev.jsonl", encoding="utf-8")]
    idx = draw_exemplars(dev, 5, MMLU_FEWSHOT_SEED)
    assert spec["exemplar_source"]["indices"] == idx
    for i, ex in zip(idx, spec["exemplars"]):
        row = dev[i]
        assert (ex["question"], ex["choices"], ex["answer"]) == (row["question"], row["choices"], "ABCD"[row["answer"]])
        assert ex["subject_name"] == row["subject"].replace("_", " ")


def test_every_prompt_file_is_used():
    used = {t.prompt_file for t in list_tasks()} | {f"custom_{k}" for k in ANSWER_TYPES}
    files = {p.stem for p in PROMPTS_DIR.glob("*.yaml") if not p.stem.startswith("plan_")}
    assert files == used


@pytest.mark.parametrize("kind,golds", [
    ("choice", ["B", "A", "C"]), ("number", ["120", "1325", "3.5"]),
    ("boolean", ["False", "True", "True"]), ("text", ["Ottawa", "Albert Einstein"]),
])
def test_custom_dataset_all_settings(kind, golds):
    task = task_from_file(FIXTURES / f"custom_{kind}.jsonl", kind)
    exs = task.load(None)
    assert [e.gold for e in exs] == golds and task.name == f"custom/custom_{kind}"
    assert {task: 1}[task] == 1  # hashable like registry tasks (the runner keys dicts by task)
    spec = load_prompt_file(task.prompt_file)
    for e in exs:
        for s in CORE_SETTINGS:
            _check_rendered(spec, e, SETTINGS[s], render(spec, e, SETTINGS[s]))
        text = fill(spec["cot_answer"], {"answer": e.gold, "rationale": "Thinking it over."})
        assert score(e, extract_answer(text, e, labels=task.labels))
    if kind == "text":
        assert score(exs[1], extract_answer("The answer is Einstein.", exs[1]))


@pytest.mark.parametrize("kind,content,message", [
    ("choice", '{"question": "q", "choices": ["a", "b"], "answer": "C"}', "line 1: field 'answer'"),
    ("choice", '{"question": "q", "answer": "A"}', "line 1: field 'choices'"),
    ("number", '{"question": "q", "answer": 1}\n{"question": "q", "answer": "many"}', "line 2: field 'answer'"),
    ("number", '{"question": "q", "answer": 1}\n\n{"question": "q"', "line 3: invalid JSON"),
    ("boolean", '{"question": "q", "answer": "maybe"}', "line 1: field 'answer'"),
    ("text", '{"question": "", "answer": "x"}', "line 1: field 'question'"),
    ("text", '{"question": "q", "choices": ["a"], "answer": "x"}', "line 1: field 'choices'"),
    ("text", "", "no examples"),
])
def test_custom_dataset_errors_name_file_line_field(tmp_path, kind, content, message):
    p = tmp_path / "mine.jsonl"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as err:
        task_from_file(p, kind)
    assert "mine.jsonl" in str(err.value)


def test_custom_unknown_answer_type_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="unknown answer type"):
        task_from_file(FIXTURES / "custom_text.jsonl", "essay")
    with pytest.raises(DataError, match="not found"):
        task_from_file(tmp_path / "nope.jsonl", "text")
