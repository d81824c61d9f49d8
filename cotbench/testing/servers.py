"""Start and stop a real ``llama_cpp.server`` on a free loopback port (tests and benchmarks)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cotbench.backends.threads import openmp_wait_defaults


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def llama_server(model_path: str | Path, alias: str, n_ctx: int = 4096, port: int | None = None,
                 log: Path | None = None, startup_timeout_s: float = 120.0,
                 api_key: str | None = None, n_threads: int | None = None) -> Iterator[str]:
    """Yield the base URL (``http://127.0.0.1:PORT/v1``) of a llama_cpp.server serving ``model_path``.

    With ``api_key`` the server refuses requests without that bearer key (tests that keys are sent, not leaked).
    ``n_threads`` defaults to llama.cpp's choice; 1 is steadier on a machine shared with other work.
    """
    port = port or free_port()
    cmd = [sys.executable, "-m", "cotbench.backends.llamacpp_server", "--model", str(model_path),
           "--model_alias", alias, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
           "--seed", "0"] + (["--api_key", api_key] if api_key else []) + (
               ["--n_threads", str(n_threads)] if n_threads else [])
    probe = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models",
                                   headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    out = open(log, "wb") if log else subprocess.DEVNULL
    # OpenMP threads that spin briefly, then sleep (cotbench.backends.threads); the caller's environment wins
    env = {**openmp_wait_defaults(dict(os.environ)), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with code {proc.returncode} (log: {log})")
            try:
                with urllib.request.urlopen(probe, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"llama_cpp.server did not start within {startup_timeout_s}s")
            time.sleep(0.5)
        yield url + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log:
            out.close()
