"""``cotbench published``: import the study's released generations into a run directory and re-score them."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd


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


def _summary(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (m, d, g, s), x in df.groupby(["model", "dataset", "group", "setting"], sort=True):
        acc = float(x["correct"].mean())
        rows.append({"model": m, "dataset": d, "group": g, "setting": s, "n": len(x), "accuracy": acc,
                     "se": float(np.sqrt(acc * (1 - acc) / len(x))),
                     "unparseable_rate": float((x["parse_status"] == "unparseable").mean()),
                     "mean_tokens_out": float(x["tokens_out"].mean()) if x["tokens_out"].notna().any() else np.nan})
    return pd.DataFrame(rows)


def cmd_published(args) -> int:
    from cotbench.analysis.disagreements import disagreements
    from cotbench.analysis.load import frame_from_rows
    from cotbench.analysis.render import render
    from cotbench.published import importer as pub
    from cotbench.records import SCHEMA_VERSION

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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "samples.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({**r, "schema_version": SCHEMA_VERSION}, ensure_ascii=False) + "\n")
    df = frame_from_rows([{k: v for k, v in r.items() if k != "messages"} for r in rows])
    _summary(df).to_csv(out / "summary.csv", index=False)
    (out / "manifest.json").write_text(json.dumps({
        "schema_version": SCHEMA_VERSION, "source": "published", "model": args.model, "configs": args.config,
        "origin": args.file or pub.hub_repo(args.model), "revision": args.revision, "scores": args.scores,
    }, indent=1), encoding="utf-8")
    summ.to_csv(out / "published_summary.csv", index=False)
    items.to_csv(out / "published_items.csv", index=False)
    sys.stdout.write(render({"published_summary": ("Published generations: our scoring vs theirs", summ)}))
    print(f"wrote {len(rows)} samples to {out / 'samples.jsonl'}", file=sys.stderr)
    return 0
