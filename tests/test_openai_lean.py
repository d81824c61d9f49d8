"""The openai backend's lean transport sends what the SDK's ``chat.completions.create`` sends and fails the
way it fails (same exception types, messages and bodies), so retries and error handling are unchanged."""
from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from cotbench.backends.openai_api import OpenAIBackend, _LeanClient
from cotbench.records import GenParams, Request

URL = "http://127.0.0.1:9/v1"
OK = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
      "choices": [{"index": 0, "finish_reason": "stop",
                   "message": {"role": "assistant", "content": "The answer is 4."}}],
      "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}
CALLS = [
    dict(model="m", messages=[{"role": "user", "content": "2+2?"}], max_tokens=16, temperature=0.0, top_p=1.0,
         stop=None, seed=0, timeout=5.0),
    dict(model="m", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "héllo"}],
         max_tokens=8, temperature=0.7, top_p=0.9, stop=["\n\n", "Question:"], seed=3, timeout=5.0,
         extra_body={"repeat_penalty": 1.0, "top_k": 40}),
]


def sdk_and_lean(handler):
    """An SDK client and a lean client over the same mock transport."""
    sdk = openai.AsyncOpenAI(base_url=URL, api_key="sk-test", max_retries=0,
                             http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    lean = _LeanClient(sdk, httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    return sdk, lean


def capture(status=200, payload=OK):
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=payload)

    return seen, handler


@pytest.mark.parametrize("call", CALLS)
def test_same_request_as_the_sdk(call):
    seen, handler = capture()
    sdk, lean = sdk_and_lean(handler)

    async def both():
        a = await sdk.chat.completions.create(**call)
        b = await lean.chat.completions.create(**call)
        return a, b

    a, b = asyncio.run(both())
    via_sdk, via_lean = seen
    assert via_lean.method == via_sdk.method == "POST" and via_lean.url == via_sdk.url
    assert json.loads(via_lean.content) == json.loads(via_sdk.content)
    for h in ("authorization", "content-type", "accept", "user-agent"):
        assert via_lean.headers[h] == via_sdk.headers[h]
    assert via_lean.extensions["timeout"] == via_sdk.extensions["timeout"]
    assert b.choices[0].message.content == a.choices[0].message.content and b.choices[0].finish_reason == "stop"
    assert (b.usage.prompt_tokens, b.usage.completion_tokens) == (a.usage.prompt_tokens, a.usage.completion_tokens)


@pytest.mark.parametrize("status,payload,kind", [
    (400, {"error": {"message": "This model's maximum context length is 2048 tokens", "type": "invalid_request_error",
                     "code": "context_length_exceeded"}}, openai.BadRequestError),
    (429, {"error": {"message": "slow down"}}, openai.RateLimitError),
    (503, "upstream unavailable", openai.InternalServerError),
    (404, {"detail": "no such route"}, openai.NotFoundError),
])
def test_same_http_errors_as_the_sdk(status, payload, kind):
    _, handler = capture(status, payload)
    sdk, lean = sdk_and_lean(handler)
    errors = []
    for client in (sdk, lean):
        with pytest.raises(kind) as e:
            asyncio.run(client.chat.completions.create(**CALLS[0]))
        errors.append(e.value)
    a, b = errors
    assert (type(b), b.status_code, b.message, b.body, b.code) == (type(a), a.status_code, a.message, a.body, a.code)


@pytest.mark.parametrize("exc,kind", [(httpx.ReadTimeout("slow"), openai.APITimeoutError),
                                      (httpx.ConnectError("refused"), openai.APIConnectionError),
                                      (httpx.RemoteProtocolError("dropped"), openai.APIConnectionError)])
def test_same_transport_errors_as_the_sdk(exc, kind):
    def handler(request):
        raise exc

    for client in sdk_and_lean(handler):
        with pytest.raises(kind) as e:
            asyncio.run(client.chat.completions.create(**CALLS[0]))
        assert type(e.value) is kind


def test_pools_share_the_concurrency_and_every_result_is_reported(monkeypatch):
    backend = OpenAIBackend("m", base_url=URL, api_key_env=None, concurrency=20)
    clients = backend._clients()
    pools = [c._http for c in clients]
    assert len(pools) == 3 and all(p._transport._pool._max_connections == 7 for p in pools)
    assert len({id(c.chat.completions._sdk) for c in clients}) == 1  # one SDK client for URL, headers, errors

    in_flight, peak = 0, 0

    async def handler(request):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001)
        in_flight -= 1
        return httpx.Response(200, json=OK)

    class Mocked(httpx.AsyncClient):
        def __init__(self, **kw):
            super().__init__(transport=httpx.MockTransport(handler))

    monkeypatch.setattr(httpx, "AsyncClient", Mocked)
    reqs = [Request(model="m", model_revision="", backend="openai", messages=({"role": "user", "content": str(i)},),
                    params=GenParams(max_tokens=4)) for i in range(50)]
    got = []
    backend.generate(reqs, lambda r, resp: got.append((r, resp)))
    assert sorted(id(r) for r, _ in got) == sorted(id(r) for r in reqs)
    assert all(resp.text == "The answer is 4." and resp.tokens_out == 5 for _, resp in got)
    assert 1 < peak <= 20 and backend.stats.calls == 50
