"""Run configuration in three parts, filled from defaults < YAML file < command-line flags.

* :class:`Generation`: what identifies the generations (model, backend, endpoint, items, settings,
  sampling, token budgets, few-shot k, extra sampling fields, intervention, judge);
* :class:`Execution`: how the backend runs (its arguments, the provider's batch API);
* :class:`Reporting`: where files are and how results are reported (out, cache, data dir, progress,
  prices, chance credit).

Users see one flat set of keys: the YAML keys are the flag names with dashes as underscores
(``max_tokens_cot: 256``), so flags and files say the same things, and each part takes its own.
Backend arguments come from ``-B key=value`` / ``backend_args: {key: value}`` and from the short flags
and keys every release has had (``--batch-size``, ``n_ctx:``; see :mod:`cotbench.backends.registry`).

A run's identity (:meth:`RunConfig.hash`, the default run directory's name) covers only what can change
its outputs: the generation part (its item-choosing fields through the digest of the loaded inputs
instead) and the backend arguments declared to change outputs. How the work is done and how it is
reported are left out, so changing them resumes the same run from the same store.
"""
from __future__ import annotations

import hashlib
import json
import sys
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from cotbench.backends.registry import (
    BACKENDS,
    BackendArg,
    flag_args,
    get_backend,
    identity_args,
    takers,
)
from cotbench.pipeline.model_registry import DEFAULT_MODEL, resolve_model
from cotbench.pipeline.settings import CORE_SETTINGS, SETTINGS
from cotbench.records import cache_home

QUICK_DATASETS = ("gsm8k", "mmlu")


@dataclass
class Generation:
    """What identifies the generations: every field here can change an output or a sample row."""

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
    seed: int = 0
    temperature: float = 0.0
    top_p: float = 1.0
    samples: int = 1  # generations per item (sample_index 0..samples-1)
    max_tokens_direct: int | None = None  # overrides the task's budget
    max_tokens_cot: int | None = None
    fewshot_k: int | None = None
    extra_body: dict | None = None  # extra sampling fields sent as-is (part of the request key)
    intervention: str | None = None  # transformers backend: head knockout / LoFiT (cotbench.heads.intervene)
    judge_model: str | None = None


# Generation fields that choose which items are asked: they enter a run's identity through the digest of
# the loaded inputs (so a dataset file spelled through another path is the same run), not as values.
DIGEST_COVERED = frozenset({"dataset_file", "skip_missing", "sample", "sample_seed"})
# Every run's identity has held ``n_ctx`` (the llama.cpp context) whatever its backend; it stays there, with
# this default, so run directories made before backend arguments existed still resume.
LEGACY_N_CTX = 4096


@dataclass
class Execution:
    """How the backend runs: never part of a run's identity, except backend arguments declared to change
    outputs (:func:`cotbench.backends.registry.identity_args`)."""

    backend_args: dict[str, Any] = field(default_factory=dict)  # as given; each backend's defaults fill the rest
    batch_api: bool = False  # openai backend: submit through the provider's batch API (same request keys)
    wait: bool = True  # batch API: wait for the batches, or return once they are submitted
    batch_poll: float = 30.0  # batch API: seconds between status checks while waiting

    def args_for(self, backend: str) -> dict[str, Any]:
        """Every argument ``backend`` declares: the given value, else its default."""
        return get_backend(backend).resolve(self.backend_args)


@dataclass
class Reporting:
    """Where files are and how results are reported: never part of a run's identity."""

    data_dir: str | None = None
    out: str | None = None
    cache: str | None = None  # store path; default: default_store_path(), shared by every run
    progress: bool = True
    price_in: float | None = None
    price_out: float | None = None
    chance_credit: bool = False


@dataclass
class RunConfig:
    generation: Generation = field(default_factory=Generation)
    execution: Execution = field(default_factory=Execution)
    reporting: Reporting = field(default_factory=Reporting)

    def validate(self) -> None:
        g, x = self.generation, self.execution
        bad = [s for s in g.settings if s not in SETTINGS]
        if bad:
            raise ValueError(f"unknown setting(s) {bad}; choose from {', '.join(SETTINGS)}")
        if g.backend is not None and g.backend not in BACKENDS:
            raise ValueError(f"unknown backend {g.backend!r}; choose from {', '.join(BACKENDS)}")
        if g.intervention and g.backend != "transformers":
            raise ValueError("--intervention needs --backend transformers")
        if g.limit is not None and g.limit < 1:
            raise ValueError("--limit must be at least 1")
        if g.sample is not None and g.sample < 1:
            raise ValueError(f"--sample must be at least 1, got {g.sample}")
        if g.sample is not None and g.limit is not None:
            raise ValueError("--sample and --limit both choose items; give one of them")
        if g.samples < 1:
            raise ValueError("--samples must be at least 1")
        if not x.wait and not x.batch_api:
            raise ValueError("--no-wait (wait: false) only applies with --batch-api")
        if g.dataset_file and not g.answer_type:
            raise ValueError("--dataset-file needs --answer-type {choice,number,boolean,text}")

    def hash(self, data_digest: str = "") -> str:
        """The run's identity: the generation part, the backend arguments that can change outputs, plus a
        digest of the loaded data (so a dataset spelled through a relative or an absolute path, or read
        from the hub or a mirror with the same rows, is the same run). The JSON is the one every earlier
        release hashed (a flat mapping; ``backend_args`` only when one that changes outputs is given)."""
        keep = {k: v for k, v in asdict(self.generation).items() if k not in DIGEST_COVERED}
        args = self.execution.backend_args
        keep["n_ctx"] = args.get("n_ctx", LEGACY_N_CTX)
        extra = {k: v for k, v in identity_args(args).items() if k != "n_ctx"}
        if extra:
            keep["backend_args"] = extra
        if data_digest:
            keep["data"] = data_digest
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]

    def flat(self) -> dict[str, Any]:
        """The configuration as users write it (YAML keys; what the manifest records): backend arguments with
        a short key at the top level, as earlier releases wrote them, the others under ``backend_args``.
        Loading it back as a YAML file gives the same configuration."""
        out: dict[str, Any] = {}
        for part in (self.generation, self.execution, self.reporting):
            out.update(asdict(part))
        args = out.pop("backend_args")
        out.update({k: v for k, v in args.items() if k in SHORT_ARGS})
        out["backend_args"] = {k: v for k, v in args.items() if k not in SHORT_ARGS}
        return out


def default_store_path() -> Path:
    """The generation store every run shares unless ``--cache`` names another: requests are keyed by
    everything that determines their output, so one store serves every run dir and configuration.
    ``$XDG_CACHE_HOME/cotbench/generations.sqlite`` (default ``~/.cache/cotbench/...``)."""
    return cache_home() / "generations.sqlite"


PARTS = {"generation": Generation, "execution": Execution, "reporting": Reporting}
# flat key -> the part that holds it (``backend_args`` is gathered on its own)
PART_OF = {f.name: part for part, cls in PARTS.items() for f in fields(cls) if f.name != "backend_args"}
HINTS = {name: hint for cls in PARTS.values() for name, hint in typing.get_type_hints(cls).items()}
SHORT_ARGS = flag_args()  # backend arguments that are also flags / top-level keys: n_ctx, batch_size, ...
FIELD_NAMES = set(PART_OF) | set(SHORT_ARGS) | {"backend_args"}  # every key a YAML file may hold


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
    """defaults < YAML < explicit flags (``None`` flags mean 'not given'), each flat key into its part.

    ``overrides["backend_args"]`` holds ``-B`` values: a list of ``key=value`` strings (the command line) or a
    mapping of typed values."""
    from_file = load_yaml(yaml_path) if yaml_path else {}
    from_flags = {k: v for k, v in overrides.items() if v is not None and k in FIELD_NAMES}
    values = {k: v for source in (from_file, from_flags) for k, v in source.items() if k in PART_OF}
    where = yaml_path or "config"
    for name, value in values.items():
        check_type(name, value, HINTS[name], where)
        if float in typing.get_args(HINTS[name]) + (HINTS[name],) and isinstance(value, int):
            values[name] = float(value)  # `temperature: 1` and `--temperature 1` make one request key
    cfg = RunConfig(**{part: cls(**{k: v for k, v in values.items() if PART_OF[k] == part})
                       for part, cls in PARTS.items()})
    try:
        cfg.validate()
    except ValueError as e:
        raise ValueError(f"{yaml_path}: {e}" if yaml_path else str(e)) from None
    backends = run_backends(cfg.generation)
    args = gather_backend_args(from_file, backends, yaml_path) if yaml_path else {}
    args.update(gather_backend_args(from_flags, backends, None))
    cfg.execution.backend_args = args
    return cfg


def run_backends(g: Generation) -> dict[str, str]:
    """The backends a run uses, by name, each with whose it is (the model's, the judge's). A judge model that
    does not resolve is left out here: the run reports it if it needs the judge, as before."""
    out = {resolve_model(g.model, g.backend, g.base_url).backend: f"model {g.model}"}
    if g.judge_model:
        try:
            out.setdefault(resolve_model(g.judge_model).backend, f"judge {g.judge_model}")
        except ValueError:
            pass
    return out


def _valid_keys(backends: dict[str, str]) -> str:
    return "; ".join(f"{b} ({whose}) takes {', '.join(get_backend(b).arg_names())}" for b, whose in backends.items())


def _declaration(key: str, backends: dict[str, str], what: str) -> BackendArg:
    """The argument ``key`` of the first backend of the run that takes it; an error naming the run's
    backends and their valid keys when none does."""
    for b in backends:
        a = get_backend(b).arg(key)
        if a is not None:
            return a
    raise ValueError(f"{what}: unknown backend argument {key!r} for this run: {_valid_keys(backends)} "
                     "(see `cotbench list backends`)")


def _checked(a: BackendArg, value: Any, what: str, parse: bool = False) -> Any:
    try:
        return a.check(a.parse(value) if parse else value)
    except ValueError as e:
        raise ValueError(f"{what}: {e} (backend argument {a.name}; see `cotbench list backends`)") from None


def gather_backend_args(values: dict[str, Any], backends: dict[str, str], yaml_path: str | None) -> dict[str, Any]:
    """One source's backend arguments (a YAML file, or the command line), typed and checked against the
    backends of the run (``run_backends``): ``backend_args`` / ``-B`` plus the short keys (``n_ctx``,
    ``--batch-size``). Every backend of the run takes the arguments it declares, so ``--concurrency``
    reaches an API judge of a local model, as it always did.

    A key no backend of the run takes is an error, except a short key in a YAML file: files written for
    earlier releases (one file for several models) hold keys for other backends, so those are a warning
    and are ignored (``n_ctx`` still names the run, as it always has)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in SHORT_ARGS:
            continue
        a = SHORT_ARGS[key]
        what = f"{yaml_path}: option {key!r}" if yaml_path else a.option
        out[key] = _checked(a, value, what)
        if not any(get_backend(b).arg(key) for b in backends):
            if not yaml_path:
                raise ValueError(f"{a.option} is an argument of the {' and '.join(takers(key))} backend, not of "
                                 f"this run's: {_valid_keys(backends)}")
            print(f"warning: {yaml_path}: {key!r} is ignored: an argument of the {' and '.join(takers(key))} "
                  f"backend, and this run uses {', '.join(f'{b} ({w})' for b, w in backends.items())}",
                  file=sys.stderr)
    given = values.get("backend_args")
    if given is None:
        return out
    if isinstance(given, dict):
        items = [(str(k), v, False) for k, v in given.items()]
    elif isinstance(given, list) and not yaml_path:
        items = []
        for text in given:
            key, eq, raw = str(text).partition("=")
            if not eq or not key.strip():
                raise ValueError(f"-B {text!r}: expected KEY=VALUE, e.g. -B max_model_len=16384")
            items.append((key.strip(), raw.strip(), True))
    else:
        raise ValueError(f"{yaml_path or 'config'}: option 'backend_args' must be a mapping of argument: value, "
                         f"got {given!r}")
    for key, value, parse in items:
        what = (f"-B {key}={value}" if parse else f"{yaml_path}: backend_args.{key}" if yaml_path
                else f"backend argument {key}")
        a = _declaration(key, backends, what)
        value = _checked(a, value, what, parse)
        if key in out and out[key] != value:
            short = f"the option {key!r}" if yaml_path else a.option
            raise ValueError(f"{what}: {short} already gives {key} = {out[key]!r}; give it once")
        out[key] = value
    return out
