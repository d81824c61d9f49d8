"""``run``, ``list`` and ``report`` sub-commands."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cotbench.backends.registry import BACKENDS, flag_args, takers
from cotbench.pipeline.config import (
    QUICK_DATASETS,
    RunConfig,
    build_config,
    default_store_path,
)
from cotbench.pipeline.settings import SETTINGS
from cotbench.tasks.hub import HubUnavailable

QUICK_LIMIT = 5
FULL_STUDY_HINT = """\
Full study: every dataset x the four settings x the study's models, e.g.
  python -m cotbench run --model llama-3.1-8b-instruct --datasets all --settings zs_direct zs_cot fs_direct fs_cot
  python -m cotbench run --model gpt-4o-mini --datasets all        (key from OPENAI_API_KEY)
See `python -m cotbench list models` / `list datasets`, and `python -m cotbench run --help`."""


def add_run_parser(sub) -> None:
    c = RunConfig()  # the defaults a flag left out takes; each help line states its real one, once
    d, r = c.generation, c.execution

    def default(value) -> str:
        return " ".join(value) if isinstance(value, list) else f"{value:g}" if isinstance(value, float) else str(value)

    p = sub.add_parser("run", help="run models directly and with CoT over datasets",
                       description="Prompt a model directly and with chain-of-thought, zero- and few-shot. With no "
                                   "arguments: a quick suite (embedded model, gsm8k + mmlu, a seeded sample of 5 items each).")
    a = p.add_argument
    a("--config", help="YAML file with the same options as these flags (flags win)")
    a("--model", help="registry name (see `list models`), HF id, .gguf path or openai:NAME (default: "
                      f"{d.model}, the embedded SmolLM2-135M-Instruct)")
    a("--backend", choices=list(BACKENDS),
      help="override the backend implied by the model (transformers: in-process, needs cotbench[heads]); "
           "`list backends` shows each one's arguments")
    a("-B", "--backend-arg", dest="backend_args", action="append", metavar="KEY=VALUE",
      help="a backend argument (repeatable), e.g. -B max_model_len=16384 -B trust_remote_code=true for vllm; "
           "YAML: backend_args: {KEY: VALUE}. `list backends` shows each backend's arguments; the flags below "
           "are short forms of some")
    a("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    a("--datasets", nargs="+", help="dataset names (see `list datasets`), sub-task names, or 'all' "
                                    f"(default: {default(d.datasets)})")
    a("--dataset-file", help="your own JSONL: question, optional choices, answer")
    a("--answer-type", choices=["choice", "number", "boolean", "text"], help="answer type of --dataset-file")
    a("--settings", nargs="+", help=f"settings: {', '.join(SETTINGS)} (default: {default(d.settings)})")
    a("--limit", type=int, help="first N items of each dataset (default: all)")
    a("--sample", type=int, help="a seeded random N items of each dataset, stratified by sub-task and subject "
                                 "(MMLU subject, MMLU-Pro category, MATH type, ...), proportionally allocated; "
                                 "the ids go to the manifest (default: all)")
    a("--sample-seed", type=int, help=f"seed of --sample (default: {d.sample_seed})")
    a("--skip-missing", action="store_true", default=None,
      help="skip datasets whose local files are absent instead of stopping (implied by --datasets all)")
    a("--data-dir", help="local mirror in the hub schema (default: the Hugging Face hub; env COTBENCH_DATA_DIR)")
    a("--out", help="run directory (default: runs/<model>-<run identity>; the same command resumes there)")
    a("--cache", help="generation store (default: $XDG_CACHE_HOME/cotbench/generations.sqlite, i.e. "
                      f"{default_store_path()}), shared by every run")
    a("--seed", type=int, help=f"sampling seed (default: {d.seed})")
    a("--temperature", type=float, help=f"default: {d.temperature} (greedy)")
    a("--top-p", type=float, help=f"default: {d.top_p}")
    a("--samples", type=int, help=f"generations per item (default: {d.samples})")
    a("--max-tokens-direct", type=int, help="override every task's direct-answer token budget")
    a("--max-tokens-cot", type=int, help="override every task's CoT token budget")
    a("--fewshot-k", type=int, help="use only the first k exemplars (default: all)")
    a("--chance-credit", action="store_true", default=None,
      help="also report accuracy with 1/n_choices credit for unparseable multiple-choice answers (the study's rule)")
    for arg in flag_args().values():  # short forms of backend arguments, as every release has had them
        shown = f" (default: {default(arg.default)})" if arg.default is not None else ""
        a(arg.option, type=arg.type, choices=arg.choices or None,
          help=f"{' and '.join(takers(arg.name))} backend: {arg.help}{shown}; same as -B {arg.name}=VALUE")
    a("--extra-body", type=json.loads, help="JSON of extra sampling fields, e.g. "
                                             "'{\"repeat_penalty\": 1.0}' for llama_cpp.server (whose default is 1.1)")
    a("--intervention", help="transformers backend: head edits, e.g. knockout:3.1,5.0 | knockout-top:K:CSV | "
                             "knockout-random:K:SEED[:CSV] | lofit:FILE (join with +); part of the request key")
    a("--judge-model", help="model that grades open-ended answers (BiGGen Bench) (default: the evaluated model)")
    a("--price-in", type=float, help="USD per 1M input tokens, for a cost figure")
    a("--price-out", type=float, help="USD per 1M output tokens")
    a("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")
    a("--batch-api", action="store_true", default=None,
      help="openai backend: send the run through the provider's batch API (about half price, results within "
           "24 h); batches are recorded in the store and a rerun collects them (see `cotbench batches`)")
    a("--no-wait", dest="wait", action="store_false", default=None,
      help="with --batch-api: return once the batches are submitted (exit code 75) instead of waiting")
    a("--batch-poll", type=float,
      help=f"with --batch-api: seconds between status checks while waiting (default: {default(r.batch_poll)})")
    p.set_defaults(func=cmd_run)


def _flags_to_overrides(args: argparse.Namespace) -> dict:
    skip = {"config", "func", "command"}
    return {k: v for k, v in vars(args).items() if k not in skip}


def _expand_all(cfg: RunConfig) -> None:
    g = cfg.generation
    if "all" in g.datasets:
        from cotbench.tasks import DATASETS

        g.datasets = list(DATASETS)
        g.skip_missing = True


def _fallback_data_dir() -> str | None:
    env = os.environ.get("COTBENCH_DATA_DIR")
    if env:
        return env
    guess = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "hf"
    return str(guess) if guess.is_dir() else None


def cmd_run(args: argparse.Namespace) -> int:
    from cotbench.pipeline.console import print_summary
    from cotbench.pipeline.harness import run

    quick = not any(v is not None for k, v in _flags_to_overrides(args).items()) and not args.config
    overrides = _flags_to_overrides(args)
    cfg = build_config(args.config, overrides)
    _expand_all(cfg)
    g, r = cfg.generation, cfg.reporting
    if quick:
        g.sample = QUICK_LIMIT
        g.datasets = list(QUICK_DATASETS)
        print(f"Quick suite: {g.model} on {' '.join(g.datasets)} ({QUICK_LIMIT} items each, a seeded "
              f"stratified sample), "
              f"settings {' '.join(g.settings)}.", file=sys.stderr)
    if r.data_dir is None and os.environ.get("COTBENCH_DATA_DIR"):
        r.data_dir = os.environ["COTBENCH_DATA_DIR"]
    try:
        out = run(cfg)
    except HubUnavailable as e:
        local = _fallback_data_dir()
        if not (quick and local):
            raise
        print(f"{e}\nQuick suite: using the local mirror {local}", file=sys.stderr)
        r.data_dir = local
        out = run(cfg)
    print_summary(out)
    print(f"\nRun directory: {out}")
    if quick:
        print("\n" + FULL_STUDY_HINT)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from cotbench.pipeline.console import print_list

    print_list(args.what, args.format)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from cotbench.pipeline.console import print_summary

    print_summary(Path(args.run_dir))
    return 0


def register(sub) -> None:
    add_run_parser(sub)
    p = sub.add_parser("list", help="list datasets, models, settings or backends (with their arguments)")
    p.add_argument("what", choices=["datasets", "models", "settings", "backends"])
    p.add_argument("--format", choices=["table", "json", "csv"], default="table",
                   help="a terminal table (default), or JSON / CSV for scripts")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("report", help="re-print a finished run's summary")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_report)
