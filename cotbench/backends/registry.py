"""Backends by name, each imported only when a run uses it, each with the arguments it declares.

One table serves the command line (``--backend``, ``-B key=value``, the short flags such as
``--batch-size``), YAML (``backend_args:``), ``list backends`` and a run's identity: an argument that
can change an output (``identity``) is part of the run's identity; one that only changes how the work
is done (threads, concurrency, parallelism) is not, so changing it resumes the same run.
Importing this module imports no backend: ``target`` names the factory, loaded on first use, so a
run on the llama.cpp backend never needs vLLM or torch installed.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from cotbench.backends.base import Backend

TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(frozen=True)
class BackendArg:
    """One argument a backend takes: ``-B name=value`` on the command line, ``backend_args: {name: value}``
    in YAML, and, where ``flag`` is set, a short flag (``--batch-size``) and top-level YAML key as well."""

    name: str
    type: type  # int, float, str or bool
    default: Any
    help: str
    identity: bool = False  # the value can change an output: then it is part of the run's identity
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    above: float | None = None  # exclusive lower bound
    maximum: float | None = None
    flag: bool = False  # also a short flag / top-level YAML key (every one that existed before -B)

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    def type_name(self) -> str:
        return {int: "integer", float: "number", str: "string", bool: "true/false"}[self.type]

    def parse(self, text: str) -> Any:
        """The value of ``-B name=text``, by the declared type; raises ValueError naming the expected type."""
        if self.default is None and text.lower() in ("none", "null"):
            return None
        if self.type is bool:
            if text.lower() in TRUE + FALSE:
                return text.lower() in TRUE
            raise ValueError(f"expected true or false, got {text!r}")
        try:
            return self.type(text)
        except ValueError:
            raise ValueError(f"expected {'an' if self.type is int else 'a'} {self.type_name()}, got {text!r}") from None

    def check(self, value: Any) -> Any:
        """``value`` (already typed: from YAML or a typed flag) checked against the type and range; whole
        numbers for a float argument become floats. Raises ValueError saying what is expected."""
        if value is None and self.default is None:
            return None
        number = isinstance(value, (int, float)) and not isinstance(value, bool)  # YAML's true is no number
        ok = {bool: isinstance(value, bool), float: number, int: number and isinstance(value, int),
              str: isinstance(value, str)}[self.type]
        if not ok:
            raise ValueError(f"expected {'an' if self.type is int else 'a'} {self.type_name()}, got {value!r}")
        value = float(value) if self.type is float else value
        if self.choices and value not in self.choices:
            raise ValueError(f"expected one of {', '.join(self.choices)}, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be at least {self.minimum:g}, got {value}")
        if self.above is not None and value <= self.above:
            raise ValueError(f"must be more than {self.above:g}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"must be at most {self.maximum:g}, got {value}")
        return value


@dataclass(frozen=True)
class BuildContext:
    """What every backend may need from the run beyond its own arguments."""

    seed: int = 0
    intervention: str | None = None  # transformers: head edits (cotbench.heads.intervene)


@dataclass(frozen=True)
class BackendEntry:
    name: str
    target: str  # "module:factory"; factory(spec: ModelSpec, ctx: BuildContext, **args) -> Backend
    help: str
    args: tuple[BackendArg, ...] = ()

    def arg(self, name: str) -> BackendArg | None:
        return next((a for a in self.args if a.name == name), None)

    def arg_names(self) -> list[str]:
        return [a.name for a in self.args]

    def resolve(self, given: dict[str, Any]) -> dict[str, Any]:
        """Every declared argument: the given value, else its default (keys it does not declare are ignored)."""
        return {a.name: given.get(a.name, a.default) for a in self.args}

    def load(self) -> Callable[..., Backend]:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


def _arg(name, type_, default, help_, **kw) -> BackendArg:
    return BackendArg(name, type_, default, help_, **kw)


POSITIVE = {"minimum": 1}
BACKENDS: dict[str, BackendEntry] = {e.name: e for e in [
    BackendEntry("llamacpp", "cotbench.backends.llamacpp:from_spec",
                 "in-process GGUF models through llama-cpp-python (CPU; the default)", (
        _arg("n_ctx", int, 4096, "context window in tokens; a longer prompt is recorded as context_overflow",
             identity=True, flag=True, **POSITIVE),
        _arg("batch_size", int, 8, "requests decoded together (1 = one at a time; outputs are the same)",
             flag=True, **POSITIVE),
        _arg("n_threads", int, None, "CPU threads (default: the CPUs this process may use)", **POSITIVE),
        _arg("weights", str, "file", "compute with the GGUF's own weights ('file'), or with a copy converted "
             "once to f16 or f32 and cached (faster prefill and batched decoding on CPUs; other roundings, "
             "so other texts: a different revision)", identity=True, choices=("file", "f16", "f32")),
    )),
    BackendEntry("openai", "cotbench.backends.openai_api:from_spec",
                 "any OpenAI-compatible chat endpoint (hosted APIs, vllm serve, llama_cpp.server)", (
        _arg("concurrency", int, 8, "requests in flight", flag=True, **POSITIVE),
        _arg("timeout", float, 120.0, "per-request timeout in seconds", flag=True, above=0),
        _arg("max_retries", int, 6, "retries on 429/5xx/timeouts/drops", flag=True, minimum=0),
    )),
    BackendEntry("vllm", "cotbench.backends.vllm_offline:from_spec",
                 "offline batch generation with vllm.LLM (GPU; pip install 'cotbench[vllm]')", (
        _arg("tensor_parallel_size", int, 1, "GPUs per model replica", flag=True, **POSITIVE),
        _arg("data_parallel_size", int, 1, "model replicas, each on its own GPUs", flag=True, **POSITIVE),
        _arg("pipeline_parallel_size", int, 1, "pipeline stages (multi-node with ray)", flag=True, **POSITIVE),
        _arg("distributed_executor_backend", str, None, "'ray' for multi-node", choices=("mp", "ray"), flag=True),
        _arg("max_model_len", int, None, "engine context in tokens; a longer prompt is recorded as "
             "context_overflow (default: $COTBENCH_VLLM_MAX_MODEL_LEN, else the model's context capped at 8192)",
             identity=True, **POSITIVE),
        _arg("trust_remote_code", bool, False, "run the model repository's own Python code (some models need it)",
             identity=True),
        _arg("dtype", str, "auto", "weights and activations dtype, e.g. bfloat16 (auto: the model's own)",
             identity=True),
        _arg("gpu_memory_utilization", float, 0.9, "share of each GPU's memory vLLM may take", above=0,
             maximum=1),
        _arg("chunk_size", int, 512, "prompts per LLM.chat call (progress is stored per chunk)", **POSITIVE),
    )),
    BackendEntry("transformers", "cotbench.backends.transformers_local:from_spec",
                 "in-process Hugging Face transformers, with attention-head interventions "
                 "(pip install 'cotbench[heads]')", (
        _arg("dtype", str, "auto", "torch dtype, e.g. bfloat16 (auto: float32 on CPU, bfloat16 on GPU)",
             identity=True),
        _arg("device", str, None, "torch device, e.g. cpu or cuda:1 (default: cuda if available, else cpu)"),
        _arg("n_threads", int, None, "CPU threads for torch (default: torch's choice)", **POSITIVE),
    )),
]}


def get_backend(name: str) -> BackendEntry:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}") from None


def declared(name: str) -> BackendArg | None:
    """The declaration of argument ``name`` (one per name: backends that share a name share its meaning)."""
    return next((a for e in BACKENDS.values() for a in e.args if a.name == name), None)


def flag_args() -> dict[str, BackendArg]:
    """The arguments that are also short flags / top-level YAML keys, by name."""
    return {a.name: a for e in BACKENDS.values() for a in e.args if a.flag}


def takers(name: str) -> list[str]:
    """The backends that take argument ``name``."""
    return [e.name for e in BACKENDS.values() if e.arg(name)]


def identity_args(given: dict[str, Any]) -> dict[str, Any]:
    """The given arguments that can change an output and differ from their default (so spelling out a
    default names the same run)."""
    out = {}
    for k, v in given.items():
        a = declared(k)
        if a is not None and a.identity and v != a.default:
            out[k] = v
    return out


def build_backend(spec: Any, ctx: BuildContext, given: dict[str, Any]) -> Backend:
    """The backend for a resolved model spec, with the given arguments it declares (defaults for the rest)."""
    entry = get_backend(spec.backend)
    return entry.load()(spec, ctx, **entry.resolve(given))
