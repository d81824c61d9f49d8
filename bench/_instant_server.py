"""A zero-latency OpenAI-compatible chat endpoint, for measuring clients' own per-request cost.

Every POST to ``/v1/chat/completions`` is answered at once with the same short reply and a usage block
claiming ``max_tokens`` completion tokens. Runs in its own process so it does not share the clients' GIL.

    python bench/_instant_server.py PORT
"""
from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPLY = "Each step is simple arithmetic. The answer is 42."


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, payload: dict) -> None:
        out = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self) -> None:
        self._send(200, {"object": "list", "data": [{"id": "instant", "object": "model"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        n = int(body.get("max_tokens") or 16)
        self._send(200, {"id": "cmpl-instant", "object": "chat.completion", "created": 0, "model": body.get("model"),
                         "choices": [{"index": 0, "finish_reason": "length",
                                      "message": {"role": "assistant", "content": REPLY}}],
                         "usage": {"prompt_tokens": 100, "completion_tokens": n, "total_tokens": 100 + n}})


def main() -> None:
    srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    srv.daemon_threads = True
    print("ready", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
