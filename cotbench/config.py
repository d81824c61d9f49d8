"""Run configuration: one dataclass, filled from defaults < YAML file < command-line flags.

The YAML keys are the flag names with dashes as underscores (``max_tokens_cot: 256``), so flags and
files say the same things. ``config_hash`` covers every field that can change results.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from cotbench.models import DEFAULT_MODEL
from cotbench.settings import CORE_SETTINGS, SETTINGS

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
    skip_missing: bool = False  # skip datasets whose files are absent (on by default for --datasets all)
    data_dir: str | None = None
    out: str | None = None
    cache: str | None = None  # store path; default OUT/store.sqlite
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
    judge_model: str | None = None
    price_in: float | None = None
    price_out: float | None = None
    progress: bool = True

    def validate(self) -> None:
        bad = [s for s in self.settings if s not in SETTINGS]
        if bad:
            raise ValueError(f"unknown setting(s) {bad}; choose from {', '.join(SETTINGS)}")
        if self.backend not in (None, "llamacpp", "openai", "vllm"):
            raise ValueError(f"unknown backend {self.backend!r}; choose llamacpp, openai or vllm")
        if self.limit is not None and self.limit < 1:
            raise ValueError("--limit must be at least 1")
        if self.batch_size < 1:
            raise ValueError("--batch-size must be at least 1")
        if self.samples < 1:
            raise ValueError("--samples must be at least 1")
        if self.dataset_file and not self.answer_type:
            raise ValueError("--dataset-file needs --answer-type {choice,number,boolean,text}")

    def hash(self) -> str:
        keep = {k: v for k, v in asdict(self).items() if k not in ("out", "cache", "progress", "concurrency",
                                                                "batch_size")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


FIELD_NAMES = {f.name for f in fields(RunConfig)}


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
    for f in fields(RunConfig):  # light type check for YAML values
        v = getattr(cfg, f.name)
        if (f.name in ("limit", "seed", "samples", "concurrency", "n_ctx", "batch_size") and v is not None
                and not isinstance(v, int)):
            raise ValueError(f"{yaml_path or 'config'}: option {f.name!r} must be an integer, got {v!r}")
    try:
        cfg.validate()
    except ValueError as e:
        raise ValueError(f"{yaml_path}: {e}" if yaml_path else str(e)) from None
    return cfg
