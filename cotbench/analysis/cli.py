"""``cotbench analyze``, ``cotbench figures`` and ``cotbench published`` sub-commands."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

SECTIONS = ("gains", "extractors", "equals", "significance", "selective", "plan", "published", "heads")


def register(subparsers) -> None:
    a = subparsers.add_parser("analyze", help="CoT gains (per answer extractor too), '=' split, significance, "
                                          "selective CoT, plan/tool tables",
                              description="Analyse finished run directories (samples.jsonl).")
    a.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    a.add_argument("--format", choices=("table", "csv", "json"), default="table")
    a.add_argument("--out", metavar="DIR", help="also write every table as DIR/<name>.csv and the report as DIR/analysis.<fmt>")
    a.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    a.add_argument("--shots", nargs="+", choices=("zs", "fs"), default=["zs", "fs"])
    a.add_argument("--pool-subtasks", action="store_true",
                   help="pool sub-tasks (bbh/…, agieval/…) into one dataset for gains and tests, as the study did")
    a.add_argument("--include-gold-in-equals", action="store_true",
                   help="also search the gold answer text for '=' (what the study's code did)")
    a.add_argument("--include-choices-in-equals", action="store_true", help="also search all option texts for '='")
    a.add_argument("--equals-datasets", nargs="+", default=["mmlu", "mmlu_pro"])
    a.add_argument("--family", default="study",
                   help="correction family: study (commonsense+knowledge+soft_reasoning), all, or comma-separated datasets")
    a.add_argument("--test", choices=("mcnemar", "bootstrap"), default="mcnemar", help="p-value that is corrected")
    a.add_argument("--alpha", type=float, default=0.05)
    a.add_argument("--n-boot", type=int, default=10_000)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--selective-shots", choices=("zs", "fs"), default="zs")
    a.add_argument("--tol", type=float, default=0.0, help="accuracy tolerance when choosing a selective policy")
    a.set_defaults(func=cmd_analyze)

    f = subparsers.add_parser("figures", help="write the study's figures from run directories",
                              description="Deterministic PNG/PDF figures from run directories.")
    f.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    f.add_argument("--out", required=True, metavar="DIR")
    f.add_argument("--formats", nargs="+", choices=("png", "pdf", "svg"), default=["png", "pdf"])
    f.add_argument("--include-gold-in-equals", action="store_true")
    f.add_argument("--pool-subtasks", action=argparse.BooleanOptionalAction, default=True,
                   help="gain figures pool sub-tasks (bbh/…) into one bar per dataset, as the study's Fig. 3 (default: on)")
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=cmd_figures)

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


def _family(arg: str):
    return arg if arg in ("study", "all") else [x.strip() for x in arg.split(",") if x.strip()]


def build_tables(df: pd.DataFrame, args) -> dict[str, tuple[str, pd.DataFrame]]:
    from cotbench.analysis import equals, extractors, gains, plan, published, selective, significance

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise ValueError(f"--sections: unknown section(s) {bad}; choose from {', '.join(SECTIONS)}")
    shots = tuple(args.shots)
    t: dict[str, tuple[str, pd.DataFrame]] = {}
    if "gains" in sections:
        g = gains.gains(df, shots, pool=args.pool_subtasks)
        t["gains"] = ("CoT gain (CoT − direct accuracy) per model × dataset, paired SE and 95% CI", g)
        t["gains_by_dataset"] = ("CoT gain per dataset across models", gains.by_dataset(g))
        t["gains_by_group"] = ("CoT gain per category across models and datasets", gains.by_group(g))
        t["gains_by_group_model"] = ("CoT gain per category × model (mean of dataset gains)", gains.by_group_model(g))
    if "extractors" in sections:
        v = extractors.verdicts(df)
        t["extractor_accuracy"] = (
            "Accuracy and unparseable rate under each answer extractor: strict = only the prompt's answer format, "
            "default = what 'correct' holds, flexible = also guesses; verdicts = stored / re-extracted (older rows, "
            "read again from the response) / default only (every column is the stored 'correct')",
            extractors.accuracy_table(v))
        t["extractor_gains"] = ("CoT gain under each extractor, side by side; gain_spread = largest − smallest gain "
                                "(how much the conclusion depends on parsing)",
                                extractors.gains_table(v, shots, pool=args.pool_subtasks))
    if "equals" in sections:
        e = equals.equals_split(df, tuple(args.equals_datasets), shots, args.include_gold_in_equals,
                                args.include_choices_in_equals)
        how = "question + CoT response" + (" + gold" if args.include_gold_in_equals else "") + (
            " + options" if args.include_choices_in_equals else "")
        t["equals"] = (f"'=' split ({how}); no_answer = CoT unparseable", e)
    if "significance" in sections:
        s = significance.significance(df, shots, _family(args.family), args.test, args.alpha, args.n_boot, args.seed,
                                      pool=args.pool_subtasks)
        sizes = ", ".join(f"{k}: {v}" for k, v in s.attrs.get("family_size", {}).items())
        t["significance"] = (f"Paired tests (bootstrap n={args.n_boot}, seed={args.seed}; exact McNemar); "
                             f"Bonferroni/Holm on {args.test} p over family '{args.family}' (size {sizes})", s)
    if "selective" in sections:
        pol, summ = selective.selective(df, args.selective_shots, seed=args.seed, tol=args.tol)
        t["selective_policies"] = ("Selective-CoT policies on the held-out half (pareto = on the frontier)", pol)
        t["selective_summary"] = ("Selective CoT: policy chosen on the training half, tokens saved vs always-CoT", summ)
    if "plan" in sections:
        pt = plan.plan_table(df)
        t["plan"] = ("Plan / execute / tool conditions (Section 5)", pt)
        t["plan_wide"] = ("Accuracy per condition", plan.plan_wide(pt))
        t["plan_tool_status"] = ("plan_tool outcomes (sandbox status counts)", plan.tool_status_counts(df))
    if "heads" in sections:
        from cotbench.heads.analysis import intervention_effects

        h = intervention_effects(df, shots, args.n_boot, args.seed)
        if len(h):
            t["heads"] = (f"Head interventions vs base model, paired by item (bootstrap 95% CI, n={args.n_boot}): "
                          "d_* = intervened − base accuracy; did = d_cot − d_direct (< 0: CoT hurt more)", h)
    if "published" in sections:
        summ, items = published.disagreements(df)
        if len(summ):
            t["published_summary"] = ("Published generations: our scoring vs theirs", summ)
            t["published_items"] = ("Items where the verdicts differ", items)
    return t


def cmd_analyze(args) -> int:
    from cotbench.analysis.load import load_runs
    from cotbench.analysis.report import render

    df = load_runs(args.run_dirs)
    tables = build_tables(df, args)
    text = render(tables, args.format)
    sys.stdout.write(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name, (_, t) in tables.items():
            t.to_csv(out / f"{name}.csv", index=False)
        (out / f"analysis.{ {'table': 'txt'}.get(args.format, args.format)}").write_text(text, encoding="utf-8")
        print(f"wrote {len(tables)} tables to {out}", file=sys.stderr)
    return 0


def cmd_figures(args) -> int:
    from cotbench.analysis.load import load_runs
    from cotbench.figures.plots import make_all

    df = load_runs(args.run_dirs)
    written, skipped = make_all(df, args.out, tuple(args.formats), args.include_gold_in_equals, args.seed,
                                args.pool_subtasks)
    for p in written:
        print(p)
    for stem, why in skipped.items():
        print(f"skipped {stem}: {why}", file=sys.stderr)
    return 0


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
    from cotbench.analysis import published as pub
    from cotbench.analysis.load import frame_from_rows
    from cotbench.analysis.report import render
    from cotbench.types import SCHEMA_VERSION

    if args.file and len(args.config) != 1:
        raise ValueError("--file holds one config; pass exactly one --config with it")
    rows: list[dict] = []
    for cfg in args.config:
        raw = pub.read_file(args.file) if args.file else pub.load_hub(args.model, cfg, args.revision)
        rows += pub.import_rows(raw, args.model, cfg, args.task, source=args.file or pub.hub_repo(args.model))
    # disagreements are computed on our verdicts, before --scores theirs swaps them in
    ours = frame_from_rows([{k: v for k, v in r.items() if k != "messages"} for r in rows])
    summ, items = pub.disagreements(ours)
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
