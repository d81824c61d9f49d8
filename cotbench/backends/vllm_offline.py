"""Offline batch generation with ``vllm.LLM`` (optional extra ``[vllm]``; needs a GPU).

The whole batch goes to ``LLM.chat`` at once, so vLLM's continuous batching sees every prompt.
Scaling on one node: ``tensor_parallel_size`` shards one model over GPUs; ``data_parallel_size`` runs
that many independent engines (each on its own ``tensor_parallel_size`` GPUs, in separate processes)
over disjoint shards of the batch. Results are reported in chunks of ``chunk_size`` so the store
commits progress during long batches. Multi-node: ``distributed_executor_backend="ray"`` with a Ray
cluster, and tensor x pipeline parallel sizes spanning the nodes (see README, "Scaling out").
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from typing import Any

from cotbench.backends.base import BackendError, BackendStats, OnResult
from cotbench.types import Request, Response

INSTALL_HINT = ("vLLM is not installed (it needs a CUDA GPU): pip install 'cotbench[vllm]', or use "
                "--backend openai against a `vllm serve` endpoint, or the embedded llamacpp backend")


def require_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise BackendError(INSTALL_HINT) from e
    return vllm


def sampling_kwargs(req: Request) -> dict[str, Any]:
    """Map our GenParams onto ``vllm.SamplingParams`` keyword arguments (pure; tested without vLLM)."""
    p = req.params
    return {"max_tokens": p.max_tokens, "temperature": p.temperature, "top_p": p.top_p,
            "stop": list(p.stop) or None, "seed": p.seed + req.sample_index}


def chat_messages(req: Request) -> list[dict]:
    msgs = [dict(m) for m in req.messages]
    if req.prefill:
        msgs.append({"role": "assistant", "content": req.prefill})
    return msgs


def to_response(out: Any, latency_s: float) -> Response:
    """Convert one ``vllm.RequestOutput``."""
    c = out.outputs[0]
    return Response(text=c.text, tokens_in=len(out.prompt_token_ids or []), tokens_out=len(c.token_ids),
                    finish_reason=c.finish_reason, latency_s=latency_s)


def _generate_chunk(llm, reqs: list[Request]) -> list[Response]:
    import vllm

    params = [vllm.SamplingParams(**sampling_kwargs(r)) for r in reqs]
    prefilled = [bool(r.prefill) for r in reqs]
    t0 = time.perf_counter()
    if any(prefilled) and not all(prefilled):
        raise BackendError("mixed prefill/no-prefill batch; the runner groups them")
    kw = {"add_generation_prompt": False, "continue_final_message": True} if all(prefilled) else {}
    outs = llm.chat([chat_messages(r) for r in reqs], sampling_params=params, use_tqdm=False, **kw)
    dt = (time.perf_counter() - t0) / max(1, len(reqs))
    return [to_response(o, dt) for o in outs]


def _worker(rank: int, gpus: list[str], engine_kw: dict, chunks: list[list[Request]], q: mp.Queue) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    try:
        import vllm

        llm = vllm.LLM(**engine_kw)
        for chunk in chunks:
            q.put(("ok", [(r, resp) for r, resp in zip(chunk, _generate_chunk(llm, chunk))]))
        q.put(("done", rank))
    except BaseException as e:  # report, never hang the parent
        q.put(("error", f"data-parallel rank {rank}: {e!r}"))


class VLLMBackend:
    name = "vllm"

    def __init__(self, model_id: str, revision: str | None = None, tensor_parallel_size: int = 1,
                 data_parallel_size: int = 1, max_model_len: int | None = None,
                 gpu_memory_utilization: float = 0.9, dtype: str = "auto", seed: int = 0,
                 chunk_size: int = 512, distributed_executor_backend: str | None = None,
                 pipeline_parallel_size: int = 1, trust_remote_code: bool = False):
        require_vllm()
        self.model_id = model_id
        self.revision = revision or ""
        self.tp, self.dp = tensor_parallel_size, data_parallel_size
        self.chunk_size = chunk_size
        self.stats = BackendStats()
        self.engine_kw = {k: v for k, v in dict(
            model=model_id, revision=revision, tensor_parallel_size=tensor_parallel_size,
            pipeline_parallel_size=pipeline_parallel_size, max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization, dtype=dtype, seed=seed,
            distributed_executor_backend=distributed_executor_backend, trust_remote_code=trust_remote_code,
        ).items() if v is not None}
        self._llm = None

    def describe(self) -> dict:
        return {"backend": self.name, **self.engine_kw, "data_parallel_size": self.dp}

    def _chunks(self, reqs: list[Request]) -> list[list[Request]]:
        # keep prefilled and plain requests apart: LLM.chat takes one template mode per call
        out: list[list[Request]] = []
        for flag in (False, True):
            group = [r for r in reqs if bool(r.prefill) == flag]
            out += [group[i:i + self.chunk_size] for i in range(0, len(group), self.chunk_size)]
        return out

    def generate(self, requests: list[Request], on_result: OnResult) -> None:
        if not requests:
            return
        if self.dp <= 1:
            import vllm

            if self._llm is None:
                self._llm = vllm.LLM(**self.engine_kw)
            for chunk in self._chunks(requests):
                for r, resp in zip(chunk, _generate_chunk(self._llm, chunk)):
                    self.stats.calls += 1
                    on_result(r, resp)
            return
        self._generate_dp(requests, on_result)

    def _generate_dp(self, requests: list[Request], on_result: OnResult) -> None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = visible.split(",") if visible else [str(i) for i in range(self.dp * self.tp)]
        if len(gpus) < self.dp * self.tp:
            raise BackendError(f"data_parallel_size={self.dp} x tensor_parallel_size={self.tp} needs "
                               f"{self.dp * self.tp} GPUs; {len(gpus)} visible")
        chunks = self._chunks(requests)
        ctx = mp.get_context("spawn")
        q: mp.Queue = ctx.Queue()
        procs = []
        for rank in range(self.dp):
            mine = chunks[rank::self.dp]
            procs.append(ctx.Process(target=_worker, args=(rank, gpus[rank * self.tp:(rank + 1) * self.tp],
                                                           self.engine_kw, mine, q)))
        for p in procs:
            p.start()
        done = 0
        try:
            while done < self.dp:
                kind, payload = q.get()
                if kind == "ok":
                    for r, resp in payload:
                        self.stats.calls += 1
                        on_result(r, resp)
                elif kind == "done":
                    done += 1
                else:
                    raise BackendError(payload)
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                p.join()

    def close(self) -> None:
        self._llm = None
