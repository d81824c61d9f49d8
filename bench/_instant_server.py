"""A zero-latency OpenAI-compatible chat endpoint, for measuring clients' own per-request cost.

Every POST to ``/v1/chat/completions`` is answered at once with the same short reply and a usage block
claiming ``max_tokens`` completion tokens. It is a bare ASGI app under uvicorn with several worker
processes (httptools and uvloop when installed), in processes of its own so it shares no GIL with the
clients. The stdlib ``http.server`` used before capped every client near 90 requests/s on 2 cores, so the
benchmark measured the endpoint rather than the clients.

    python bench/_instant_server.py PORT [WORKERS]
"""
from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path

REPLY = "Each step is simple arithmetic. The answer is 42."
JSON = [(b"content-type", b"application/json")]


@lru_cache(maxsize=None)
def completion(model: str | None, max_tokens: int) -> bytes:
    return json.dumps({"id": "cmpl-instant", "object": "chat.completion", "created": 0, "model": model,
                       "choices": [{"index": 0, "finish_reason": "length",
                                    "message": {"role": "assistant", "content": REPLY}}],
                       "usage": {"prompt_tokens": 100, "completion_tokens": max_tokens,
                                 "total_tokens": 100 + max_tokens}}).encode()


MODELS = json.dumps({"object": "list", "data": [{"id": "instant", "object": "model"}]}).encode()


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    if scope["method"] == "GET":
        out = MODELS
    else:
        body, more = b"", True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        req = json.loads(body or b"{}")
        out = completion(req.get("model"), int(req.get("max_tokens") or 16))
    await send({"type": "http.response.start", "status": 200,
                "headers": JSON + [(b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})


def main() -> None:
    import uvicorn

    port = int(sys.argv[1])
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    uvicorn.run("_instant_server:app", host="127.0.0.1", port=port, workers=workers, log_level="warning",
                access_log=False, app_dir=str(Path(__file__).parent))


if __name__ == "__main__":
    main()
