"""``cotbench published``: import the study's released generations into a run directory and re-score them."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("published", help="import the study's released generations and re-score them",
                              description="Import TAUR-Lab/Taur_CoT_Analysis_Project___<org>__<model> rows into a run directory.")
    p.add_argument("--model", required=True, help="model id as released, e.g. meta-llama/Meta-Llama-3.1-8B-Instruct")
    p.add_argument("--config", nargs="+", required=True, help="released config(s), e.g. mmlu gsm8k")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", help="a local copy of ONE config (.jsonl/.json/.csv/.parquet)")
    src.add_argument("--hub", action="store_true", help="download from the Hugging Face hub (needs network)")
    p.add_argument("--revision")
    p.add_argument("--task", help="our task name, when the config name does not map to one")
    p.add_argument("--scores", choices=("ours", "theirs"), default="ours",
                   help="which verdict goes into 'correct' (the other stays in extra.published)")
    p.add_argument("--out", required=True, metavar="RUN_DIR")
    p.set_defaults(func=cmd_published)


def cmd_published(args) -> int:
    from cotbench.analysis.disagreements import disagreements
    from cotbench.analysis.load import frame_from_rows
    from cotbench.analysis.render import render
    from cotbench.pipeline.summary import summarize, summary_csv
    from cotbench.published import importer as pub
    from cotbench.records import (
        SCHEMA_VERSION,
        SampleResult,
        atomic_write,
        samples_jsonl,
    )

    if args.file and len(args.config) != 1:
        raise ValueError("--file holds one config; pass exactly one --config with it")
    rows: list[dict] = []
    for cfg in args.config:
        raw = pub.read_file(args.file) if args.file else pub.load_hub(args.model, cfg, args.revision)
        rows += pub.import_rows(raw, args.model, cfg, args.task, source=args.file or pub.hub_repo(args.model))
    # disagreements are computed on our verdicts, before --scores theirs swaps them in
    ours = frame_from_rows([{k: v for k, v in r.items() if k != "messages"} for r in rows])
    summ, items = disagreements(ours)
    if args.scores == "theirs":
        rows = pub.use_their_scores(rows)
    results = [SampleResult(**r) for r in rows]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # the harness's writers and summary: a published run directory reads like one the harness wrote
    atomic_write(out / "samples.jsonl", samples_jsonl(results))
    atomic_write(out / "summary.csv", summary_csv(summarize(results)))
    atomic_write(out / "manifest.json", json.dumps({
        "schema_version": SCHEMA_VERSION, "source": "published", "model": args.model, "configs": args.config,
        "origin": args.file or pub.hub_repo(args.model), "revision": args.revision, "scores": args.scores,
    }, indent=1))
    atomic_write(out / "published_summary.csv", summ.to_csv(index=False))
    atomic_write(out / "published_items.csv", items.to_csv(index=False))
    sys.stdout.write(render({"published_summary": ("Published generations: our scoring vs theirs", summ)}))
    print(f"wrote {len(rows)} samples to {out / 'samples.jsonl'}", file=sys.stderr)
    return 0
