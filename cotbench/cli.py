"""Command line: ``python -m cotbench {run,list,report,analyze,figures,published,meta,batches} …``.

Each area registers its own sub-commands through a ``register(subparsers)`` function that adds parsers
and sets ``func`` (a callable taking the parsed args and returning an exit code).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from cotbench.backends.base import EXIT_PENDING, BackendError, BackendPending

AREAS = {  # area module: the commands its register() adds (tests/test_fixed_costs.py checks the two agree)
    "cotbench.pipeline.cli": ("run", "list", "report"),
    "cotbench.analysis.cli": ("analyze",),
    "cotbench.figures.cli": ("figures",),
    "cotbench.published.cli": ("published",),
    "cotbench.meta.cli": ("meta",),  # meta validate|query|import|fit|plot
    "cotbench.pipeline.batches_cli": ("batches",),  # batches status|collect|cancel
    "cotbench.heads.cli": ("heads",),  # heads retrieval|lofit|needles|figures
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; for a known ``command``, only its area is imported. Several areas import pandas and
    numpy at module level (about a second), which ``run`` does not need; the help and the error for an
    unknown command list every area's commands."""
    p = argparse.ArgumentParser(prog="cotbench", description="When does chain-of-thought help an LLM?")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in [m for m, cmds in AREAS.items() if command in cmds] or list(AREAS):
        importlib.import_module(mod).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted; finished samples are saved — rerun the same command to resume", file=sys.stderr)
        return 130
    except BackendPending as e:  # batches submitted, not finished: no summary is written as if complete
        print(f"pending: {e}", file=sys.stderr)
        return EXIT_PENDING
    except BackendError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError, OSError) as e:
        # DataError, bad config, unwritable output: no traceback, the message names the file/row/field
        print(f"error: {e}", file=sys.stderr)
        return 2
