"""A test double of the slice of vLLM's API that cotbench's vllm backend uses, written to accept and
reject what vLLM 0.33 accepts and rejects (tests/test_vllm_contract.py holds it against the real
package where that is installed):

* ``SamplingParams(**kw)``: the same fields' ranges, the same messages, ``VLLMValidationError`` (not a
  ValueError) for a bad value, TypeError for an unknown field; greedy (temperature 0) resets top_p,
  top_k and min_p as vLLM does;
* ``LLM(model, **engine_kw)``: TypeError for an unknown engine argument; ValueError when
  ``max_model_len`` exceeds the model's (``max_position_embeddings`` of a local config.json, else
  ``DERIVED_MAX_LEN``), when tensor x pipeline size exceeds the visible GPUs, and when the engines of
  this process ask for more than all of a GPU's memory;
* ``LLM.chat``: lengths of conversations and sampling params must match; both template flags at once,
  an empty batch and an over-long prompt raise ``VLLMValidationError`` for the whole call, with
  vLLM's messages, before anything is generated; outputs come back in input order; ``finish_reason``
  is ``"length"`` when ``max_tokens`` cut the answer, else ``"stop"``.

Answers echo the last message (``echo[<GPUs>]:<text>``); "tokens" are whitespace-separated words of
the rendered conversation. Faults are asked for in the text of the last message: ``<<abort:K>>`` /
``<<error:K>>`` finish that prompt with ``"abort"`` / ``"error"`` its first K times in a process
(K omitted: always); ``<<die>>`` ends a worker process (never the test process) without a word.
``FAKE_VLLM_LOG`` (a file path) gets one JSON line per engine start and per chat call, from every
process. It is NOT vLLM: tests/test_vllm_backend.py puts it on sys.path explicitly, and
tests/test_vllm_contract.py loads it under another name beside the real package.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from .exceptions import VLLMValidationError

__version__ = "0.33.0"
DERIVED_MAX_LEN = 4096
CALLS: list[dict] = []
ENGINE_ARGS = {  # the EngineArgs fields the backend may pass, and a few more
    "model", "revision", "tokenizer", "tokenizer_revision", "tensor_parallel_size", "pipeline_parallel_size",
    "data_parallel_size", "max_model_len", "gpu_memory_utilization", "dtype", "seed",
    "distributed_executor_backend", "trust_remote_code", "enforce_eager", "quantization", "max_num_seqs",
}
_LIVE: "weakref.WeakSet[LLM]" = weakref.WeakSet()
_SEEN: dict[str, int] = {}


def _log(event: dict) -> None:
    path = os.environ.get("FAKE_VLLM_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"pid": os.getpid(), **event}) + "\n")


@dataclass
class SamplingParams:
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    logit_bias: dict | None = None
    extra_args: dict | None = field(default=None)

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        elif self.stop is None:
            self.stop = []
        checks = [
            (-2.0 <= self.presence_penalty <= 2.0,
             f"presence_penalty must be in [-2, 2], got {self.presence_penalty}."),
            (-2.0 <= self.frequency_penalty <= 2.0,
             f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}."),
            (self.repetition_penalty > 0.0,
             f"repetition_penalty must be greater than zero, got {self.repetition_penalty}."),
            (math.isfinite(self.temperature), f"temperature must be a finite number, got {self.temperature}."),
            (self.temperature >= 0.0, f"temperature must be non-negative, got {self.temperature}."),
            (self.temperature <= 2.0, f"temperature must be in [0, 2], got {self.temperature}."),
            (0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}."),
            (self.top_k >= -1, f"top_k must be 0 (disable), or at least 1, got {self.top_k}."),
            (0.0 <= self.min_p <= 1.0, f"min_p must be in [0, 1], got {self.min_p}."),
            (self.max_tokens is None or self.max_tokens >= 1, f"max_tokens must be at least 1, got {self.max_tokens}."),
            (self.min_tokens >= 0, f"min_tokens must be greater than or equal to 0, got {self.min_tokens}."),
        ]
        for ok, message in checks:
            if not ok:
                raise VLLMValidationError(message)
        if self.seed == -1:
            self.seed = None
        if self.temperature < 1e-5:  # greedy: vLLM drops the other sampling knobs
            self.top_p, self.top_k, self.min_p = 1.0, 0, 0.0


def _derived_max_len(model: str) -> int:
    cfg = Path(model) / "config.json"
    if cfg.is_file():
        return int(json.loads(cfg.read_text()).get("max_position_embeddings", DERIVED_MAX_LEN))
    return DERIVED_MAX_LEN


def _fault(text: str, kind: str) -> bool:
    m = re.search(rf"<<{kind}(?::(\d+))?>>", text)
    if not m:
        return False
    if m.group(1) is None:
        return True
    key = f"{kind}:{text}"
    _SEEN[key] = _SEEN.get(key, 0) + 1
    return _SEEN[key] <= int(m.group(1))


class LLM:
    def __init__(self, model: str, **kw):
        unknown = sorted(set(kw) - ENGINE_ARGS)
        if unknown:
            raise TypeError(f"EngineArgs.__init__() got an unexpected keyword argument {unknown[0]!r}")
        self.kw = {"model": model, **kw}
        self.gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        derived = _derived_max_len(model)
        self.max_model_len = kw.get("max_model_len") or derived
        if self.max_model_len > derived:
            raise ValueError(f"User-specified max_model_len ({self.max_model_len}) is greater than the derived "
                             f"max_model_len (max_position_embeddings={derived}) in model's config.json")
        world = kw.get("tensor_parallel_size", 1) * kw.get("pipeline_parallel_size", 1)
        visible = [g for g in self.gpus.split(",") if g]
        if kw.get("distributed_executor_backend") != "ray" and "CUDA_VISIBLE_DEVICES" in os.environ \
                and len(visible) < world:
            raise ValueError(f"World size ({world}) is larger than the number of available GPUs ({len(visible)}) "
                             "in this node.")
        self.util = kw.get("gpu_memory_utilization", 0.92)
        if not 0 < self.util <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.util}")
        held = sum(e.util for e in _LIVE if e.gpus == self.gpus)
        if held + self.util > 1.0 + 1e-9:
            raise ValueError(f"Free memory on device cuda:0 ({1 - held:.2f} of 1) on startup is less than desired "
                             f"GPU memory utilization ({self.util}). Decrease GPU memory utilization or reduce "
                             "GPU memory used by other processes.")
        _LIVE.add(self)
        self._next_id = 0
        _log({"event": "start", "kw": self.kw, "gpus": self.gpus})

    @staticmethod
    def _prompt_len(msgs: list[dict], add_generation_prompt: bool) -> int:
        return sum(len(m["content"].split()) + 2 for m in msgs) + (1 if add_generation_prompt else 0)

    def chat(self, messages, sampling_params=None, use_tqdm=True, lora_request=None, priority=None,
             chat_template=None, chat_template_content_format="auto", add_generation_prompt=True,
             continue_final_message=False, tools=None, chat_template_kwargs=None, tokenization_kwargs=None,
             mm_processor_kwargs=None):
        convs = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        if sampling_params is None:
            sampling_params = SamplingParams()
        params = sampling_params if isinstance(sampling_params, (list, tuple)) else [sampling_params] * len(convs)
        if len(params) != len(convs):
            raise VLLMValidationError(f"The lengths of prompts ({len(convs)}) and params ({len(params)}) "
                                      "must be the same.")
        if not convs:
            raise VLLMValidationError("You must pass at least one prompt", parameter="prompt")
        if add_generation_prompt and continue_final_message:
            raise VLLMValidationError("continue_final_message and add_generation_prompt are not compatible.")
        CALLS.append({"n": len(convs), "template_kw": {k: v for k, v in (
            ("add_generation_prompt", add_generation_prompt), ("continue_final_message", continue_final_message))
            if (k, v) != ("add_generation_prompt", True) and (k, v) != ("continue_final_message", False)},
            "gpus": self.gpus, "params": list(params)})
        _log({"event": "chat", "n": len(convs)})
        for msgs in convs:  # validated before anything runs, as vLLM adds then aborts
            n = self._prompt_len(msgs, add_generation_prompt)
            if n > self.max_model_len:
                raise VLLMValidationError(f"The decoder prompt (length {n}) is longer than the maximum model "
                                          f"length of {self.max_model_len}. Make sure that `max_model_len` is "
                                          "no smaller than the number of text tokens.")
            if n == self.max_model_len:
                raise VLLMValidationError(f"The decoder prompt (length {n}) plus the number of requested output "
                                          "tokens (at least 1) is longer than the maximum model length of "
                                          f"{self.max_model_len}.")
        outs = []
        for msgs, sp in zip(convs, params):
            last = msgs[-1]["content"]
            if "<<die>>" in last and multiprocessing.parent_process() is not None:
                os._exit(9)
            words = f"echo[{self.gpus}]:{last}".split()
            limit = sp.max_tokens or self.max_model_len
            finish = "length" if len(words) > limit else "stop"
            words = words[:limit]
            if _fault(last, "abort"):
                finish, words = "abort", []
            elif _fault(last, "error"):
                finish, words = "error", []
            self._next_id += 1
            outs.append(SimpleNamespace(
                request_id=str(self._next_id), finished=True,
                prompt_token_ids=list(range(self._prompt_len(msgs, add_generation_prompt))),
                outputs=[SimpleNamespace(index=0, text=" ".join(words), token_ids=list(range(len(words))),
                                         finish_reason=finish)]))
        return outs
