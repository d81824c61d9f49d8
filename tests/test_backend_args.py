"""Backends from the registry, with their declared arguments: ``-B key=value``, ``backend_args:`` in YAML,
the short flags every release has had (``--batch-size``), and which of them name a run."""
from __future__ import annotations

import inspect
import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from cotbench.backends.registry import BACKENDS, declared, flag_args
from cotbench.cli import main
from cotbench.pipeline.config import Generation, build_config
from cotbench.pipeline.harness import make_backend, run_options
from cotbench.pipeline.model_registry import resolve_model
from cotbench.pipeline.runner import RunOptions

VLLM_MODEL = "llama-3.1-8b-instruct"
FAKES = Path(__file__).parent / "fakes"


# -- the registry itself ---------------------------------------------------------------------------------------

def test_importing_the_registry_imports_no_backend():
    """A llama.cpp run must not need vLLM, torch or the openai SDK: the registry names its factories."""
    code = ("import sys, cotbench.backends.registry, cotbench.pipeline.config; "
            "print(sorted(m for m in ('vllm', 'torch', 'openai', 'llama_cpp', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1])
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", list(BACKENDS))
def test_each_factory_takes_exactly_the_declared_arguments(name):
    """A declared argument the factory does not take (or the reverse) would fail only when a run uses it."""
    entry = BACKENDS[name]
    params = inspect.signature(entry.load()).parameters
    assert [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY] == entry.arg_names()
    assert list(params)[:2] == ["spec", "ctx"]


def test_a_name_means_one_thing_in_every_backend():
    """Identity and ``-B`` parsing look an argument up by name: backends sharing a name share its meaning."""
    for entry in BACKENDS.values():
        for a in entry.args:
            first = declared(a.name)
            assert (a.type, a.default, a.identity) == (first.type, first.default, first.identity), a.name
            assert a.default is None or a.check(a.default) == a.default, a.name


def test_the_short_flags_are_the_ones_every_release_had():
    assert set(flag_args()) == {"n_ctx", "batch_size", "concurrency", "timeout", "max_retries", "tensor_parallel_size",
                                "data_parallel_size", "pipeline_parallel_size", "distributed_executor_backend"}


# -- -B and the short flags ------------------------------------------------------------------------------------

def test_backend_arg_and_its_short_flag_are_one_configuration():
    short, long_ = build_config(None, {"batch_size": 3}), build_config(None, {"backend_args": ["batch_size=3"]})
    assert short == long_ and short.execution.args_for("llamacpp")["batch_size"] == 3
    assert build_config(None, {"n_ctx": 2048}).hash() == build_config(None, {"backend_args": ["n_ctx=2048"]}).hash()


def test_values_are_parsed_by_the_declared_type():
    cfg = build_config(None, {"model": VLLM_MODEL, "backend_args": [
        "max_model_len=16384", "trust_remote_code=true", "gpu_memory_utilization=0.5", "dtype=bfloat16"]})
    assert cfg.execution.backend_args == {"max_model_len": 16384, "trust_remote_code": True,
                                          "gpu_memory_utilization": 0.5, "dtype": "bfloat16"}
    assert build_config(None, {"backend_args": {"n_ctx": 1024}}).execution.backend_args == {"n_ctx": 1024}


@pytest.mark.parametrize("flags,needles", [
    (["-B", "bogus=1"], ["unknown backend argument 'bogus'", "llamacpp (model smollm2-135m-instruct) takes "
                                                            "n_ctx, batch_size, n_threads"]),
    (["--model", VLLM_MODEL, "-B", "max_model_len=lots"], ["-B max_model_len=lots", "expected an integer"]),
    (["--model", VLLM_MODEL, "-B", "trust_remote_code=maybe"], ["expected true or false"]),
    (["--model", VLLM_MODEL, "-B", "gpu_memory_utilization=1.5"], ["must be at most 1"]),
    (["-B", "n_ctx"], ["expected KEY=VALUE"]),
    (["-B", "max_model_len=4096"], ["unknown backend argument 'max_model_len'", "llamacpp"]),
    (["--tensor-parallel-size", "2"], ["--tensor-parallel-size is an argument of the vllm backend",
                                       "llamacpp (model smollm2-135m-instruct) takes"]),
    (["--model", "gpt-4o-mini", "--batch-size", "4"], ["--batch-size is an argument of the llamacpp backend"]),
    (["--batch-size", "0"], ["--batch-size", "must be at least 1"]),
    (["--n-ctx", "1024", "-B", "n_ctx=2048"], ["--n-ctx already gives n_ctx = 1024"]),
])
def test_bad_backend_arguments_exit_2_naming_the_backend_and_its_keys(capsys, flags, needles):
    assert main(["run", *flags]) == 2
    err = " ".join(capsys.readouterr().err.split())
    for needle in needles:
        assert needle in err, err


def test_short_flags_reach_an_api_judge_of_a_local_model(monkeypatch):
    """Every backend of the run takes what it declares: ``--concurrency`` with a llama.cpp model and an API
    judge is for the judge (as before backend arguments existed), not an error."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    cfg = build_config(None, {"judge_model": "gpt-4o-mini", "concurrency": 3, "timeout": 5})
    judge = make_backend(resolve_model("gpt-4o-mini"), cfg)
    assert (judge.concurrency, judge.timeout_s) == (3, 5.0)
    with pytest.raises(ValueError, match="is an argument of the openai backend"):
        build_config(None, {"concurrency": 3})


def test_old_yaml_keys_for_other_backends_warn_and_are_ignored(tmp_path, capsys):
    y = tmp_path / "old.yaml"
    y.write_text("model: gpt-4o-mini\nconcurrency: 16\nn_ctx: 2048\nbatch_size: 4\n")
    cfg = build_config(str(y), {})
    err = capsys.readouterr().err
    assert "old.yaml: 'batch_size' is ignored: an argument of the llamacpp backend" in err
    assert "'concurrency'" not in err
    assert cfg.execution.args_for("openai")["concurrency"] == 16


def test_yaml_backend_args_mapping(tmp_path):
    y = tmp_path / "run.yaml"
    y.write_text(f"model: {VLLM_MODEL}\ntensor_parallel_size: 2\nbackend_args:\n  max_model_len: 4096\n")
    cfg = build_config(str(y), {"backend_args": ["max_model_len=8192"]})  # flags win
    args = cfg.execution.args_for("vllm")
    assert args["max_model_len"] == 8192 and args["tensor_parallel_size"] == 2
    y.write_text(f"model: {VLLM_MODEL}\nbackend_args:\n  max_model_len: '4096'\n")
    with pytest.raises(ValueError, match=r"run.yaml: backend_args.max_model_len: expected an integer"):
        build_config(str(y), {})
    y.write_text(f"model: {VLLM_MODEL}\nbackend_args:\n  n_ctx: 4096\n")
    with pytest.raises(ValueError, match=r"run.yaml: backend_args.n_ctx: unknown backend argument 'n_ctx'.*vllm"):
        build_config(str(y), {})
    y.write_text("backend_args: [n_ctx=4096]\n")
    with pytest.raises(ValueError, match="'backend_args' must be a mapping"):
        build_config(str(y), {})


# -- identity ---------------------------------------------------------------------------------------------------

def test_only_output_changing_backend_args_name_the_run():
    base = build_config(None, {"model": VLLM_MODEL}).hash()
    same = [["gpu_memory_utilization=0.5"], ["chunk_size=64"], ["dtype=auto"], ["trust_remote_code=false"],
            ["tensor_parallel_size=2"]]
    for args in same:
        assert build_config(None, {"model": VLLM_MODEL, "backend_args": args}).hash() == base, args
    changed = {build_config(None, {"model": VLLM_MODEL, "backend_args": args}).hash()
               for args in (["max_model_len=4096"], ["max_model_len=2048"], ["dtype=float16"],
                            ["trust_remote_code=true"])}
    assert len(changed) == 4 and base not in changed


def test_flat_view_loads_back_as_the_same_configuration(tmp_path):
    """The manifest records ``cfg.flat()``: as a YAML file it gives the same configuration and identity."""
    cfg = build_config(None, {"model": VLLM_MODEL, "temperature": 0.5, "limit": 3, "price_in": 1.0,
                              "tensor_parallel_size": 2, "backend_args": ["max_model_len=4096"]})
    y = tmp_path / "again.yaml"
    y.write_text(yaml.safe_dump(cfg.flat()))
    again = build_config(str(y), {})
    assert again == cfg and again.hash() == cfg.hash()
    flat = cfg.flat()
    assert flat["tensor_parallel_size"] == 2 and flat["backend_args"] == {"max_model_len": 4096}
    old = tmp_path / "old.yaml"  # a file for another backend's model: its ignored key survives the round trip
    old.write_text("model: gpt-4o-mini\nbatch_size: 4\n")
    cfg = build_config(str(old), {})
    y.write_text(yaml.safe_dump(cfg.flat()))
    assert build_config(str(y), {}) == cfg


def test_run_options_come_from_the_generation_part():
    """Every runner option but the two the resolved model decides is a generation field of the same name,
    so a new one cannot be left at its default by the harness."""
    own = {"model_name", "allow_prefill"}
    gen = {f.name for f in fields(Generation)}
    assert {f.name for f in fields(RunOptions)} - own <= gen
    g = build_config(None, {"temperature": 0.7, "top_p": 0.9, "seed": 4, "samples": 2, "max_tokens_direct": 9,
                            "max_tokens_cot": 99, "fewshot_k": 1, "extra_body": {"x": 1}}).generation
    assert run_options(g, "m", True) == RunOptions("m", seed=4, temperature=0.7, top_p=0.9, samples=2,
                                                   max_tokens_direct=9, max_tokens_cot=99, fewshot_k=1,
                                                   allow_prefill=True, extra_body={"x": 1})


# -- the backends get them -------------------------------------------------------------------------------------

@pytest.fixture
def fake_vllm(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(FAKES))
    monkeypatch.setenv("FAKE_VLLM_LOG", str(tmp_path / "fake_vllm.log"))
    for m in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        monkeypatch.delitem(sys.modules, m)
    from cotbench.backends import vllm_offline

    monkeypatch.setattr(vllm_offline, "hub_commit", lambda model_id, revision: "0" * 40)
    monkeypatch.delenv(vllm_offline.MAX_MODEL_LEN_ENV, raising=False)
    return vllm_offline


def test_vllm_backend_args_reach_the_engine(fake_vllm, monkeypatch):
    cfg = build_config(None, {"model": VLLM_MODEL, "backend_args": ["max_model_len=4096", "trust_remote_code=true",
                                                                    "dtype=bfloat16", "chunk_size=7"]})
    b = make_backend(resolve_model(VLLM_MODEL), cfg)
    assert b.engine_kw["max_model_len"] == 4096 and b.engine_kw["trust_remote_code"] is True
    assert b.engine_kw["dtype"] == "bfloat16" and b.chunk_size == 7
    monkeypatch.setenv(fake_vllm.MAX_MODEL_LEN_ENV, "12345")  # the environment variable still works
    b = make_backend(resolve_model(VLLM_MODEL), build_config(None, {"model": VLLM_MODEL}))
    assert b.engine_kw["max_model_len"] == 12345 and b.engine_kw["trust_remote_code"] is False


def test_list_backends_shows_every_argument(capsys):
    assert main(["list", "backends", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["backend"], r["argument"]) for r in rows} == {(e.name, a.name) for e in BACKENDS.values()
                                                            for a in e.args}
    by = {(r["backend"], r["argument"]): r for r in rows}
    assert by[("vllm", "max_model_len")]["identity"] == "yes" and by[("vllm", "max_model_len")]["flag"] == "-B only"
    assert by[("llamacpp", "batch_size")]["flag"] == "--batch-size" and by[("llamacpp", "batch_size")]["default"] == "8"
