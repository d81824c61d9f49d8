"""Continuous batching for llama.cpp in process: many requests decoded together in one context.

Each request gets its own sequence (KV stream) in one llama.cpp context: its prompt is prefilled alone,
then every decode step is one ``llama_batch`` holding the next token of every live sequence; a finished
sequence is reported at once and its slot goes to the next waiting request.

A request's output must not depend on what else is in the batch, and it must be the text that
``Llama.create_chat_completion`` (the server's path) gives for it. Both hold by construction, and the
tests check them:

* the KV cache is not unified (``kv_unified=False``): each sequence has its own stream and attends to
  its own cells only, starting at cell 0 whenever its slot is reused, as a fresh ``Llama`` context does;
* a decode step's matrix products must not change with the rows beside a sequence. llama.cpp's CPU
  build has batched kernels (llamafile sgemm) for F32, F16, BF16, Q8_0, Q4_0, Q5_0 and IQ4_NL weights,
  used from two rows up, and they round differently from the one-row kernel; and llama.cpp splits a
  step into one micro-batch per run of adjacent KV streams (sequences 0, 1 and 3 become {0, 1} and
  {3}), so whether a sequence gets one row or several depends on which other slots are busy. The
  engine measures once per model whether one row and several differ (:meth:`BatchedEngine.row_mode`);
  where they do, a sequence with no busy neighbouring stream gets a throw-away row in a free
  neighbouring stream, so every sequence is always computed in a run of at least two; where several
  rows of different counts differ too, it decodes one sequence at a time. The embedded Q4_1 file needs
  neither (its logits are bitwise the same for 1, 2, 3 and 5 rows);
* the prompt is prefilled in the same chunks as ``Llama.eval`` (``n_batch = min(n_ctx, 512)``), with
  logits for the last token of each chunk only;
* the context settings are ``Llama``'s, flash attention included (off); llama.cpp's own default turns
  it on, and that alone changes greedy texts (see bench/README.md);
* prompt rendering (the GGUF's chat template through llama-cpp-python's formatter, ``special=True``
  tokenization, the template's end token added to the stop strings), the sampler chain (penalties, then
  greedy at temperature 0, else top-k 40, typical 1, top-p, min-p 0.05, temperature, seeded draw), the
  stop/length bookkeeping and the token counts follow ``Llama.create_chat_completion`` step for step.

The one exception to the second property: with weights whose one-row kernel differs (an F16 file, say),
``create_chat_completion`` decodes with the one-row kernel and the engine, padding, with the batched one,
so texts can differ between the two; the engine's do not depend on the batch, which a store keyed by
request needs.
"""
from __future__ import annotations

import ctypes
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field

from cotbench.backends.base import BackendError, OnResult
from cotbench.records import Request, Response

PREFILL_CHUNK = 512  # Llama's default n_batch / n_ubatch
KV_PAD = 256  # llama.cpp pads each stream's size to this
KV_SLACK = 8  # tokens past max_tokens that an unfinished multi-byte character may add (see TextTracker)
# create_chat_completion's sampling defaults that cotbench does not set per request
TOP_K, MIN_P, TYPICAL_P, REPEAT_PENALTY, PENALTY_LAST_N = 40, 0.05, 1.0, 1.0, 64
# chat formats llama-cpp-python substitutes for a GGUF template it recognises (guess_chat_format_from_gguf_metadata)
NAMED_FORMATS = {"chatml": "format_chatml", "mistral-instruct": "format_mistral_instruct",
                 "llama-3": "format_llama3", "llama-2": "format_llama2"}


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: ``taskset``, cgroup cpusets), not the machine's
    count: llama.cpp threads beyond them only wait at every barrier for a core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


# llama_ftype values of the types :func:`convert_weights` writes
FTYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7}


def convert_weights(src: str, kind: str, dest: str) -> str:
    """A copy of GGUF file ``src`` with its weights converted to ``kind`` (a key of FTYPES), written to
    ``dest`` by llama.cpp's own quantizer (requantizing or dequantizing as needed); returns ``dest``."""
    import llama_cpp

    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype, p.allow_requantize, p.nthread = FTYPES[kind], True, usable_cpus()
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dest).encode(), p) != 0:
        raise BackendError(f"llama.cpp could not convert {src} to {kind}")
    return str(dest)


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


class TextTracker:
    """``Llama._create_completion``'s per-token bookkeeping (non-streaming), one token at a time.

    End-of-generation token: finish "stop", the token is not counted. Otherwise the token is counted,
    and the text so far is checked: while its last bytes are an unfinished UTF-8 character the checks are
    skipped (so a few tokens past ``max_tokens`` are possible, as in llama-cpp-python); then the first
    listed stop string found cuts the text there (finish "stop"); then ``max_tokens`` ends it ("length").
    """

    def __init__(self, stop: list[bytes], max_tokens: int, bos: int):
        self.stop, self.max_tokens, self.bos = stop, max_tokens, bos
        self.tokens: list[int] = []
        self._raw = bytearray()
        self._multibyte_fix = 0
        self.text: bytes | None = None
        self.finish_reason: str | None = None

    def _all_text(self) -> bytes:
        raw = bytes(self._raw)  # detokenize() drops a leading space after a leading BOS
        return raw[1:] if self.tokens and self.tokens[0] == self.bos and raw[:1] == b" " else raw

    def _finish(self, text: bytes, reason: str) -> bool:
        self.text, self.finish_reason = text, reason
        return True

    def push(self, token: int, piece: bytes, is_eog: bool) -> bool:
        """Add one sampled token; True when the completion is finished."""
        if is_eog:
            return self._finish(self._all_text(), "stop")
        self.tokens.append(token)
        self._raw += piece
        text = self._all_text()
        for k, char in enumerate(text[-3:]):
            k = 3 - k
            for num, pattern in ((2, 192), (3, 224), (4, 240)):
                if num > k and pattern & char == pattern:
                    self._multibyte_fix = num - k
        if self._multibyte_fix > 0:
            self._multibyte_fix -= 1
            return False
        hits = [s for s in self.stop if s in text]
        if hits:
            return self._finish(text[: text.index(hits[0])], "stop")
        if len(self.tokens) >= self.max_tokens:
            return self._finish(text, "length")
        return False


@dataclass
class _Job:
    req: Request
    prompt: list[int]
    tracker: TextTracker
    sampler: object = None
    t0: float = 0.0
    n_past: int = 0
    last: int = 0
    seq: int = -1


@dataclass
class _Context:
    ctx: object
    n_seq: int
    cells: int  # per sequence
    batch: object
    batch_cap: int
    mem: object = field(default=None)


class BatchedEngine:
    """One GGUF model; ``run`` generates a list of requests with up to ``batch_size`` sequences at a time."""

    def __init__(self, model_path: str, n_ctx: int = 4096, n_threads: int | None = None, verbose: bool = False):
        import llama_cpp

        self._lib = llama_cpp
        logging.getLogger("llama-cpp-python").setLevel(logging.DEBUG if verbose else logging.ERROR)
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0
        # plain CPU buffers, as the per-request path and the server use (see llamacpp.disable_extra_buffer_types)
        params.use_extra_bufts = os.environ.get("COTBENCH_LLAMA_EXTRA_BUFTS") == "1"
        self._model = llama_cpp.llama_model_load_from_file(str(model_path).encode("utf-8"), params)
        if not self._model:
            raise BackendError(f"llama.cpp could not load the model file {model_path}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_ctx = _pad(n_ctx, KV_PAD)  # what Llama's context ends up with (llama_n_ctx), used for its checks
        self.n_threads = n_threads or usable_cpus()
        self.prefill_chunk = min(n_ctx, PREFILL_CHUNK)  # Llama: n_batch = min(n_ctx as asked, 512)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.bos = llama_cpp.llama_vocab_bos(self._vocab)
        self.eos = llama_cpp.llama_vocab_eos(self._vocab)
        self._formatter = self._chat_formatter()
        self._pieces: dict[int, bytes] = {}
        self._cx: _Context | None = None
        self._row_mode: str | None = None

    # ---- prompt rendering, as create_chat_completion does it ------------------------------------------

    def _meta(self, key: str) -> str | None:
        size = 4096
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self._lib.llama_model_meta_val_str(self._model, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8")
            size = n + 1

    def _token_text(self, token: int) -> str:
        return self._lib.llama_vocab_get_text(self._vocab, token).decode("utf-8") if token != -1 else ""

    def _chat_formatter(self):
        """The formatter ``Llama`` picks with no chat_format given: the GGUF template, or the named format
        llama-cpp-python substitutes for it, or llama-2 when the file has no template."""
        from llama_cpp import llama_chat_format as lcf

        template = self._meta("tokenizer.chat_template")
        if template is None:
            return getattr(lcf, NAMED_FORMATS["llama-2"])
        guessed = lcf.guess_chat_format_from_gguf_metadata({"tokenizer.chat_template": template})
        if guessed is not None:
            return getattr(lcf, NAMED_FORMATS[guessed])
        return lcf.Jinja2ChatFormatter(template=template, eos_token=self._token_text(self.eos),
                                       bos_token=self._token_text(self.bos), stop_token_ids=[self.eos])

    def tokenize(self, text: bytes, add_bos: bool, special: bool) -> list[int]:
        n_max = len(text) + 8
        while True:
            buf = (self._lib.llama_token * n_max)()
            n = self._lib.llama_tokenize(self._vocab, text, len(text), buf, n_max, add_bos, special)
            if n >= 0:
                return list(buf[:n])
            n_max = -n

    def piece(self, token: int) -> bytes:
        p = self._pieces.get(token)
        if p is None:
            buf = ctypes.create_string_buffer(64)
            n = self._lib.llama_token_to_piece(self._vocab, token, buf, 64, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = self._lib.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
            p = self._pieces[token] = buf.raw[:n]
        return p

    def prepare(self, req: Request) -> tuple[list[int], TextTracker] | None:
        """Prompt tokens and the completion tracker of a request; None when the prompt does not fit n_ctx."""
        p = req.params
        result = self._formatter(messages=[dict(m) for m in req.messages])
        prompt = self.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
        if len(prompt) >= self.n_ctx:
            return None
        rstop = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
        stop = [s.encode("utf-8") for s in [*p.stop, *rstop]]
        max_tokens = p.max_tokens if p.max_tokens and p.max_tokens > 0 else self.n_ctx - len(prompt)
        max_tokens = min(max_tokens, self.n_ctx - len(prompt))
        return prompt, TextTracker(stop, max_tokens, self.bos)

    # ---- sampling ---------------------------------------------------------------------------------------

    def _sampler(self, req: Request):
        """``Llama._init_sampler`` for the parameters cotbench sets; seeded per request."""
        lib, p = self._lib, req.params
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        add = lambda s: lib.llama_sampler_chain_add(chain, s)  # noqa: E731
        # the binding's signature, called as Llama does (a no-op at these neutral values)
        add(lib.llama_sampler_init_penalties(self.n_vocab, PENALTY_LAST_N, REPEAT_PENALTY, 0.0, 0.0))
        seed = (p.seed + req.sample_index) & 0xFFFFFFFF
        if p.temperature < 0:
            add(lib.llama_sampler_init_dist(seed))
        elif p.temperature == 0:
            add(lib.llama_sampler_init_greedy())
        else:
            add(lib.llama_sampler_init_top_k(TOP_K))
            add(lib.llama_sampler_init_typical(TYPICAL_P, 1))
            add(lib.llama_sampler_init_top_p(p.top_p, 1))
            add(lib.llama_sampler_init_min_p(MIN_P, 1))
            add(lib.llama_sampler_init_temp(p.temperature))
            add(lib.llama_sampler_init_dist(seed))
        return chain

    # ---- the context ------------------------------------------------------------------------------------

    def _context(self, n_seq: int, cells: int) -> _Context:
        """A context with ``n_seq`` separate KV streams of ``cells`` cells each (reused when big enough)."""
        lib, cx = self._lib, self._cx
        if cx is not None and cx.n_seq >= n_seq and cx.cells >= cells:
            lib.llama_memory_clear(cx.mem, True)
            return cx
        self._free_context()
        cp = lib.llama_context_default_params()
        cp.n_ctx = n_seq * cells
        cp.n_seq_max = n_seq
        cp.kv_unified = False  # one stream per sequence: attention never sees another request's cells
        cp.n_batch = max(self.prefill_chunk, n_seq)
        cp.n_ubatch = cp.n_batch
        cp.n_threads = cp.n_threads_batch = self.n_threads
        # Llama's settings where llama.cpp's defaults differ
        cp.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cp.yarn_beta_fast, cp.yarn_beta_slow, cp.yarn_ext_factor, cp.yarn_attn_factor = 32.0, 1.0, -1.0, 1.0
        ctx = lib.llama_init_from_model(self._model, cp)
        if not ctx:
            raise BackendError(f"llama.cpp could not create a context for {n_seq} sequences x {cells} tokens")
        if lib.llama_n_ctx_seq(ctx) < cells:
            lib.llama_free(ctx)
            raise BackendError("llama.cpp gave each sequence fewer KV cells than asked for")
        cap = cp.n_batch
        self._cx = _Context(ctx, n_seq, cells, lib.llama_batch_init(cap, 0, 1), cap, lib.llama_get_memory(ctx))
        return self._cx

    def row_mode(self) -> str:
        """How decode steps keep a sequence's logits independent of the other rows in the step.

        Measured once per model, bitwise, on one sequence's next-token logits with 1, 2, 3 and 5 rows in the
        step: ``"any"`` when all four agree (no padding needed), ``"pad"`` when only the one-row step differs
        (a lone sequence gets a throw-away neighbour, :meth:`step_rows`), ``"single"`` when several-row steps
        differ among themselves too (sequences are then decoded one at a time: batching would change
        outputs). Costs one short prompt's prefill in five streams.
        """
        if self._row_mode is not None:
            return self._row_mode
        import numpy as np

        lib = self._lib
        prompt = self.tokenize(b"The quick brown fox jumps over the lazy dog. Then", add_bos=True, special=False)
        n = len(prompt)
        cx = self._context(5, _pad(n + 2, KV_PAD))
        try:
            for s in range(5):  # every stream holds the same prompt, each prefilled alone
                self._decode(cx, [(t, i, s, False) for i, t in enumerate(prompt)])
            found = []
            for rows in (1, 2, 3, 5):
                self._decode(cx, [(prompt[-1 - s], n, s, True) for s in range(rows)])
                ptr = lib.llama_get_logits_ith(cx.ctx, 0)
                found.append(np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)),
                                                   shape=(self.n_vocab,)).copy())
                for s in range(rows):
                    lib.llama_memory_seq_rm(cx.mem, s, n, -1)
        finally:
            lib.llama_memory_clear(cx.mem, True)
        several_agree = all(np.array_equal(found[1], f) for f in found[2:])
        self._row_mode = ("single" if not several_agree else
                          "any" if np.array_equal(found[0], found[1]) else "pad")
        if self._row_mode == "single":
            logging.getLogger(__name__).warning(
                "llama.cpp's results for this model change with the number of rows in a decode step: "
                "decoding one sequence at a time so that outputs do not depend on the batch")
        return self._row_mode

    @staticmethod
    def step_rows(n_streams: int, live: list[tuple[int, int, int]], pad: bool) -> list[tuple[int, int, int, bool]]:
        """The rows of one decode step, in stream order: each live (token, position, stream) wants logits;
        with ``pad``, every live stream with no busy stream beside it gets a throw-away row (the same token
        at position 0) in a free neighbouring stream, so no sequence is ever a run of one (see the module
        docstring). The caller finds its logits by stream and empties the throw-away streams after."""
        rows = {seq: (tok, pos, seq, True) for tok, pos, seq in live}
        if pad:
            for seq in sorted(rows):
                if seq - 1 in rows or seq + 1 in rows:
                    continue
                beside = seq + 1 if seq + 1 < n_streams else seq - 1
                if beside < 0:
                    raise BackendError("a padded decode step needs at least two KV streams")
                rows[beside] = (rows[seq][0], 0, beside, True)
        return [rows[seq] for seq in sorted(rows)]

    def _free_context(self) -> None:
        cx, self._cx = self._cx, None
        if cx is not None:
            self._lib.llama_batch_free(cx.batch)
            self._lib.llama_free(cx.ctx)

    def _decode(self, cx: _Context, rows: list[tuple[int, int, int, bool]]) -> None:
        """One llama_decode over (token, position, sequence, wants logits) rows."""
        b = cx.batch
        for i, (tok, pos, seq, logits) in enumerate(rows):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = logits
        b.n_tokens = len(rows)
        rc = self._lib.llama_decode(cx.ctx, b)
        if rc != 0:
            raise BackendError(f"llama_decode failed with code {rc}")

    # ---- generation ---------------------------------------------------------------------------------------

    def run(self, requests: list[Request], on_result: OnResult, batch_size: int) -> None:
        """Generate every request, up to ``batch_size`` at a time; report each one as soon as it ends."""
        lib = self._lib
        queue: deque[_Job] = deque()
        for req in requests:
            t0 = time.perf_counter()
            prep = self.prepare(req)
            if prep is None:  # as the per-request path records it
                on_result(req, Response(text="", tokens_in=None, tokens_out=0, finish_reason="context_overflow",
                                        latency_s=time.perf_counter() - t0))
                continue
            queue.append(_Job(req, *prep))
        if not queue:
            return
        mode = self.row_mode()
        if mode == "single":
            batch_size = 1
        slots = min(batch_size, len(queue))
        need = max(len(j.prompt) + j.tracker.max_tokens for j in queue) + KV_SLACK
        # with padding, one stream more, so that a lone sequence always has a free neighbouring stream
        cx = self._context(slots + (mode == "pad"), min(_pad(need, KV_PAD), self.n_ctx))
        live: dict[int, _Job] = {}
        free = list(range(slots))[::-1]

        def finish(job: _Job) -> None:
            lib.llama_memory_seq_rm(cx.mem, job.seq, -1, -1)  # the slot starts at cell 0 again
            lib.llama_sampler_free(job.sampler)
            job.sampler = None
            live.pop(job.seq, None)
            free.append(job.seq)
            t = job.tracker
            on_result(job.req, Response(text=t.text.decode("utf-8", errors="ignore"), tokens_in=len(job.prompt),
                                        tokens_out=len(t.tokens), finish_reason=t.finish_reason,
                                        latency_s=time.perf_counter() - job.t0))

        def accept(job: _Job, idx: int) -> bool:
            tok = lib.llama_sampler_sample(job.sampler, cx.ctx, idx)
            job.last = tok
            return job.tracker.push(tok, self.piece(tok), lib.llama_vocab_is_eog(self._vocab, tok))

        try:
            while queue or live:
                while queue and free:
                    job = queue.popleft()
                    job.seq, job.t0, job.sampler = free.pop(), time.perf_counter(), self._sampler(job.req)
                    live[job.seq] = job
                    for start in range(0, len(job.prompt), self.prefill_chunk):
                        chunk = job.prompt[start:start + self.prefill_chunk]
                        last = len(chunk) - 1
                        self._decode(cx, [(tok, start + i, job.seq, i == last) for i, tok in enumerate(chunk)])
                    job.n_past = len(job.prompt)
                    if accept(job, len(chunk) - 1):
                        finish(job)
                if not live:
                    continue
                jobs = list(live.values())
                if any(j.n_past >= cx.cells for j in jobs):  # KV stream full (only past max_tokens, see KV_SLACK)
                    for j in [j for j in jobs if j.n_past >= cx.cells]:
                        j.tracker._finish(j.tracker._all_text(), "length")
                        finish(j)
                    continue
                rows = self.step_rows(cx.n_seq, [(j.last, j.n_past, j.seq) for j in jobs], mode == "pad")
                self._decode(cx, rows)
                index = {seq: i for i, (_, _, seq, _) in enumerate(rows)}
                for _, _, seq, _ in rows:
                    if seq not in live:  # a throw-away row's stream is empty again
                        lib.llama_memory_seq_rm(cx.mem, seq, -1, -1)
                for j in jobs:
                    j.n_past += 1
                    if accept(j, index[j.seq]):
                        finish(j)
        finally:
            for j in list(live.values()):
                if j.sampler is not None:
                    lib.llama_sampler_free(j.sampler)
            lib.llama_memory_clear(cx.mem, True)

    def close(self) -> None:
        self._free_context()
        model, self._model = getattr(self, "_model", None), None
        if model:
            self._lib.llama_model_free(model)
