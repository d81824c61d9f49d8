"""A fault-injecting HTTP proxy for OpenAI-compatible servers (tests and benchmarks).

It forwards POST/GET to an upstream server and, by a deterministic schedule or a seeded random draw,
instead answers 429 / 500 / 503, stalls past the client's timeout, or drops the connection without
a reply. ``down=True`` makes every request fail (a server that stays down). Loopback only.

    python -m cotbench.testing.fault_proxy --upstream http://127.0.0.1:8000 --port 8001 --rate 0.3
"""
from __future__ import annotations

import argparse
import http.client
import random
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("429", "500", "503", "stall", "drop")


@dataclass
class FaultPlan:
    rate: float = 0.0  # probability that a chat request gets a fault
    faults: tuple[str, ...] = FAULTS
    first_n: int = 0  # the first N chat requests always fault (cycling through ``faults``)
    stall_s: float = 5.0
    down: bool = False
    seed: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def draw(self, rng: random.Random) -> str | None:
        with self._lock:
            self.requests += 1
            n = self.requests
            if self.down:
                fault = "503"
            elif n <= self.first_n:
                fault = self.faults[(n - 1) % len(self.faults)]
            elif rng.random() < self.rate:
                fault = rng.choice(self.faults)
            else:
                fault = None
            key = fault or "forwarded"
            self.counts[key] = self.counts.get(key, 0) + 1
            return fault


def make_handler(upstream: str, plan: FaultPlan, rng: random.Random):
    up = urllib.parse.urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _forward(self, body: bytes | None) -> None:
            conn = http.client.HTTPConnection(up.hostname, up.port, timeout=600)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            conn.request(self.command, self.path, body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
            self.send_response(r.status)
            for k, v in r.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            conn.close()

        def _fail(self, fault: str) -> None:
            if fault == "drop":
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if fault == "stall":
                time.sleep(plan.stall_s)
                self.close_connection = True
                return
            body = b'{"error": {"message": "injected fault", "type": "server_error"}}'
            self.send_response(int(fault))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if fault == "429":
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            fault = plan.draw(rng) if "completions" in self.path else None
            if fault:
                self._fail(fault)
            else:
                self._forward(body)

        def do_GET(self):
            self._forward(None)

    return Handler


class FaultProxy:
    """Context manager: ``with FaultProxy(upstream, plan) as url: ...`` (url ends in /v1)."""

    def __init__(self, upstream: str, plan: FaultPlan, port: int = 0):
        self.plan = plan
        self.server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(upstream, plan, random.Random(plan.seed)))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> str:
        self.thread.start()
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--rate", type=float, default=0.2)
    ap.add_argument("--stall", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    proxy = FaultProxy(a.upstream, FaultPlan(rate=a.rate, stall_s=a.stall, seed=a.seed), a.port)
    print(proxy.url, flush=True)
    proxy.server.serve_forever()


if __name__ == "__main__":
    main()
