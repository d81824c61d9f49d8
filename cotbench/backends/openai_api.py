"""Any OpenAI-compatible chat endpoint (OpenAI, Anthropic's and Gemini's compatibility endpoints,
``vllm serve``, ``llama_cpp.server``), asynchronous with bounded concurrency.

Retries are ours, not the SDK's (``max_retries=0``), so each one is counted: exponential back-off with
full jitter on 429, 5xx, timeouts and dropped connections; other 4xx errors are not retried.
A server that stays down raises :class:`BackendError` after ``max_retries``; everything finished
before that is already committed by the runner, so the run resumes from there.

A request the server refuses for what it *is* rather than for how the run is set up is that item's
outcome, not the end of the run: a prompt longer than the model's context (HTTP 400, as OpenAI,
vLLM, llama_cpp.server, Anthropic and Gemini word it) is recorded as ``finish_reason="context_overflow"``
with empty text, as the in-process backend records it, and a prompt a content filter rejects as
``"content_filter"``. Both are stored, unparseable and scored wrong. Every other 4xx (bad key, bad
parameter, unknown model) concerns every request alike and stops the run.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

from cotbench.backends.base import BackendError, BackendStats, OnResult
from cotbench.records import Request, Response

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
ITEM_STATUS = {400, 413, 422}  # statuses with which servers refuse one request for its content
OVERFLOW_CODES = {"context_length_exceeded", "string_above_max_length"}
OVERFLOW_TEXT = re.compile(
    r"context[ _](?:length|window)|maximum context|max_model_len|prompt is too long|input is too long"
    r"|maximum input length|exceeds the maximum number of tokens", re.IGNORECASE)
FILTER_CODES = {"content_filter", "content_policy_violation", "invalid_prompt"}


def _error_parts(body: Any) -> tuple[str, str]:
    """(code, message) from an error body: ``{"error": {...}}``, ``{...}`` or a plain string."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("code") or inner.get("type") or ""), str(inner.get("message") or inner)
        return "", str(inner)
    return "", "" if body is None else str(body)


def item_outcome(status: int, body: Any, message: str = "") -> str | None:
    """The finish reason to record when a refusal is about this one request, else None (pure)."""
    if status not in ITEM_STATUS:
        return None
    code, text = _error_parts(body)
    text = f"{text} {message}"
    if code in OVERFLOW_CODES or OVERFLOW_TEXT.search(text):
        return "context_overflow"
    if code in FILTER_CODES:
        return "content_filter"
    return None


def api_key(api_key_env: str | None, base_url: str | None) -> str:
    """The key from ``api_key_env``; local servers (a ``base_url`` given) accept any, so "EMPTY" then.
    Raises when the SDK is missing or a hosted endpoint would get no key."""
    try:
        import openai  # noqa: F401
    except ImportError as e:  # pragma: no cover
        raise BackendError("the openai package is not installed: pip install openai") from e
    key = os.environ.get(api_key_env, "") if api_key_env else ""
    if not key and base_url is None:
        raise BackendError(f"no API key: set the environment variable {api_key_env}" if api_key_env else
                           "the openai backend needs --base-url (a local or hosted OpenAI-compatible server) "
                           "or a model with an API key")
    return key or "EMPTY"


def chat_params(model_id: str, req: Request, allow_prefill: bool) -> dict:
    """The chat-completions arguments for one request, as the SDK takes them. The synchronous and the
    batch backend both build their calls here, so one request key always means one request sent."""
    p = req.params
    msgs = [dict(m) for m in req.messages]
    if req.prefill and allow_prefill:
        msgs.append({"role": "assistant", "content": req.prefill})
    out = {"model": model_id, "messages": msgs, "max_tokens": p.max_tokens, "temperature": p.temperature,
           "top_p": p.top_p, "stop": list(p.stop) or None, "seed": p.seed + req.sample_index}
    if p.extra_body:  # server-specific sampling fields travel with each request (they are part of its key)
        out["extra_body"] = json.loads(p.extra_body)
    return out


POOL_SIZE = 8  # connections per HTTP connection pool


class _LeanCompletions:
    """``chat.completions.create`` as one plain HTTP POST; ``_one`` uses it like the SDK's.

    The same URL, headers (the SDK client's own, API key included), JSON fields, timeout and error types
    as the SDK's ``create``: HTTP errors are built by the SDK client from the response, timeouts and other
    transport failures become ``APITimeoutError`` / ``APIConnectionError`` as in the SDK. What is left out
    is the SDK's per-call machinery (request transformation, options copies, response models): against a
    fast endpoint it cost more than the HTTP exchange itself (bench/README.md).
    """

    def __init__(self, sdk, http):
        self._sdk, self._http = sdk, http
        self._url = f"{sdk.base_url}chat/completions"  # the SDK keeps a trailing slash on base_url
        self._headers = {k: v for k, v in sdk.default_headers.items()  # SDK telemetry headers left out
                         if isinstance(v, str) and not k.lower().startswith("x-stainless")}
        self._headers["Authorization"] = f"Bearer {sdk.api_key}"

    async def create(self, *, timeout: float, extra_body: dict | None = None, **params):
        import httpx
        import openai

        body = json.dumps({**params, **(extra_body or {})}).encode()
        request = self._http.build_request("POST", self._url, content=body, headers=self._headers, timeout=timeout)
        try:
            response = await self._http.send(request)
        except Exception as e:
            raise (openai.APITimeoutError(request=request) if isinstance(e, httpx.TimeoutException)
                   else openai.APIConnectionError(request=request)) from e
        if not response.is_success:
            await response.aread()
            raise self._sdk._make_status_error_from_response(response)
        return _attrs(response.json())


def _attrs(x):
    """Parsed JSON with attribute access, the way ``_one`` reads the SDK's response models."""
    if isinstance(x, dict):
        return SimpleNamespace(**{k: _attrs(v) for k, v in x.items()})
    if isinstance(x, list):
        return [_attrs(v) for v in x]
    return x


class _LeanClient:
    def __init__(self, sdk, http):
        self._http = http
        self.chat = SimpleNamespace(completions=_LeanCompletions(sdk, http))

    async def close(self) -> None:
        await self._http.aclose()


@lru_cache(maxsize=None)
def tls_context():
    """One verifying TLS context (certifi's CA bundle) per process, shared by every pool: loading the
    bundle took 70-130 ms on a loaded 2-core machine, and was paid again on every ``generate`` before."""
    import httpx

    return httpx.create_ssl_context()


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential back-off: uniform in [0, min(cap, base * 2**attempt)]."""
    return rng.uniform(0, min(cap, base * (2 ** attempt)))


class OpenAIBackend:
    name = "openai"

    def __init__(self, model_id: str, base_url: str | None = None, api_key_env: str | None = "OPENAI_API_KEY",
                 concurrency: int = 8, timeout_s: float = 120.0, max_retries: int = 6,
                 backoff_base_s: float = 0.5, backoff_cap_s: float = 30.0, revision: str = "",
                 allow_prefill: bool = False):
        self._api_key = api_key(api_key_env, base_url)  # never logged or stored
        self.model_id = model_id
        self.revision = revision
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.allow_prefill = allow_prefill
        self.stats = BackendStats()
        self._rng = random.Random(0)

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model_id, "base_url": self.base_url,
                "api_key_env": self.api_key_env, "concurrency": self.concurrency,
                "timeout_s": self.timeout_s, "max_retries": self.max_retries}

    async def _one(self, client, req: Request, sem: asyncio.Semaphore) -> Response:
        import openai

        async with sem:
            attempt = 0
            while True:
                t0 = time.perf_counter()
                try:
                    out = await client.chat.completions.create(
                        **chat_params(self.model_id, req, self.allow_prefill), timeout=self.timeout_s)
                    self.stats.calls += 1
                    choice = out.choices[0]
                    usage = out.usage
                    return Response(
                        text=(choice.message.content or ""),
                        tokens_in=getattr(usage, "prompt_tokens", None),
                        tokens_out=getattr(usage, "completion_tokens", None),
                        finish_reason=choice.finish_reason,
                        latency_s=time.perf_counter() - t0,
                        retries=attempt,
                    )
                except openai.APIStatusError as e:
                    refused = item_outcome(e.status_code, e.body, e.message)
                    if refused is not None:
                        self.stats.calls += 1
                        return Response(text="", tokens_in=None, tokens_out=0, finish_reason=refused,
                                        latency_s=time.perf_counter() - t0, retries=attempt)
                    if e.status_code not in RETRY_STATUS:
                        raise BackendError(f"{self.model_id}: HTTP {e.status_code} (not retried): {e.message}") from None
                    reason = f"http_{e.status_code}"
                except openai.APITimeoutError:
                    reason = "timeout"
                except openai.APIConnectionError:
                    reason = "connection"
                if attempt >= self.max_retries:
                    raise BackendError(
                        f"{self.model_id} at {self.base_url or 'api.openai.com'}: gave up after "
                        f"{attempt} retries (last error: {reason}); finished samples are saved, rerun to resume"
                    )
                self.stats.note_retry(reason)
                await asyncio.sleep(backoff_delay(attempt, self.backoff_base_s, self.backoff_cap_s, self._rng))
                attempt += 1

    def _clients(self) -> list[_LeanClient]:
        """Chat clients on pools of at most POOL_SIZE connections, ``concurrency`` connections in all: httpx's
        pool scans all its connections on every request, so one 64-connection pool was the bottleneck of the
        client (bench/README.md). One SDK client supplies the URL, headers and error types (its retries are
        off: ours are counted); one TLS context serves every pool."""
        import httpx
        import openai

        n_pools = -(-self.concurrency // POOL_SIZE)
        per_pool = -(-self.concurrency // n_pools)
        limits = httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool)
        tls = tls_context()
        pools = [httpx.AsyncClient(limits=limits, verify=tls) for _ in range(n_pools)]
        sdk = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key, max_retries=0, http_client=pools[0])
        return [_LeanClient(sdk, http) for http in pools]

    async def _run(self, requests: list[Request], on_result: OnResult) -> None:
        # ``concurrency`` workers share the requests, spread over the pools; each reports a result the moment
        # it has it
        clients = self._clients()
        sem = asyncio.Semaphore(self.concurrency)  # never waited on: the workers bound concurrency
        todo = iter(requests)

        async def worker(client) -> None:
            for req in todo:
                on_result(req, await self._one(client, req, sem))

        workers = [asyncio.ensure_future(worker(clients[w % len(clients)]))
                   for w in range(min(self.concurrency, len(requests)))]
        try:
            await asyncio.gather(*workers)
        finally:  # on an error or Ctrl-C, stop the in-flight calls; finished ones are already stored
            for t in workers:
                t.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            for c in clients:
                await c.close()

    def generate(self, requests: list[Request], on_result: OnResult) -> None:
        if not requests:
            return
        asyncio.run(self._run(requests, on_result))

    def close(self) -> None:
        pass


def from_spec(spec, ctx, *, concurrency: int, timeout: float, max_retries: int) -> OpenAIBackend:
    """The registry's factory (:mod:`cotbench.backends.registry`)."""
    return OpenAIBackend(spec.model_id, base_url=spec.base_url, api_key_env=spec.api_key_env,
                         concurrency=concurrency, timeout_s=timeout, max_retries=max_retries,
                         revision=spec.revision or "", allow_prefill=spec.prefill)
