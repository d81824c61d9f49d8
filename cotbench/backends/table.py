"""A zero-latency backend that answers from a function or a table: for tests, benchmarks of the
harness's own overhead, and replaying known outputs. Not a model."""
from __future__ import annotations

from typing import Callable

from cotbench.backends.base import BackendStats, OnResult
from cotbench.records import Request, Response


class TableBackend:
    name = "table"

    def __init__(self, answer: Callable[[Request], str] | dict[str, str], model_id: str = "table",
                 revision: str = "1"):
        self._answer = answer if callable(answer) else (lambda r, t=answer: t[r.key])
        self.model_id = model_id
        self.revision = revision
        self.stats = BackendStats()
        self.seen: list[str] = []  # request keys, in call order

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model_id}

    def generate(self, requests: list[Request], on_result: OnResult) -> None:
        for r in requests:
            self.stats.calls += 1
            self.seen.append(r.key)
            text = self._answer(r)
            on_result(r, Response(text=text, tokens_in=sum(len(m["content"]) for m in r.messages) // 4,
                                  tokens_out=max(1, len(text) // 4), finish_reason="stop", latency_s=0.0))

    def close(self) -> None:
        pass
