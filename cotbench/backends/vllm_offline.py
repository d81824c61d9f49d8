"""Offline batch generation with ``vllm.LLM`` (optional extra ``[vllm]``; needs a GPU).

Batches go to ``LLM.chat`` in chunks of ``chunk_size``, so vLLM's continuous batching sees many prompts
at once and the store commits progress as chunks finish. ``tensor_parallel_size`` x
``pipeline_parallel_size`` GPUs make one replica; ``data_parallel_size`` runs that many replicas, each in
its own process on its own GPUs, started once and kept for the backend's lifetime (the runner calls
``generate`` once per round). Multi-node: ``distributed_executor_backend="ray"`` over a Ray cluster.

What a real engine can do to a batch, and what we do about it:

* a prompt at or over ``max_model_len`` makes the whole ``LLM.chat`` call raise; the chunk is split until
  the over-long prompts stand alone, and each is recorded as ``finish_reason="context_overflow"`` (as
  the llama.cpp backend does), the rest are generated;
* outputs finished with ``"abort"`` or ``"error"`` are not answers: they are retried, and if they keep
  failing the run stops with a clear error (nothing is stored for them, so a rerun retries them);
* a data-parallel worker that dies without a word (OOM killer, a crash in a CUDA kernel) stops the run
  with its exit code instead of leaving the parent waiting.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import multiprocessing as mp
import os
import queue
import re
import time
import weakref
from pathlib import Path
from typing import Any, Callable

from cotbench.backends.base import BackendError, BackendStats, OnResult
from cotbench.records import Request, Response

INSTALL_HINT = ("vLLM is not installed (it needs a CUDA GPU): pip install 'cotbench[vllm]', or use "
                "--backend openai against a `vllm serve` endpoint, or the embedded llamacpp backend")
# The range of vLLM releases this backend is written for (pyproject's ``vllm`` extra says the same):
# 0.6.3 brought ``continue_final_message`` to ``LLM.chat``; 0.33.0 is the release the contract test
# (tests/test_vllm_contract.py) ran against.
SUPPORTED_VLLM = ">=0.6.3,<0.34"
# The engine's context when the caller gives none: the study's prompts plus their largest token budget
# (1,536) fit well within it, and a model's full context (131,072 for Llama 3.1) needs a KV cache that
# keeps the engine from starting on smaller GPUs. Over-long prompts become recorded outcomes.
DEFAULT_MAX_MODEL_LEN = 8192
MAX_MODEL_LEN_ENV = "COTBENCH_VLLM_MAX_MODEL_LEN"
RETRY_FINISH = ("abort", "error")  # vLLM's finish reasons that carry no answer
MAX_RETRIES = 2
WORKER_POLL_S = 1.0
# SamplingParams fields that cotbench sets itself, or that would change what one output means
OWNED_FIELDS = {"max_tokens", "temperature", "top_p", "stop", "seed"}
REFUSED_FIELDS = {"n", "best_of", "output_kind", "detokenize", "logprobs", "prompt_logprobs"}
FIELD_HINTS = {"repeat_penalty": "repetition_penalty", "max_completion_tokens": "max_tokens",
               "stop_sequences": "stop"}
_OVERFLOW = re.compile(r"maximum (model|context) length", re.I)


def require_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise BackendError(INSTALL_HINT) from e
    return vllm


# -- pure mappings ----------------------------------------------------------------------------------------

def sampling_kwargs(req: Request) -> dict[str, Any]:
    """Map our GenParams onto ``vllm.SamplingParams`` keyword arguments (pure; tested without vLLM).

    ``extra_body`` (JSON, part of the request key) is passed on field by field, so it changes the
    output exactly when it changes the key; fields cotbench sets itself or that change the shape of
    an output are refused (see :func:`extra_sampling_fields`)."""
    p = req.params
    return {"max_tokens": p.max_tokens, "temperature": p.temperature, "top_p": p.top_p,
            "stop": list(p.stop) or None, "seed": p.seed + req.sample_index, **extra_sampling_fields(p.extra_body)}


def extra_sampling_fields(extra_body: str, allowed: set[str] | None = None) -> dict[str, Any]:
    """Decode ``--extra-body`` for vLLM; unknown or owned fields are a clear error, never ignored."""
    if not extra_body:
        return {}
    try:
        fields = json.loads(extra_body)
    except json.JSONDecodeError as e:
        raise BackendError(f"--extra-body is not valid JSON: {e}") from None
    if not isinstance(fields, dict):
        raise BackendError("--extra-body must be a JSON object of sampling fields")
    for name in fields:
        if name in OWNED_FIELDS:
            raise BackendError(f"--extra-body field {name!r} is set by cotbench itself; use its own flag")
        if name in REFUSED_FIELDS:
            raise BackendError(f"--extra-body field {name!r} is not supported by the vllm backend "
                               "(cotbench reads one plain-text output per request)")
        if allowed is not None and name not in allowed:
            hint = f" (vLLM calls it {FIELD_HINTS[name]!r})" if name in FIELD_HINTS else ""
            raise BackendError(f"--extra-body field {name!r} is not a vllm.SamplingParams field{hint}; "
                               "the vllm backend passes only SamplingParams fields")
    return fields


def chat_messages(req: Request) -> list[dict]:
    msgs = [dict(m) for m in req.messages]
    if req.prefill:
        msgs.append({"role": "assistant", "content": req.prefill})
    return msgs


def template_kwargs(prefilled: bool) -> dict[str, bool]:
    """A prefilled batch continues the open assistant turn; vLLM rejects both flags set at once."""
    return {"add_generation_prompt": False, "continue_final_message": True} if prefilled else {}


def to_response(out: Any, latency_s: float) -> Response:
    """Convert one ``vllm.RequestOutput``.

    A "length" finish with no token at all cannot come from ``max_tokens`` (it is at least 1): it is
    how engines that skip an over-long prompt instead of raising (vLLM's older V0 engine) report it,
    so it is recorded as the same ``context_overflow`` outcome."""
    c = out.outputs[0]
    finish = "context_overflow" if c.finish_reason == "length" and not len(c.token_ids) else c.finish_reason
    return Response(text=c.text, tokens_in=len(out.prompt_token_ids or []), tokens_out=len(c.token_ids),
                    finish_reason=finish, latency_s=latency_s)


def overflow_response(latency_s: float = 0.0) -> Response:
    return Response(text="", tokens_in=None, tokens_out=0, finish_reason="context_overflow", latency_s=latency_s)


def is_context_overflow(e: BaseException) -> bool:
    """vLLM's "prompt too long" errors: ``VLLMValidationError`` (not a ValueError) in recent releases,
    ``ValueError`` in older ones; both name the maximum model/context length."""
    return isinstance(e, (ValueError, _validation_error_type())) and bool(_OVERFLOW.search(str(e)))


def _validation_error_type() -> type:
    try:
        from vllm.exceptions import VLLMValidationError
    except ImportError:
        return ValueError
    return VLLMValidationError


def replica_gpus(visible: list[str], dp: int, per_replica: int) -> list[list[str]]:
    """Disjoint GPU slices, one per data-parallel replica (``per_replica`` = tensor x pipeline size)."""
    need = dp * per_replica
    if len(visible) < need:
        raise BackendError(f"data_parallel_size={dp} x {per_replica} GPUs per replica (tensor x pipeline "
                           f"parallel) needs {need} GPUs; {len(visible)} visible")
    return [visible[r * per_replica:(r + 1) * per_replica] for r in range(dp)]


def visible_gpus() -> list[str] | None:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES, else torch's count; None if unknown."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no torch or no driver: vLLM will say so when it starts
        return None


def engine_max_model_len(explicit: int | None, model_context: int | None) -> int | None:
    """``explicit`` (or $COTBENCH_VLLM_MAX_MODEL_LEN) wins; else the model's context capped at
    DEFAULT_MAX_MODEL_LEN; None (vLLM derives it from the model's config) when nothing is known."""
    env = os.environ.get(MAX_MODEL_LEN_ENV)
    if explicit is None and env:
        try:
            explicit = int(env)
        except ValueError:
            raise BackendError(f"{MAX_MODEL_LEN_ENV}={env!r} is not an integer") from None
    if explicit is not None:
        if explicit < 1:
            raise BackendError(f"max_model_len must be positive, got {explicit}")
        return explicit
    return min(model_context, DEFAULT_MAX_MODEL_LEN) if model_context else None


# -- what vLLM cannot load --------------------------------------------------------------------------------

def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v.split("+")[0])[:3])


def check_loadable(model_id: str, vllm_version: str, trust_remote_code: bool) -> None:
    """Fail before any GPU work for models this vLLM cannot load, naming a way that works."""
    from cotbench.pipeline.model_registry import VLLM_LIMITS

    local = Path(model_id)
    gguf_only_dir = local.is_dir() and not (local / "config.json").exists() and any(local.glob("*.gguf"))
    if model_id.lower().endswith(".gguf") or gguf_only_dir:
        raise BackendError(
            f"{model_id}: the vllm backend does not load GGUF files (vLLM {vllm_version} cannot load GGUF, "
            "and older releases needed the original tokenizer, which cotbench does not pass). Use the "
            "in-process llama.cpp backend (--backend llamacpp, the default for .gguf paths), or "
            "`python -m cotbench.backends.llamacpp_server` with --backend openai --base-url URL")
    limit = VLLM_LIMITS.get(model_id)
    if limit is None:
        return
    if limit.last_vllm and _version_tuple(vllm_version) > _version_tuple(limit.last_vllm):
        raise BackendError(f"{model_id}: {limit.why}; the installed vLLM is {vllm_version}. {limit.instead}")
    if limit.trust_remote_code and not trust_remote_code:
        raise BackendError(f"{model_id}: needs trust_remote_code=True (-B trust_remote_code=true runs the model "
                           f"repository's own code). {limit.instead}")


# -- model revision for the request key -------------------------------------------------------------------

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
META_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "chat_template.jinja", "chat_template.json", "tokenizer.model")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def local_fingerprint(path: Path, sample: int = 1 << 20) -> str:
    """A content fingerprint of a local HF model directory, cheap enough for 100 GB of weights.

    It hashes the config, generation config, tokenizer and chat-template files and weight indexes
    whole, and for each weight file its name, size and first and last MiB (safetensors headers hold
    every tensor's name, shape and offset). Replaced weights, a new template or tokenizer change it."""
    h = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file())
    for p in files:
        if p.name in META_FILES or p.name.endswith(".index.json"):
            h.update(f"{p.name}\0".encode())
            h.update(p.read_bytes())
        elif p.name.endswith(WEIGHT_SUFFIXES):
            size = p.stat().st_size
            h.update(f"{p.name}\0{size}\0".encode())
            with open(p, "rb") as f:
                h.update(f.read(sample))
                if size > 2 * sample:
                    f.seek(size - sample)
                    h.update(f.read(sample))
    return "sha256:" + h.hexdigest()[:16]


def hub_commit(model_id: str, revision: str | None) -> str:
    """The commit a hub model id (at ``revision``, default main) resolves to: asked of the hub, else
    read from the local Hugging Face cache; a clear error when neither knows it."""
    if revision and _COMMIT.match(revision):
        return revision
    import huggingface_hub as hf

    err: Exception | None = None
    if os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes", "on"):
        try:
            sha = hf.HfApi().model_info(model_id, revision=revision, timeout=15).sha
            if sha:
                return sha
        except Exception as e:  # noqa: BLE001 - offline, gated, rate-limited: try the cache
            err = e
    cached = hf.try_to_load_from_cache(model_id, "config.json", revision=revision)
    if isinstance(cached, str):
        commit = Path(cached).parent.name
        if _COMMIT.match(commit):
            return commit
    raise BackendError(f"cannot tell which commit of {model_id} (revision {revision or 'main'}) to load: "
                       f"the hub did not answer ({err or 'HF_HUB_OFFLINE is set'}) and it is not in the "
                       "local Hugging Face cache; download it first (huggingface-cli download) or give "
                       "the commit as the model's revision")


def model_revision(model_id: str, revision: str | None) -> tuple[str, str | None]:
    """(revision for the request key, revision to pin the engine to)."""
    p = Path(model_id)
    if p.is_dir():
        return local_fingerprint(p), None
    commit = hub_commit(model_id, revision)
    return commit, commit


# -- one chunk on one engine ------------------------------------------------------------------------------

def build_sampling_params(vllm_mod, reqs: list[Request]) -> list:
    """Build (and so validate) every request's SamplingParams; a bad value is a clear error."""
    allowed = set(inspect.signature(vllm_mod.SamplingParams).parameters)
    out = []
    for r in reqs:
        kw = sampling_kwargs(r)
        extra_sampling_fields(r.params.extra_body, allowed)
        try:
            out.append(vllm_mod.SamplingParams(**kw))
        except Exception as e:  # noqa: BLE001 - VLLMValidationError, TypeError, ValueError
            raise BackendError(f"vLLM rejected the sampling parameters {kw}: {e}") from None
    return out


class ChunkRunner:
    """Runs chunks on one engine: isolates over-long prompts, retries aborted/errored outputs."""

    def __init__(self, llm, vllm_mod, note_retry: Callable[[str], None]):
        self.llm, self.vllm, self.note_retry = llm, vllm_mod, note_retry

    def run(self, reqs: list[Request]) -> tuple[list[tuple[Request, Response]], str | None]:
        """The finished (request, response) pairs, and why the rest could not be finished (or None).

        Whatever finished is returned even when something failed, so it is stored before the run stops."""
        params = build_sampling_params(self.vllm, reqs)
        final: dict[int, Response] = {}
        todo = list(range(len(reqs)))
        failure = None
        for attempt in range(MAX_RETRIES + 1):
            got: dict[int, Response] = {}
            try:
                self._isolate(reqs, params, todo, got)
            except BackendError as e:
                failure = str(e)
            retry = [i for i in got if got[i].finish_reason in RETRY_FINISH]
            final.update({i: resp for i, resp in got.items() if i not in retry})
            if failure or not retry:
                break
            if attempt == MAX_RETRIES:
                first = got[retry[0]].finish_reason
                failure = (f"vLLM finished {len(retry)} request(s) with finish_reason {first!r} after "
                           f"{MAX_RETRIES} retries (first: request {reqs[retry[0]].key[:12]}); nothing was "
                           "stored for them, rerun to retry")
                break
            for i in retry:
                self.note_retry(f"finish_{got[i].finish_reason}")
            todo = retry
        return [(reqs[i], final[i]) for i in sorted(final)], failure

    def _isolate(self, reqs, params, idx: list[int], got: dict[int, Response]) -> None:
        """Generate ``idx`` into ``got``; on a "prompt too long" error split it until the offenders
        stand alone (each then an overflow outcome). Other errors raise BackendError."""
        if not idx:
            return
        t0 = time.perf_counter()
        try:
            outs = self._chat([reqs[i] for i in idx], [params[i] for i in idx])
        except BackendError:
            raise
        except Exception as e:  # noqa: BLE001 - classified below
            if not is_context_overflow(e):
                raise BackendError(f"vLLM failed on a batch of {len(idx)} requests: "
                                   f"{type(e).__name__}: {e}") from e
            if len(idx) == 1:
                got[idx[0]] = overflow_response(time.perf_counter() - t0)
                return
            mid = len(idx) // 2
            self._isolate(reqs, params, idx[:mid], got)
            self._isolate(reqs, params, idx[mid:], got)
            return
        dt = (time.perf_counter() - t0) / len(idx)
        got.update({i: to_response(o, dt) for i, o in zip(idx, outs)})

    def _chat(self, reqs: list[Request], params: list) -> list:
        prefilled = {bool(r.prefill) for r in reqs}
        if len(prefilled) > 1:
            raise BackendError("mixed prefill/no-prefill batch; the backend groups them")
        outs = self.llm.chat([chat_messages(r) for r in reqs], sampling_params=params, use_tqdm=False,
                             **template_kwargs(prefilled.pop()))
        if len(outs) != len(reqs):  # outputs are matched to requests by position
            raise BackendError(f"vLLM returned {len(outs)} outputs for {len(reqs)} requests")
        return outs


def start_engine(vllm_mod, engine_kw: dict):
    try:
        return vllm_mod.LLM(**engine_kw)
    except Exception as e:  # noqa: BLE001 - CUDA OOM, bad config, missing weights …
        hint = ""
        if re.search(r"memory|max_model_len|KV cache", str(e), re.I):
            hint = (f" (max_model_len={engine_kw.get('max_model_len')}, gpu_memory_utilization="
                    f"{engine_kw.get('gpu_memory_utilization')}: set {MAX_MODEL_LEN_ENV} lower, or use more "
                    "GPUs per replica)")
        raise BackendError(f"vLLM could not start {engine_kw.get('model')}: {type(e).__name__}: {e}{hint}") from e


# -- engines: in this process, or one worker process per data-parallel replica ----------------------------

Emit = Callable[[list[tuple[Request, Response]], dict[str, int]], None]


class LocalEngine:
    def __init__(self, engine_kw: dict):
        import vllm

        self.vllm = vllm
        self.llm = start_engine(vllm, engine_kw)

    def run_chunk(self, chunk: list[Request]) -> tuple[list[tuple[Request, Response]], dict[str, int], str | None]:
        reasons: dict[str, int] = {}
        runner = ChunkRunner(self.llm, self.vllm, lambda why: reasons.__setitem__(why, reasons.get(why, 0) + 1))
        pairs, failure = runner.run(chunk)
        return pairs, reasons, failure

    def run(self, chunks: list[list[Request]], emit: Emit) -> None:
        for chunk in chunks:
            finish_chunk(emit, *self.run_chunk(chunk))

    def close(self) -> None:
        import gc

        self.llm = None
        gc.collect()  # vLLM shuts its engine down when the LLM object is collected


def finish_chunk(emit: Emit, pairs, reasons: dict[str, int], failure: str | None) -> None:
    """Hand over what finished, then stop if something could not be finished."""
    emit(pairs, reasons)
    if failure:
        raise BackendError(failure)


def _worker(rank: int, gpus: list[str], engine_kw: dict, tasks, results) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    try:
        engine = LocalEngine(engine_kw)
        results.put(("ready", rank, None))
        while (item := tasks.get()) is not None:
            cid, chunk = item
            results.put(("ok", cid, engine.run_chunk(chunk)))
    except BaseException as e:  # report, never leave the parent waiting
        results.put(("error", rank, f"data-parallel rank {rank} (GPUs {','.join(gpus)}): {e}"))


class ReplicaPool:
    """``dp`` worker processes, each with its own engine on its own GPUs, started once.

    Chunks go to a shared queue (a free replica takes the next one), results come back per chunk. A
    worker that exits without reporting stops ``run`` with its exit code."""

    def __init__(self, engine_kw: dict, slices: list[list[str]]):
        ctx = mp.get_context("spawn")
        self.tasks, self.results = ctx.Queue(), ctx.Queue()
        self.procs = [ctx.Process(target=_worker, args=(rank, gpus, engine_kw, self.tasks, self.results),
                                  daemon=True) for rank, gpus in enumerate(slices)]
        for p in self.procs:
            p.start()
        ready = 0
        while ready < len(self.procs):
            kind, _, payload = self._next()
            if kind == "ready":
                ready += 1
            elif kind == "error":
                self.close()
                raise BackendError(payload)

    def _next(self) -> tuple:
        while True:
            try:
                return self.results.get(timeout=WORKER_POLL_S)
            except queue.Empty:
                dead = [(r, p.exitcode) for r, p in enumerate(self.procs) if p.exitcode is not None]
                if dead:
                    try:  # a last word may still be in the pipe
                        return self.results.get(timeout=WORKER_POLL_S)
                    except queue.Empty:
                        pass
                    self.close()
                    r, code = dead[0]
                    raise BackendError(f"data-parallel rank {r} exited with code {code} without reporting "
                                       "(killed by the OOM killer, or a crash in vLLM/CUDA); finished "
                                       "chunks are saved, rerun to resume") from None

    def run(self, chunks: list[list[Request]], emit: Emit) -> None:
        if not self.procs:
            raise BackendError("the data-parallel replicas were stopped after an earlier error")
        for cid, chunk in enumerate(chunks):
            self.tasks.put((cid, chunk))
        pending = set(range(len(chunks)))
        while pending:
            kind, key, payload = self._next()
            if kind == "ok":
                pending.discard(key)
                try:
                    finish_chunk(emit, *payload)
                except BackendError:
                    self.close()
                    raise
            elif kind == "error":
                self.close()
                raise BackendError(payload)

    def close(self) -> None:
        for p in self.procs:
            if p.is_alive():
                self.tasks.put(None)
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join()
        self.procs = []


# -- the backend ------------------------------------------------------------------------------------------

_OPEN: "weakref.WeakSet[VLLMBackend]" = weakref.WeakSet()  # vLLM backends of this process, not closed
_ENGINES: dict[str, tuple[Any, int, float]] = {}  # engine key -> (engine, users, gpu memory share)


class VLLMBackend:
    name = "vllm"

    def __init__(self, model_id: str, revision: str | None = None, tensor_parallel_size: int = 1,
                 data_parallel_size: int = 1, max_model_len: int | None = None, model_context: int | None = None,
                 gpu_memory_utilization: float = 0.9, dtype: str = "auto", seed: int = 0,
                 chunk_size: int = 512, distributed_executor_backend: str | None = None,
                 pipeline_parallel_size: int = 1, trust_remote_code: bool = False):
        vllm = require_vllm()
        for name, v in (("tensor_parallel_size", tensor_parallel_size), ("data_parallel_size", data_parallel_size),
                        ("pipeline_parallel_size", pipeline_parallel_size), ("chunk_size", chunk_size)):
            if not isinstance(v, int) or v < 1:
                raise BackendError(f"{name} must be a positive integer, got {v!r}")
        if not 0 < gpu_memory_utilization <= 1:
            raise BackendError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        if distributed_executor_backend == "ray":
            import importlib.util

            if importlib.util.find_spec("ray") is None:
                raise BackendError("--distributed-executor-backend ray needs Ray, which neither vLLM nor "
                                   "cotbench[vllm] installs: pip install ray (the same version on every node)")
            if data_parallel_size > 1:
                raise BackendError("--data-parallel-size with --distributed-executor-backend ray is not "
                                   "supported: Ray places each replica itself, so cotbench cannot give them "
                                   "disjoint GPUs; run one cotbench per replica with a shared --cache instead")
        self.vllm_version = getattr(vllm, "__version__", "unknown")
        check_loadable(model_id, self.vllm_version, trust_remote_code)
        self.model_id = model_id
        self.revision, pinned = model_revision(model_id, revision)
        self.tp, self.pp, self.dp = tensor_parallel_size, pipeline_parallel_size, data_parallel_size
        self.chunk_size = chunk_size
        self.gpu_memory_utilization = gpu_memory_utilization
        self.stats = BackendStats()
        self.engine_kw = {k: v for k, v in dict(
            model=model_id, revision=pinned, tokenizer_revision=pinned, tensor_parallel_size=tensor_parallel_size,
            pipeline_parallel_size=pipeline_parallel_size,
            max_model_len=engine_max_model_len(max_model_len, model_context), dtype=dtype, seed=seed,
            distributed_executor_backend=distributed_executor_backend, trust_remote_code=trust_remote_code,
        ).items() if v is not None}
        self._key = json.dumps({**self.engine_kw, "dp": self.dp}, sort_keys=True)
        self._engine = None
        self._share: float | None = None
        _OPEN.add(self)

    def describe(self) -> dict:
        return {"backend": self.name, **self.engine_kw, "data_parallel_size": self.dp,
                "gpu_memory_utilization": self._share or self.gpu_memory_utilization,
                "model_revision": self.revision, "vllm_version": self.vllm_version,
                # outputs can depend on the batch unless vLLM's batch-invariant mode is on (README)
                "vllm_batch_invariant": os.environ.get("VLLM_BATCH_INVARIANT") == "1"}

    def _chunks(self, reqs: list[Request]) -> list[list[Request]]:
        # keep prefilled and plain requests apart: LLM.chat takes one template mode per call
        out: list[list[Request]] = []
        for flag in (False, True):
            group = [r for r in reqs if bool(r.prefill) == flag]
            out += [group[i:i + self.chunk_size] for i in range(0, len(group), self.chunk_size)]
        return out

    def _acquire(self):
        """Start (or share) this backend's engine. Engines of one process split the GPU memory budget:
        a judge on vLLM beside the evaluated model gets its share instead of asking for it all again."""
        if self._engine is not None:
            return self._engine
        if self._key in _ENGINES:  # the same model with the same settings: one engine
            engine, users, share = _ENGINES[self._key]
            _ENGINES[self._key] = (engine, users + 1, share)
            self._engine, self._share = engine, share
            return engine
        wanted = {b._key for b in list(_OPEN)} | {self._key}
        share = self.gpu_memory_utilization / len(wanted)
        held = sum(s for _, _, s in _ENGINES.values())
        if held + share > self.gpu_memory_utilization + 1e-9:
            raise BackendError(f"another vLLM engine in this process already holds {held:.2f} of the GPU "
                               f"memory, so {self.model_id} cannot get {share:.2f}; create every vLLM backend "
                               "before the first generate (cotbench's run does), or serve one model with "
                               "`vllm serve` and use it through --backend openai / --judge-model openai:NAME")
        kw = {**self.engine_kw, "gpu_memory_utilization": round(share, 4)}
        if self.dp > 1:
            gpus = visible_gpus()
            need = self.dp * self.tp * self.pp
            slices = replica_gpus(gpus if gpus is not None else [str(i) for i in range(need)],
                                  self.dp, self.tp * self.pp)
            engine = ReplicaPool(kw, slices)
        else:
            engine = LocalEngine(kw)
        _ENGINES[self._key] = (engine, 1, share)
        self._engine, self._share = engine, share
        return engine

    def generate(self, requests: list[Request], on_result: OnResult) -> None:
        if not requests:
            return
        if self.dp > 1:  # fail on a GPU shortfall before any process starts
            gpus = visible_gpus()
            if gpus is not None:
                replica_gpus(gpus, self.dp, self.tp * self.pp)
        import vllm

        build_sampling_params(vllm, requests)  # bad sampling values fail before an engine starts
        engine = self._acquire()

        def emit(pairs: list[tuple[Request, Response]], reasons: dict[str, int]) -> None:
            for why, n in reasons.items():
                for _ in range(n):
                    self.stats.note_retry(why)
            for r, resp in pairs:
                self.stats.calls += 1
                on_result(r, resp)

        engine.run(self._chunks(requests), emit)

    def close(self) -> None:
        _OPEN.discard(self)
        if self._engine is None:
            return
        engine, users, share = _ENGINES.get(self._key, (self._engine, 1, 0.0))
        if users > 1:
            _ENGINES[self._key] = (engine, users - 1, share)
        else:
            _ENGINES.pop(self._key, None)
            engine.close()
        self._engine = None


def from_spec(spec, ctx, *, tensor_parallel_size: int, data_parallel_size: int, pipeline_parallel_size: int,
              distributed_executor_backend: str | None, max_model_len: int | None, trust_remote_code: bool,
              dtype: str, gpu_memory_utilization: float, chunk_size: int) -> VLLMBackend:
    """The registry's factory (:mod:`cotbench.backends.registry`); the registry's context length is the
    engine context's ceiling when ``max_model_len`` is not given."""
    return VLLMBackend(spec.model_id, revision=spec.revision, tensor_parallel_size=tensor_parallel_size,
                       data_parallel_size=data_parallel_size, seed=ctx.seed,
                       pipeline_parallel_size=pipeline_parallel_size,
                       distributed_executor_backend=distributed_executor_backend,
                       max_model_len=max_model_len, model_context=spec.context_length or None,
                       trust_remote_code=trust_remote_code, dtype=dtype,
                       gpu_memory_utilization=gpu_memory_utilization, chunk_size=chunk_size)
