"""The vLLM backend as far as a CPU machine allows: the import guard with the real package absent,
the pure mappings, and batching / prefill grouping / overflow isolation / retries / data parallel
against a test double of vLLM's API (tests/fakes/vllm) that validates and fails like vLLM 0.33
(tests/test_vllm_contract.py checks the double and the backend against the real package)."""
from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import pytest

from cotbench.backends import vllm_offline
from cotbench.backends.base import BackendError
from cotbench.records import GenParams, Request

FAKES = str(Path(__file__).parent / "fakes")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def req(i: int | str, prefill: str | None = None, **params) -> Request:
    return Request(model="m", model_revision="", backend="vllm", messages=({"role": "user", "content": f"q{i}"},),
                   params=GenParams(**params), sample_index=0, prefill=prefill)


def backend(model: str = "org/model", **kw) -> vllm_offline.VLLMBackend:
    kw.setdefault("revision", COMMIT)  # a commit needs no hub look-up
    return vllm_offline.VLLMBackend(model, **kw)


def collect(b, reqs) -> dict[str, object]:
    got: dict[str, object] = {}
    b.generate(reqs, lambda r, resp: got.setdefault(r.key, resp))
    return got


def test_import_guard_names_the_way_out(monkeypatch):
    if importlib.util.find_spec("vllm") is not None and FAKES not in str(importlib.util.find_spec("vllm").origin):
        pytest.skip("real vLLM installed")
    monkeypatch.setitem(sys.modules, "vllm", None)  # make `import vllm` fail
    with pytest.raises(BackendError, match=r"pip install 'cotbench\[vllm\]'.*--backend openai"):
        vllm_offline.VLLMBackend("org/model")


def test_sampling_kwargs_and_messages_are_pure_mappings():
    r = req(1, prefill="The answer is", max_tokens=7, temperature=0.0, top_p=0.9, stop=("\n",), seed=3)
    assert vllm_offline.sampling_kwargs(r) == {"max_tokens": 7, "temperature": 0.0, "top_p": 0.9, "stop": ["\n"], "seed": 3}
    assert vllm_offline.chat_messages(r)[-1] == {"role": "assistant", "content": "The answer is"}
    assert vllm_offline.sampling_kwargs(req(2))["stop"] is None


def test_max_model_len_is_capped_not_the_full_context(monkeypatch):
    monkeypatch.delenv(vllm_offline.MAX_MODEL_LEN_ENV, raising=False)
    assert vllm_offline.engine_max_model_len(None, 131072) == vllm_offline.DEFAULT_MAX_MODEL_LEN
    assert vllm_offline.engine_max_model_len(None, 4096) == 4096
    assert vllm_offline.engine_max_model_len(None, None) is None
    assert vllm_offline.engine_max_model_len(2048, 131072) == 2048
    monkeypatch.setenv(vllm_offline.MAX_MODEL_LEN_ENV, "16384")
    assert vllm_offline.engine_max_model_len(None, 131072) == 16384
    monkeypatch.setenv(vllm_offline.MAX_MODEL_LEN_ENV, "lots")
    with pytest.raises(BackendError, match="not an integer"):
        vllm_offline.engine_max_model_len(None, 131072)


def test_harness_passes_the_registry_context_as_a_ceiling(fake_vllm, monkeypatch):
    from cotbench.pipeline.config import build_config
    from cotbench.pipeline.harness import make_backend
    from cotbench.pipeline.model_registry import resolve_model

    monkeypatch.setattr(vllm_offline, "hub_commit", lambda model_id, revision: COMMIT)
    b = make_backend(resolve_model("llama-3.1-8b-instruct"), build_config(None, {"model": "llama-3.1-8b-instruct"}))
    assert b.engine_kw["max_model_len"] == vllm_offline.DEFAULT_MAX_MODEL_LEN  # not 131072
    assert b.engine_kw["revision"] == COMMIT and b.revision == COMMIT


@pytest.fixture
def fake_vllm(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(FAKES)
    monkeypatch.setenv("PYTHONPATH", FAKES + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("FAKE_VLLM_LOG", str(tmp_path / "fake_vllm.log"))
    monkeypatch.delenv("COTBENCH_VLLM_MAX_MODEL_LEN", raising=False)
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        monkeypatch.delitem(sys.modules, name)  # a real vLLM, if loaded, comes back afterwards
    import vllm

    vllm.CALLS.clear()
    yield vllm
    for b in list(getattr(vllm_offline, "_OPEN", [])):
        b.close()
    getattr(vllm_offline, "_ENGINES", {}).clear()
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        sys.modules.pop(name)


def log_events(tmp_path, event: str) -> list[dict]:
    path = tmp_path / "fake_vllm.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e["event"] == event]


# -- the double is truer ---------------------------------------------------------------------------------

def test_double_rejects_what_vllm_rejects(fake_vllm):
    from vllm.exceptions import VLLMValidationError

    assert not issubclass(VLLMValidationError, ValueError)
    for bad in ({"top_p": 0.0}, {"temperature": -1.0}, {"temperature": 2.5}, {"max_tokens": 0}):
        with pytest.raises(VLLMValidationError):
            fake_vllm.SamplingParams(**bad)
    with pytest.raises(TypeError):
        fake_vllm.SamplingParams(repeat_penalty=1.0)
    llm = fake_vllm.LLM("org/model", max_model_len=64)
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "The"}]
    with pytest.raises(VLLMValidationError, match="not compatible"):
        llm.chat([conv], sampling_params=[fake_vllm.SamplingParams()], add_generation_prompt=True,
                 continue_final_message=True)
    with pytest.raises(VLLMValidationError, match="must be the same"):
        llm.chat([conv, conv], sampling_params=[fake_vllm.SamplingParams()])
    with pytest.raises(VLLMValidationError, match="maximum model length of 64"):
        llm.chat([[{"role": "user", "content": "w " * 100}]], sampling_params=[fake_vllm.SamplingParams()])
    out = llm.chat([[{"role": "user", "content": "a b c d e f"}]],
                   sampling_params=[fake_vllm.SamplingParams(max_tokens=2)])
    assert out[0].outputs[0].finish_reason == "length" and len(out[0].outputs[0].token_ids) == 2


# -- batching --------------------------------------------------------------------------------------------

def test_batches_chunks_and_prefill_groups(fake_vllm):
    b = backend(chunk_size=3)
    reqs = [req(i) for i in range(7)] + [req(10 + i, prefill="The answer is") for i in range(2)]
    got = collect(b, reqs)
    assert len(got) == 9 and b.stats.calls == 9
    assert [c["n"] for c in fake_vllm.CALLS] == [3, 3, 1, 2]  # chunks of 3, prefilled ones apart
    assert fake_vllm.CALLS[-1]["template_kw"] == {"add_generation_prompt": False, "continue_final_message": True}
    assert fake_vllm.CALLS[0]["template_kw"] == {}
    assert got[reqs[0].key].text.endswith("q0") and got[reqs[0].key].finish_reason == "stop"
    assert [got[r.key].text.split(":")[-1] for r in reqs[:7]] == [f"q{i}" for i in range(7)]  # input order


# -- 1. an over-long prompt is that item's outcome, not the end of the run -------------------------------

def test_over_long_prompt_is_recorded_as_context_overflow(fake_vllm):
    b = backend(max_model_len=50, chunk_size=8)
    reqs = [req(i) for i in range(7)]
    long = req("x " * 60)
    reqs.insert(3, long)
    got = collect(b, reqs)
    assert len(got) == 8 and b.stats.calls == 8
    assert got[long.key].finish_reason == "context_overflow" and got[long.key].text == ""
    assert all(got[r.key].finish_reason == "stop" for r in reqs if r is not long)
    assert sum(c["n"] for c in fake_vllm.CALLS) < 3 * 8  # split around the offender, not one by one


def test_a_skipped_over_long_prompt_is_an_overflow_too():
    from types import SimpleNamespace as NS

    skipped = NS(prompt_token_ids=[1] * 9000, outputs=[NS(text="", token_ids=[], finish_reason="length")])
    cut = NS(prompt_token_ids=[1, 2], outputs=[NS(text="a b", token_ids=[7, 8], finish_reason="length")])
    assert vllm_offline.to_response(skipped, 0.0).finish_reason == "context_overflow"
    assert vllm_offline.to_response(cut, 0.0).finish_reason == "length"


def test_sampling_and_engine_errors_are_clear_and_early(fake_vllm, tmp_path):
    b = backend()
    with pytest.raises(BackendError, match=r"rejected the sampling parameters.*temperature must be in \[0, 2\]"):
        b.generate([req(1, temperature=3.0)], lambda r, resp: None)
    assert log_events(tmp_path, "start") == []  # before any engine started
    b2 = backend("org/other", max_model_len=999_999)
    with pytest.raises(BackendError, match=r"vLLM could not start org/other: ValueError: .*max_model_len"):
        b2.generate([req(1)], lambda r, resp: None)


# -- 2. data x pipeline parallel -------------------------------------------------------------------------

def replica_slices(tmp_path) -> list[str]:
    return sorted(e["gpus"] for e in log_events(tmp_path, "start"))


def test_data_parallel_shards_over_gpu_slices(fake_vllm, monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    b = backend(data_parallel_size=2, tensor_parallel_size=2, chunk_size=2)
    got = collect(b, [req(i) for i in range(8)])
    assert len(got) == 8
    assert replica_slices(tmp_path) == ["0,1", "2,3"]  # each replica on its own GPUs
    assert {resp.text.split("]")[0] for resp in got.values()} <= {"echo[0,1", "echo[2,3"}


def test_data_parallel_replicas_get_tensor_times_pipeline_gpus(fake_vllm, monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    b = backend(data_parallel_size=2, pipeline_parallel_size=2, chunk_size=2)
    assert len(collect(b, [req(i) for i in range(6)])) == 6
    assert replica_slices(tmp_path) == ["0,1", "2,3"]
    b.close()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(BackendError, match=r"needs 4 GPUs; 2 visible"):
        backend(data_parallel_size=2, pipeline_parallel_size=2).generate([req(1)], lambda r, resp: None)


def test_data_parallel_needs_enough_gpus(fake_vllm, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(BackendError, match="needs 2 GPUs; 1 visible"):
        backend(data_parallel_size=2).generate([req(1)], lambda r, resp: None)


# -- 3. registry entries vLLM cannot load ----------------------------------------------------------------

def test_phi3_small_fails_early_with_a_way_that_works(fake_vllm, tmp_path):
    with pytest.raises(BackendError, match=r"left vLLM after 0\.9\.2.*installed vLLM is 0\.33\.0.*vllm serve"):
        backend("microsoft/Phi-3-small-8k-instruct")
    fake_vllm.__version__ = "0.9.2"
    with pytest.raises(BackendError, match=r"trust_remote_code=True.*--backend openai"):
        backend("microsoft/Phi-3-small-8k-instruct")
    assert backend("microsoft/Phi-3-small-8k-instruct", trust_remote_code=True).engine_kw["trust_remote_code"]
    assert log_events(tmp_path, "start") == []


def test_gguf_is_refused_with_the_llamacpp_way(fake_vllm, tmp_path):
    from cotbench.pipeline.model_registry import resolve_model

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    spec = resolve_model(str(gguf), backend="vllm")
    with pytest.raises(BackendError, match=r"does not load GGUF.*--backend llamacpp"):
        vllm_offline.VLLMBackend(spec.model_id)


# -- 4. failure modes of a real engine -------------------------------------------------------------------

def test_aborted_outputs_are_retried_not_stored(fake_vllm):
    b = backend()
    flaky = req("<<abort:1>>")
    got = collect(b, [req(0), flaky])
    assert got[flaky.key].finish_reason == "stop" and b.stats.retries == 1
    assert b.stats.retry_reasons == {"finish_abort": 1}


def test_persistent_engine_errors_stop_the_run_and_store_nothing_for_them(fake_vllm):
    b = backend()
    bad = req("<<error>>")
    stored: dict = {}
    with pytest.raises(BackendError, match=r"finish_reason 'error' after 2 retries"):
        b.generate([req(0), bad], lambda r, resp: stored.setdefault(r.key, resp))
    assert bad.key not in stored and stored[req(0).key].finish_reason == "stop"  # the rest of the chunk is kept


@pytest.mark.timeout(120)
def test_dead_data_parallel_worker_stops_the_run(fake_vllm, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    b = backend(data_parallel_size=2, chunk_size=1)
    with pytest.raises(BackendError, match=r"rank \d exited with code 9 without reporting"):
        b.generate([req(0), req("<<die>>"), req(2)], lambda r, resp: None)
    with pytest.raises(BackendError, match="stopped after an earlier error"):  # not a hang either
        b.generate([req(3)], lambda r, resp: None)


def test_data_parallel_workers_record_overflows_and_keep_finished_work(fake_vllm, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    b = backend(data_parallel_size=2, max_model_len=50, chunk_size=3)
    long = req("x " * 60)
    got = collect(b, [req(0), long, req(2), req(3)])
    assert got[long.key].finish_reason == "context_overflow" and len(got) == 4
    stored: dict = {}
    with pytest.raises(BackendError, match=r"finish_reason 'error'"):
        b.generate([req(4), req("<<error>>"), req(5)], lambda r, resp: stored.setdefault(r.key, resp))
    assert set(stored) == {req(4).key, req(5).key}


def test_data_parallel_engines_start_once_across_rounds(fake_vllm, monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    b = backend(data_parallel_size=2, chunk_size=2)
    collect(b, [req(i) for i in range(4)])
    collect(b, [req(10 + i) for i in range(4)])  # the runner's next round
    assert len(log_events(tmp_path, "start")) == 2  # one engine per replica, not per round
    b.close()
    assert not any(p.is_alive() for p in getattr(b._engine, "procs", []))


def test_a_vllm_judge_shares_the_gpu_instead_of_asking_for_it_all(fake_vllm, tmp_path):
    model, judge = backend("org/model"), backend("org/judge")
    got = collect(model, [req(1)]) | collect(judge, [req(2)])
    assert len(got) == 2
    utils = sorted(e["kw"]["gpu_memory_utilization"] for e in log_events(tmp_path, "start"))
    assert utils == [0.45, 0.45] and model.describe()["gpu_memory_utilization"] == 0.45
    same = backend("org/model")  # the same model as judge: one engine, no second load
    collect(same, [req(3)])
    assert len(log_events(tmp_path, "start")) == 2


def test_a_judge_created_after_the_engine_started_gets_a_clear_error(fake_vllm):
    model = backend("org/model")
    collect(model, [req(1)])
    late = backend("org/judge")
    with pytest.raises(BackendError, match=r"already holds 0\.90 of the GPU memory.*vllm serve"):
        collect(late, [req(2)])


# -- 5. keys and flags -----------------------------------------------------------------------------------

def test_extra_body_maps_to_sampling_params_or_is_refused(fake_vllm):
    b = backend()
    r = req(1, temperature=0.7, extra_body=json.dumps({"repetition_penalty": 1.1, "top_k": 5}))
    collect(b, [r])
    sp = fake_vllm.CALLS[-1]["params"][0]
    assert sp.repetition_penalty == 1.1 and sp.top_k == 5
    with pytest.raises(BackendError, match=r"'repeat_penalty' is not a vllm.SamplingParams field.*repetition_penalty"):
        b.generate([req(2, extra_body='{"repeat_penalty": 1.0}')], lambda r, resp: None)
    with pytest.raises(BackendError, match=r"'temperature' is set by cotbench itself"):
        b.generate([req(3, extra_body='{"temperature": 0.5}')], lambda r, resp: None)
    with pytest.raises(BackendError, match=r"'n' is not supported"):
        b.generate([req(4, extra_body='{"n": 2}')], lambda r, resp: None)


def test_local_model_revision_is_a_fingerprint_of_config_and_weights(fake_vllm, tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text('{"max_position_embeddings": 2048}')
    (d / "model.safetensors").write_bytes(b"\0" * 1000)
    first = backend(str(d), revision=None)
    assert first.revision.startswith("sha256:") and "revision" not in first.engine_kw
    assert backend(str(d), revision=None).revision == first.revision
    (d / "model.safetensors").write_bytes(b"\1" * 1000)
    assert backend(str(d), revision=None).revision != first.revision
    (d / "model.safetensors").write_bytes(b"\0" * 1000)
    (d / "chat_template.jinja").write_text("{{ messages }}")
    assert backend(str(d), revision=None).revision != first.revision


def test_hub_model_revision_is_the_commit_from_the_cache(fake_vllm, tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")  # comes with vLLM (and with datasets)
    cache = tmp_path / "hub"
    snap = cache / "models--org--cached" / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (cache / "models--org--cached" / "refs").mkdir()
    (cache / "models--org--cached" / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.file_download.HF_HUB_CACHE", str(cache), raising=False)
    b = vllm_offline.VLLMBackend("org/cached")
    assert b.revision == COMMIT and b.engine_kw["revision"] == COMMIT  # the engine is pinned to it
    with pytest.raises(BackendError, match=r"cannot tell which commit of org/absent"):
        vllm_offline.VLLMBackend("org/absent")


def test_ray_needs_ray_and_no_data_parallel(fake_vllm, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "ray" else real_find_spec(n, *a))
    with pytest.raises(BackendError, match=r"needs Ray.*pip install ray"):
        backend(distributed_executor_backend="ray")
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "ray" else real_find_spec(n, *a))
    with pytest.raises(BackendError, match=r"--data-parallel-size with --distributed-executor-backend ray"):
        backend(distributed_executor_backend="ray", data_parallel_size=2)


def test_cli_run_records_an_over_long_prompt_and_exits_zero(fake_vllm, tmp_path, monkeypatch, capsys):
    from cotbench.cli import main

    monkeypatch.setattr(vllm_offline, "hub_commit", lambda model_id, revision: COMMIT)
    data = tmp_path / "items.jsonl"
    data.write_text(json.dumps({"question": "What is 2 + 2?", "answer": 4}) + "\n"
                    + json.dumps({"question": "x " * 5000 + "What is 3 + 3?", "answer": 6}) + "\n")
    out = tmp_path / "run"
    rc = main(["run", "--model", "org/model", "--backend", "vllm", "--dataset-file", str(data), "--answer-type",
               "number", "--settings", "zs_direct", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted(r["finish_reason"] for r in rows) == ["context_overflow", "stop"]
    # counted in the manifest like every backend's refusals (the runner counts them, not each backend)
    assert json.loads((out / "manifest.json").read_text())["backend_stats"]["refusals"] == {"context_overflow": 1}
