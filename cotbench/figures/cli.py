"""``cotbench figures``: the study's figures from run directories (the literature figures are
``cotbench meta plot``)."""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
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


def cmd_figures(args) -> int:
    from cotbench.analysis.load import load_runs
    from cotbench.figures.study import make_all

    df = load_runs(args.run_dirs)
    written, skipped = make_all(df, args.out, tuple(args.formats), args.include_gold_in_equals, args.seed,
                                args.pool_subtasks)
    for p in written:
        print(p)
    for stem, why in skipped.items():
        print(f"skipped {stem}: {why}", file=sys.stderr)
    return 0
