"""The runner and harness with a zero-latency table backend: batching, caching, judge routing,
user-defined datasets, and the CLI's list/report commands."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cotbench.backends.table import TableBackend
from cotbench.cli import main
from cotbench.pipeline.config import build_config
from cotbench.pipeline.harness import run
from cotbench.pipeline.runner import RunOptions, build_units, execute, score_unit
from cotbench.pipeline.store import Store
from cotbench.tasks import get_task

FIXTURES = Path(__file__).parent / "fixtures"


def gold_answerer(examples):
    """Answer each request with the gold of the item whose question is in the last user turn."""
    golds = {ex.question: ex.gold for ex in examples}

    def answer(req):
        last = req.messages[-1]["content"]
        for q, g in golds.items():
            if q in last:
                return f"Let me think. The answer is {g}."
        return "I do not know."

    return answer


def test_rounds_batch_cache_and_score(tiny_data, tmp_path):
    task = get_task("gsm8k")
    exs = task.load(tiny_data, limit=6)
    backend = TableBackend(gold_answerer(exs))
    opts = RunOptions("table")
    store = Store(tmp_path / "s.sqlite")
    units = build_units({task: exs}, ["zs_direct", "zs_cot", "fs_direct", "fs_cot"], opts)
    stats = execute(units, backend, store, opts)
    assert stats.rounds == 1 and stats.calls_made == 24 and store.count() == 24
    rows = [score_unit(u, "table") for u in units]
    assert all(r.correct and r.parse_status == "ok" for r in rows)
    again = build_units({task: exs}, ["zs_direct", "zs_cot", "fs_direct", "fs_cot"], opts)
    stats2 = execute(again, backend, store, opts)
    assert stats2.calls_made == 0 and stats2.calls_cached == 24 and backend.stats.calls == 24


def test_judge_calls_route_to_the_judge_backend(tiny_data, tmp_path):
    task = get_task("biggen_bench")
    exs = task.load(tiny_data, limit=3)
    model = TableBackend(lambda r: "Final response: Paris is the capital.", model_id="model")
    judge = TableBackend(lambda r: "Feedback: adequate. [RESULT] 5" if "Score rubric" in r.messages[-1]["content"]
                         else "unexpected", model_id="judge")
    opts = RunOptions("model")
    units = build_units({task: exs}, ["zs_direct"], opts)
    stats = execute(units, model, Store(tmp_path / "s.sqlite"), opts, judge=judge)
    assert stats.rounds == 2 and model.stats.calls == 3 and judge.stats.calls == 3
    rows = [score_unit(u, "model") for u in units]
    assert all(r.correct and r.extracted == "5" and r.extra["judge_score"] == 5 for r in rows)
    assert all(r.extra["judged_text"] == "Paris is the capital." for r in rows)


def test_user_dataset_runs_without_code(tmp_path):
    data = FIXTURES / "custom_choice.jsonl"
    cfg = build_config(None, {"dataset_file": str(data), "answer_type": "choice", "out": str(tmp_path),
                              "settings": ["zs_direct", "zs_cot"], "progress": False})

    def answer(req):  # the right option text is findable from the fixture's answers
        return "The best answer is " + {"photosynthesis": "B", "liquid": "A", "largest": "C"}.get(
            next((k for k in ("photosynthesis", "liquid", "largest") if k in req.messages[-1]["content"]), ""), "A")

    out = run(cfg, backend=TableBackend(answer))
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {r["dataset"] for r in rows} == {"custom/custom_choice"}
    by_q = {r["example_id"]: r for r in rows if r["setting"] == "zs_direct"}
    assert len(by_q) == sum(1 for _ in data.open())
    first3 = [r for r in rows if r["setting"] == "zs_direct"][:3]
    assert [r["gold"] for r in first3] == ["B", "A", "C"] and all(r["correct"] for r in first3)


def test_list_and_report_commands(capsys, tiny_data, tmp_path):
    assert main(["list", "datasets"]) == 0
    listed = capsys.readouterr().out
    for name in ("gsm8k", "mmlu", "bbh", "musique", "biggen_bench", "contexthub", "gpqa", "winogrande"):
        assert re.search(rf"\b{name}\b", listed)
    assert main(["list", "models"]) == 0
    models = capsys.readouterr().out
    assert "llama-3.1-70b-instruct" in models and "claude-3.5-sonnet" in models and "gemini-1.5-pro" in models
    cfg = build_config(None, {"datasets": ["mmlu"], "settings": ["zs_direct", "zs_cot"], "limit": 4,
                              "data_dir": str(tiny_data), "out": str(tmp_path), "progress": False})
    exs = get_task("mmlu").load(tiny_data, limit=4)
    out = run(cfg, backend=TableBackend(gold_answerer(exs)))
    assert main(["report", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "mmlu" in shown and "100.0" in shown and "CoT gain" in shown
    assert main(["report", str(tmp_path / "nope")]) == 2


def test_summary_accuracy_se_cost_and_chance_credit():
    from cotbench.pipeline.summary import summarize
    from cotbench.records import SampleResult

    def row(correct, status="ok", tin=100, tout=10):
        return SampleResult(model="m", dataset="d", group="g", setting="zs_cot", example_id=str(id(object())),
                            sample_index=0, key="k", messages=[], response="", extracted=None if status != "ok" else "A",
                            extract_method="x", parse_status=status, gold="A", correct=correct, tokens_in=tin,
                            tokens_out=tout, latency_s=0.1, finish_reason="stop", choices=["a", "b", "c", "d"])

    rows = [row(True), row(True), row(False), row(False, "unparseable")]
    (line,) = summarize(rows, price_in=2.0, price_out=10.0, chance_credit=True)
    assert line["n"] == 4 and line["accuracy"] == 0.5
    assert abs(line["se"] - (0.5 * 0.5 / 4) ** 0.5) < 1e-9
    assert line["unparseable_rate"] == 0.25 and line["mean_tokens_out"] == 10
    assert line["accuracy_chance_credit"] == (2 + 0.25) / 4
    assert abs(line["cost_usd"] - (400 / 1e6 * 2.0 + 40 / 1e6 * 10.0)) < 1e-12


def test_summary_leaves_unknown_token_counts_empty(tmp_path):
    """Rows that report no token counts (imported published generations, servers without usage) get
    empty token cells, not a mean of 0 tokens; a row without a count among others counts 0."""
    from cotbench.pipeline.summary import summarize, summary_csv, summary_rows
    from cotbench.records import SampleResult

    def row(setting, tout):
        return SampleResult(model="m", dataset="d", group="g", setting=setting, example_id="1", sample_index=0,
                            key="k", messages=[], response="", extracted="A", extract_method="x", parse_status="ok",
                            gold="A", correct=True, tokens_in=None, tokens_out=tout, latency_s=None,
                            finish_reason=None)

    lines = summarize([row("zs_direct", None), row("zs_cot", 10), row("zs_cot", None)], price_in=1.0, price_out=1.0)
    unknown, known = lines
    assert unknown["setting"] == "zs_direct" and unknown["mean_tokens_out"] is None and unknown["tokens_out"] is None
    assert unknown["tokens_in"] is None and "cost_usd" not in unknown
    assert known["mean_tokens_out"] == 5.0 and known["tokens_out"] == 10
    (tmp_path / "summary.csv").write_text(summary_csv(lines))
    back = summary_rows(tmp_path)
    assert back[0]["mean_tokens_out"] is None and back[1]["mean_tokens_out"] == 5.0


def test_quick_suite_falls_back_to_local_mirror_when_hub_is_unreachable(monkeypatch, tiny_data, tmp_path, capsys):
    """`python -m cotbench run` with no arguments: hub first; offline, the local mirror, said out loud."""
    import cotbench.pipeline.harness as harness
    from cotbench.tasks.hub import HubUnavailable

    seen = []

    def fake_run(cfg):
        seen.append(cfg.reporting.data_dir)
        if cfg.reporting.data_dir is None:
            raise HubUnavailable("gsm8k: cannot load openai/gsm8k from the Hugging Face hub")
        out = tmp_path / "run"
        out.mkdir(exist_ok=True)
        (out / "summary.csv").write_text("model,dataset,group,setting,n,accuracy,se,unparseable_rate,mean_tokens_out\n"
                                         "m,gsm8k,mathematical,zs_cot,5,0.2,0.17,0.0,100\n")
        return out

    import cotbench.pipeline.cli as harness_cli

    monkeypatch.delenv("COTBENCH_DATA_DIR", raising=False)
    monkeypatch.setattr(harness, "run", fake_run)
    monkeypatch.setattr(harness_cli, "_fallback_data_dir", lambda: str(tiny_data))
    assert main(["run"]) == 0
    assert seen == [None, str(tiny_data)]
    err = capsys.readouterr()
    assert "using the local mirror" in err.err and "Full study" in err.out


def test_samples_store_every_extractor_and_use_finish_reason(hf_data, tmp_path):
    """A CoT that ends in a bare number is complete when the backend says it stopped ("stop"): the default
    extractor reads it, the strict one (answer format only) does not; both verdicts are stored and summed."""
    from cotbench.pipeline.summary import summarize

    task = get_task("gsm8k")
    exs = task.load(hf_data, limit=3)
    golds = {ex.question: ex.gold for ex in exs}
    backend = TableBackend(lambda req: "Let me think.\nSo the total is " + next(
        g for q, g in golds.items() if q in req.messages[-1]["content"]))
    opts = RunOptions("table")
    units = build_units({task: exs}, ["zs_cot"], opts)
    execute(units, backend, Store(tmp_path / "s.sqlite"), opts)
    rows = [score_unit(u, "table") for u in units]
    assert all(r.finish_reason == "stop" and r.correct for r in rows)
    for r in rows:
        assert {n: e["role"] for n, e in r.extractions.items()} == {
            "number": "default", "number_strict": "strict", "number_flexible": "flexible"}
        assert r.extractions["number"]["answer"] == r.extracted and not r.extractions["number_strict"]["correct"]
    (line,) = summarize(rows)
    assert line["accuracy"] == 1.0 and line["accuracy_strict"] == 0.0 and line["accuracy_flexible"] == 1.0


def test_report_shows_strict_and_flexible_accuracy(tmp_path):
    from rich.console import Console

    from cotbench.pipeline.console import print_summary

    (tmp_path / "summary.csv").write_text(
        "model,dataset,group,setting,n,accuracy,se,unparseable_rate,mean_tokens_out,accuracy_strict,accuracy_flexible\n"
        "m,gsm8k,math,zs_cot,4,0.5,0.25,0.25,10,0.25,0.75\n", encoding="utf-8")
    con = Console(record=True, width=200)
    print_summary(tmp_path, con)
    out = con.export_text()
    header = next(line for line in out.splitlines() if "accuracy" in line)
    assert "strict" in header and "flexible" in header and "25.0" in out and "75.0" in out
    (tmp_path / "summary.csv").write_text(  # a run written before the columns existed
        "model,dataset,group,setting,n,accuracy,se,unparseable_rate,mean_tokens_out\n"
        "m,gsm8k,math,zs_cot,4,0.5,0.25,0.25,10\n", encoding="utf-8")
    con = Console(record=True, width=200)
    print_summary(tmp_path, con)
    assert "strict" not in next(line for line in con.export_text().splitlines() if "accuracy" in line)


def test_token_budget_per_call_kind_task_then_run_override():
    """Every call kind's budget comes from one resolver: the run's override for its kind, else the task's
    (with the plan spec's own budgets for plan calls); a judge's budget is its task's alone."""
    import dataclasses

    from cotbench.pipeline.runner import token_budget
    from cotbench.solvers.plan import plan_spec

    gsm8k, biggen = get_task("gsm8k"), get_task("biggen_bench")
    plan = plan_spec(gsm8k)["max_tokens"]
    plain, over = RunOptions("m"), RunOptions("m", max_tokens_direct=7, max_tokens_cot=70)
    want = {"direct": (32, 7), "cot": (768, 70), "plan": (plan["plan"], 70), "plan_direct": (32, 7),
            "plan_cot": (768, 70)}
    for kind, (own, overridden) in want.items():
        assert token_budget(gsm8k, kind, plain, plan) == own == gsm8k.budget(kind, plan)
        assert token_budget(gsm8k, kind, over, plan) == overridden
    bare = dataclasses.replace(gsm8k, max_tokens={"direct": 5, "cot": 50})
    assert [bare.budget(k) for k in ("plan", "plan_direct", "plan_cot")] == [768, 5, 50]  # no plan spec budgets
    assert bare.budget("plan_cot", {"plan_cot": 99}) == 99
    assert token_budget(biggen, "judge", over) == biggen.judge.max_tokens == 512
    with pytest.raises(ValueError, match="no judge"):
        gsm8k.budget("judge")
    with pytest.raises(ValueError, match="unknown call kind"):
        gsm8k.budget("answer")


def test_plan_settings_only_for_tasks_that_declare_a_plan_prompt(tiny_data):
    from cotbench.records import Example

    opts = RunOptions("m")
    ex = Example("x/0", "x", "What is 2 + 2?", "4", "number")
    gsm8k, mmlu = get_task("gsm8k"), get_task("mmlu")
    units = build_units({gsm8k: [ex], mmlu: mmlu.load(tiny_data, limit=1)}, ["plan_direct", "plan_tool"], opts)
    assert [(u.task.name, u.setting.name) for u in units] == [("gsm8k", "plan_direct"), ("gsm8k", "plan_tool")]
