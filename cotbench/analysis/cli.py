"""``cotbench analyze``: the analyses of finished run directories as tables (figures: ``figures/cli.py``)."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from cotbench.records import split_values

SECTIONS = ("gains", "extractors", "equals", "significance", "selective", "plan", "published", "heads")


def register(subparsers) -> None:
    a = subparsers.add_parser("analyze", help="CoT gains (per answer extractor too), '=' split, significance, "
                                          "selective CoT, plan/tool tables",
                              description="Analyse finished run directories (samples.jsonl).")
    a.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    a.add_argument("--format", choices=("table", "csv", "json"), default="table")
    a.add_argument("--out", metavar="DIR", help="also write every table as DIR/<name>.csv and the report as DIR/analysis.<fmt>")
    a.add_argument("--sections", nargs="+", default=list(SECTIONS), metavar="SECTION",
                   help=f"subset of {' '.join(SECTIONS)} (default: all)")
    a.add_argument("--shots", nargs="+", choices=("zs", "fs"), default=["zs", "fs"])
    a.add_argument("--pool-subtasks", action="store_true",
                   help="pool sub-tasks (bbh/…, agieval/…) into one dataset for gains and tests, as the study did")
    a.add_argument("--include-gold-in-equals", action="store_true",
                   help="also search the gold answer text for '=' (what the study's code did)")
    a.add_argument("--include-choices-in-equals", action="store_true", help="also search all option texts for '='")
    a.add_argument("--equals-datasets", nargs="+", default=["mmlu", "mmlu_pro"])
    a.add_argument("--family", nargs="+", default=["study"],
                   help="correction family: study (commonsense+knowledge+soft_reasoning), all, or datasets")
    a.add_argument("--test", choices=("mcnemar", "bootstrap"), default="mcnemar", help="p-value that is corrected")
    a.add_argument("--alpha", type=float, default=0.05)
    a.add_argument("--n-boot", type=int, default=10_000)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--selective-shots", choices=("zs", "fs"), default="zs")
    a.add_argument("--tol", type=float, default=0.0, help="accuracy tolerance when choosing a selective policy")
    a.set_defaults(func=cmd_analyze)


def _family(values) -> str | list[str]:
    names = split_values(values)
    return names[0] if names in (["study"], ["all"]) else names


def build_tables(df: pd.DataFrame, args) -> dict[str, tuple[str, pd.DataFrame]]:
    from cotbench.analysis import (
        disagreements,
        equals,
        extractors,
        gains,
        selective,
        significance,
    )
    from cotbench.analysis import plan_conditions as plan

    sections = split_values(args.sections)
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
        family = " ".join(split_values(args.family))
        s = significance.significance(df, shots, _family(args.family), args.test, args.alpha, args.n_boot, args.seed,
                                      pool=args.pool_subtasks)
        sizes = ", ".join(f"{k}: {v}" for k, v in s.attrs.get("family_size", {}).items())
        t["significance"] = (f"Paired tests (bootstrap n={args.n_boot}, seed={args.seed}; exact McNemar); "
                             f"Bonferroni/Holm on {args.test} p over family '{family}' (size {sizes})", s)
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
        from cotbench.analysis.heads import intervention_effects

        h = intervention_effects(df, shots, args.n_boot, args.seed)
        if len(h):
            t["heads"] = (f"Head interventions vs base model, paired by item (bootstrap 95% CI, n={args.n_boot}): "
                          "d_* = intervened − base accuracy; did = d_cot − d_direct (< 0: CoT hurt more)", h)
    if "published" in sections:
        summ, items = disagreements.disagreements(df)
        if len(summ):
            t["published_summary"] = ("Published generations: our scoring vs theirs", summ)
            t["published_items"] = ("Items where the verdicts differ", items)
    return t


def cmd_analyze(args) -> int:
    from cotbench.analysis.load import load_runs
    from cotbench.analysis.render import render

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
