"""The vllm backend and its test double held against the installed vLLM, on the CPU.

``vllm.LLM(...)`` needs a GPU, but importing vLLM does not, and neither do the parts the backend relies
on: ``EngineArgs`` and the model config built from a local HF directory (a tiny one, written here from
scratch), ``SamplingParams`` validation, chat rendering, the prompt-length checks and the output
classes. This module checks every name and keyword the backend passes, and that the double
(tests/fakes/vllm) accepts and rejects what vLLM does. Skipped where vLLM is not installed; to run it,
install vLLM in a side environment: ``python -m venv V && V/bin/pip install vllm pytest`` then
``PYTHONPATH=. V/bin/python -m pytest tests/test_vllm_contract.py``.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

FAKES = Path(__file__).parent / "fakes"
_spec = importlib.util.find_spec("vllm")
if _spec is None or str(FAKES) in str(_spec.origin):
    pytest.skip("vLLM is not installed (install it in a side environment to run the contract test)",
                allow_module_level=True)
vllm = pytest.importorskip("vllm", reason="vLLM is installed but does not import")
from vllm.engine.arg_utils import EngineArgs  # noqa: E402
from vllm.exceptions import VLLMValidationError  # noqa: E402

from cotbench.backends import vllm_offline  # noqa: E402
from cotbench.records import GenParams, Request  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def real_vllm(monkeypatch):
    """Here ``import vllm`` must be the real package (tests/test_vllm_backend.py swaps the double in and
    puts the real modules back afterwards); importing vLLM twice would register its torch ops twice."""
    assert sys.modules.get("vllm") is vllm
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(vllm_offline.MAX_MODEL_LEN_ENV, raising=False)


@pytest.fixture(scope="module")
def double():
    """The test double, loaded under another name beside the real package."""
    spec = importlib.util.spec_from_file_location("fake_vllm", FAKES / "vllm" / "__init__.py",
                                                  submodule_search_locations=[str(FAKES / "vllm")])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fake_vllm"] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("fake_vllm", None)


TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}"
            "{% if not loop.last or m['role'] != 'assistant' %} <|end|> {% endif %}{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|> {% endif %}")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A config-and-tokenizer-only Llama directory (no weights, no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-llama")
    words = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>"] + [f"w{i}" for i in range(100)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                            chat_template=TEMPLATE).save_pretrained(out)
    LlamaConfig(vocab_size=len(words), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                bos_token_id=1, eos_token_id=2).save_pretrained(out)
    return out


def req(text: str = "w1 w2", prefill: str | None = None, **params) -> Request:
    return Request(model="m", model_revision="", backend="vllm", messages=({"role": "user", "content": text},),
                   params=GenParams(**params), prefill=prefill)


def test_installed_version_is_in_the_supported_range_and_pyproject_says_the_same():
    import tomllib
    from packaging.specifiers import SpecifierSet

    assert vllm.__version__ in SpecifierSet(vllm_offline.SUPPORTED_VLLM)
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert f"vllm{vllm_offline.SUPPORTED_VLLM}" in pyproject["project"]["optional-dependencies"]["vllm"]


def test_engine_keywords_exist_and_build_a_model_config(tiny_model):
    b = vllm_offline.VLLMBackend(str(tiny_model), model_context=2048, tensor_parallel_size=2,
                                 pipeline_parallel_size=2, distributed_executor_backend="mp")
    kw = {**b.engine_kw, "gpu_memory_utilization": 0.45}
    fields = {f.name for f in dataclasses.fields(EngineArgs)}
    assert set(kw) <= fields, set(kw) - fields
    llm_params = inspect.signature(vllm.LLM.__init__).parameters
    assert all(k in llm_params for k in ("model", "tensor_parallel_size", "revision", "tokenizer_revision", "seed",
                                         "gpu_memory_utilization", "dtype", "trust_remote_code"))
    mc = EngineArgs(**kw).create_model_config()
    assert mc.max_model_len == 2048 and mc.runner_type == "generate"
    assert b.revision.startswith("sha256:")


def test_a_max_model_len_over_the_models_is_refused_by_vllm_and_the_double(tiny_model, double):
    with pytest.raises(ValueError, match="max_model_len"):
        EngineArgs(model=str(tiny_model), max_model_len=4096).create_model_config()
    with pytest.raises(ValueError, match="max_model_len"):
        double.LLM(str(tiny_model), max_model_len=4096)


def test_hub_revision_keywords_are_engine_keywords():
    b = vllm_offline.VLLMBackend("org/model", revision=COMMIT)
    assert b.engine_kw["revision"] == b.engine_kw["tokenizer_revision"] == COMMIT
    assert {"revision", "tokenizer_revision"} <= {f.name for f in dataclasses.fields(EngineArgs)}


def test_chat_keywords_exist():
    params = inspect.signature(vllm.LLM.chat).parameters
    for name in ("sampling_params", "use_tqdm", *vllm_offline.template_kwargs(True)):
        assert name in params, name
    assert params["add_generation_prompt"].default is True and params["continue_final_message"].default is False


def test_sampling_params_accepts_the_backends_mapping_and_extra_fields():
    r = req(max_tokens=7, temperature=0.7, top_p=0.9, stop=("\n",), seed=3,
            extra_body=json.dumps({"repetition_penalty": 1.1, "top_k": 5, "min_p": 0.05}))
    (sp,) = vllm_offline.build_sampling_params(vllm, [r])
    assert (sp.max_tokens, sp.temperature, sp.top_p, sp.stop, sp.seed) == (7, 0.7, 0.9, ["\n"], 3)
    assert (sp.repetition_penalty, sp.top_k, sp.min_p) == (1.1, 5, 0.05)
    names = set(inspect.signature(vllm.SamplingParams).parameters)
    assert vllm_offline.OWNED_FIELDS <= names and vllm_offline.REFUSED_FIELDS - {"best_of"} <= names
    assert not set(vllm_offline.FIELD_HINTS) & names and set(vllm_offline.FIELD_HINTS.values()) <= names


SAMPLING_CASES = [{}, {"temperature": 0.0}, {"temperature": 2.0}, {"temperature": 2.5}, {"temperature": -0.1},
                  {"top_p": 0.0}, {"top_p": 1.0}, {"top_p": 1.5}, {"max_tokens": 0}, {"max_tokens": 1},
                  {"top_k": -1}, {"top_k": -2}, {"min_p": 1.5}, {"repetition_penalty": 0.0},
                  {"presence_penalty": 3.0}, {"frequency_penalty": -2.0}, {"min_tokens": -1}, {"stop": "x"},
                  {"repeat_penalty": 1.0}, {"temperature": 0.0, "top_p": 0.5, "top_k": 5, "min_p": 0.1},
                  {"seed": -1}, {"seed": 7, "temperature": 0.8, "top_p": 0.95}]


@pytest.mark.parametrize("kw", SAMPLING_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "defaults")
def test_the_double_validates_sampling_params_like_vllm(double, kw):
    def outcome(cls):
        try:
            sp = cls(**kw)
        except Exception as e:  # noqa: BLE001 - compared below
            return type(e).__name__, str(e).split(" (parameter=")[0]
        return "ok", (list(sp.stop), sp.temperature, sp.top_p, sp.top_k, sp.min_p, sp.seed, sp.max_tokens)
    real, fake = outcome(vllm.SamplingParams), outcome(double.SamplingParams)
    assert real[0] == fake[0]
    if real[0] == "VLLMValidationError":
        assert real[1] == fake[1]
    if real[0] == "ok":
        assert real[1] == fake[1]


def test_real_prompt_length_errors_are_classified_as_overflow_and_the_double_raises_the_same():
    from vllm.renderers.params import TokenizeParams
    from vllm.v1.engine.input_processor import InputProcessor

    errors = []
    with pytest.raises(VLLMValidationError) as e1:
        TokenizeParams(max_total_tokens=8)._token_len_check(None, list(range(20)))
    errors.append(e1.value)
    processor = SimpleNamespace(skip_prompt_length_check=False, supports_mm_inputs=False,
                                model_config=SimpleNamespace(max_model_len=8, runner_type="generate"))
    for n in (20, 8):
        with pytest.raises(VLLMValidationError) as e2:
            InputProcessor._validate_prompt_len(processor, n, "decoder")
        errors.append(e2.value)
    for e in errors:
        assert not isinstance(e, ValueError)  # why a bare `except ValueError` let it end the run
        assert vllm_offline.is_context_overflow(e), str(e)
    assert not vllm_offline.is_context_overflow(VLLMValidationError("top_p must be in (0, 1], got 0."))


def test_double_overflow_error_is_the_real_class_and_classified(double):
    llm = double.LLM("org/model", max_model_len=8)
    with pytest.raises(double.exceptions.VLLMValidationError) as e:
        llm.chat([[{"role": "user", "content": "w " * 20}]], sampling_params=[double.SamplingParams()])
    assert type(e.value).__mro__[1].__name__ == VLLMValidationError.__mro__[1].__name__
    real_cls = type("VLLMValidationError", (VLLMValidationError,), {})
    assert vllm_offline.is_context_overflow(real_cls(str(e.value)))


def test_prefill_renders_an_open_assistant_turn_and_both_flags_are_refused(tiny_model, double):
    from vllm.renderers.hf import safe_apply_chat_template
    from vllm.tokenizers import get_tokenizer

    mc = EngineArgs(model=str(tiny_model), max_model_len=512).create_model_config()
    tok = get_tokenizer(str(tiny_model))
    r = req("w1 w2", prefill="w7 w8")
    text = safe_apply_chat_template(mc, tok, vllm_offline.chat_messages(r), tokenize=False,
                                    **vllm_offline.template_kwargs(True))
    assert text.rstrip().endswith("<|assistant|> w7 w8"), text  # continues the prefill, no end marker
    chat_defaults = {"add_generation_prompt": True, "continue_final_message": False}  # LLM.chat's defaults
    plain = safe_apply_chat_template(mc, tok, vllm_offline.chat_messages(req("w1 w2")), tokenize=False,
                                     **(chat_defaults | vllm_offline.template_kwargs(False)))
    assert plain.rstrip().endswith("<|assistant|>")
    with pytest.raises(VLLMValidationError, match="not compatible"):
        safe_apply_chat_template(mc, tok, vllm_offline.chat_messages(r), tokenize=False,
                                 add_generation_prompt=True, continue_final_message=True)
    with pytest.raises(double.exceptions.VLLMValidationError, match="not compatible"):
        double.LLM("org/model").chat([vllm_offline.chat_messages(r)], sampling_params=[double.SamplingParams()],
                                     add_generation_prompt=True, continue_final_message=True)


def test_outputs_convert_and_retry_reasons_are_vllms():
    from vllm.outputs import CompletionOutput, RequestOutput
    from vllm.v1.engine import FINISH_REASON_STRINGS

    c = CompletionOutput(index=0, text="The answer is 4", token_ids=[5, 6, 7], cumulative_logprob=None,
                         logprobs=None, finish_reason="stop")
    out = RequestOutput(request_id="0", prompt=None, prompt_token_ids=[1, 2], prompt_logprobs=None, outputs=[c],
                        finished=True)
    resp = vllm_offline.to_response(out, 0.5)
    assert (resp.text, resp.tokens_in, resp.tokens_out, resp.finish_reason) == ("The answer is 4", 2, 3, "stop")
    assert set(vllm_offline.RETRY_FINISH) <= set(FINISH_REASON_STRINGS)


def test_version_check_reads_vllms_version_string():
    assert vllm_offline._version_tuple(vllm.__version__) >= (0, 6, 3)
    with pytest.raises(vllm_offline.BackendError, match="left vLLM after 0.9.2"):
        vllm_offline.check_loadable("microsoft/Phi-3-small-8k-instruct", vllm.__version__, False)
