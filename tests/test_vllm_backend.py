"""The vLLM backend as far as a CPU machine allows: the import guard with the real package absent,
the pure parameter mapping, and the batching / prefill grouping / data-parallel orchestration
against a clearly labelled test double of vLLM's API (tests/fakes/vllm)."""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

from cotbench.backends.base import BackendError
from cotbench.backends import vllm_offline
from cotbench.types import GenParams, Request

FAKES = str(Path(__file__).parent / "fakes")


def req(i: int, prefill: str | None = None, **params) -> Request:
    return Request(model="m", model_revision="", backend="vllm", messages=({"role": "user", "content": f"q{i}"},),
                   params=GenParams(**params), sample_index=0, prefill=prefill)


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


@pytest.fixture
def fake_vllm(monkeypatch):
    monkeypatch.syspath_prepend(FAKES)
    monkeypatch.setenv("PYTHONPATH", FAKES + os.pathsep + os.environ.get("PYTHONPATH", ""))
    sys.modules.pop("vllm", None)
    import vllm

    vllm.CALLS.clear()
    yield vllm
    sys.modules.pop("vllm", None)


def test_batches_chunks_and_prefill_groups(fake_vllm):
    b = vllm_offline.VLLMBackend("org/model", chunk_size=3)
    reqs = [req(i) for i in range(7)] + [req(10 + i, prefill="The answer is") for i in range(2)]
    got = {}
    b.generate(reqs, lambda r, resp: got.setdefault(r.key, resp))
    assert len(got) == 9 and b.stats.calls == 9
    assert [c["n"] for c in fake_vllm.CALLS] == [3, 3, 1, 2]  # chunks of 3, prefilled ones apart
    assert fake_vllm.CALLS[-1]["template_kw"] == {"add_generation_prompt": False, "continue_final_message": True}
    assert got[reqs[0].key].text.endswith("q0") and got[reqs[0].key].finish_reason == "stop"


def test_data_parallel_shards_over_gpu_slices(fake_vllm, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    b = vllm_offline.VLLMBackend("org/model", data_parallel_size=2, tensor_parallel_size=2, chunk_size=2)
    reqs = [req(i) for i in range(8)]
    got = {}
    b.generate(reqs, lambda r, resp: got.setdefault(r.key, resp))
    assert len(got) == 8
    slices = {resp.text.split("]")[0] for resp in got.values()}
    assert slices == {"echo[0,1", "echo[2,3"}  # each replica saw only its own GPUs


def test_data_parallel_needs_enough_gpus(fake_vllm, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    b = vllm_offline.VLLMBackend("org/model", data_parallel_size=2)
    with pytest.raises(BackendError, match="needs 2 GPUs; 1 visible"):
        b.generate([req(1)], lambda r, resp: None)
