"""The shared record layer every other part reads through: the data error type, the JSONL reader and
the answer letters.

Why a module of its own: datasets (``tasks``), the analyzer, the literature statistics (``meta``) and
the figures all read JSONL and report bad rows the same way; keeping that here lets each of them depend
on this leaf instead of on the datasets layer.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator, Sequence

__all__ = ["DataError", "LETTERS", "file_sha256", "hash_file", "iter_jsonl", "read_jsonl", "split_values"]

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # choice labels: choice i is LETTERS[i]


class DataError(ValueError):
    """Bad or missing data; the message names the file, row and field."""


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a bad line raises DataError naming file and line."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {n}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}: line {n}: expected a JSON object")
            yield n, obj


def split_values(values: Sequence[str] | str | None) -> list[str]:
    """A list-valued command-line flag's values: space-separated (the convention), each also split at
    commas so the older comma form keeps working (``--agg n mean`` == ``--agg n,mean``)."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [p.strip() for v in values for p in str(v).split(",") if p.strip()]


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file; a bad line raises DataError naming file and line."""
    return [obj for _, obj in iter_jsonl(path)]


def hash_file(path: str | Path, h: "hashlib._Hash") -> "hashlib._Hash":
    """Feed a file's bytes to ``h`` in 1 MiB pieces (data files and model weights can be GBs)."""
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, hex: how the manifest and the request keys name data and weight files."""
    return hash_file(path, hashlib.sha256()).hexdigest()
