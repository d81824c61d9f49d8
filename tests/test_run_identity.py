"""A run's identity and its requests, pinned: the same flags (or YAML keys) must name the same run
directory and send the same request keys in every release, or existing run dirs stop resuming and the
shared store stops being reused.

The values below were computed with the code before the configuration was split into parts and the
backends moved to a registry (commit 6dac82f), and must never change for these inputs. The request-key
digests also cover the prompt files, so an intended prompt edit changes them (update them then, and
only then).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cotbench.backends.table import TableBackend
from cotbench.pipeline.config import build_config
from cotbench.pipeline.harness import default_out, run, run_identity
from cotbench.pipeline.model_registry import DEFAULT_MODEL, resolve_model

FIXTURES = Path(__file__).parent / "fixtures"

CASES = {
    "defaults": (None, {}),
    "openai_sampling": (None, {"model": "gpt-4o-mini", "temperature": 0.7, "samples": 3, "max_tokens_cot": 256,
                               "concurrency": 16, "timeout": 30.0, "max_retries": 2,
                               "extra_body": {"repeat_penalty": 1.0}}),
    "llamacpp_ctx": (None, {"n_ctx": 2048, "batch_size": 4, "datasets": ["gsm8k"], "settings": ["zs_cot"],
                            "limit": 10}),
    "vllm_parallel": (None, {"model": "llama-3.1-8b-instruct", "tensor_parallel_size": 2, "data_parallel_size": 2,
                             "distributed_executor_backend": "mp", "fewshot_k": 3, "judge_model": "gpt-4o",
                             "max_tokens_direct": 32}),
    "openai_batch": (None, {"model": "openai:stub", "backend": "openai", "base_url": "http://127.0.0.1:9/v1",
                            "batch_api": True, "wait": False, "batch_poll": 5.0, "seed": 3, "top_p": 0.9}),
    "transformers": (None, {"backend": "transformers", "intervention": "knockout:0.0"}),
    "reporting_only": (None, {"sample": 5, "sample_seed": 2, "data_dir": "/x", "out": "/tmp/o",
                              "cache": "/tmp/c.sqlite", "price_in": 1.0, "price_out": 2.0, "chance_credit": True,
                              "progress": False, "skip_missing": True}),
    # YAML files written for the release before backend arguments: flat keys, some for other backends
    "old_yaml_llamacpp": ("model: smollm2-135m-instruct\nn_ctx: 2048\nbatch_size: 4\nconcurrency: 4\ntimeout: 60\n"
                          "datasets: gsm8k\nsettings: [zs_cot]\nlimit: 10\n", {}),
    "old_yaml_vllm_n_ctx": ("model: llama-3.1-8b-instruct\nn_ctx: 2048\ntensor_parallel_size: 2\ntemperature: 1\n",
                            {}),
    "old_yaml_with_flags": ("model: gpt-4o-mini\nconcurrency: 32\nsettings: zs_direct zs_cot\n",
                            {"limit": 7, "timeout": 10.0}),
}

PINNED = {  # (config_hash, default run directory name)
    "defaults": ("573d84ff4f51fb21", "smollm2-135m-instruct-573d84ff4f51fb21"),
    "openai_sampling": ("197fd4edf62afd6a", "gpt-4o-mini-197fd4edf62afd6a"),
    "llamacpp_ctx": ("86eb33f7d64c2fa3", "smollm2-135m-instruct-86eb33f7d64c2fa3"),
    "vllm_parallel": ("501068fb1e4f6694", "llama-3.1-8b-instruct-501068fb1e4f6694"),
    "openai_batch": ("dc5540cb30e2b572", "openai_stub-dc5540cb30e2b572"),
    "transformers": ("81a16e93aeabb4ef", "smollm2-135m-instruct-81a16e93aeabb4ef"),
    "reporting_only": ("573d84ff4f51fb21", "smollm2-135m-instruct-573d84ff4f51fb21"),
    "old_yaml_llamacpp": ("86eb33f7d64c2fa3", "smollm2-135m-instruct-86eb33f7d64c2fa3"),
    "old_yaml_vllm_n_ctx": ("39f4b4ee62ab3385", "llama-3.1-8b-instruct-39f4b4ee62ab3385"),
    "old_yaml_with_flags": ("a2362fc9e911f364", "gpt-4o-mini-a2362fc9e911f364"),
}


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", list(CASES))
def test_run_identity_is_pinned(name, tmp_path):
    import yaml

    yaml_text, flags = CASES[name]
    path = None
    flat = dict(flags)
    if yaml_text:
        path = tmp_path / "run.yaml"
        path.write_text(yaml_text)
        flat = {**yaml.safe_load(yaml_text), **flags}
    cfg = build_config(str(path) if path else None, flags)
    spec = resolve_model(flat.get("model", DEFAULT_MODEL), flat.get("backend"), flat.get("base_url"))
    identity = run_identity(cfg, spec, {})
    assert (identity, default_out(cfg, identity).name) == PINNED[name]


REQUESTS_PINNED = {  # (requests sent, digest of their sorted keys, config_hash)
    "plain": ({}, 12, "38b783b2d2dcccf8", "9ee1897051d52bd7"),
    "sampled": ({"temperature": 0.7, "top_p": 0.9, "samples": 2, "seed": 3, "max_tokens_cot": 256,
                 "max_tokens_direct": 16, "fewshot_k": 1, "extra_body": {"repeat_penalty": 1.0}, "n_ctx": 2048,
                 "batch_size": 2}, 24, "974817a6cc9c465a", "1f321d220cd1dbf7"),
}


@pytest.mark.parametrize("name", list(REQUESTS_PINNED))
def test_request_keys_are_pinned(name, tmp_path):
    flags, n, digest, config_hash = REQUESTS_PINNED[name]
    cfg = build_config(None, {"dataset_file": str(FIXTURES / "custom_choice.jsonl"), "answer_type": "choice",
                              "out": str(tmp_path), "cache": str(tmp_path / "s.sqlite"), "progress": False,
                              "settings": ["zs_direct", "zs_cot", "fs_direct", "fs_cot"], **flags})
    backend = TableBackend(lambda r: "The best answer is A")
    out = run(cfg, backend=backend)
    assert len(backend.seen) == n
    assert hashlib.sha256("\n".join(sorted(backend.seen)).encode()).hexdigest()[:16] == digest
    assert json.loads((out / "manifest.json").read_text())["config_hash"] == config_hash
