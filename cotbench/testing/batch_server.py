"""A local stand-in for OpenAI's Batch API (tests): the files and batches routes on loopback, each
batch line answered by a real upstream chat-completions server (``llama_cpp.server``).

Switches, settable while it runs: ``delay_s`` (a batch stays ``in_progress`` that long before it
runs), ``hold`` (batches wait until :meth:`BatchServer.release`), ``expire_next`` (the next N batches
expire after answering ``expire_after`` lines; the rest get ``batch_expired`` error lines, as OpenAI
writes them) and ``fail_line`` (a function of the line's ``custom_id`` and body returning an HTTP
status and error body to answer instead of the model). Batches are created in order, listed newest
first with cursor pagination, and can be cancelled.

    python -m cotbench.testing.batch_server --upstream http://127.0.0.1:8000 --port 8002 --delay 5
"""
from __future__ import annotations

import argparse
import email.parser
import email.policy
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

FailFn = Callable[[str, dict], "tuple[int, dict] | None"]


@dataclass
class Switches:
    delay_s: float = 0.0
    hold: bool = False
    expire_next: int = 0
    expire_after: int = 0
    fail_line: FailFn | None = None


@dataclass
class _Batch:
    obj: dict[str, Any]
    cancel: threading.Event = field(default_factory=threading.Event)


class BatchServer:
    def __init__(self, upstream: str, port: int = 0, switches: Switches | None = None):
        self.upstream = upstream.rstrip("/")
        self.switches = switches or Switches()
        self.files: dict[str, tuple[dict, bytes]] = {}
        self.batches: dict[str, _Batch] = {}
        self.order: list[str] = []  # batch ids in creation order
        self.lines_answered = 0
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> "BatchServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def release(self) -> None:
        self.switches.hold = False
        self._released.set()

    def wait_idle(self, timeout_s: float = 300) -> None:
        """Block until every batch has ended (tests)."""
        end = time.time() + timeout_s
        while any(b.obj["status"] not in ("completed", "failed", "expired", "cancelled") for b in self.batches.values()):
            if time.time() > end:
                raise TimeoutError("batches still running")
            time.sleep(0.05)

    # --- state
    def _add_file(self, data: bytes, purpose: str, filename: str) -> dict:
        fid = f"file-{uuid.uuid4().hex[:24]}"
        meta = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed"}
        with self._lock:
            self.files[fid] = (meta, data)
        return meta

    def _create_batch(self, req: dict) -> tuple[int, dict]:
        if req.get("input_file_id") not in self.files:
            return 404, {"error": {"message": "no such file", "type": "invalid_request_error", "code": None}}
        bid = f"batch_{uuid.uuid4().hex[:24]}"
        now = int(time.time())
        obj = {"id": bid, "object": "batch", "endpoint": req.get("endpoint"), "errors": None,
               "input_file_id": req["input_file_id"], "completion_window": req.get("completion_window", "24h"),
               "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": now,
               "in_progress_at": None, "expires_at": now + 86400, "finalizing_at": None, "completed_at": None,
               "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
               "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": req.get("metadata")}
        with self._lock:
            expire = self.switches.expire_next > 0
            if expire:
                self.switches.expire_next -= 1
            batch = self.batches[bid] = _Batch(obj)
            self.order.append(bid)
        threading.Thread(target=self._work, args=(batch, expire), daemon=True).start()
        return 200, obj

    def _chat(self, body: dict) -> tuple[int, dict]:
        req = urllib.request.Request(self.upstream + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, {"error": {"message": raw.decode(errors="replace")}}

    def _work(self, batch: _Batch, expire: bool) -> None:
        obj = batch.obj
        lines = [json.loads(ln) for ln in self.files[obj["input_file_id"]][1].decode().splitlines() if ln.strip()]
        obj["request_counts"]["total"] = len(lines)
        obj["status"], obj["in_progress_at"] = "in_progress", int(time.time())
        t_end = time.time() + self.switches.delay_s
        while (time.time() < t_end or self.switches.hold) and not batch.cancel.is_set():
            time.sleep(0.02)
        out, err = [], []
        for i, line in enumerate(lines):
            cid = line["custom_id"]
            stop = "batch_cancelled" if batch.cancel.is_set() else (
                "batch_expired" if expire and i >= self.switches.expire_after else None)
            if stop:
                msg = "cancelled before it ran" if stop == "batch_cancelled" else "not run within the window"
                err.append({"id": f"batch_req_{uuid.uuid4().hex[:12]}", "custom_id": cid, "response": None,
                            "error": {"code": stop, "message": msg}})
                continue
            failed = self.switches.fail_line(cid, line["body"]) if self.switches.fail_line else None
            status, body = failed if failed else self._chat(line["body"])
            self.lines_answered += 1
            rec = {"id": f"batch_req_{uuid.uuid4().hex[:12]}", "custom_id": cid,
                   "response": {"status_code": status, "request_id": uuid.uuid4().hex, "body": body}, "error": None}
            (out if status == 200 else err).append(rec)
            obj["request_counts"]["completed" if status == 200 else "failed"] += 1
        obj["request_counts"]["failed"] = len(err)
        obj["status"] = "finalizing"
        dump = lambda recs: "".join(json.dumps(r) + "\n" for r in recs).encode()  # noqa: E731
        if out:
            obj["output_file_id"] = self._add_file(dump(out), "batch_output", "output.jsonl")["id"]
        if err:
            obj["error_file_id"] = self._add_file(dump(err), "batch_output", "errors.jsonl")["id"]
        final = "cancelled" if batch.cancel.is_set() else ("expired" if expire else "completed")
        obj[f"{final}_at"] = int(time.time())
        obj["status"] = final

    def _list(self, query: dict) -> dict:
        limit = int(query.get("limit", ["20"])[0])
        ids = list(reversed(self.order))  # newest first
        if "after" in query:
            ids = ids[ids.index(query["after"][0]) + 1:] if query["after"][0] in ids else []
        page = [self.batches[i].obj for i in ids[:limit]]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": len(ids) > limit}

    # --- HTTP
    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def _send(self, status: int, obj: Any, raw: bytes | None = None) -> None:
                data = raw if raw is not None else json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _missing(self) -> None:
                self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

            def do_GET(self):
                u = urllib.parse.urlparse(self.path)
                parts = u.path.strip("/").split("/")[1:]  # drop "v1"
                if parts == ["batches"]:
                    return self._send(200, server._list(urllib.parse.parse_qs(u.query)))
                if len(parts) == 2 and parts[0] == "batches" and parts[1] in server.batches:
                    return self._send(200, server.batches[parts[1]].obj)
                if len(parts) >= 2 and parts[0] == "files" and parts[1] in server.files:
                    meta, data = server.files[parts[1]]
                    return self._send(200, None, data) if parts[2:] == ["content"] else self._send(200, meta)
                self._missing()

            def do_DELETE(self):
                parts = urllib.parse.urlparse(self.path).path.strip("/").split("/")[1:]
                if len(parts) == 2 and parts[0] == "files" and server.files.pop(parts[1], None):
                    return self._send(200, {"id": parts[1], "object": "file", "deleted": True})
                self._missing()

            def do_POST(self):
                parts = urllib.parse.urlparse(self.path).path.strip("/").split("/")[1:]
                body = self._body()
                if parts == ["files"]:
                    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                        b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
                    fields = {p.get_param("name", header="content-disposition"): p for p in msg.iter_parts()}
                    f = fields.get("file")
                    if f is None:
                        return self._send(400, {"error": {"message": "missing file"}})
                    purpose = fields["purpose"].get_content().strip() if "purpose" in fields else ""
                    return self._send(200, server._add_file(f.get_payload(decode=True), purpose,
                                                            f.get_filename() or "upload.jsonl"))
                if parts == ["batches"]:
                    return self._send(*server._create_batch(json.loads(body or b"{}")))
                if len(parts) == 3 and parts[0] == "batches" and parts[2] == "cancel" and parts[1] in server.batches:
                    b = server.batches[parts[1]]
                    if b.obj["status"] in ("validating", "in_progress"):
                        b.cancel.set()
                        b.obj["status"], b.obj["cancelling_at"] = "cancelling", int(time.time())
                    return self._send(200, b.obj)
                self._missing()

        return Handler


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="chat-completions server, e.g. http://127.0.0.1:8000/v1")
    ap.add_argument("--port", type=int, default=8002)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds each batch waits before it runs")
    a = ap.parse_args(argv)
    with BatchServer(a.upstream, a.port, Switches(delay_s=a.delay)) as srv:
        print(f"batch API on {srv.url} (upstream {a.upstream})", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
