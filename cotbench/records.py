"""The typed records that flow through cotbench, left to right, and the one way to read them from files.

Example -> (render) -> Request -> (backend) -> Response -> (extract, score) -> SampleResult.
Every stage depends only on the ones to its left; the SampleResult row is the contract between
the harness and every analysis (it is what ``samples.jsonl`` holds).

Why one leaf module: datasets (``tasks``), the runner, the analyzer, the literature statistics
(``meta``) and the figures all use these types, read JSONL and report bad rows the same way
(``DataError`` naming file and line); keeping that here lets each of them depend on this leaf instead
of on another layer.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Sequence

# Version of the files a run writes (each samples.jsonl row's "schema_version", manifest.json's
# "schema_version"). Readers refuse a newer version than they know, rather than misreading it; files
# written before versioning carry none and read as version 1.
SCHEMA_VERSION = 1

# Per-item refusals a backend reports as outcomes (empty text, scored wrong). They depend on how the server
# is set up (its context size), which no request key holds, so they are not stored: a rerun asks again,
# which costs nothing billable, and gets an answer once the context is large enough.
REFUSALS = ("context_overflow", "content_filter")

AnswerType = Literal["choice", "number", "math", "label", "text", "judge"]
Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


@dataclass(frozen=True)
class Example:
    """One dataset item, normalised.

    ``gold`` is canonical for its answer type: a letter ("A".."J") for ``choice``, a number string
    for ``number``, a LaTeX/plain answer for ``math``, one of the task's labels for ``label``
    (e.g. "True"/"False"/"Uncertain", "Yes"/"No"), free text for ``text``, a reference answer for
    ``judge``. ``choices`` holds option texts in letter order (None if not multiple choice).
    """

    id: str
    dataset: str
    question: str
    gold: str
    answer_type: AnswerType
    choices: tuple[str, ...] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GenParams:
    """Every generation parameter that can change an output; all of it goes into the request key."""

    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int = 0
    extra_body: str = ""  # JSON of server-specific sampling fields (e.g. llama.cpp's repeat_penalty)


@dataclass(frozen=True)
class Request:
    """A fully rendered model call. ``key`` identifies it in the store (see :func:`request_key`)."""

    model: str
    model_revision: str
    backend: str
    messages: tuple[Message, ...]
    params: GenParams
    sample_index: int = 0
    prefill: str | None = None  # assistant-turn prefix, for backends/models that allow it

    @functools.cached_property
    def key(self) -> str:  # computed once per request: it is looked up several times per unit
        return request_key(self)


def request_key(req: Request) -> str:
    """Hash of everything that determines the output: model+revision, backend, messages, params, seed, sample index."""
    payload = {
        "model": req.model,
        "revision": req.model_revision,
        "backend": req.backend,
        "messages": list(req.messages),
        "params": asdict(req.params),
        "sample_index": req.sample_index,
        "prefill": req.prefill,
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Response:
    """What a backend returned for one request."""

    text: str
    tokens_in: int | None = None
    tokens_out: int | None = None
    finish_reason: str | None = None  # "stop" | "length" | ...
    latency_s: float | None = None
    retries: int = 0


@dataclass(frozen=True)
class Extraction:
    """Result of one extractor over one response. ``answer`` is None when unparseable."""

    answer: str | None
    method: str  # which rule fired, e.g. "the_answer_is", "boxed", "last_number", "none"

    @property
    def parsed(self) -> bool:
        return self.answer is not None


@dataclass
class SampleResult:
    """One row of samples.jsonl: model x dataset x setting x example (x sample index)."""

    model: str
    dataset: str
    group: str
    setting: str
    example_id: str
    sample_index: int
    key: str
    messages: list[Message]
    response: str
    extracted: str | None
    extract_method: str
    parse_status: Literal["ok", "unparseable"]
    gold: str
    correct: bool
    tokens_in: int | None
    tokens_out: int | None
    latency_s: float | None
    finish_reason: str | None
    question: str = ""
    choices: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. plan text, tool outcome
    # every applicable extractor's reading: name -> {answer, method, correct, role}; `correct` above is the
    # "default" one. Empty when the answer did not come from text (tool, judge) and in rows written before it.
    extractions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        row = {f.name: getattr(self, f.name) for f in fields(self)}  # shallow: no nested dataclasses
        row["schema_version"] = SCHEMA_VERSION
        return row



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


def read_json(path: str | Path) -> Any:
    """Read a JSON file; invalid JSON raises DataError naming file and line (a missing file stays
    FileNotFoundError)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno} ({e.msg})") from None


def read_rows_any(path: str | Path) -> list[dict[str, Any]]:
    """Rows from JSONL (one object a line) or a JSON array of objects, by file suffix."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        return read_jsonl(path)
    data = read_json(path)
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: expected a JSON array of objects")
    return data


def hash_file(path: str | Path, h: "hashlib._Hash") -> "hashlib._Hash":
    """Feed a file's bytes to ``h`` in 1 MiB pieces (data files and model weights can be GBs)."""
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, hex: how the manifest and the request keys name data and weight files."""
    return hash_file(path, hashlib.sha256()).hexdigest()


def cache_home() -> Path:
    """cotbench's cache directory, for the generation store and converted models:
    ``$XDG_CACHE_HOME/cotbench`` (default ``~/.cache/cotbench``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "cotbench"


def check_schema(obj: dict[str, Any], where: str) -> None:
    """Accept files of this version or older (no field: written before versioning, version 1)."""
    v = obj.get("schema_version", 1)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise DataError(f"{where}: field 'schema_version' must be a positive integer, got {v!r}")
    if v > SCHEMA_VERSION:
        raise DataError(f"{where}: written with schema version {v}; this cotbench reads up to "
                        f"{SCHEMA_VERSION} (upgrade cotbench to read it)")


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync, then rename: a crash never leaves a
    half-written file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(f"cannot write {path}: {e.strerror or e}") from None


def samples_jsonl(rows: Iterable["SampleResult"]) -> str:
    """samples.jsonl text: one SampleResult per line (the file every analysis reads)."""
    return "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in rows)
