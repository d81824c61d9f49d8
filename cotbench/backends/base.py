"""One small interface for every backend: take a batch of Requests, report each Response as it finishes.

Reporting per request (``on_result``) lets the runner commit every finished generation to the store
before counting it done, whatever the backend's batching or concurrency.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from cotbench.records import Request, Response

OnResult = Callable[[Request, Response], None]


class BackendError(RuntimeError):
    """The backend cannot go on (server down after all retries, missing dependency, bad model file)."""


class BackendPending(Exception):
    """Work was handed to the provider and is not finished yet (batch APIs with ``--no-wait``). Not a
    failure: everything finished is stored, nothing is written as if the run were complete, and the
    same command later picks the work up. The CLI exits with :data:`EXIT_PENDING`."""


EXIT_PENDING = 75  # sysexits.h EX_TEMPFAIL: "try again later"


@dataclass
class BackendStats:
    calls: int = 0
    retries: int = 0
    retry_reasons: dict[str, int] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)  # per-item outcomes, e.g. context_overflow

    def note_refusal(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def note_retry(self, reason: str) -> None:
        self.retries += 1
        self.retry_reasons[reason] = self.retry_reasons.get(reason, 0) + 1


class Backend(Protocol):
    name: str
    model_id: str
    revision: str
    stats: BackendStats

    def generate(self, requests: list[Request], on_result: OnResult) -> None: ...

    def describe(self) -> dict: ...

    def close(self) -> None: ...
