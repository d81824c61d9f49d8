"""Provider batch APIs (issue #14) against a local files + batches server whose lines a real
llama_cpp.server answers: results equal the synchronous backend's, a SIGKILL between submitting and
recording (or while waiting) submits nothing new on the rerun, per-line errors and expired or cancelled
batches are recorded or resubmitted, and --no-wait hands back a pending run (exit 75) that a rerun or
`batches collect` finishes."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from cotbench.backends.base import EXIT_PENDING, BackendError
from cotbench.backends.openai_batch import (
    BatchLedger,
    OpenAIBatchBackend,
    batch_line,
    batch_prices,
    plan_chunks,
    read_line,
)
from cotbench.cli import main as cli_main
from cotbench.pipeline import harness
from cotbench.pipeline.config import build_config
from cotbench.pipeline.harness import run
from cotbench.pipeline.model_registry import DEFAULT_MODEL, MODELS
from cotbench.records import GenParams, Request
from cotbench.testing.batch_server import BatchServer

pytestmark = pytest.mark.timeout(300)  # a wait that never ends is a failure, not a hang
REPO = Path(__file__).resolve().parents[1]
GREEDY = {"repeat_penalty": 1.0}  # llama_cpp.server's default is 1.1
ITEMS = [
    {"question": "Which is a colour?", "choices": ["red", "dog", "run"], "answer": "A"},
    {"question": "Which is a number?", "choices": ["cat", "seven", "blue"], "answer": "B"},
]
N_REQUESTS = len(ITEMS) * 2  # zs_direct + zs_cot


@pytest.fixture
def srv(llama_server_url):
    with BatchServer(llama_server_url) as s:
        yield s


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("data") / "items.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in ITEMS))
    return p


def flags(data_file: Path, out: Path, url: str) -> list[str]:
    return ["run", "--model", DEFAULT_MODEL, "--backend", "openai", "--base-url", url, "--dataset-file",
            str(data_file), "--answer-type", "choice", "--settings", "zs_direct", "zs_cot", "--max-tokens-direct",
            "8", "--max-tokens-cot", "8", "--extra-body", json.dumps(GREEDY), "--out", str(out), "--cache",
            str(out / "store.sqlite"), "--no-progress", "--batch-poll", "0.05"]


def config(data_file: Path, out: Path, url: str, **kw):
    return build_config(None, {"model": DEFAULT_MODEL, "backend": "openai", "base_url": url,
                               "dataset_file": str(data_file), "answer_type": "choice",
                               "settings": ["zs_direct", "zs_cot"], "max_tokens_direct": 8, "max_tokens_cot": 8,
                               "extra_body": GREEDY, "out": str(out), "cache": str(out / "store.sqlite"),
                               "progress": False, "batch_poll": 0.05, **kw})


def rows(run_dir: Path) -> dict[str, dict]:
    return {r["key"]: r for r in map(json.loads, (run_dir / "samples.jsonl").read_text().splitlines())}


def same_outputs(a: dict, b: dict, skip: set[str] = frozenset()) -> None:
    assert set(a) == set(b)  # the same request keys: batch and synchronous requests are one request
    for k in set(a) - skip:
        for f in ("response", "tokens_in", "tokens_out", "finish_reason", "extracted", "correct"):
            assert a[k][f] == b[k][f], (f, a[k][f], b[k][f])


@pytest.fixture(scope="module")
def sync_rows(llama_server_url, data_file, tmp_path_factory) -> dict[str, dict]:
    return rows(run(config(data_file, tmp_path_factory.mktemp("sync"), llama_server_url)))


def ledger_rows(out: Path) -> list[dict]:
    led = BatchLedger(out / "store.sqlite")
    try:
        return led.rows()
    finally:
        led.close()


def stored(out: Path) -> int:
    con = sqlite3.connect(out / "store.sqlite")
    try:
        return con.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    finally:
        con.close()


# --- pure parts ----------------------------------------------------------------------------------------------

def test_chunks_respect_request_and_byte_limits():
    lines = [(f"k{i:02d}", b"x" * 10) for i in range(7)]
    assert [len(c) for c in plan_chunks(lines, 3, 10_000)] == [3, 3, 1]
    assert [len(c) for c in plan_chunks(lines, 100, 25)] == [2, 2, 2, 1]
    assert plan_chunks(list(reversed(lines)), 3, 10_000) == plan_chunks(lines, 3, 10_000)  # order-free
    with pytest.raises(BackendError, match="more than a batch file may hold"):
        plan_chunks([("big", b"x" * 30)], 10, 25)


def test_line_kinds():
    ok = {"custom_id": "a", "response": {"status_code": 200, "body": {
        "choices": [{"message": {"content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1}}}}
    r = read_line(ok)
    assert (r.kind, r.response.text, r.response.tokens_in, r.response.finish_reason) == ("ok", "Hi", 5, "stop")
    over = {"custom_id": "b", "response": {"status_code": 400, "body": {"error": {
        "code": "context_length_exceeded", "message": "too long"}}}}
    assert (read_line(over).kind, read_line(over).response.finish_reason) == ("outcome", "context_overflow")
    assert read_line({"custom_id": "c", "response": {"status_code": 429, "body": {}}}).kind == "retry"
    assert read_line({"custom_id": "d", "response": None, "error": {"code": "batch_expired"}}).kind == "retry"
    assert read_line({"custom_id": "e", "response": {"status_code": 401, "body": {}}}).kind == "fatal"


def test_batch_line_is_the_sync_request_body():
    req = Request("m", "", "openai", ({"role": "user", "content": "hi"},),
                  GenParams(max_tokens=8, stop=("\n",), seed=3, extra_body='{"repeat_penalty": 1.0}'), sample_index=2)
    line = json.loads(batch_line(req.key, "mid", req, False))
    assert line["custom_id"] == req.key and line["url"] == "/v1/chat/completions"
    assert line["body"] == {"model": "mid", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8,
                            "temperature": 0.0, "top_p": 1.0, "stop": ["\n"], "seed": 5, "repeat_penalty": 1.0}


def test_batch_prices_and_registry_discounts():
    assert batch_prices(0.5, 0.15, 0.6) == (0.075, 0.3)
    assert batch_prices(None, 1.0, 2.0) == (1.0, 2.0)
    for name in ("gpt-4o-mini", "gpt-4o", "claude-3-haiku", "claude-3.5-sonnet", "gemini-1.5-flash", "gemini-1.5-pro"):
        assert MODELS[name].batch_discount == 0.5
    assert MODELS["llama-3.1-8b-instruct"].batch_discount is None


def test_ledger_never_records_a_request_twice(tmp_path):
    from cotbench.pipeline.store import Store

    store = Store(tmp_path / "s.sqlite")
    led = BatchLedger(store.path)
    assert led.add_intent("t1", "openai", "", None, "m", [("a", "{}"), ("b", "{}")]) == {"a", "b"}
    # a second run sharing the store, a moment later: only what nobody holds is recorded
    assert led.add_intent("t2", "openai", "", None, "m", [("b", "{}"), ("c", "{}")]) == {"c"}
    assert led.add_intent("t3", "openai", "", None, "m", [("a", "{}")]) == set()
    assert [(r["tag"], r["n_requests"]) for r in led.rows()] == [("t1", 2), ("t2", 1)]
    led.mark_collected("t1", "expired")  # ended without results: free to submit again
    assert led.add_intent("t4", "openai", "", None, "m", [("a", "{}")]) == {"a"}
    assert led.attempts(["a", "b", "c"]) == {"a": 1, "b": 1}
    led.close()
    store.close()


def test_progress_over_batches_without_a_terminal(capsys):
    from cotbench.pipeline.progress import Progress

    with Progress(enabled=True) as prog:  # stderr is captured: not a terminal, so sparse lines
        prog.batches(0, 2, 0, 10)
        prog.batches(2, 2, 10, 10)
    err = capsys.readouterr().err
    assert "batches 0/2 ended, 0/10 requests answered, eta unknown" in err
    assert "batches 2/2 ended, 10/10 requests answered, eta 0s" in err


def test_batch_api_refuses_local_and_anthropic_models(tmp_path, data_file):
    with pytest.raises(ValueError, match="only applies with --batch-api"):
        build_config(None, {"wait": False})
    with pytest.raises(ValueError, match="hosted API model"):
        run(build_config(None, {"dataset_file": str(data_file), "answer_type": "choice", "out": str(tmp_path),
                                "batch_api": True, "progress": False, "model": "meta-llama/x"}))
    with pytest.raises(ValueError, match="Message Batches"):
        run(build_config(None, {"dataset_file": str(data_file), "answer_type": "choice", "out": str(tmp_path),
                                "batch_api": True, "progress": False, "model": "claude-3-haiku"}))


# --- against the local batch API -------------------------------------------------------------------------------

def test_batch_run_equals_sync_split_by_limits_at_batch_price(srv, data_file, tmp_path, sync_rows, monkeypatch):
    real = harness.resolve_model
    monkeypatch.setattr(harness, "resolve_model", lambda *a, **k: replace(real(*a, **k), batch_discount=0.5))
    be = OpenAIBatchBackend(DEFAULT_MODEL, tmp_path / "store.sqlite", base_url=srv.url, api_key_env=None,
                            poll_s=0.05, max_requests=2)
    out = run(config(data_file, tmp_path, srv.url, batch_api=True, price_in=1.0, price_out=2.0), backend=be)
    be.close()
    same_outputs(rows(out), sync_rows)
    assert len(srv.order) == 2  # 4 requests, at most 2 per batch
    assert all(r["collected_at"] and r["status"] == "completed" for r in ledger_rows(tmp_path))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"]["backend"] == "openai-batch"
    assert manifest["backend_stats"]["batches_submitted"] == 2
    summary = (out / "summary.csv").read_text().splitlines()
    head = summary[0].split(",")
    for line in summary[1:]:
        v = dict(zip(head, line.split(",")))
        assert float(v["cost_usd"]) == pytest.approx((int(v["tokens_in"]) + 2 * int(v["tokens_out"])) / 1e6 * 0.5,
                                                     abs=1e-6)
    # a rerun finds everything stored and submits nothing
    n = len(srv.order)
    assert cli_main(flags(data_file, tmp_path, srv.url) + ["--batch-api"]) == 0
    assert len(srv.order) == n


CRASH_SCRIPT = """
import os, signal, sys
from cotbench.backends import openai_batch
if os.environ.get("CRASH_AFTER_CREATE"):
    openai_batch.OpenAIBatchBackend._record = lambda self, tag, b: os.kill(os.getpid(), signal.SIGKILL)
from cotbench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def spawn(args: list[str], crash: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), **({"CRASH_AFTER_CREATE": "1"} if crash else {})}
    return subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkill_between_submitting_and_recording_submits_nothing_new(srv, data_file, tmp_path, sync_rows):
    srv.switches.hold = True
    proc = spawn(flags(data_file, tmp_path, srv.url) + ["--batch-api"], crash=True)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, out.decode()
    assert len(srv.order) == 1
    (row,) = ledger_rows(tmp_path)
    assert row["batch_id"] is None and row["status"] == "submitting"  # the provider id never got recorded
    srv.release()
    assert cli_main(flags(data_file, tmp_path, srv.url) + ["--batch-api"]) == 0
    assert len(srv.order) == 1  # found by its metadata tag, not submitted again
    (row,) = ledger_rows(tmp_path)
    assert row["batch_id"] == srv.order[0] and row["collected_at"]
    same_outputs(rows(tmp_path), sync_rows)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["backend_stats"]["batches_recovered"] == 1


def test_sigkill_while_waiting_then_rerun_collects(srv, data_file, tmp_path, sync_rows):
    srv.switches.hold = True
    proc = spawn(flags(data_file, tmp_path, srv.url) + ["--batch-api"])
    deadline = time.time() + 120
    while not (tmp_path / "store.sqlite").exists() or not any(r["batch_id"] for r in ledger_rows(tmp_path)):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    srv.release()
    assert cli_main(flags(data_file, tmp_path, srv.url) + ["--batch-api"]) == 0
    assert len(srv.order) == 1
    same_outputs(rows(tmp_path), sync_rows)


def test_no_wait_is_pending_then_batches_collect_and_rerun_finish(srv, data_file, tmp_path, sync_rows, capsys):
    srv.switches.hold = True
    assert cli_main(flags(data_file, tmp_path, srv.url) + ["--batch-api", "--no-wait"]) == EXIT_PENDING
    assert "pending:" in capsys.readouterr().err
    assert not (tmp_path / "samples.jsonl").exists() and not (tmp_path / "summary.csv").exists()
    assert cli_main(["batches", "status", str(tmp_path)]) == 0
    assert "in_progress" in capsys.readouterr().out
    # still pending: the rerun submits nothing new
    assert cli_main(flags(data_file, tmp_path, srv.url) + ["--batch-api", "--no-wait"]) == EXIT_PENDING
    assert len(srv.order) == 1
    srv.release()
    srv.wait_idle()
    assert cli_main(["batches", "collect", str(tmp_path)]) == 0
    assert f"stored {N_REQUESTS} result(s)" in capsys.readouterr().out
    assert stored(tmp_path) == N_REQUESTS
    assert cli_main(flags(data_file, tmp_path, srv.url) + ["--batch-api", "--no-wait"]) == 0
    assert len(srv.order) == 1
    same_outputs(rows(tmp_path), sync_rows)


def test_cancelled_batch_is_resubmitted(srv, data_file, tmp_path, sync_rows, capsys):
    srv.switches.hold = True
    assert cli_main(flags(data_file, tmp_path, srv.url) + ["--batch-api", "--no-wait"]) == EXIT_PENDING
    assert cli_main(["batches", "cancel", str(tmp_path)]) == 0
    srv.wait_idle()
    assert srv.batches[srv.order[0]].obj["status"] == "cancelled"
    srv.release()
    assert cli_main(flags(data_file, tmp_path, srv.url) + ["--batch-api"]) == 0
    assert len(srv.order) == 2  # the cancelled batch's requests went out again, once
    same_outputs(rows(tmp_path), sync_rows)
    assert "cancelled" in capsys.readouterr().err


def test_line_errors_recorded_or_resubmitted_and_expired_batch(srv, data_file, tmp_path, sync_rows):
    keys = sorted(sync_rows)  # lines are written in key order
    seen: set[str] = set()

    def fail(cid: str, body: dict):
        if cid == keys[0]:
            return 400, {"error": {"message": "This model's maximum context length is 2048 tokens",
                                   "type": "invalid_request_error", "code": "context_length_exceeded"}}
        if cid == keys[1] and cid not in seen:
            seen.add(cid)
            return 429, {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
        return None

    srv.switches.fail_line = fail
    srv.switches.expire_next, srv.switches.expire_after = 1, 2  # the first batch ends after 2 lines
    be = OpenAIBatchBackend(DEFAULT_MODEL, tmp_path / "store.sqlite", base_url=srv.url, api_key_env=None, poll_s=0.05)
    out = run(config(data_file, tmp_path, srv.url, batch_api=True), backend=be)
    be.close()
    got = rows(out)
    assert got[keys[0]]["finish_reason"] == "context_overflow" and got[keys[0]]["response"] == ""
    same_outputs(got, sync_rows, skip={keys[0]})
    assert len(srv.order) == 2  # the 429 line and the two never run went out again together
    first, second = ledger_rows(tmp_path)
    assert first["status"] == "expired" and second["n_requests"] == 3
    assert be.stats.refusals == {"context_overflow": 1} and be.stats.requeued == 3


def test_error_not_retried_stops_after_storing_the_rest(srv, data_file, tmp_path):
    srv.switches.fail_line = lambda cid, body: (404, {"error": {"message": "model gone", "code": "model_not_found"}}) \
        if body["max_tokens"] and body["messages"][-1]["content"].count("colour") else None
    be = OpenAIBatchBackend(DEFAULT_MODEL, tmp_path / "store.sqlite", base_url=srv.url, api_key_env=None, poll_s=0.05)
    with pytest.raises(BackendError, match="not retried.*model gone"):
        run(config(data_file, tmp_path, srv.url, batch_api=True), backend=be)
    be.close()
    assert stored(tmp_path) == N_REQUESTS - 2  # the colour item's two lines failed; the rest is stored
    assert not (tmp_path / "samples.jsonl").exists()
