"""Refactors of the run pipeline must not change what is asked or what is written.

Why: a request key is the identity of a stored generation; a refactor that changes one prompt byte or one
token budget silently re-pays every call of every earlier run, and a changed row changes every analysis.
This test runs judge (BiGGen Bench), plan (GSM8K, FOLIO, ContextHub: plan_direct / plan_cot / plan_tool)
and plain direct/CoT units end to end through ``harness.run`` with a table backend, with and without the
run's token-budget overrides, and compares every request key and a digest of every row with the golden
file recorded before the tasks took over their judge, plan prompts and budgets
(``tests/fixtures/golden_requests.json``). Regenerate it only for an intended change:
``COTBENCH_WRITE_GOLDEN=1 pytest tests/test_golden_requests.py``.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from cotbench.backends.table import TableBackend
from cotbench.pipeline.config import build_config
from cotbench.pipeline.harness import run

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="plan_tool needs the Linux sandbox")
GOLDEN = Path(__file__).parent / "fixtures" / "golden_requests.json"
SETTINGS = ["zs_direct", "zs_cot", "fs_direct", "fs_cot", "plan_direct", "plan_cot", "plan_tool"]
DATASETS = ["gsm8k", "folio", "contexthub", "biggen_bench", "mmlu"]
RUNS = {
    "task_budgets": {},
    "run_overrides": {"max_tokens_direct": 20, "max_tokens_cot": 300, "fewshot_k": 1},
}
# fields that depend on the machine or the clock, not on the request
VOLATILE_TOOL = {"duration_s", "isolation", "limits_in_force", "limits_missing", "memory_peak_mb", "returncode",
                 "stdout", "stderr", "detail", "traceback"}


def answer(req) -> str:
    """A deterministic model and judge: graded replies for the judge, code for plan calls, else an answer."""
    last = req.messages[-1]["content"]
    h = int(hashlib.sha256(last.encode()).hexdigest(), 16)
    if "Score rubric" in last:
        return f"Feedback: fine. [RESULT] {1 + h % 5}"
    shown = [m["content"] for m in req.messages if m["role"] == "assistant"]
    if any(a.startswith("```") for a in shown) and "```python\n" not in last:  # a plan call: write a plan
        if any("def solution" in a for a in shown):
            return f"```python\ndef solution():\n    return {h % 20}\n```"
        return "```python\nfrom z3 import *\np = Bool('p')\npremises = [p]\nconclusion = p\n```"
    return ["The answer is (A).", "Let me think.\nFinal response: it is 12.", "The answer is True.",
            "The answer is 12."][h % 4]


def _row_view(row: dict) -> dict:
    tool = (row.get("extra") or {}).get("tool")
    extra = dict(row.get("extra") or {})
    if isinstance(tool, dict):
        extra["tool"] = {k: v for k, v in tool.items() if k not in VOLATILE_TOOL}
    if "calls" in extra:
        extra["calls"] = [{k: v for k, v in c.items() if k != "latency_s"} for c in extra["calls"]]
    # the model label is the config's default model, not part of what the pipeline asks or scores
    stable = {k: v for k, v in row.items() if k not in ("latency_s", "model")} | {"extra": extra}
    digest = hashlib.sha256(json.dumps(stable, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
    return {"dataset": row["dataset"], "setting": row["setting"], "example_id": row["example_id"],
            "key": row["key"], "extracted": row["extracted"], "extract_method": row["extract_method"],
            "correct": row["correct"], "row": digest}


def capture(data: Path, tmp: Path) -> dict:
    got = {}
    for name, over in RUNS.items():
        cfg = build_config(None, {"datasets": DATASETS, "settings": SETTINGS, "limit": 2, "data_dir": str(data),
                                  "out": str(tmp / name), "cache": str(tmp / f"{name}.sqlite"),
                                  "progress": False} | over)
        backend = TableBackend(answer)
        out = run(cfg, backend=backend)
        rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
        got[name] = {"keys": sorted(backend.seen), "rows": [_row_view(r) for r in rows]}
    return got


def test_requests_and_rows_match_the_golden_file(tiny_data, tmp_path):
    got = capture(tiny_data, tmp_path)
    if os.environ.get("COTBENCH_WRITE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    for name in RUNS:
        settings_seen = {(r["dataset"].split("/")[0], r["setting"]) for r in got[name]["rows"]}
        # the run really covers judge, plan (all three) and plain units, or the comparison proves little
        assert {("biggen_bench", "zs_cot"), ("gsm8k", "plan_tool"), ("folio", "plan_cot"),
                ("contexthub", "plan_direct"), ("mmlu", "fs_cot")} <= settings_seen
        assert not {("mmlu", "plan_cot"), ("biggen_bench", "fs_direct")} & settings_seen
        assert got[name]["keys"] == want[name]["keys"], f"{name}: request keys changed"
        assert got[name]["rows"] == want[name]["rows"], f"{name}: rows changed"


@pytest.mark.parametrize("name", list(RUNS))
def test_golden_file_has_judge_and_plan_calls(name):
    """The golden file itself holds judged rows (pass and fail) and two-call plan rows."""
    rows = json.loads(GOLDEN.read_text())[name]["rows"]
    judged = [r for r in rows if r["dataset"] == "biggen_bench"]
    assert {r["correct"] for r in judged} == {True, False}
    assert {r["extract_method"] for r in judged} == {"judge_score"}
    assert any(r["extract_method"].startswith("tool_") for r in rows)
