"""In-process Hugging Face ``transformers`` model (optional extra ``[heads]``): any HF model directory
or GGUF file, on the CPU by default and a GPU when one is present.

It exists for looking *inside* the model: it loads with eager attention (so attention weights can be
read) and can run with per-head interventions (:mod:`cotbench.heads.intervene`: knockout, LoFiT
offsets). An intervention is part of what determines an output, so its fingerprint is appended to the
backend's ``revision`` (and its label to ``model_id``): both go into every request key.

Requests run one at a time, each from an empty cache, so an output depends on its request alone.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from cotbench.backends.base import BackendError, BackendStats, OnResult
from cotbench.backends.threads import openmp_wait_defaults
from cotbench.records import Request, Response, hash_file

# torch's OpenMP threads spin while idle by default; on a small shared machine that made calls ~10x
# slower (measured here: 10 new tokens in 20 s spinning, 1.6 s passive). Set before torch loads.
openmp_wait_defaults()

INSTALL_HINT = ("the transformers backend needs the optional extra: pip install torch==2.13.0 "
                "'cotbench[heads]' (torch 2.13.0 is a CPU build here; any torch >= 2.1 works)")


def require_torch_transformers():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise BackendError(INSTALL_HINT) from e


def model_digest(path: str | Path) -> str:
    """sha256 (16 hex) of a GGUF file, or of a model directory's weight and config files."""
    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and (
        f.suffix in (".safetensors", ".bin", ".json", ".model", ".gguf", ".txt")))
    for f in files:
        h.update(f.name.encode())
        hash_file(f, h)
    return h.hexdigest()[:16]


def load_model(path: str | Path, device: str | None = None, dtype: str | None = None):
    """(model, tokenizer) with eager attention; GGUF files are dequantised by transformers (``gguf``)."""
    require_torch_transformers()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(path)
    if not p.exists():
        raise BackendError(f"model not found: {p} (an HF model directory or a .gguf file)")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = getattr(torch, dtype) if dtype else (torch.float32 if device == "cpu" else torch.bfloat16)
    kw: dict[str, Any] = {}
    src = str(p)
    if p.is_file():
        if p.suffix != ".gguf":
            raise BackendError(f"{p}: a model file must be .gguf (or pass an HF model directory)")
        src, kw["gguf_file"] = str(p.parent), p.name
        try:
            import gguf  # noqa: F401
        except ImportError as e:
            raise BackendError("loading a .gguf through transformers needs the package gguf: "
                               "pip install 'cotbench[heads]'") from e
    tok = AutoTokenizer.from_pretrained(src, **kw)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch_dtype, attn_implementation="eager", **kw)
    model.to(device).eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


def prompt_text(tok, messages, prefill: str | None = None) -> str:
    """The chat-template text for ``messages`` plus an assistant prefix, as the model was trained to see."""
    text = tok.apply_chat_template([dict(m) for m in messages], tokenize=False, add_generation_prompt=True)
    return text + (prefill or "")


def prompt_ids(tok, messages, prefill: str | None = None) -> list[int]:
    return tok(prompt_text(tok, messages, prefill), add_special_tokens=False)["input_ids"]


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Text before the first stop string (excluded, as OpenAI-style APIs do) and whether one was hit."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[:min(hits)], True) if hits else (text, False)


class TransformersBackend:
    name = "transformers"

    def __init__(self, model_path: str, model_id: str | None = None, intervention: str | None = None,
                 device: str | None = None, dtype: str | None = None, n_threads: int | None = None,
                 loaded: tuple[Any, Any] | None = None):
        """``loaded``: an already loaded (model, tokenizer) of ``model_path``, shared between backends
        that differ only in their intervention (tests, the heads commands)."""
        require_torch_transformers()
        import torch

        from cotbench.heads.intervene import model_shape, resolve

        if n_threads:
            torch.set_num_threads(n_threads)
        t0 = time.perf_counter()
        self.model_path = str(model_path)
        self.model, self.tok = loaded or load_model(model_path, device, dtype)
        self.load_s = time.perf_counter() - t0
        self.device = str(next(self.model.parameters()).device)
        self.dtype = str(self.model.dtype)  # describe() is also called after close()
        self.intervention = resolve(intervention, *model_shape(self.model))
        base_id = model_id or Path(model_path).name
        fp = self.intervention.fingerprint()
        self.model_id = f"{base_id}+{self.intervention.label}" if fp else base_id
        self.base_revision = model_digest(model_path)
        self.revision = f"{self.base_revision}+iv-{fp}" if fp else self.base_revision
        self.stats = BackendStats()
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)

    def describe(self) -> dict:
        import torch
        import transformers

        return {"backend": self.name, "model_path": self.model_path, "model_sha256_16": self.base_revision,
                "device": self.device, "dtype": self.dtype, "load_s": round(self.load_s, 2),
                "torch": torch.__version__, "transformers": transformers.__version__,
                "intervention": self.intervention.describe() if not self.intervention.empty else None}

    def complete(self, req: Request) -> Response:
        import torch

        from cotbench.heads.intervene import applied

        p = req.params
        t0 = time.perf_counter()
        ids = prompt_ids(self.tok, req.messages, req.prefill)
        self.stats.calls += 1
        if self.max_positions and len(ids) + p.max_tokens > self.max_positions:
            return Response(text="", tokens_in=len(ids), tokens_out=0, finish_reason="context_overflow",
                            latency_s=time.perf_counter() - t0)
        sample = p.temperature > 0
        kw: dict[str, Any] = {"max_new_tokens": p.max_tokens, "do_sample": sample,
                              "pad_token_id": self.tok.pad_token_id}
        if sample:
            torch.manual_seed(p.seed + req.sample_index)
            kw.update(temperature=p.temperature, top_p=p.top_p, top_k=0)
        else:
            kw.update(temperature=None, top_p=None, top_k=None)
        if p.stop:
            kw.update(stop_strings=list(p.stop), tokenizer=self.tok)
        x = torch.tensor([ids], device=self.model.device)
        with torch.inference_mode(), applied(self.model, self.intervention):
            out = self.model.generate(x, attention_mask=torch.ones_like(x), **kw)
        new = out[0, len(ids):].tolist()
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos]) | {self.tok.eos_token_id}
        hit_eos = bool(new) and new[-1] in eos
        text = self.tok.decode(new, skip_special_tokens=True)
        text, hit_stop = cut_at_stop(text, tuple(p.stop))
        finish = "stop" if (hit_eos or hit_stop) else "length"
        return Response(text=text, tokens_in=len(ids), tokens_out=len(new), finish_reason=finish,
                        latency_s=time.perf_counter() - t0)

    def generate(self, requests: list[Request], on_result: OnResult) -> None:
        for req in requests:
            on_result(req, self.complete(req))

    def close(self) -> None:
        self.model = None


def from_spec(spec, ctx, *, dtype: str, device: str | None, n_threads: int | None) -> TransformersBackend:
    """The registry's factory (:mod:`cotbench.backends.registry`)."""
    from cotbench.pipeline.model_registry import key_name, model_path

    return TransformersBackend(model_path(spec), model_id=key_name(spec), intervention=ctx.intervention,
                               device=device, dtype=None if dtype == "auto" else dtype, n_threads=n_threads)
