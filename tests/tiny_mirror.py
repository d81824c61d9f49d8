"""A tiny local mirror of every dataset, written for the tests (synthetic rows, in each loader's schema).

Tests that need *some* data in the hub schema (runner, store, resume, analyzer, CLI, per-task loaders and
prompts) run on this mirror, so they run on a fresh clone; tests about the real files (full split sizes,
particular rows) use ``../shared/data`` and skip without it. Every row here was written for cotbench.
"""
from __future__ import annotations

import json
from pathlib import Path

from cotbench.tasks import bbh

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GSM8K_ROWS = 2000  # enough for the disk-full tests' large runs


def _jsonl(root: Path, rel: str, rows: list[dict]) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _json(root: Path, rel: str, obj) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj), encoding="utf-8")


def gsm8k_rows(n: int = GSM8K_ROWS) -> list[dict]:
    rows = []
    for i in range(n):
        a, b = 3 + i % 17, 5 + (7 * i) % 23
        rows.append({"question": f"A crate holds {a} apples and a basket holds {b} apples. "
                                 f"How many apples are there in all? (case {i})",
                     "answer": f"{a} + {b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}"})
    return rows


def _bbh_row(task: str, i: int) -> dict:
    kind, labels = bbh.SPEC[task]
    if kind == "choice":
        opts = ["red ball", "blue cube", "green cone"]
        return {"input": f"Which object did Ann pick on day {i + 1}?\nOptions:\n" +
                         "\n".join(f"({'ABC'[j]}) {o}" for j, o in enumerate(opts)),
                "target": f"({'ABC'[i % 3]})"}
    if kind == "label":
        return {"input": f"Statement {i + 1}: is it so?", "target": labels[i % len(labels)]}
    if kind == "number":
        return {"input": f"How many legs do {i + 2} birds have?", "target": str(2 * (i + 2))}
    if task == "dyck_languages":
        return {"input": f"Complete the rest of the sequence, making sure that the parentheses are closed "
                         f"properly. Input: {'[ ' * (i + 1)}(", "target": ") " + "] " * i + "]"}
    return {"input": f"Sort the following words alphabetically: List: pear apple fig{i}",
            "target": f"apple fig{i} pear"}


def write_tiny_mirror(root: Path) -> Path:
    """Write the mirror under ``root`` (hub-schema files, ContextHub in its original layout); returns root."""
    root = Path(root)
    _jsonl(root, "commonsense_qa/validation.jsonl", [
        {"id": f"csqa-{i}", "question": f"Where would you most likely keep spare blanket number {i}?",
         "question_concept": "blanket", "answerKey": "ABCDE"[i],
         "choices": {"label": list("ABCDE"), "text": ["closet", "oven", "river", "roof", "mailbox"]}}
        for i in range(3)])
    _jsonl(root, "strategyqa/train_filtered.jsonl", [
        {"qid": f"sq{i}", "term": "Tea", "question": f"Could a teapot hold {i + 1} cups of tea?",
         "answer": i % 2 == 0} for i in range(3)])
    _jsonl(root, "social_i_qa/validation.jsonl", [
        {"context": f"Sam lent Kim an umbrella on day {i + 1}.", "question": "How would Kim feel?",
         "answerA": "grateful", "answerB": "angry", "answerC": "sleepy", "label": str(1 + i % 3)}
        for i in range(3)])
    _jsonl(root, "piqa/validation.jsonl", [
        {"goal": f"To dry wet shoes (pair {i + 1})", "sol1": "stuff them with newspaper",
         "sol2": "put them in the freezer", "label": i % 2} for i in range(3)])
    _jsonl(root, "winogrande/validation.jsonl", [
        {"sentence": f"The trophy did not fit in the case {i + 1} because the _ was too big.",
         "option1": "trophy", "option2": "case", "answer": str(1 + i % 2)} for i in range(3)])
    for name in ("arc_easy", "arc_challenge"):
        _jsonl(root, f"{name}/test.jsonl", [
            {"id": f"{name}-{i}", "question": f"Which of these is a source of light (set {i + 1})?",
             "choices": {"label": ["1", "2", "3", "4"] if i == 2 else list("ABCD"),
                         "text": ["the Sun", "a rock", "a spoon", "a shoe"]},
             "answerKey": "1" if i == 2 else "A"} for i in range(3)])
    _jsonl(root, "mmlu/test.jsonl", [
        {"question": f"What is the order of the cyclic group Z_{i + 2}?", "subject": "abstract_algebra",
         "choices": [str(i + 1), str(i + 2), str(i + 3), str(i + 4)], "answer": 1} for i in range(8)])
    _jsonl(root, "mmlu_pro/test.jsonl", [
        {"question_id": 100 + i, "question": f"What is {i} + 2?", "answer": "C", "answer_index": 2,
         "options": [str(i), str(i + 1), str(i + 2), str(i + 3), str(i + 4)], "category": "math",
         "src": "cotbench-fixture"} for i in range(3)])
    for name in ("lsat-ar", "lsat-lr", "lsat-rc"):
        _jsonl(root, f"agieval/{name}.jsonl", [
            {"passage": f"Five runners finish a race; Ann is ahead of Bo (case {i + 1}).",
             "question": "Which must be true?",
             "options": ["(A) Bo won", "(B) Ann was not last", "(C) Ann was last", "(D) Bo was first",
                         "(E) none"], "label": "B"} for i in range(3)])
    rubric = {"criteria": "Is the answer correct and clear?",
              **{f"score{k}_description": f"Level {k} answer." for k in range(1, 6)}}
    _jsonl(root, "biggen_bench/test.jsonl", [
        {"id": f"bg{i}", "capability": "reasoning", "task": "vision_tasks" if i == 3 else "math",
         "input": f"Explain why {i} + 1 is {i + 1}.", "reference_answer": f"Adding one to {i} gives {i + 1}.",
         "system_prompt": "You are helpful." if i else "", "score_rubric": rubric} for i in range(4)])
    for domain in ("murder_mysteries", "object_placements", "team_allocation"):
        _jsonl(root, f"musr/{domain}.jsonl", [
            {"narrative": f"A short story about a missing key, told for case {i + 1}.",
             "question": "Who has the key?",
             "choices": "['Ann', 'Bo']" if i == 0 else ["Ann", "Bo"], "answer_index": i % 2}
            for i in range(3)])
    musique = (FIXTURES / "musique_tiny.jsonl").read_text(encoding="utf-8")
    (root / "musique").mkdir(parents=True, exist_ok=True)
    (root / "musique" / "validation.jsonl").write_text(musique, encoding="utf-8")
    for task in bbh.SPEC:
        _jsonl(root, f"bbh/{task}.jsonl", [_bbh_row(task, i) for i in range(3)])
    _jsonl(root, "folio/validation.jsonl", [
        {"example_id": i, "premises": "All cats are animals.\nTom is a cat.",
         "conclusion": [f"Tom is an animal (claim {i}).", f"Tom is not an animal (claim {i}).",
                        f"Tom is black (claim {i})."][i], "label": ["True", "False", "Uncertain"][i]}
        for i in range(3)])
    for level in (1, 2):
        for logic in ("deductive", "abductive"):
            _json(root, f"contexthub/data_level{level}/{logic}_logic.json", [
                {"question": "template", "answer": ans,
                 "abstract": {"symbols": {"<nl>": f"If p then q. p is true. Is q true? (template {t})"}},
                 "tech": {"servers": {"<nl>": f"If the server is up, mail flows.\nIs mail flowing? ({t})"}}}
                for t, ans in enumerate([True, False, "N/A"])])
    _jsonl(root, "gsm8k/test.jsonl", gsm8k_rows())
    _jsonl(root, "gsm8k_hard/train.jsonl", [
        {"input": f"A farm has {1000 + i} cows and buys 250 more. How many cows?", "target": 1250.0 + i}
        for i in range(3)])
    _jsonl(root, "math/test.jsonl", [
        {"problem": p, "solution": f"So the answer is $\\boxed{{{a}}}$.", "answer": a, "type": "Algebra",
         "level": "Level 1"}
        for p, a in [("What is $1/2 + 1/4$?", "\\frac{3}{4}"), ("Solve $x + 3 = 8$.", "5"),
                     ("What is $\\sqrt{16}$?", "4")]])
    _jsonl(root, "gpqa/train.jsonl", [
        {"Record ID": f"rec{i}", "Question": f"Which particle carries charge -1 (variant {i})?",
         "Correct Answer": "electron", "Incorrect Answer 1": "neutron", "Incorrect Answer 2": "photon",
         "Incorrect Answer 3": "neutrino", "Subdomain": "Physics", "High-level domain": "Physics"}
        for i in range(3)])
    return root
