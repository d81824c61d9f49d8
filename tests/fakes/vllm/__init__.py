"""A test double of the small slice of vLLM's API that cotbench's vllm backend uses
(``LLM(**kw).chat(list_of_messages, sampling_params=[...], use_tqdm=False, **template_kw)``,
``SamplingParams``). It answers deterministically from the prompt, so the backend's batching,
chunking, prefill grouping and data-parallel orchestration can be tested without a GPU.
It is NOT vLLM: tests put it on sys.path explicitly, and only in tests/test_vllm_backend.py."""
from __future__ import annotations

import os
from dataclasses import dataclass
from types import SimpleNamespace

CALLS: list[dict] = []


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list | None = None
    seed: int | None = None


class LLM:
    def __init__(self, **kw):
        self.kw = kw
        self.gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")

    def chat(self, messages, sampling_params, use_tqdm=True, **template_kw):
        CALLS.append({"n": len(messages), "template_kw": template_kw, "gpus": self.gpus})
        outs = []
        for msgs, sp in zip(messages, sampling_params):
            last = msgs[-1]["content"]
            text = f"echo[{self.gpus}]:{last}"[: sp.max_tokens * 4]
            outs.append(SimpleNamespace(prompt_token_ids=list(range(len(last.split()))),
                                        outputs=[SimpleNamespace(text=text, token_ids=list(range(len(text.split()))),
                                                                 finish_reason="stop")]))
        return outs
