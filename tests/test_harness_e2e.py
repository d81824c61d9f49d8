"""End to end on the real embedded model (on the tests' tiny mirror): in-process llama.cpp, the OpenAI backend
against a real llama_cpp.server, retries through a real fault-injecting proxy, and resume."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cotbench.backends.base import BackendError
from cotbench.pipeline.config import build_config
from cotbench.pipeline.harness import run
from cotbench.pipeline.model_registry import DEFAULT_MODEL
from cotbench.pipeline.settings import CORE_SETTINGS
from cotbench.testing.fault_proxy import FaultPlan, FaultProxy

pytestmark = pytest.mark.slow
# llama_cpp.server applies repeat_penalty=1.1 unless told otherwise; in-process calls use 1.0
GREEDY_LLAMA_SERVER = {"repeat_penalty": 1.0}
# two exemplars are enough to exercise the few-shot turns; the full sets (up to 8) would make most of the
# prompt tokens, which the embedded model pays for on the CPU
SMALL = {"max_tokens_cot": 48, "max_tokens_direct": 16, "fewshot_k": 2, "progress": False}


def read_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]


def outputs(run_dir: Path) -> dict[tuple, str]:
    return {(r["dataset"], r["setting"], r["example_id"]): r["response"] for r in read_rows(run_dir)}


@pytest.fixture(scope="module")
def inprocess_run(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("inproc")
    cfg = build_config(None, {"datasets": ["gsm8k", "mmlu"], "settings": list(CORE_SETTINGS), "limit": 2,
                              "data_dir": str(tiny_data), "out": str(out), "cache": str(out / "store.sqlite"),
                              **SMALL})
    return run(cfg)


def test_all_four_settings_end_to_end(inprocess_run):
    rows = read_rows(inprocess_run)
    assert len(rows) == 2 * 4 * 2
    assert {(r["dataset"], r["setting"]) for r in rows} == {(d, s) for d in ("gsm8k", "mmlu") for s in CORE_SETTINGS}
    for r in rows:
        assert r["model"] == DEFAULT_MODEL and r["response"] is not None
        assert r["parse_status"] in ("ok", "unparseable")
        assert r["correct"] == (r["extracted"] is not None and r["correct"])  # never correct when unparseable
        assert r["tokens_out"] and r["tokens_in"] and r["finish_reason"] in ("stop", "length")
        assert r["messages"][-1]["role"] == "user"
    fewshot = [r for r in rows if r["setting"].startswith("fs_")]
    assert all(len(r["messages"]) == 2 * 2 + 1 for r in fewshot)  # the two exemplar turns, then the question
    summary = (inprocess_run / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("model,dataset,group,setting,n,accuracy,se,unparseable_rate,mean_tokens_out")
    assert len(summary) == 1 + 8
    man = json.loads((inprocess_run / "manifest.json").read_text())
    assert man["config_hash"] and man["packages"]["llama_cpp_python"]
    assert len(man["backend"]["model_sha256_16"]) == 16
    assert set(man["datasets"]) == {"gsm8k", "mmlu"} and len(man["datasets"]["gsm8k"]["sha256"]) == 64
    assert man["run_stats"]["calls_made"] == 16 and man["run_stats"]["calls_cached"] == 0


def test_rerun_is_served_from_the_store(inprocess_run, tiny_data):
    before = outputs(inprocess_run)
    cfg = build_config(None, {"datasets": ["gsm8k", "mmlu"], "settings": list(CORE_SETTINGS), "limit": 2,
                              "data_dir": str(tiny_data), "out": str(inprocess_run),
                              "cache": str(inprocess_run / "store.sqlite"), **SMALL})
    run(cfg)
    man = json.loads((inprocess_run / "manifest.json").read_text())
    assert man["run_stats"]["calls_made"] == 0 and man["run_stats"]["calls_cached"] == 16
    assert outputs(inprocess_run) == before


def test_changed_parameter_makes_new_keys(inprocess_run, tiny_data, tmp_path):
    cfg = build_config(None, {"datasets": ["gsm8k"], "settings": ["zs_direct"], "limit": 1, "data_dir": str(tiny_data),
                              "out": str(tmp_path), "cache": str(inprocess_run / "store.sqlite"),
                              **{**SMALL, "max_tokens_direct": 17}})
    run(cfg)
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["run_stats"]["calls_cached"] == 0 and man["run_stats"]["calls_made"] == 1


def openai_cfg(tiny_data, out, url, **kw):
    return build_config(None, {"datasets": ["gsm8k", "mmlu"], "settings": ["zs_direct", "zs_cot"], "limit": 2,
                               "data_dir": str(tiny_data), "out": str(out), "backend": "openai", "base_url": url,
                               "concurrency": 2, "extra_body": GREEDY_LLAMA_SERVER, **SMALL, **kw})


def test_openai_backend_matches_inprocess(inprocess_run, llama_server_url, tiny_data, tmp_path):
    out = run(openai_cfg(tiny_data, tmp_path, llama_server_url))
    served = outputs(out)
    local = {k: v for k, v in outputs(inprocess_run).items() if k[1] in ("zs_direct", "zs_cot")}
    assert len(served) == len(local) == 8
    assert served == local  # greedy decoding: same text through the server as in-process


def test_retries_through_fault_proxy_give_identical_scores(inprocess_run, llama_server_url, tiny_data, tmp_path):
    # the client timeout sits far above a real call even on a loaded machine, so only the stall expires
    plan = FaultPlan(first_n=5, faults=("429", "500", "503", "drop", "stall"), stall_s=32.0, seed=1)
    with FaultProxy(llama_server_url.removesuffix("/v1"), plan) as proxy_url:
        out = run(openai_cfg(tiny_data, tmp_path, proxy_url, timeout=30.0))
    assert plan.counts.get("forwarded", 0) >= 8
    assert all(plan.counts.get(f, 0) == 1 for f in ("429", "500", "503", "drop", "stall"))
    man = json.loads((out / "manifest.json").read_text())
    assert man["backend_stats"]["retries"] >= 5
    assert {"http_429", "http_500", "http_503", "timeout"} <= set(man["backend_stats"]["retry_reasons"])
    local = {k: v for k, v in outputs(inprocess_run).items() if k[1] in ("zs_direct", "zs_cot")}
    assert outputs(out) == local


def test_server_that_stays_down_stops_with_clear_message(llama_server_url, tiny_data, tmp_path):
    plan = FaultPlan(down=True)
    with FaultProxy(llama_server_url.removesuffix("/v1"), plan) as proxy_url:
        with pytest.raises(BackendError, match="gave up after 2 retries"):
            run(openai_cfg(tiny_data, tmp_path, proxy_url, max_retries=2))
    assert plan.counts["503"] >= 3
    assert not (tmp_path / "samples.jsonl").exists()  # nothing half-written; the store is resumable


PLAN_TASKS = {"gsm8k": "python", "gsm8k_hard": "python", "folio": "z3", "contexthub/deductive_l1": "z3"}
# the written-out conditions on one dataset per plan language (their second calls are the test's largest prompts)
EXECUTED = ["gsm8k", "contexthub/deductive_l1"]
PLAN_SETTINGS = ["fs_direct", "fs_cot", "plan_direct", "plan_cot", "plan_tool"]


def plan_cfg(tiny_data, out, datasets, settings):
    return build_config(None, {"datasets": datasets, "settings": settings, "limit": 1, "data_dir": str(tiny_data),
                               "out": str(out), "cache": str(out.parent / "store.sqlite"), "progress": False,
                               "max_tokens_cot": 96, "max_tokens_direct": 16, "fewshot_k": 2})


def test_plan_conditions_end_to_end(tiny_data, tmp_path):
    """The five Section-5 conditions, embedded model, sandboxed tool: the tool condition on an item of each
    plan dataset, then all five on one dataset per plan language, with the same store."""
    tool_run = run(plan_cfg(tiny_data, tmp_path / "tool", list(PLAN_TASKS), ["plan_tool"]))
    out = run(plan_cfg(tiny_data, tmp_path / "all", EXECUTED, PLAN_SETTINGS))
    rows = read_rows(tool_run) + read_rows(out)
    assert sorted((r["dataset"], r["setting"]) for r in rows) == \
        sorted([(d, "plan_tool") for d in PLAN_TASKS] + [(d, s) for d in EXECUTED for s in PLAN_SETTINGS])
    for r in rows:
        if r["setting"].startswith("plan_"):
            assert r["extra"]["plan_format"] == PLAN_TASKS[r["dataset"]] and "plan_response" in r["extra"]
        if r["setting"] == "plan_tool":
            tool = r["extra"]["tool"]
            assert tool["kind"] == PLAN_TASKS[r["dataset"]]
            assert tool["status"] in ("ok", "timeout", "memory", "exception", "no_answer", "bad_answer",
                                      "output_limit", "inconsistent", "unknown", "crashed", "no_plan")
            assert (r["parse_status"] == "ok") == (tool["mapped"] is not None)
            assert r["extract_method"].startswith("tool")
    first = json.loads((tool_run / "manifest.json").read_text())["run_stats"]
    assert (first["units"], first["calls_made"]) == (len(PLAN_TASKS), len(PLAN_TASKS))  # one plan call each
    stats = json.loads((out / "manifest.json").read_text())["run_stats"]
    # the plan call is shared by plan_direct/plan_cot/plan_tool (one request, here stored by the first run);
    # new calls: fs_direct, fs_cot and the two second calls per dataset
    assert stats["units"] == 5 * len(EXECUTED)
    assert (stats["calls_cached"], stats["calls_made"]) == (len(EXECUTED), 4 * len(EXECUTED))
