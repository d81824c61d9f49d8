"""In-process GGUF model through llama-cpp-python: the default, CPU-only backend.

Requests are decoded together in one llama.cpp context (continuous batching,
:mod:`cotbench.backends.llamacpp_engine`); each result is reported as soon as its sequence ends. The
chat template comes from the GGUF metadata, as llama-cpp-python renders it when no chat_format is set.
The two patches below keep llama_cpp.server (the stand-in for hosted APIs in tests) on the same
settings, so it gives the same outputs.
"""
from __future__ import annotations

import os
from pathlib import Path

from cotbench.backends.base import BackendError, BackendStats, OnResult
from cotbench.backends.threads import openmp_wait_defaults
from cotbench.records import Request, Response, cache_home, file_sha256


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
    alone, not on what ran before it: the property a cache keyed by request needs. Used by the server
    launcher; the in-process engine starts every sequence from an empty KV stream the same way, so both
    give the same outputs.
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


DEFAULT_BATCH_SIZE = 8  # measured: results/bench/speed.md


def weights_file(model_path: str, weights: str, sha16: str) -> str:
    """The file the engine loads for ``-B weights``: the GGUF itself (``"file"``), or a copy with its weights
    converted to f16/f32, made once and kept in ``$XDG_CACHE_HOME/cotbench/models`` under the source
    file's digest ``sha16``. The copy is written to a temporary name and renamed, so a run that dies while
    converting leaves no half-written model behind."""
    if weights == "file":
        return model_path
    if weights not in ("f16", "f32"):
        raise BackendError(f"weights must be file, f16 or f32, got {weights!r}")
    from cotbench.backends.llamacpp_engine import convert_weights

    cache_dir = cache_home() / "models"
    dest = cache_dir / f"{Path(model_path).stem}.{sha16}.{weights}.gguf"
    if not dest.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        try:
            convert_weights(model_path, weights, str(tmp))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    return str(dest)


class LlamaCppBackend:
    """In-process generation with continuous batching (:mod:`cotbench.backends.llamacpp_engine`).

    ``batch_size`` requests are decoded together; ``batch_size=1`` runs one request at a time. Outputs do
    not depend on it, nor on the other requests in a batch, and they equal what
    ``Llama.create_chat_completion`` (llama_cpp.server's path) gives for the same request (but see the
    engine's docstring for weights with batched kernels, such as ``weights="f16"``).
    ``weights`` other than ``"file"`` computes with a converted copy of the file (:func:`weights_file`);
    the revision, and so every request key, says which.
    """

    name = "llamacpp"

    def __init__(self, model_path: str, model_id: str | None = None, n_ctx: int = 4096,
                 n_threads: int | None = None, seed: int = 0, verbose: bool = False,
                 batch_size: int = DEFAULT_BATCH_SIZE, weights: str = "file"):
        openmp_wait_defaults()  # before the library loads (cotbench.backends.threads)
        if batch_size < 1:
            raise BackendError(f"batch size must be at least 1, got {batch_size}")
        try:
            import llama_cpp  # noqa: F401
        except ImportError as e:  # pragma: no cover - dependency is in the base install
            raise BackendError("llama-cpp-python is not installed: pip install llama-cpp-python") from e
        if not Path(model_path).exists():
            raise BackendError(f"GGUF model file not found: {model_path}")
        from cotbench.backends.llamacpp_engine import BatchedEngine

        self.model_path = str(model_path)
        self.model_id = model_id or Path(model_path).name
        self.sha16 = file_sha256(model_path)[:16]
        self.weights = weights
        self.loaded_path = weights_file(self.model_path, weights, self.sha16)
        self.revision = self.sha16 if weights == "file" else f"{self.sha16}+{weights}"
        self.n_ctx = n_ctx
        self.batch_size = batch_size
        self.seed = seed  # every request carries its own seed; kept for describe()
        self.stats = BackendStats()
        self._engine = BatchedEngine(self.loaded_path, n_ctx=n_ctx, n_threads=n_threads, verbose=verbose)

    def describe(self) -> dict:
        out = {"backend": self.name, "model_path": self.model_path, "model_sha256_16": self.sha16,
               "n_ctx": self.n_ctx, "batch_size": self.batch_size}
        if self.weights != "file":
            out.update(weights=self.weights, loaded_path=self.loaded_path, revision=self.revision)
        return out

    def generate(self, requests: list[Request], on_result: OnResult) -> None:
        def counted(req: Request, resp: Response) -> None:
            self.stats.calls += 1
            on_result(req, resp)

        self._engine.run(requests, counted, self.batch_size)

    def close(self) -> None:
        engine, self._engine = getattr(self, "_engine", None), None
        if engine is not None:
            engine.close()


def from_spec(spec, ctx, *, n_ctx: int, batch_size: int, n_threads: int | None, weights: str) -> LlamaCppBackend:
    """The registry's factory (:mod:`cotbench.backends.registry`)."""
    from cotbench.pipeline.model_registry import key_name, model_path

    return LlamaCppBackend(model_path(spec), model_id=key_name(spec), n_ctx=n_ctx, seed=ctx.seed,
                           batch_size=batch_size, n_threads=n_threads, weights=weights)
