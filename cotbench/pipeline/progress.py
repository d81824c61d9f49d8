"""Progress display: a rich bar with ETA, calls/s and tokens/s on a terminal; sparse lines otherwise."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, enabled: bool = True, console=None):
        self.enabled = enabled
        self.console = console
        self._bar = None
        self._task = None
        self._t0 = time.perf_counter()
        self._last_line = 0.0
        self._tokens0 = 0
        self._batch_task = None
        self._batch_total = 0
        self._batch_t0: float | None = None
        self._batch_line = 0.0

    def __enter__(self) -> "Progress":
        if self.enabled and sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                     console=self.console, transient=False)
            self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def update(self, phase: str, done: int, total: int, stats) -> None:
        if not self.enabled:
            return
        dt = max(1e-9, time.perf_counter() - self._t0)
        rate = f"{stats.calls_made / dt:.2f} samples/s  {stats.tokens_out / dt:.0f} tok/s"
        desc = f"round {stats.rounds} ({stats.calls_cached} cached)"
        if self._bar is not None:
            if self._task is None or done == 0:
                if self._task is not None:
                    self._bar.remove_task(self._task)
                self._task = self._bar.add_task(desc, total=max(total, 1), rate=rate)
            self._bar.update(self._task, completed=done, total=max(total, 1), rate=rate, description=desc)
        elif done == total or time.perf_counter() - self._last_line > 10:
            self._last_line = time.perf_counter()
            eta = (total - done) * dt / max(stats.calls_made, 1) if stats.calls_made else float("nan")
            print(f"[cotbench] {desc}: {done}/{total} calls, {rate}, eta {eta:.0f}s", file=sys.stderr, flush=True)

    def batches(self, ended: int, total: int, requests_ended: int, requests: int) -> None:
        """Provider batches being waited for: a bar over their requests (whose ETA rich estimates from the
        rate so far), or a line every 30 s with the same figures."""
        if not self.enabled:
            return
        desc = f"batches {ended}/{total} ended"
        if self._bar is not None:
            if self._batch_task is not None and self._batch_total != requests:
                self._bar.remove_task(self._batch_task)  # a new round's batches: a fresh bar and ETA
                self._batch_task = None
            if self._batch_task is None:
                self._batch_task = self._bar.add_task(desc, total=max(requests, 1), rate="")
                self._batch_total = requests
            self._bar.update(self._batch_task, completed=requests_ended, total=max(requests, 1), description=desc)
            return
        now = time.perf_counter()
        if self._batch_t0 is None:
            self._batch_t0 = now
        if now - self._batch_line < 30 and ended < total:
            return
        self._batch_line = now
        dt = now - self._batch_t0
        eta = f"{(requests - requests_ended) * dt / requests_ended:.0f}s" if requests_ended else "unknown"
        print(f"[cotbench] {desc}, {requests_ended}/{requests} requests answered, eta {eta}",
              file=sys.stderr, flush=True)
