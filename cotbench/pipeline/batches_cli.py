"""``batches status|collect|cancel``: the provider batches a store has on record, without rerunning.

``collect`` commits every ended batch's results to the store (a later ``run`` then finds them cached);
``cancel`` asks the provider to stop open batches (their finished lines stay collectable, the rest is
submitted again by the next ``run --batch-api``). ``run --batch-api`` does all of this by itself; these
commands are for looking in, and for stopping spending.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cotbench.backends.openai_batch import (
    BatchLedger,
    OpenAIBatchBackend,
    request_from_json,
)
from cotbench.records import Response


def store_path(arg: str | None) -> Path:
    """The store named (a file, or a run directory holding ``store.sqlite``), else the default shared store
    where the configuration defines one."""
    from cotbench.pipeline import config

    default = getattr(config, "default_store_path", None)
    if arg is None and default is None:
        raise FileNotFoundError("name the store: the file given to --cache, or a run directory holding store.sqlite")
    p = Path(arg) if arg is not None else Path(default())
    if p.is_dir():
        p = p / "store.sqlite"
    if not p.is_file():
        raise FileNotFoundError(f"no generation store at {p} (give the store file, or a run directory holding "
                                f"store.sqlite)")
    return p


def _backends(path: Path, open_only: bool) -> list[OpenAIBatchBackend]:
    """One backend per endpoint and model on record, each talking to its own provider endpoint."""
    ledger = BatchLedger(path)
    try:
        groups = sorted({(r["base_url"], r["api_key_env"], r["model"]) for r in ledger.rows(open_only=open_only)},
                        key=str)
    finally:
        ledger.close()
    return [OpenAIBatchBackend(model, path, base_url=url or None, api_key_env=key_env)
            for url, key_env, model in groups]


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) if t else "-"


def cmd_status(args: argparse.Namespace) -> int:
    path = store_path(args.store)
    if not args.offline:
        for be in _backends(path, open_only=True):
            try:
                be.recover()
                for row in be._mine():
                    if row["batch_id"]:
                        be.refresh(row)
            finally:
                be.close()
    ledger = BatchLedger(path)
    rows = ledger.rows(open_only=not args.all)
    ledger.close()
    if not rows:
        print("no open batches" if not args.all else "no batches on record")
        return 0
    print(f"{'batch id':<28} {'model':<24} {'status':<11} {'requests':>8} {'done':>6} {'failed':>6} "
          f"{'submitted (UTC)':<16} {'collected':<16} note")
    for r in rows:
        print(f"{str(r['batch_id'] or '(unrecorded)'):<28} {r['model'][:24]:<24} {r['status']:<11} "
              f"{r['n_requests']:>8} {r['n_completed']:>6} {r['n_failed']:>6} {_when(r['submitted_at']):<16} "
              f"{_when(r['collected_at']):<16} {r['note']}")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    path = store_path(args.store)
    stored = 0
    fatal: list[str] = []
    for be in _backends(path, open_only=True):
        def deliver(key: str, req_json: str, resp: Response, be=be) -> None:
            nonlocal stored
            req = request_from_json(req_json)
            if req.key == key:
                be.store.put(req, resp)
                stored += 1

        try:
            be.recover()
            fatal += be.collect(deliver)
            still = be._mine()
        finally:
            be.close()
        if still:
            print(f"{be.model_id}: {len(still)} batch(es) not ended yet", file=sys.stderr)
    print(f"stored {stored} result(s)")
    for f in fatal:
        print(f"error (not retried): {f}", file=sys.stderr)
    return 3 if fatal else 0


def cmd_cancel(args: argparse.Namespace) -> int:
    path = store_path(args.store)
    n = 0
    for be in _backends(path, open_only=True):
        try:
            be.recover()
            for row in be._mine():
                if row["batch_id"] and (not args.ids or row["batch_id"] in args.ids) and row["status"] not in (
                        "completed", "failed", "expired", "cancelled", "cancelling"):
                    b = be._api(f"cancelling {row['batch_id']}", lambda r=row: be.client.batches.cancel(r["batch_id"]))
                    be.ledger.update(row["tag"], status=b.status)
                    print(f"{row['batch_id']}: {b.status}")
                    n += 1
        finally:
            be.close()
    print(f"asked the provider to cancel {n} batch(es); `batches collect` (or the next run) stores what they finished")
    return 0


def register(sub) -> None:
    p = sub.add_parser("batches", help="provider batches on record in a store: status, collect, cancel",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bsub = p.add_subparsers(dest="batches_command", metavar="ACTION", required=True)
    s = bsub.add_parser("status", help="list open batches (refreshed from the provider)")
    s.add_argument("store", nargs="?", help="the store (file, or a run directory holding store.sqlite)")
    s.add_argument("--all", action="store_true", help="also list collected batches")
    s.add_argument("--offline", action="store_true", help="show the ledger as recorded; ask no provider")
    s.set_defaults(func=cmd_status)
    c = bsub.add_parser("collect", help="store the results of every ended batch")
    c.add_argument("store", nargs="?")
    c.set_defaults(func=cmd_collect)
    x = bsub.add_parser("cancel", help="cancel open batches (all, or those named)")
    x.add_argument("store", nargs="?")
    x.add_argument("--id", dest="ids", action="append", help="a batch id to cancel (repeatable; default: every "
                                                            "open batch)")
    x.set_defaults(func=cmd_cancel)
