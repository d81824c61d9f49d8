"""Every locally available dataset: full-split counts, valid golds, and gold answers written the way
the prompts ask for them extracted and scored correct (and a wrong answer in the same form scored wrong).

Per-task checks run on the real mirror when it is there, else on the tests' tiny mirror; the counts and
tests about particular rows need the real files. Counts are those of ../shared/data/MANIFEST.md and hf/README.md. MuSiQue is absent locally (tested on a
small fixture written for these tests); MuSR has only the viewer samples; GPQA only the diamond subset.
"""
from __future__ import annotations

import functools
import json
import math
import random
import shutil
from pathlib import Path

import pytest

from cotbench.pipeline.prompts import fill, load_prompt_file
from cotbench.records import LETTERS, DataError
from cotbench.scoring.extract import extract_answer, normalize_number, score, text_f1
from cotbench.tasks import (
    DATASETS,
    bbh,
    biggen,
    dataset_of,
    expand,
    get_task,
    gpqa,
    list_tasks,
)
from cotbench.tasks.base import GROUPS

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# full split sizes of the local files (MANIFEST.md / hf/README.md), after documented row filters
LOCAL_COUNTS = {
    "commonsenseqa": 1221, "strategyqa": 2821, "siqa": 1954, "piqa": 1838, "winogrande": 1267,
    "arc_easy": 2376, "arc_challenge": 1172,  # test splits (the study's validation splits are absent)
    "mmlu": 14042, "mmlu_pro": 12032,
    "agieval/lsat-ar": 230, "agieval/lsat-lr": 510, "agieval/lsat-rc": 269,
    "biggen_bench": 775 - 10,  # 775 local items minus the 10 multimodal vision_tasks items
    "musr/murder_mysteries": 5, "musr/object_placements": 20, "musr/team_allocation": 5,  # samples only
    "folio": 204,
    "contexthub/deductive_l1": 600, "contexthub/abductive_l1": 360,
    "contexthub/deductive_l2": 2400, "contexthub/abductive_l2": 2400,
    "gsm8k": 1319, "gsm8k_hard": 1319, "math": 5000, "gpqa": 198,  # GPQA diamond only
    **{f"bbh/{t}": n - bbh.DROPPED.get(t, 0) for t, n in bbh.COUNTS.items()},
}
ABSENT = {"musique"}
LOCAL_TASKS = sorted(LOCAL_COUNTS)


@functools.lru_cache(maxsize=None)
def _load(name: str, data_dir: str):
    return get_task(name).load(data_dir)


@pytest.fixture(scope="module")
def examples(loader_data):
    """A task's examples from the real mirror if present, else from the tiny one."""
    return lambda name: _load(name, str(loader_data))


@pytest.fixture(scope="module")
def real_examples(hf_data):
    return lambda name: _load(name, str(hf_data))


def test_registry_covers_the_study():
    assert len(DATASETS) == 20
    names = {t.name for t in list_tasks()}
    assert set(expand(list(DATASETS))) == names
    assert set(LOCAL_TASKS) | ABSENT == names
    assert len(DATASETS["bbh"]) == 27 and len(expand(["bbh"])) == 27
    assert expand(["agieval", "gsm8k", "agieval/lsat-ar"]) == [
        "agieval/lsat-ar", "agieval/lsat-lr", "agieval/lsat-rc", "gsm8k"]
    assert dataset_of("bbh/navigate") == "bbh"
    for t in list_tasks():
        assert t.group in GROUPS and t.description and t.expected_count
        assert t.max_tokens["direct"] < t.max_tokens["cot"]
        assert (t.answer_type == "label") == (t.labels is not None), t.name


def test_unknown_task_lists_names():
    with pytest.raises(ValueError, match="gsm8k"):
        get_task("gsm9k")


def test_sum_of_bbh_matches_manifest():
    assert sum(bbh.COUNTS.values()) == 6511  # MANIFEST: 27 tasks, 6,511 examples


def _check_gold(task, e) -> None:
    kind = e.answer_type
    assert kind == task.answer_type
    if kind == "choice":
        assert e.choices and all(isinstance(c, str) for c in e.choices)
        assert e.gold in LETTERS[: len(e.choices)]
    elif kind == "number":
        v = float(e.gold)
        assert math.isfinite(v) and normalize_number(e.gold) == e.gold
    elif kind == "label":
        assert e.gold in task.labels
    elif kind in ("math", "text"):
        assert isinstance(e.gold, str) and e.gold.strip()
    elif kind == "judge":
        assert e.gold.strip() and e.metadata["score_rubric"]["criteria"]
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("name", LOCAL_TASKS)
def test_valid_golds_and_unique_ids(name, examples):
    task = get_task(name)
    exs = examples(name)
    assert exs and len({e.id for e in exs}) == len(exs), "ids must be unique"
    for e in exs:
        _check_gold(task, e)


def test_full_split_counts(real_examples):
    """Every local file's size after documented filters (one test: a table compared as a whole)."""
    assert {name: len(real_examples(name)) for name in LOCAL_TASKS} == LOCAL_COUNTS
    # hf README: 5 MMLU-Pro questions have 1 option; upstream BBH snarks row 88 is cut after "(A) The NB"
    few = {name: n for name in LOCAL_TASKS if get_task(name).answer_type == "choice"
           and (n := sum(len(e.choices) < 2 for e in real_examples(name)))}
    assert few == {"mmlu_pro": 5, "bbh/snarks": 1}


def test_math_golds_parse_with_math_verify(examples):
    from math_verify import parse

    bad = [e.gold for e in examples("math") if not parse(f"${e.gold}$")]
    assert bad == []


RATIONALE = ("Let me reason step by step. Option (A) looks tempting at first, and 12 + 7 = 19, but the answer "
             "is not simply the first number I see. Checking the details again settles it.")


def _display(task, gold: str) -> str:
    return f"({gold})" if task.prompt_file == "bbh" and task.answer_type == "choice" else gold


def _wrong(task, e) -> str:
    if e.answer_type == "choice":
        return LETTERS[(LETTERS.index(e.gold) + 1) % len(e.choices)]
    if e.answer_type == "number":
        return normalize_number(repr(float(e.gold) + 1))
    if e.answer_type == "label":
        return task.labels[(task.labels.index(e.gold) + 1) % len(task.labels)]
    if e.answer_type == "math":
        return f"{e.gold}+1"
    if e.metadata.get("text_match") == "exact":
        return e.gold + " ]"
    return "zzz qqq"


def _renderings(task, spec, answer: str) -> list[str]:
    """The answer as the prompt asks for it: direct form, its prefill continuation, CoT form."""
    direct = fill(spec["direct_answer"], {"answer": answer})
    cot = fill(spec["cot_answer"], {"answer": answer, "rationale": RATIONALE})
    out = [direct, cot]
    prefill = (spec.get("prefill") or {}).get("direct")
    if prefill and direct.startswith(prefill):
        out.append(direct[len(prefill):])
    return out


@pytest.mark.parametrize("name", [n for n in LOCAL_TASKS if get_task(n).answer_type != "judge"])
def test_gold_in_prompt_format_scores_correct_and_wrong_scores_wrong(name, examples):
    task = get_task(name)
    spec = load_prompt_file(task.prompt_file)
    exs = examples(name)
    wrong_sample = exs if task.answer_type != "math" else random.Random(0).sample(exs, min(300, len(exs)))
    failures = []
    for e in exs:
        for text in _renderings(task, spec, _display(task, e.gold)):
            got = extract_answer(text, e, labels=task.labels)
            if not score(e, got):
                failures.append(("gold", e.id, text, got))
    for e in wrong_sample:
        if e.choices is not None and len(e.choices) < 2:
            continue  # a one-option question has no wrong letter
        for text in _renderings(task, spec, _display(task, _wrong(task, e))):
            got = extract_answer(text, e, labels=task.labels)
            if not got.parsed or score(e, got):
                failures.append(("wrong", e.id, text, got))
    assert failures == [], failures[:5]


def test_bbh_choice_text_kept_and_options_parsed(real_examples):
    e = real_examples("bbh/date_understanding")[0]
    assert e.question.startswith("Today is Christmas Eve of 1937") and "Options:" in e.question
    assert e.choices[1] == "12/25/1937" and e.gold == "B"
    assert "letter of the correct option" in e.metadata["answer_format"]
    assert [x.id for x in real_examples("bbh/ruin_names")][98:101] == [
        "bbh/ruin_names/98", "bbh/ruin_names/100", "bbh/ruin_names/101"]  # source row 99 (0-based) dropped


def test_gsm8k_gold_is_number_after_hashes(real_examples):
    e = real_examples("gsm8k")[0]
    assert e.gold == "18" and e.question.startswith("Janet")


def test_gpqa_shuffle_is_fixed_and_recorded(real_examples, hf_data):
    rows = [json.loads(x) for x in open(hf_data / "gpqa" / "train.jsonl", encoding="utf-8")]
    exs = real_examples("gpqa")
    positions = []
    for row, e in zip(rows, exs):
        perm = e.metadata["permutation"]
        assert sorted(perm) == [0, 1, 2, 3] and perm == gpqa.permutation_for(row["Record ID"])
        assert e.choices[LETTERS.index(e.gold)] == row["Correct Answer"].strip()
        positions.append(e.gold)
    assert len(set(positions)) == 4  # the correct answer is not always in one place


def test_mmlu_metadata(examples):
    e = examples("mmlu")[0]
    assert e.metadata["subject"] == "abstract_algebra" and len(e.choices) == 4
    p = examples("mmlu_pro")[0]
    assert p.metadata["category"] and p.metadata["src"] and len(p.choices) <= 10


def test_contexthub_loads_from_either_data_dir(shared_data, hf_data):
    t = get_task("contexthub/abductive_l1")
    a, b = t.load(shared_data), t.load(hf_data)  # original layout; hf dir reaches it through ../
    assert len(a) == len(b) == 360 and a[0] == b[0] and a[0].choices == ("True", "False", "N/A")


def test_original_layout_readers(tmp_path, shared_data):
    """StrategyQA and FOLIO also read their original files (linked here, not copied)."""
    for rel in ("strategyqa/strategyqa_train_filtered.json", "folio/folio-validation.jsonl"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).symlink_to(shared_data / rel)
    sq = get_task("strategyqa").load(tmp_path)
    fo = get_task("folio").load(tmp_path)
    assert len(sq) == 2821 and sum(e.gold == "Yes" for e in sq) == 1949  # MANIFEST: True 1949
    assert len(fo) == 204 and sum(e.gold == "Uncertain" for e in fo) == 69
    assert fo[0].question.startswith("Premises:\n")


def test_biggen_judge_prompt_and_parse(examples):
    exs = examples("biggen_bench")
    assert not any(e.metadata["task"] == "vision_tasks" for e in exs)
    for e in exs:
        msgs = biggen.judge_messages(e, "my answer")
        body = msgs[-1]["content"]
        assert e.gold in body and e.metadata["score_rubric"]["score5_description"] in body and "my answer" in body
    assert biggen.parse_judge("Feedback: clear and correct. [RESULT] 4") == 4
    assert biggen.parse_judge("[RESULT] 2\n...\nFeedback: revised. [RESULT] 5") == 5
    assert biggen.parse_judge("Overall score: 3/5") == 3
    assert biggen.parse_judge("[RESULT] 7") is None
    assert biggen.parse_judge("The response is weak.") is None
    judge = get_task("biggen_bench").judge
    assert judge is biggen.JUDGE and judge.messages is biggen.judge_messages and judge.parse is biggen.parse_judge
    assert judge.passed(4) and judge.passed(5) and not judge.passed(3) and not judge.passed(None)


def test_only_judged_tasks_have_a_judge_and_the_task_scores_its_verdicts():
    """The task's judge is its scorer for verdicts; the answer-type scorer refuses a verdict rather than guess
    a pass score, and a judge on a non-judge task (or none on a judge task) is refused at registration."""
    import dataclasses

    from cotbench.records import Example, Extraction
    from cotbench.tasks.base import REGISTRY, register

    assert [t.name for t in REGISTRY.values() if t.judge is not None] == ["biggen_bench"]
    task = get_task("biggen_bench")
    ex = Example("g/0", "biggen_bench", "q", "ref", "judge")
    assert task.score(ex, Extraction("4", "judge_score")) and not task.score(ex, Extraction("3", "judge_score"))
    assert not task.score(ex, Extraction(None, "judge_unparseable"))
    assert not task.score(ex, Extraction("5", "judge_pending"))  # text the judge has not graded yet
    with pytest.raises(ValueError, match="scored by its task's judge"):
        score(ex, Extraction("4", "judge_score"))
    with pytest.raises(ValueError, match="judge exactly when"):
        register(dataclasses.replace(task, name="biggen_without_judge", judge=None))
    with pytest.raises(ValueError, match="judge exactly when"):
        register(dataclasses.replace(get_task("gsm8k"), name="gsm8k_judged", judge=task.judge))


def test_musique_fixture(tmp_path):
    """MuSiQue is absent locally: the loader runs on a small file written for this test (hub schema)."""
    (tmp_path / "musique").mkdir()
    shutil.copy(FIXTURES / "musique_tiny.jsonl", tmp_path / "musique" / "validation.jsonl")
    task = get_task("musique")
    exs = task.load(tmp_path)
    assert [e.gold for e in exs] == ["Lake Orvin", "1911"]  # the unanswerable row is dropped
    e = exs[0]
    assert "Harwick Bridge" in e.question and "unrelated" not in e.question  # supporting paragraphs only
    assert e.question.endswith("Question: Which lake does the river crossed by the Harwick Bridge flow into?")
    assert score(e, extract_answer("The answer is Orvin Lake.", e))  # alias
    assert not score(e, extract_answer("The answer is the Brenna River.", e))
    assert text_f1("Lake Orvin basin", e) == pytest.approx(0.8)


def test_missing_data_dir_names_candidates(tmp_path):
    with pytest.raises(DataError, match="strategyqa/train_filtered.jsonl"):
        get_task("strategyqa").load(tmp_path)
    with pytest.raises(DataError, match="no hub dataset"):
        get_task("strategyqa").load(None)


def test_bad_row_names_file_row_and_field(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text(
        '{"question": "q", "answer": "x #### 4"}\n{"question": "q", "answer": "no final"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"test.jsonl: line 2: .*'answer'"):
        get_task("gsm8k").load(tmp_path)


def test_missing_local_files_raise_a_typed_error(tmp_path):
    """`run --skip-missing` needs to tell "no file for this task" from a bad file by type, not by message."""
    from cotbench.tasks.base import DataMissing

    with pytest.raises(DataMissing, match="found under data dir"):
        get_task("gsm8k").load(tmp_path)
    (tmp_path / "gsm8k").mkdir()
    bad = tmp_path / get_task("gsm8k").local_files[0]
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text("{not json\n")
    with pytest.raises(DataError) as e:
        get_task("gsm8k").load(tmp_path)
    assert not isinstance(e.value, DataMissing)


@pytest.mark.parametrize("what", ["datasets", "models", "settings"])
def test_lists_print_json_and_csv_for_scripts(capsys, what):
    import csv
    import io
    import json

    from cotbench.pipeline.console import print_list

    print_list(what, "json")
    rows = json.loads(capsys.readouterr().out)
    print_list(what, "csv")
    assert list(csv.DictReader(io.StringIO(capsys.readouterr().out))) == rows
    assert len(rows) >= 3 and (what != "datasets" or len(rows) == 20)
