"""Provider batch APIs (OpenAI's files + batches routes): the openai backend's requests at the batch
price, finished within the provider's window (24 h), resumable across days and crashes.

Each runner round hands this backend its uncached requests. It

1. *recovers*: a batch recorded as being submitted but without a provider id (the process died between
   submitting and recording) is looked up in the provider's batch list by the tag it carries in its
   metadata; found, it is recorded; not found, it was never created and its requests are free again;
2. *collects* every open batch of this model and endpoint that has ended: each result line is committed
   to the store under its ``custom_id``, which is the request key; a refusal of the item itself
   (context too long, content filter) is that item's outcome, as on the synchronous path; rate limits,
   server errors and the lines of expired or cancelled batches are left unstored, so they are submitted
   again; any other error stops the run after everything else is stored;
3. *submits* the requests that are neither stored nor in an open batch, split by the provider's limits
   on requests and bytes per batch. For each batch a ledger row (tag, request keys, request JSON) is
   committed *before* the upload, and the provider's batch id right after it;
4. waits (polling, with progress over batches) until every request of the round is stored, or, with
   ``wait=False``, raises :class:`BackendPending` as soon as the work is handed over.

Requests carry ``backend="openai"``, so their keys are the synchronous openai backend's: both send the
same request to the same model, so a batch run reuses synchronous results and the other way round.
The ledger lives in the store's SQLite file (tables ``provider_batches`` and ``provider_batch_requests``).
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from cotbench.backends.base import BackendError, BackendPending, BackendStats, OnResult
from cotbench.backends.openai_api import (
    RETRY_STATUS,
    api_key,
    chat_params,
    item_outcome,
)
from cotbench.pipeline.store import Store
from cotbench.records import GenParams, Request, Response

ENDPOINT = "/v1/chat/completions"
OPENAI_MAX_REQUESTS = 50_000  # per batch (OpenAI's documented limit)
OPENAI_MAX_BYTES = 190 * 1024 * 1024  # the input file may hold 200 MB; leave room for the multipart framing
TERMINAL = {"completed", "failed", "expired", "cancelled"}
REQUEUE_CODES = {"batch_expired", "batch_cancelled"}  # lines the provider never ran

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS provider_batches (
    tag TEXT PRIMARY KEY,          -- ours, known before submitting; sent as metadata cotbench_tag
    provider TEXT NOT NULL,
    base_url TEXT NOT NULL,        -- '' for the provider's default endpoint
    api_key_env TEXT,              -- the variable's name, never the key
    model TEXT NOT NULL,
    batch_id TEXT,                 -- NULL until the provider has answered the submission
    status TEXT NOT NULL,          -- 'submitting', then the provider's status
    input_file_id TEXT,
    output_file_id TEXT,
    error_file_id TEXT,
    n_requests INTEGER NOT NULL,
    n_completed INTEGER NOT NULL DEFAULT 0,
    n_failed INTEGER NOT NULL DEFAULT 0,
    submitted_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    collected_at REAL,             -- results committed to the store; NULL while the batch is open
    note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS provider_batch_requests (
    tag TEXT NOT NULL,
    key TEXT NOT NULL,
    request TEXT NOT NULL,         -- the Request as JSON ('' once its result is stored)
    PRIMARY KEY (tag, key)
);
CREATE INDEX IF NOT EXISTS provider_batch_requests_key ON provider_batch_requests (key);
"""


# --- pure helpers ------------------------------------------------------------------------------------------

def batch_line(key: str, model_id: str, req: Request, allow_prefill: bool) -> bytes:
    """One JSONL line of the input file: the synchronous backend's request body, ``custom_id`` = key."""
    params = chat_params(model_id, req, allow_prefill)
    body = {k: v for k, v in params.items() if k != "extra_body" and v is not None}
    body.update(params.get("extra_body") or {})  # the SDK merges extra_body into the JSON body the same way
    return json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body},
                      ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def plan_chunks(lines: list[tuple[str, bytes]], max_requests: int, max_bytes: int) -> list[list[tuple[str, bytes]]]:
    """Split (key, line) pairs, in key order, into batches within both limits. Deterministic and prefix
    stable, so the same pending set always gives the same batches."""
    chunks: list[list[tuple[str, bytes]]] = []
    size = 0
    for key, line in sorted(lines):
        if len(line) > max_bytes:
            raise BackendError(f"request {key[:12]}… is {len(line)} bytes, more than a batch file may hold "
                               f"({max_bytes}); run it without --batch-api")
        if not chunks or len(chunks[-1]) >= max_requests or size + len(line) > max_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append((key, line))
        size += len(line)
    return chunks


@dataclass(frozen=True)
class LineResult:
    key: str
    kind: str  # "ok" | "outcome" | "retry" | "fatal"
    response: Response | None = None
    reason: str = ""


def read_line(raw: dict) -> LineResult:
    """Classify one line of a batch's output or error file (pure)."""
    key = str(raw.get("custom_id", ""))
    resp, err = raw.get("response"), raw.get("error")
    if resp:
        status, body = int(resp.get("status_code") or 0), resp.get("body")
        if status == 200 and isinstance(body, dict) and body.get("choices"):
            choice, usage = body["choices"][0], body.get("usage") or {}
            return LineResult(key, "ok", Response(
                text=(choice.get("message") or {}).get("content") or "", tokens_in=usage.get("prompt_tokens"),
                tokens_out=usage.get("completion_tokens"), finish_reason=choice.get("finish_reason")))
        outcome = item_outcome(status, body)
        if outcome:
            return LineResult(key, "outcome", Response(text="", tokens_out=0, finish_reason=outcome), outcome)
        if status in RETRY_STATUS:
            return LineResult(key, "retry", reason=f"http_{status}")
        return LineResult(key, "fatal", reason=f"HTTP {status}: {json.dumps(body)[:300]}")
    code = str((err or {}).get("code") or "")
    if code in REQUEUE_CODES:
        return LineResult(key, "retry", reason=code)
    return LineResult(key, "fatal", reason=f"{code or 'error'}: {(err or {}).get('message', raw)}"[:300])


def request_from_json(text: str) -> Request:
    d = json.loads(text)
    p = dict(d["params"])
    p["stop"] = tuple(p.get("stop") or ())
    return Request(model=d["model"], model_revision=d["model_revision"], backend=d["backend"],
                   messages=tuple(d["messages"]), params=GenParams(**p), sample_index=d["sample_index"],
                   prefill=d.get("prefill"))


# --- the ledger --------------------------------------------------------------------------------------------

class BatchLedger:
    """Which batches exist, with which requests: a second connection to the store's SQLite file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=60)
            self._db.execute("PRAGMA busy_timeout=60000")
            self._db.executescript(LEDGER_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise OSError(f"cannot open the batch ledger in {self.path}: {e}") from None
        self._db.row_factory = sqlite3.Row

    def _write(self, sql: str, args: Iterable = ()) -> None:
        try:
            self._db.execute(sql, tuple(args))
        except sqlite3.OperationalError as e:
            raise OSError(f"cannot write to the batch ledger in {self.path}: {e}") from None

    def add_intent(self, tag: str, provider: str, base_url: str, api_key_env: str | None, model: str,
                   requests: list[tuple[str, str]]) -> set[str]:
        """Record a batch about to be submitted, with those of its requests that no open batch holds and
        the store lacks, checked under the write lock (another run may share the store); returns their keys."""
        now = time.time()
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                keys = [k for k, _ in requests]
                taken = self.open_keys(keys) | self._stored(keys)
                free = [(k, r) for k, r in requests if k not in taken]
                if free:
                    self._db.execute(
                        "INSERT INTO provider_batches (tag, provider, base_url, api_key_env, model, status, "
                        "n_requests, submitted_at, updated_at) VALUES (?, ?, ?, ?, ?, 'submitting', ?, ?, ?)",
                        (tag, provider, base_url, api_key_env, model, len(free), now, now))
                    self._db.executemany("INSERT INTO provider_batch_requests (tag, key, request) VALUES (?, ?, ?)",
                                         [(tag, k, r) for k, r in free])
        except sqlite3.OperationalError as e:
            raise OSError(f"cannot write to the batch ledger in {self.path}: {e}") from None
        return {k for k, _ in free}

    def _stored(self, keys: list[str]) -> set[str]:
        return {k for (k,) in self._by_keys("SELECT key FROM generations WHERE key IN ({IN})", keys)}

    def update(self, tag: str, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._write(f"UPDATE provider_batches SET {cols} WHERE tag = ?", [*fields.values(), tag])

    def drop(self, tag: str) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM provider_batch_requests WHERE tag = ?", (tag,))
            self._db.execute("DELETE FROM provider_batches WHERE tag = ?", (tag,))

    def rows(self, open_only: bool = False, base_url: str | None = None, model: str | None = None) -> list[dict]:
        q, args = "SELECT * FROM provider_batches WHERE 1=1", []
        if open_only:
            q += " AND collected_at IS NULL"
        if base_url is not None:
            q, args = q + " AND base_url = ?", args + [base_url]
        if model is not None:
            q, args = q + " AND model = ?", args + [model]
        return [dict(r) for r in self._db.execute(q + " ORDER BY submitted_at, tag", args)]

    def requests_of(self, tag: str) -> dict[str, str]:
        return {r["key"]: r["request"] for r in
                self._db.execute("SELECT key, request FROM provider_batch_requests WHERE tag = ?", (tag,))}

    def _by_keys(self, sql: str, keys: Iterable[str]) -> list[tuple]:
        """Rows of ``sql`` (with ``{IN}`` for a list of placeholders) over ``keys``, 500 at a time."""
        keys, rows = list(keys), []
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            rows += self._db.execute(sql.replace("{IN}", ",".join("?" * len(chunk))), chunk).fetchall()
        return rows

    def open_keys(self, keys: Iterable[str]) -> set[str]:
        """The keys among ``keys`` that an open (not yet collected) batch holds."""
        return {k for (k,) in self._by_keys(
            "SELECT r.key FROM provider_batch_requests r JOIN provider_batches b ON b.tag = r.tag "
            "WHERE b.collected_at IS NULL AND r.key IN ({IN})", keys)}

    def attempts(self, keys: Iterable[str]) -> dict[str, int]:
        """How many collected batches held each key (a key still unstored after them is resubmitted)."""
        return dict(self._by_keys(
            "SELECT r.key, COUNT(*) FROM provider_batch_requests r JOIN provider_batches b ON b.tag = r.tag "
            "WHERE b.collected_at IS NOT NULL AND r.key IN ({IN}) GROUP BY r.key", keys))

    def mark_collected(self, tag: str, note: str) -> None:
        """Close a batch; drop the request JSON of results now stored (the store holds it)."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("UPDATE provider_batches SET collected_at = ?, updated_at = ?, note = ? WHERE tag = ?",
                             (time.time(), time.time(), note, tag))
            self._db.execute("UPDATE provider_batch_requests SET request = '' WHERE tag = ? AND key IN "
                             "(SELECT key FROM generations)", (tag,))

    def close(self) -> None:
        self._db.close()


# --- the backend -------------------------------------------------------------------------------------------

@dataclass
class BatchStats(BackendStats):
    batches_submitted: int = 0
    batches_recovered: int = 0  # found in the provider's list after a crash before recording
    batches_collected: int = 0
    requeued: int = 0  # lines submitted again (rate limits, expired or cancelled batches)


BatchProgress = Callable[[int, int, int, int], None]  # (batches ended, batches, requests ended, requests)


class OpenAIBatchBackend:
    """The openai backend's requests through the provider's files + batches routes."""

    name = "openai"  # part of every request key: the same keys as the synchronous backend (see module doc)
    provider = "openai"

    def __init__(self, model_id: str, store_path: str | Path, base_url: str | None = None,
                 api_key_env: str | None = "OPENAI_API_KEY", revision: str = "", allow_prefill: bool = False,
                 wait: bool = True, poll_s: float = 30.0, max_attempts: int = 6,
                 max_requests: int = OPENAI_MAX_REQUESTS, max_bytes: int = OPENAI_MAX_BYTES,
                 timeout_s: float = 120.0, discount: float | None = None):
        key = api_key(api_key_env, base_url)
        import openai

        self.model_id = model_id
        self.revision = revision
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.allow_prefill = allow_prefill
        self.wait = wait
        self.poll_s = poll_s
        self.max_attempts = max_attempts
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.discount = discount
        self.stats = BatchStats()
        self.progress: BatchProgress | None = None  # set by the harness to its progress display
        self.store = Store(store_path)
        self.ledger = BatchLedger(self.store.path)
        # the SDK retries its own few management calls (upload, create, retrieve, list)
        self.client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=5, timeout=timeout_s)

    def describe(self) -> dict:
        return {"backend": "openai-batch", "request_backend": self.name, "provider": self.provider,
                "model": self.model_id, "base_url": self.base_url, "api_key_env": self.api_key_env,
                "wait": self.wait, "poll_s": self.poll_s, "max_requests_per_batch": self.max_requests,
                "max_bytes_per_batch": self.max_bytes, "batch_discount": self.discount}

    # -- provider calls, each turned into a BackendError that says what failed
    def _api(self, what: str, fn: Callable[[], Any]) -> Any:
        import openai

        try:
            return fn()
        except openai.NotFoundError as e:
            raise BackendError(f"{what}: {self.base_url or 'api.openai.com'} answered 404 ({e.message}); does "
                               f"this endpoint offer the Batch API (files + batches)?") from None
        except openai.APIStatusError as e:
            raise BackendError(f"{what}: HTTP {e.status_code}: {e.message}") from None
        except openai.APIConnectionError as e:
            raise BackendError(f"{what}: cannot reach {self.base_url or 'api.openai.com'} ({e}); submitted "
                               f"batches are recorded, rerun to pick them up") from None

    def _mine(self) -> list[dict]:
        return self.ledger.rows(open_only=True, base_url=self.base_url or "", model=self.model_id)

    # -- 1. recover
    def recover(self) -> None:
        """Find the batches of intents recorded without a provider id in the provider's batch list."""
        lost = [r for r in self._mine() if r["batch_id"] is None]
        if not lost:
            return
        tags = {r["tag"]: r for r in lost}
        oldest = min(r["submitted_at"] for r in lost) - 3600  # clocks differ; look an hour further back
        for b in self._api("listing batches", lambda: self.client.batches.list(limit=100)):
            tag = (b.metadata or {}).get("cotbench_tag")
            if tag in tags:
                self._note_status(tags.pop(tag)["tag"], b)
                self.stats.batches_recovered += 1
                if not tags:
                    break
            if (b.created_at or 0) < oldest:
                break
        for tag, row in tags.items():  # never created: its requests are free to submit again
            if row["input_file_id"]:
                try:
                    self.client.files.delete(row["input_file_id"])
                except Exception:  # noqa: BLE001 - an orphaned upload costs nothing; best effort
                    pass
            self.ledger.drop(tag)

    def _note_status(self, tag: str, b: Any) -> None:
        counts = b.request_counts
        self.ledger.update(tag, batch_id=b.id, status=b.status, input_file_id=b.input_file_id,
                           output_file_id=b.output_file_id, error_file_id=b.error_file_id,
                           n_completed=getattr(counts, "completed", 0) or 0,
                           n_failed=getattr(counts, "failed", 0) or 0)

    # -- 2. collect
    def refresh(self, row: dict) -> Any:
        b = self._api(f"checking batch {row['batch_id']}", lambda: self.client.batches.retrieve(row["batch_id"]))
        self._note_status(row["tag"], b)
        return b

    def _download(self, file_id: str | None) -> list[dict]:
        if not file_id:
            return []
        text = self._api(f"downloading {file_id}", lambda: self.client.files.content(file_id)).content.decode("utf-8")
        return [json.loads(ln) for ln in text.splitlines() if ln.strip()]

    def collect(self, deliver: Callable[[str, str, Response], None], rows: list[dict] | None = None) -> list[str]:
        """Refresh the open batches; commit the results of those that ended. Returns fatal line errors."""
        fatal: list[str] = []
        for row in rows if rows is not None else self._mine():
            if row["batch_id"] is None:
                continue
            b = self.refresh(row)
            if b.status not in TERMINAL:
                continue
            reqs = self.ledger.requests_of(row["tag"])
            tally: dict[str, int] = {}
            for raw in self._download(b.output_file_id) + self._download(b.error_file_id):
                res = read_line(raw)
                if res.key not in reqs:
                    continue  # not ours (or a line we did not send): never stored under a foreign key
                tally[res.kind] = tally.get(res.kind, 0) + 1
                if res.kind in ("ok", "outcome"):
                    self.stats.calls += 1
                    deliver(res.key, reqs[res.key], res.response)
                elif res.kind == "retry":
                    self.stats.note_retry(res.reason)
                    self.stats.requeued += 1
                else:
                    fatal.append(f"{res.key[:12]}…: {res.reason}")
            missing = len(reqs) - sum(tally.values())
            errs = "; ".join(getattr(e, "message", str(e)) for e in (getattr(b.errors, "data", None) or [])[:3])
            note = f"{b.status}: " + ", ".join(f"{n} {k}" for k, n in sorted(tally.items())) + (
                f", {missing} without a line" if missing else "") + (f"; provider: {errs}" if errs else "")
            if b.status != "completed":
                print(f"[cotbench] batch {b.id} {b.status}; its {missing + tally.get('retry', 0)} unfinished "
                      f"request(s) will be submitted again{'; ' + errs if errs else ''}", file=sys.stderr)
            self.ledger.mark_collected(row["tag"], note)
            self.stats.batches_collected += 1
        return fatal

    # -- 3. submit
    def submit(self, requests: list[Request]) -> None:
        import openai

        lines = [(r.key, batch_line(r.key, self.model_id, r, self.allow_prefill)) for r in requests]
        by_key = {r.key: r for r in requests}
        for chunk in plan_chunks(lines, self.max_requests, self.max_bytes):
            tag = uuid.uuid4().hex
            free = self.ledger.add_intent(tag, self.provider, self.base_url or "", self.api_key_env, self.model_id,
                                          [(k, json.dumps(asdict(by_key[k]), ensure_ascii=False)) for k, _ in chunk])
            if not free:
                continue  # another run sharing the store has them in hand
            chunk = [(k, ln) for k, ln in chunk if k in free]
            keys = [k for k, _ in chunk]
            try:
                f = self.client.files.create(file=(f"cotbench-{tag}.jsonl", b"".join(ln for _, ln in chunk)),
                                             purpose="batch")
                self.ledger.update(tag, input_file_id=f.id)
                meta = {"cotbench_tag": tag, "cotbench_requests": str(len(keys)),
                        "cotbench_keys": hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]}
                # never retried blindly: a create that timed out may exist, and recovery finds it by its tag
                b = self.client.with_options(max_retries=0).batches.create(
                    input_file_id=f.id, endpoint=ENDPOINT, completion_window="24h", metadata=meta)
            except openai.APIStatusError as e:  # refused: nothing was created
                self.ledger.drop(tag)
                raise BackendError(f"submitting a batch of {len(keys)} request(s) to "
                                   f"{self.base_url or 'api.openai.com'}: HTTP {e.status_code}: {e.message}"
                                   + (" (does this endpoint offer the Batch API?)" if e.status_code == 404 else "")
                                   ) from None
            except openai.APIConnectionError as e:  # unknown whether it was created: the next run looks it up
                raise BackendError(f"submitting a batch: {e}; rerun to look it up and go on") from None
            self._record(tag, b)
            self.stats.batches_submitted += 1

    def _record(self, tag: str, b: Any) -> None:
        """Commit the provider's batch id (the moment after which nothing is ever submitted twice)."""
        self._note_status(tag, b)

    # -- the Backend interface
    def generate(self, requests: list[Request], on_result: OnResult) -> None:
        if not requests:
            return
        remaining = {r.key: r for r in requests}

        def deliver(key: str, req_json: str, resp: Response) -> None:
            if key in remaining:
                on_result(remaining.pop(key), resp)
            elif req_json:  # another round's (or run's) request: straight into the store
                req = request_from_json(req_json)
                if req.key == key:
                    self.store.put(req, resp)

        self.recover()
        while True:
            fatal = self.collect(deliver)
            if fatal:
                raise BackendError(f"{len(fatal)} request(s) of a batch failed in a way not retried (everything "
                                   f"else is stored): " + "; ".join(fatal[:3]))
            for key, resp in self.store.get_many(list(remaining)).items():  # stored meanwhile by another run
                on_result(remaining.pop(key), resp)
            if not remaining:
                return
            held = self.ledger.open_keys(remaining)
            todo = [r for k, r in remaining.items() if k not in held]
            if todo:
                tries = self.ledger.attempts(r.key for r in todo)
                spent = [r for r in todo if tries.get(r.key, 0) >= self.max_attempts]
                if spent:
                    raise BackendError(f"{len(spent)} request(s) were in {self.max_attempts} batches that ended "
                                       f"without a result; see `python -m cotbench batches status "
                                       f"{self.store.path}` (raise --max-retries to try more)")
                self.submit(todo)
            mine = [r for r in self._mine() if set(self.ledger.requests_of(r["tag"])) & remaining.keys()]
            if not self.wait:
                n = sum(r["n_requests"] for r in mine)
                raise BackendPending(
                    f"{len(mine)} batch(es) holding {n} request(s) are with {self.base_url or 'OpenAI'} "
                    f"(ids: {', '.join(str(r['batch_id']) for r in mine[:5])}{' …' if len(mine) > 5 else ''}); "
                    f"everything finished is stored. Run the same command again later to collect and go on, "
                    f"or see `python -m cotbench batches status {self.store.path}`.")
            self._show(mine)
            time.sleep(self.poll_s)

    def _show(self, rows: list[dict]) -> None:
        if self.progress and rows:
            ended = sum(r["status"] in TERMINAL for r in rows)
            done = sum((r["n_completed"] or 0) + (r["n_failed"] or 0) for r in rows)
            self.progress(ended, len(rows), done, sum(r["n_requests"] for r in rows))

    def close(self) -> None:
        self.ledger.close()
        self.store.close()
        self.client.close()


def batch_prices(discount: float | None, price_in: float | None, price_out: float | None
                 ) -> tuple[float | None, float | None]:
    """Synchronous prices times the provider's batch discount (unchanged when no discount is known)."""
    if discount is None:
        return price_in, price_out
    return (None if price_in is None else price_in * discount, None if price_out is None else price_out * discount)


def make_batch_backend(spec: Any, store_path: str | Path, *, timeout: float, max_retries: int, wait: bool,
                       poll_s: float) -> OpenAIBatchBackend:
    """The batch backend for a resolved model spec (``--batch-api``): ``timeout`` and ``max_retries`` are the
    openai backend's arguments (:mod:`cotbench.backends.registry`), ``wait`` and ``poll_s`` the run's."""
    from cotbench.pipeline.model_registry import ANTHROPIC_URL

    if spec.backend != "openai":
        raise ValueError(f"--batch-api needs a hosted API model (the openai backend); {spec.name} runs on "
                         f"{spec.backend}, which batches locally already")
    if spec.base_url == ANTHROPIC_URL:
        raise ValueError(f"--batch-api: {spec.name} is served through Anthropic's OpenAI-compatible endpoint, "
                         f"which has no batch routes; Anthropic's Message Batches API is not supported yet "
                         f"(run without --batch-api)")
    return OpenAIBatchBackend(spec.model_id, store_path, base_url=spec.base_url, api_key_env=spec.api_key_env,
                              revision=spec.revision or "", allow_prefill=spec.prefill, wait=wait,
                              poll_s=poll_s, max_attempts=max(1, max_retries), timeout_s=timeout,
                              discount=getattr(spec, "batch_discount", None))
