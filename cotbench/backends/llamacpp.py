"""In-process GGUF model through llama-cpp-python: the default, CPU-only backend.

The chat template comes from the GGUF metadata (llama-cpp-python's default when no chat_format is set).
Requests run one at a time (llama.cpp on a CPU gains little from batching); each result is reported
as soon as it is produced.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from cotbench.backends.base import BackendError, BackendStats, OnResult
from cotbench.types import Request, Response


def disable_extra_buffer_types() -> None:
    """Load weights into plain CPU buffers, not llama.cpp's "extra" (AMX / repacked) buffer types.

    On CPUs with AMX (Sapphire Rapids and later) recent llama.cpp builds repack weights into an AMX
    buffer and crash with SIGSEGV in the first decode (ggml-org/llama.cpp#20824; seen here with
    llama-cpp-python 0.3.36 and SmolLM2's Q4_1 GGUF). llama-cpp-python does not expose the model
    parameter ``use_extra_bufts``, so we default it to False where its defaults are built. Outputs are
    the same; only the matmul kernels differ. Set COTBENCH_LLAMA_EXTRA_BUFTS=1 to keep them.
    """
    if os.environ.get("COTBENCH_LLAMA_EXTRA_BUFTS") == "1":
        return
    import llama_cpp.llama as llama_mod

    lib = llama_mod.llama_cpp
    if getattr(lib.llama_model_default_params, "_cotbench_patched", False):
        return
    original = lib.llama_model_default_params

    def default_params():
        params = original()
        if hasattr(params, "use_extra_bufts"):
            params.use_extra_bufts = False
        return params

    default_params._cotbench_patched = True
    lib.llama_model_default_params = default_params


def fresh_context_per_call() -> None:
    """Evaluate every request from an empty KV cache.

    llama-cpp-python reuses the longest cached prefix of the previous prompt; a prompt that repeats the
    previous one is then evaluated in different batch sizes, and near-tied greedy choices can flip
    (seen for 2 of 12 GSM8K prompts). Starting each call fresh makes an output depend on its request
    alone, not on what ran before it: the property a cache keyed by request needs. Used in-process and
    by the server launcher, so both give the same outputs.
    """
    from llama_cpp import Llama

    if getattr(Llama.create_chat_completion, "_cotbench_fresh", False):
        return
    original = Llama.create_chat_completion

    def create_chat_completion(self, *args, **kwargs):
        self.reset()
        return original(self, *args, **kwargs)

    create_chat_completion._cotbench_fresh = True
    Llama.create_chat_completion = create_chat_completion


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


class LlamaCppBackend:
    name = "llamacpp"

    def __init__(self, model_path: str, model_id: str | None = None, n_ctx: int = 4096,
                 n_threads: int | None = None, seed: int = 0, verbose: bool = False):
        # llama.cpp's OpenMP threads spin while waiting by default; on a small shared machine that made
        # single calls 10-50x slower (bench/README.md). Passive waiting is set before the library loads.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            from llama_cpp import Llama
        except ImportError as e:  # pragma: no cover - dependency is in the base install
            raise BackendError("llama-cpp-python is not installed: pip install llama-cpp-python") from e
        disable_extra_buffer_types()
        fresh_context_per_call()
        if not Path(model_path).exists():
            raise BackendError(f"GGUF model file not found: {model_path}")
        self.model_path = str(model_path)
        self.model_id = model_id or Path(model_path).name
        self.revision = file_sha256(model_path)[:16]
        self.n_ctx = n_ctx
        self.stats = BackendStats()
        self._llm = Llama(model_path=self.model_path, n_ctx=n_ctx, seed=seed, verbose=verbose,
                          n_threads=n_threads or max(1, (os.cpu_count() or 1)), logits_all=False)

    def describe(self) -> dict:
        return {"backend": self.name, "model_path": self.model_path, "model_sha256_16": self.revision,
                "n_ctx": self.n_ctx}

    def complete(self, req: Request) -> Response:
        t0 = time.perf_counter()
        try:
            out = self._create(req)
        except ValueError as e:  # prompt longer than the context window: a recorded outcome, not a crash
            if "context" not in str(e).lower() and "exceed" not in str(e).lower():
                raise
            self.stats.calls += 1
            self.stats.note_refusal("context_overflow")
            return Response(text="", tokens_in=None, tokens_out=0, finish_reason="context_overflow",
                            latency_s=time.perf_counter() - t0)
        self.stats.calls += 1
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return Response(
            text=choice["message"].get("content") or "",
            tokens_in=usage.get("prompt_tokens"),
            tokens_out=usage.get("completion_tokens"),
            finish_reason=choice.get("finish_reason"),
            latency_s=time.perf_counter() - t0,
        )

    def _create(self, req: Request) -> dict:
        p = req.params
        return self._llm.create_chat_completion(
            messages=[dict(m) for m in req.messages],
            max_tokens=p.max_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            stop=list(p.stop) or None,
            seed=p.seed + req.sample_index,
        )

    def generate(self, requests: list[Request], on_result: OnResult) -> None:
        for req in requests:
            on_result(req, self.complete(req))

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            llm.close()
