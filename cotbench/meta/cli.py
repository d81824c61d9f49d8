"""``cotbench meta {validate,query,import,merge}`` (plus ``fit`` and ``plot`` from ``cli_stats`` when present)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from cotbench.meta import cli_stats, db
from cotbench.meta.schema import ALL_COLUMNS, SCREENING_COLUMNS


def register(subparsers) -> None:
    p = subparsers.add_parser("meta", help="the literature database of CoT-vs-direct comparisons",
                              description="Validate, query, import into and merge the CoT effect database "
                                          "(meta_analysis/cot_effects.csv).")
    sub = p.add_subparsers(dest="meta_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])  # a sub-command is required, as elsewhere

    v = sub.add_parser("validate", help="check an effects or screening CSV against the codebook")
    v.add_argument("file", nargs="?", help="CSV to check (default: the shipped database and screening.csv)")
    v.add_argument("--screening", help="screening CSV to cross-check the effects file against")
    v.add_argument("--strict", action="store_true", help="treat warnings (empty title/venue/year) as errors")
    mode = v.add_mutually_exclusive_group()
    mode.add_argument("--staging", dest="staging", action="store_true", default=None,
                      help="check as a staging file: the v2 columns (direct_shots ... pooled) are optional, with a "
                           "warning (default for every file but the shipped database)")
    mode.add_argument("--database", dest="staging", action="store_false",
                      help="check as the database: the v2 columns are required (default for the shipped database)")
    v.add_argument("--categories", help="dataset -> category map to enforce (default: "
                                        "meta_analysis/dataset_categories.csv)")
    v.set_defaults(func=cmd_validate)

    q = sub.add_parser("query", help="filter and aggregate the database")
    q.add_argument("--file", help="effects CSV (default: the shipped database)")
    for name, hlp in (("category", "category id or study label"), ("dataset", "substring"), ("model", "substring"),
                      ("venue", "substring"), ("year", "publication year"), ("paper", "arXiv id / title substring"),
                      ("origin", "literature or cotbench_run"), ("shots", "zero or few"),
                      ("split", "test, validation, dev, train or unknown")):
        q.add_argument(f"--{name}", nargs="+", help=f"{hlp}; several values are OR-ed")
    q.add_argument("--group-by", choices=sorted(db.GROUP_COLUMNS), help="aggregate per group")
    q.add_argument("--agg", nargs="+", help=f"aggregates, any of {' '.join(db.AGGREGATES)} "
                                            "(default: n mean median when grouping)")
    q.add_argument("--value", default="delta", choices=("delta", "cot_score", "direct_score"))
    q.add_argument("--include-pooled", action="store_true",
                   help="let aggregates count pooled rows (averages of other rows of the same paper; left out by "
                        "default so nothing is counted twice)")
    q.add_argument("--format", default="table", choices=("table", "csv", "json"))
    q.add_argument("--digits", type=int, default=2, help="decimals in table output")
    q.set_defaults(func=cmd_query)

    imp = sub.add_parser("import", help="map another source onto the schema (writes a staging CSV)")
    isub = imp.add_subparsers(dest="import_kind", metavar="KIND")
    imp.set_defaults(func=lambda args: (imp.print_help(), 2)[1])
    s = isub.add_parser("sheet", help="the study authors' meta-analysis sheet (local CSV export or URL)")
    s.add_argument("source", help="path or http(s) address of the sheet (Google-sheet links are exported as CSV)")
    s.add_argument("--out", required=True, help="staging CSV to write")
    s.add_argument("--report", help="also write the drop report here")
    s.add_argument("--venue", default="", help="venue of the rows, e.g. 'ICLR 2024' (the sheet has one tab per venue)")
    s.add_argument("--shots", choices=("zero", "few"), help="setting of every row when the sheet has no shots column")
    s.add_argument("--metric", default="accuracy", help="metric name when the sheet has no Metric column")
    s.add_argument("--scale", default="auto", choices=("auto", "percent", "fraction"))
    s.add_argument("--source-url", help="address to record as source_url (default: the address read or the "
                                        "published sheet)")
    s.add_argument("--categories", help="CSV with Dataset,Category columns for rows with an empty Category")
    s.set_defaults(func=cmd_import_sheet)
    r = isub.add_parser("runs", help="cotbench run directories (summary.csv)")
    r.add_argument("runs", nargs="+", help="run directories")
    r.add_argument("--out", required=True, help="staging CSV to write")
    r.add_argument("--report", help="also write the drop report here")
    r.add_argument("--map", action="append", default=[], metavar="DATASET=CATEGORY",
                   help="category for a dataset the built-in map does not know (repeatable)")
    r.set_defaults(func=cmd_import_runs)

    m = sub.add_parser("merge", help="append a validated staging CSV to the database (renumbers effect ids)")
    m.add_argument("staging", help="staging effects CSV")
    m.add_argument("--into", help="effects CSV to extend (default: the shipped database)")
    m.add_argument("--screening", help="staging screening CSV to append to the screening file")
    m.add_argument("--screening-into", help="screening CSV to extend (default: meta_analysis/screening.csv)")
    m.add_argument("--dry-run", action="store_true", help="report only; write nothing")
    m.add_argument("--categories", help="dataset -> category map to enforce (default: "
                                        "meta_analysis/dataset_categories.csv)")
    m.set_defaults(func=cmd_merge)

    cli_stats.register(sub)


def cmd_validate(args) -> int:
    reports = db.validate(args.file, args.screening, staging=args.staging, categories=args.categories)
    bad = False
    for rep in reports:
        for line in rep.lines():
            print(line, file=sys.stderr)
        if args.strict:
            for w in rep.warnings:
                print(w.format(rep.path) + " (warning, --strict)", file=sys.stderr)
        if rep.ok and not (args.strict and rep.warnings):
            print(f"{rep.path}: {rep.summary}")
            if rep.warnings:
                print(f"  {len(rep.warnings)} warning(s): "
                      + "; ".join(w.format(rep.path) for w in rep.warnings[:5])
                      + (" ..." if len(rep.warnings) > 5 else ""))
        else:
            bad = True
            print(f"{rep.path}: {len(rep.errors)} error(s)" + (f", {len(rep.warnings)} warning(s)" if args.strict else ""),
                  file=sys.stderr)
    return 1 if bad else 0


def cmd_query(args) -> int:
    df = db.load(args.file)
    filters = dict(category=args.category, dataset=args.dataset, model=args.model, venue=args.venue,
                   year=args.year, paper=args.paper, origin=args.origin, shots=args.shots, split=args.split)
    out = db.query(df, **filters, group_by=args.group_by, aggs=args.agg, value=args.value,
                   include_pooled=args.include_pooled)
    if (args.group_by or args.agg) and not args.include_pooled:
        # say what the aggregate left out, as fit and plot do, so a total never silently differs from the rows
        rows = db.query(df, **filters)
        n_pooled = int(rows["pooled"].sum()) if "pooled" in rows else 0
        if n_pooled:
            print(f"{n_pooled} pooled rows left out of the aggregates (--include-pooled keeps them)", file=sys.stderr)
    if args.format == "csv":
        sys.stdout.write(out.to_csv(index=False))
    elif args.format == "json":
        print(json.dumps(json.loads(out.to_json(orient="records")), indent=2))
    else:
        if out.empty:
            print("(no matching rows)")
        else:
            print(out.to_string(index=False, float_format=lambda x: f"{x:.{args.digits}f}", na_rep="-"))
    return 0


def _write_report(rep, path: str | None) -> None:
    text = rep.text()
    print(text, file=sys.stderr)
    if path:
        Path(path).write_text(text + "\n", encoding="utf-8")


def _write_import(rows, rep, args) -> int:
    """What both importers end with: the rows as an effects table, the report, where to check them."""
    db.write_table(args.out, ALL_COLUMNS, rows)
    _write_report(rep, args.report)
    print(f"wrote {len(rows)} rows to {args.out}; check with: cotbench meta validate {args.out}")
    return 0


def cmd_import_sheet(args) -> int:
    from cotbench.meta import importers
    cmap = None
    if args.categories:
        t = db.read_table(args.categories)
        if not {"Dataset", "Category"} <= set(t.header):
            raise ValueError(f"{args.categories}: needs 'Dataset' and 'Category' columns")
        cmap = {r["Dataset"].strip(): r["Category"].strip() for _, r in t.rows}
    rows, rep = importers.import_study_sheet(args.source, venue=args.venue, shots=args.shots, metric=args.metric,
                                             scale=args.scale, source_url=args.source_url, category_map=cmap)
    return _write_import(rows, rep, args)


def cmd_import_runs(args) -> int:
    from cotbench.meta import importers
    over = {}
    for item in args.map:
        if "=" not in item:
            raise ValueError(f"--map expects DATASET=CATEGORY, got {item!r}")
        k, v = item.split("=", 1)
        over[k] = v
    rows, rep = importers.import_runs(args.runs, category_overrides=over)
    return _write_import(rows, rep, args)


def cmd_merge(args) -> int:
    into = Path(args.into) if args.into else db.default_path()
    canonical = db.read_table(into)
    staging = db.read_table(args.staging)
    rows, rep = db.merge_effects(canonical, staging, categories=db.read_category_map(args.categories))
    for s in rep.skipped:
        print(f"skipped {s}", file=sys.stderr)
    print(f"{args.staging}: {rep.added} row(s) to add to {into}, {len(rep.skipped)} skipped as duplicates")
    notes: list[str] = []
    srows = None
    if args.screening:
        sinto = Path(args.screening_into) if args.screening_into else db.default_screening_path()
        srows, notes = db.merge_screening(db.read_table(sinto), db.read_table(args.screening))
        for n in notes:
            print(n, file=sys.stderr)
    if args.dry_run:
        print("dry run: nothing written")
        return 0
    header = list(canonical.header) + [c for c in staging.header if c not in canonical.header]
    db.write_table(into, header, rows)
    if srows is not None:
        db.write_table(sinto, list(db.read_table(sinto).header) or list(SCREENING_COLUMNS), srows)
        print(f"screening: {sinto} now has {len(srows)} rows")
    return 0
