"""The generation store: every finished model call, keyed by its request hash, in SQLite (WAL).

Append-only: a key is written once (``INSERT OR IGNORE``), so a resumed run can never duplicate a
sample, and each insert is committed before the runner counts the sample done, so a crash (even
SIGKILL) loses at most the calls in flight. ``synchronous=NORMAL`` in WAL mode is durable against
process crashes; pass ``durable=True`` for ``FULL`` (also against power loss, slower).

One store is shared by every run by default (:func:`cotbench.pipeline.config.default_store_path`), so several
processes may write to it at once: WAL lets readers and one writer proceed together, and a busy timeout
(set before anything else touches the file) makes a writer wait for another's transaction rather than fail.
Per-item refusals (a prompt over the context) are not stored; see :data:`cotbench.pipeline.runner.REFUSALS`.
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from cotbench.records import Request, Response

SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    backend TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


BUSY_TIMEOUT_S = 60.0


def _plain(obj: Any) -> Any:
    """A dataclass as a dict of its fields, nested dataclasses included: the same JSON as ``asdict`` gives
    for our records (tuples, dicts and scalars), without its deep copy, which dominated ``put``."""
    if is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}
    return obj


class Store:
    def __init__(self, path: str | Path, durable: bool = False):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                                       timeout=BUSY_TIMEOUT_S)
            self._db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.executescript(SCHEMA)
        except (sqlite3.DatabaseError, OSError) as e:
            raise OSError(f"cannot open the store {self.path}: {e}") from None

    def get_many(self, keys: list[str]) -> dict[str, Response]:
        found: dict[str, Response] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            q = f"SELECT key, response FROM generations WHERE key IN ({','.join('?' * len(chunk))})"
            for k, resp in self._db.execute(q, chunk):
                found[k] = Response(**json.loads(resp))
        return found

    def put(self, req: Request, resp: Response) -> None:
        """Commit one finished generation (autocommit mode: one transaction per call)."""
        try:
            self._db.execute(
                "INSERT OR IGNORE INTO generations (key, model, backend, request, response, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (req.key, req.model, req.backend, json.dumps(_plain(req), ensure_ascii=False),
                 json.dumps(_plain(resp), ensure_ascii=False), time.time()),
            )
        except sqlite3.OperationalError as e:  # disk full, read-only file system, locked …
            raise OSError(f"cannot write to the store {self.path}: {e}") from None

    def import_from(self, other: str | Path) -> int:
        """Copy the generations of another store file that this one lacks; returns how many were added."""
        before = self.count()
        try:
            self._db.execute("ATTACH DATABASE ? AS other", (Path(other).resolve().as_uri() + "?mode=ro",))
        except sqlite3.DatabaseError as e:
            raise OSError(f"cannot open the store {other}: {e}") from None
        try:
            self._db.execute("INSERT OR IGNORE INTO generations SELECT key, model, backend, request, response, "
                             "created_at FROM other.generations")
        except sqlite3.DatabaseError as e:
            raise OSError(f"cannot copy generations from {other} into {self.path}: {e}") from None
        finally:
            self._db.execute("DETACH DATABASE other")
        return self.count() - before

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]

    def close(self) -> None:
        self._db.close()
