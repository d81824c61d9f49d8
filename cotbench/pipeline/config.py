"""Run configuration: one dataclass, filled from defaults < YAML file < command-line flags.

The YAML keys are the flag names with dashes as underscores (``max_tokens_cot: 256``), so flags and
files say the same things. A run's identity (:meth:`RunConfig.hash`, the default run directory's name)
covers only the fields that can change its outputs; how the work is done (concurrency, timeouts,
retries), how it is reported (prices, chance credit) and where files are (``--data-dir``, ``--cache``,
``--out``) are left out, so changing them resumes the same run from the same store.
"""
from __future__ import annotations

import hashlib
import json
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from cotbench.pipeline.registry import DEFAULT_MODEL
from cotbench.pipeline.settings import CORE_SETTINGS, SETTINGS

QUICK_DATASETS = ("gsm8k", "mmlu")


@dataclass
class RunConfig:
    model: str = DEFAULT_MODEL
    backend: str | None = None  # implied by the model's registry entry
    base_url: str | None = None
    datasets: list[str] = field(default_factory=lambda: list(QUICK_DATASETS))
    dataset_file: str | None = None
    answer_type: str | None = None
    settings: list[str] = field(default_factory=lambda: list(CORE_SETTINGS))
    limit: int | None = None
    sample: int | None = None  # a seeded, stratified sample of N items per dataset (cotbench.pipeline.sampling)
    sample_seed: int = 0
    skip_missing: bool = False  # skip datasets whose files are absent (on by default for --datasets all)
    data_dir: str | None = None
    out: str | None = None
    cache: str | None = None  # store path; default: default_store_path(), shared by every run
    seed: int = 0
    temperature: float = 0.0
    top_p: float = 1.0
    samples: int = 1  # generations per item (sample_index 0..samples-1)
    max_tokens_direct: int | None = None  # overrides the task's budget
    max_tokens_cot: int | None = None
    fewshot_k: int | None = None
    chance_credit: bool = False
    concurrency: int = 8
    timeout: float = 120.0
    max_retries: int = 6
    n_ctx: int = 4096
    batch_size: int = 8  # llamacpp: sequences decoded together (outputs do not depend on it)
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    distributed_executor_backend: str | None = None
    extra_body: dict | None = None  # openai backend: extra sampling fields sent as-is (part of the request key)
    intervention: str | None = None  # transformers backend: head knockout / LoFiT (cotbench.heads.intervene)
    judge_model: str | None = None
    price_in: float | None = None
    price_out: float | None = None
    progress: bool = True
    batch_api: bool = False  # openai backend: submit through the provider's batch API (same request keys)
    wait: bool = True  # batch API: wait for the batches, or return once they are submitted
    batch_poll: float = 30.0  # batch API: seconds between status checks while waiting

    def validate(self) -> None:
        bad = [s for s in self.settings if s not in SETTINGS]
        if bad:
            raise ValueError(f"unknown setting(s) {bad}; choose from {', '.join(SETTINGS)}")
        if self.backend not in (None, "llamacpp", "openai", "vllm", "transformers"):
            raise ValueError(f"unknown backend {self.backend!r}; choose llamacpp, openai, vllm or transformers")
        if self.intervention and self.backend != "transformers":
            raise ValueError("--intervention needs --backend transformers")
        if self.limit is not None and self.limit < 1:
            raise ValueError("--limit must be at least 1")
        if self.sample is not None and self.sample < 1:
            raise ValueError(f"--sample must be at least 1, got {self.sample}")
        if self.sample is not None and self.limit is not None:
            raise ValueError("--sample and --limit both choose items; give one of them")
        if self.batch_size < 1:
            raise ValueError("--batch-size must be at least 1")
        if self.samples < 1:
            raise ValueError("--samples must be at least 1")
        if not self.wait and not self.batch_api:
            raise ValueError("--no-wait (wait: false) only applies with --batch-api")
        if self.dataset_file and not self.answer_type:
            raise ValueError("--dataset-file needs --answer-type {choice,number,boolean,text}")

    def hash(self, data_digest: str = "") -> str:
        """The run's identity: the fields that can change outputs, plus a digest of the loaded data
        (so a dataset spelled through a relative or an absolute path, or read from the hub or a mirror
        with the same rows, is the same run)."""
        keep = {k: v for k, v in asdict(self).items() if k not in NOT_IDENTITY}
        if data_digest:
            keep["data"] = data_digest
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


# Fields that never change a model output or a sample row: where files are, how the work is scheduled,
# and summary-only figures. Every other field is part of a run's identity.
NOT_IDENTITY = frozenset({
    "out", "cache", "progress", "data_dir", "dataset_file", "skip_missing",
    "concurrency", "timeout", "max_retries", "batch_size",
    "tensor_parallel_size", "data_parallel_size", "pipeline_parallel_size", "distributed_executor_backend",
    "price_in", "price_out", "chance_credit",
    "batch_api", "wait", "batch_poll",  # how requests travel (sync or provider batch), not what they are
    "sample", "sample_seed",  # which items a sample holds enters the identity through the inputs digest
})


def default_store_path() -> Path:
    """The generation store every run shares unless ``--cache`` names another: requests are keyed by
    everything that determines their output, so one store serves every run dir and configuration.
    ``$XDG_CACHE_HOME/cotbench/generations.sqlite`` (default ``~/.cache/cotbench/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cotbench" / "generations.sqlite"


FIELD_NAMES = {f.name for f in fields(RunConfig)}


HINTS = typing.get_type_hints(RunConfig)


def _type_name(t: Any) -> str:
    if _is_union(t):
        return " or ".join(_type_name(a) for a in typing.get_args(t))
    if t is type(None):
        return "null"
    if typing.get_origin(t) is list:
        return "a list of " + {str: "strings", int: "integers"}.get(typing.get_args(t)[0], "values")
    return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
            "dict": "a mapping"}.get(getattr(t, "__name__", ""), str(t))


def _is_union(t: Any) -> bool:
    return typing.get_origin(t) in (typing.Union, types.UnionType)


def _fits(value: Any, t: Any) -> bool:
    """Whether ``value`` has type ``t`` (the few forms RunConfig uses); bools are not numbers here."""
    if _is_union(t):
        return any(_fits(value, a) for a in typing.get_args(t))
    if t is type(None):
        return value is None
    if t is bool:
        return isinstance(value, bool)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if t is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    origin = typing.get_origin(t)
    if origin is list:
        (item,) = typing.get_args(t)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    return isinstance(value, origin or t)


def check_type(name: str, value: Any, t: Any, where: str) -> None:
    """A YAML value of the wrong type is an error naming the option: a string where a number belongs
    would otherwise reach the request (and its cache key) as a string."""
    if not _fits(value, t):
        raise ValueError(f"{where}: option {name!r} must be {_type_name(t)}, got {value!r} "
                         f"({type(value).__name__})")


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ValueError(f"config file not found: {p}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{p}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: the top level must be a mapping of option: value")
    unknown = sorted(set(data) - FIELD_NAMES)
    if unknown:
        raise ValueError(f"{p}: unknown option(s) {unknown}; valid: {', '.join(sorted(FIELD_NAMES))}")
    for key in ("datasets", "settings"):
        if key in data and isinstance(data[key], str):
            data[key] = data[key].split()
    return data


def build_config(yaml_path: str | None, overrides: dict[str, Any]) -> RunConfig:
    """defaults < YAML < explicit flags (``None`` flags mean 'not given')."""
    values: dict[str, Any] = {}
    if yaml_path:
        values.update(load_yaml(yaml_path))
    values.update({k: v for k, v in overrides.items() if v is not None and k in FIELD_NAMES})
    try:
        cfg = RunConfig(**values)
    except TypeError as e:
        raise ValueError(f"bad configuration: {e}") from None
    where = yaml_path or "config"
    for f in fields(RunConfig):
        value = getattr(cfg, f.name)
        check_type(f.name, value, HINTS[f.name], where)
        if float in typing.get_args(HINTS[f.name]) + (HINTS[f.name],) and isinstance(value, int):
            setattr(cfg, f.name, float(value))  # `temperature: 1` and `--temperature 1` make one request key
    try:
        cfg.validate()
    except ValueError as e:
        raise ValueError(f"{yaml_path}: {e}" if yaml_path else str(e)) from None
    return cfg
