"""The generation store: every finished model call, keyed by its request hash, in SQLite (WAL).

Append-only: a key is written once (``INSERT OR IGNORE``), so a resumed run can never duplicate a
sample, and each insert is committed before the runner counts the sample done, so a crash (even
SIGKILL) loses at most the calls in flight. ``synchronous=NORMAL`` in WAL mode is durable against
process crashes; pass ``durable=True`` for ``FULL`` (also against power loss, slower).
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from cotbench.types import Request, Response

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
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.executescript(SCHEMA)
        except (sqlite3.DatabaseError, OSError) as e:
            raise OSError(f"cannot open the store {self.path}: {e}") from None
        self.writes = 0

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
        self.writes += 1

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]

    def close(self) -> None:
        self._db.close()
