"""Continuous batching in process: a request's output does not depend on its batch, and it is the text
llama-cpp-python's ``create_chat_completion`` (llama_cpp.server's path) gives for it."""
from __future__ import annotations

import pytest

from cotbench.backends.llamacpp_engine import TextTracker
from cotbench.records import GenParams, Request

QUESTIONS = [
    "What is 17 times 23? Think step by step.",
    "Name three primary colours.",
    "A train travels 60 km in 45 minutes. What is its speed in km/h? Explain.",
    "Write one sentence about the sea.",
    "If Tom has 5 apples and gives away 2, how many are left?",
    "What is the capital of France? Answer briefly.",
    "List the first five prime numbers and say why 1 is not prime.",
    "Translate 'good morning' into Spanish.",
    "Is 91 a prime number? Show your reasoning.",
    # over 256 prompt tokens: in a batch with it, every sequence's attention spans 512 KV cells, alone 256
    "Read the notes and say which day was warmest. " + " ".join(
        f"Day {d}: morning {10 + d % 7} degrees, noon {15 + d % 5} degrees, evening {8 + d % 4} degrees."
        for d in range(1, 21)),
    "What is 2 + 2?",
    "Explain what a haiku is.",
    "Sara reads 12 pages a day. How many pages does she read in 3 weeks?",
    "Give a synonym for 'happy'.",
    "Why is the sky blue? One paragraph.",
    "Count from 1 to 10.",
]


def req(q: str, max_tokens: int = 16, **kw) -> Request:
    return Request(model="m", model_revision="r", backend="llamacpp", messages=({"role": "user", "content": q},),
                   params=GenParams(max_tokens=max_tokens, **kw))


# ---- the per-token bookkeeping, without a model -------------------------------------------------------------

def test_tracker_end_token_stops_without_counting_it():
    t = TextTracker([], 10, bos=1)
    assert not t.push(5, b"Hello", False)
    assert t.push(2, b"", True)
    assert (t.text, t.finish_reason, t.tokens) == (b"Hello", "stop", [5])


def test_tracker_cuts_at_the_first_listed_stop_string():
    t = TextTracker([b"Question:", b"\n\n"], 10, bos=1)
    for tok, piece in [(5, b"The answer is 4."), (6, b"\n\nQuestion:")]:
        done = t.push(tok, piece, False)
    assert done and t.finish_reason == "stop"
    assert t.text == b"The answer is 4.\n\n"  # first *listed* stop found, not the earliest: as llama-cpp-python
    assert len(t.tokens) == 2  # the token holding the stop string is counted


def test_tracker_length_and_unfinished_utf8_character():
    t = TextTracker([], 2, bos=1)
    assert not t.push(5, b"abc", False)
    assert not t.push(6, "é".encode()[:1], False)  # budget reached on half a character: keep going
    assert t.push(7, "é".encode()[1:], False)
    assert (t.text.decode(), t.finish_reason, len(t.tokens)) == ("abcé", "length", 3)


def test_step_rows_without_padding_are_the_live_rows_in_stream_order():
    from cotbench.backends.llamacpp_engine import BatchedEngine

    rows = BatchedEngine.step_rows(3, [(7, 12, 2), (7, 10, 0)], pad=False)
    assert rows == [(7, 10, 0, True), (7, 12, 2, True)]


@pytest.mark.parametrize("live, n_seq, added", [
    ([0], 2, [1]),              # a lone sequence: its neighbour above
    ([3], 4, [2]),              # the last stream: its neighbour below
    ([0, 2], 3, [1]),           # one throw-away row joins both into a run of three
    ([3, 0], 5, [1, 4]),        # two lone sequences, two throw-away rows
    ([1, 2], 4, []),            # already a run of two
])
def test_step_rows_pad_every_lone_sequence(live, n_seq, added):
    """Throw-away rows (same token, position 0, in a free neighbouring stream) so that no sequence is a
    run of one busy stream: llama.cpp computes each run as its own micro-batch."""
    from cotbench.backends.llamacpp_engine import BatchedEngine

    rows = BatchedEngine.step_rows(n_seq, [(70 + s, 10 + s, s) for s in live], pad=True)
    streams = [r[2] for r in rows]
    assert streams == sorted(live + added)
    for tok, pos, seq, logits in rows:
        assert logits and (tok, pos) == ((70 + seq, 10 + seq) if seq in live else (tok, 0))
    runs = "".join("x" if s in streams else "." for s in range(n_seq)).split(".")
    assert all(len(r) != 1 for r in runs)


def test_step_rows_pad_needs_two_streams():
    from cotbench.backends.base import BackendError
    from cotbench.backends.llamacpp_engine import BatchedEngine

    with pytest.raises(BackendError, match="two KV streams"):
        BatchedEngine.step_rows(1, [(7, 3, 0)], pad=True)


# ---- with the embedded model -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine():
    pytest.importorskip("llama_cpp")
    from cotbench.backends.llamacpp_engine import BatchedEngine
    from cotbench.pipeline.model_registry import embedded_gguf

    try:
        path = embedded_gguf()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    eng = BatchedEngine(str(path), n_ctx=1024)  # threads: the CPUs this worker may use
    yield eng
    eng.close()


def run(engine, reqs, batch_size):
    got, order = {}, []

    def on_result(r, resp):
        got[id(r)] = resp
        order.append(id(r))

    engine.run(reqs, on_result, batch_size)
    return [got[id(r)] for r in reqs], order


def key(resp):
    return resp.text, resp.tokens_in, resp.tokens_out, resp.finish_reason


@pytest.mark.slow
def test_output_does_not_depend_on_the_batch(engine):
    reqs = [req(q, max_tokens=6 + 2 * (i % 3)) for i, q in enumerate(QUESTIONS)]
    together, _ = run(engine, reqs, 16)
    alone = [run(engine, [r], 1)[0][0] for r in reqs]
    assert [key(r) for r in together] == [key(r) for r in alone]
    assert all(r.finish_reason in ("stop", "length") and r.tokens_in > 10 for r in together)
    assert max(r.tokens_in for r in together) > 256 > min(r.tokens_in for r in together)
    # more requests than slots: new ones are admitted as others finish, same outputs again
    admitted, _ = run(engine, reqs, 5)
    assert [key(r) for r in admitted] == [key(r) for r in alone]


@pytest.mark.slow
def test_seeded_sampling_is_per_request(engine):
    sampled = [req(QUESTIONS[3], max_tokens=12, temperature=0.9, seed=s) for s in (1, 2, 3)]
    others = [req(q, max_tokens=12) for q in QUESTIONS[:5]]
    together, _ = run(engine, others + sampled, 8)
    alone = [run(engine, [r], 1)[0][0] for r in sampled]
    assert [key(r) for r in together[len(others):]] == [key(r) for r in alone]
    assert len({r.text for r in alone}) > 1  # the seed matters


@pytest.mark.slow
def test_each_result_is_reported_when_its_sequence_ends(engine):
    long, short = req(QUESTIONS[9], max_tokens=24), req(QUESTIONS[0], max_tokens=2)
    resps, order = run(engine, [long, short], 2)
    assert order == [id(short), id(long)]
    assert resps[1].tokens_out == 2 and resps[1].finish_reason == "length"


@pytest.mark.slow
def test_prompt_longer_than_the_context_is_recorded_not_raised(engine):
    too_long = req("word " * 1500)
    fine = req(QUESTIONS[4], max_tokens=4)
    resps, order = run(engine, [too_long, fine], 4)
    assert (resps[0].finish_reason, resps[0].text, resps[0].tokens_out) == ("context_overflow", "", 0)
    assert resps[1].finish_reason in ("stop", "length") and resps[1].text
    assert order[0] == id(too_long)


@pytest.mark.slow
def test_same_texts_as_create_chat_completion(engine):
    """The per-request path (and llama_cpp.server's): fresh context per call, GGUF template, same sampler."""
    from llama_cpp import Llama

    from cotbench.backends.llamacpp import (
        disable_extra_buffer_types,
        fresh_context_per_call,
    )
    from cotbench.backends.llamacpp_engine import usable_cpus
    from cotbench.pipeline.model_registry import embedded_gguf

    disable_extra_buffer_types()
    fresh_context_per_call()
    llm = Llama(model_path=str(embedded_gguf()), n_ctx=1024, n_threads=usable_cpus(), verbose=False)
    try:
        reqs = [req(QUESTIONS[0], max_tokens=24), req(QUESTIONS[2], max_tokens=24, stop=(".",)),
                req(QUESTIONS[5], max_tokens=24), req(QUESTIONS[3], max_tokens=16, temperature=0.8, seed=7),
                req(QUESTIONS[12], max_tokens=24, stop=("\n",))]
        ours, _ = run(engine, reqs, 4)
        for r, mine in zip(reqs, ours):
            p = r.params
            out = llm.create_chat_completion(messages=[dict(m) for m in r.messages], max_tokens=p.max_tokens,
                                             temperature=p.temperature, top_p=p.top_p, stop=list(p.stop) or None,
                                             seed=p.seed + r.sample_index)
            usage = out["usage"]
            assert key(mine) == (out["choices"][0]["message"]["content"], usage["prompt_tokens"],
                                 usage["completion_tokens"], out["choices"][0]["finish_reason"])
    finally:
        llm.close()


@pytest.mark.slow
def test_batch_size_flag_reaches_the_backend(tmp_path):
    from cotbench.pipeline.config import build_config
    from cotbench.pipeline.harness import make_backend
    from cotbench.pipeline.model_registry import resolve_model

    pytest.importorskip("llama_cpp")
    cfg = build_config(None, {"batch_size": 3, "out": str(tmp_path)})
    backend = make_backend(resolve_model(cfg.generation.model), cfg)
    try:
        assert backend.batch_size == 3 and backend.describe()["batch_size"] == 3
    finally:
        backend.close()
    with pytest.raises(ValueError, match="batch-size"):
        build_config(None, {"batch_size": 0})


@pytest.mark.slow
def test_weights_f16_is_a_cached_copy_with_its_own_identity(tmp_path, monkeypatch):
    """``-B weights=f16`` computes with a converted copy: made once, kept in the cache, and a different
    revision (request keys) and run identity from the file's own weights, so no stored answer is reused."""
    from cotbench.pipeline.config import build_config
    from cotbench.pipeline.harness import make_backend
    from cotbench.pipeline.model_registry import resolve_model

    pytest.importorskip("llama_cpp")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    plain = build_config(None, {"out": str(tmp_path)})
    f16 = build_config(None, {"backend_args": ["weights=f16"], "out": str(tmp_path)})
    assert plain.hash() != f16.hash() and plain.hash() == build_config(None, {"backend_args": ["weights=file"]}).hash()
    spec = resolve_model(plain.generation.model)
    a, b = make_backend(spec, plain), make_backend(spec, f16)
    try:
        assert b.revision == a.revision + "+f16" and b.describe()["weights"] == "f16"
        copies = list((tmp_path / "cache" / "cotbench" / "models").glob("*.gguf"))
        assert [str(c) for c in copies] == [b.loaded_path] and not list(copies[0].parent.glob(".*tmp"))
        made = copies[0].stat().st_mtime_ns
        for backend in (a, b):  # both compute, from their own files
            got = []
            backend.generate([req(QUESTIONS[4], max_tokens=8)], lambda r, resp: got.append(resp))
            assert got[0].finish_reason in ("stop", "length") and got[0].text
    finally:
        a.close(), b.close()
    again = make_backend(spec, f16)  # the cached copy is reused, not converted again
    again.close()
    assert copies[0].stat().st_mtime_ns == made
    with pytest.raises(ValueError, match="weights"):
        build_config(None, {"backend_args": ["weights=q4_0"]})


@pytest.mark.slow
def test_logits_are_bitwise_the_same_alone_and_in_a_batch(engine):
    """Stronger than equal texts: one sequence's logits alone and among 7 others (one over 256 prompt tokens,
    which widens every sequence's attention window in the batch)."""
    import ctypes

    import numpy as np

    lib = engine._lib
    prompts = [engine.prepare(req(q))[0] for q in QUESTIONS[:8]]
    prompts[3] = engine.prepare(req(QUESTIONS[9]))[0]
    assert len(prompts[3]) > 256

    def logits_of_seq0(n_seqs: int) -> list[np.ndarray]:
        cx = engine._context(8, 1024)
        for s in range(n_seqs):
            p = prompts[s]
            engine._decode(cx, [(t, i, s, False) for i, t in enumerate(p)])
        out = []
        for step in range(2):
            engine._decode(cx, [(100 + s, len(prompts[s]) + step, s, True) for s in range(n_seqs)])
            ptr = lib.llama_get_logits_ith(cx.ctx, 0)
            out.append(np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)),
                                             shape=(engine.n_vocab,)).copy())
        lib.llama_memory_clear(cx.mem, True)
        return out

    for alone, batched in zip(logits_of_seq0(1), logits_of_seq0(8)):
        assert np.array_equal(alone, batched)


# ---- weights with batched kernels (an F16 copy of the embedded model) -----------------------------------------

@pytest.fixture(scope="module")
def f16_engine(engine, tmp_path_factory):
    """The embedded model dequantized to F16: llama.cpp's one-row and batched kernels round differently
    for F16 (not for the embedded Q4_1 file), so this is the model that needs the engine's padding."""
    from cotbench.backends.llamacpp_engine import BatchedEngine, convert_weights
    from cotbench.pipeline.model_registry import embedded_gguf

    path = convert_weights(str(embedded_gguf()), "f16", str(tmp_path_factory.mktemp("f16") / "m.f16.gguf"))
    eng = BatchedEngine(path, n_ctx=1024)
    yield eng
    eng.close()


def seq_logits(engine, live: list[int], target: int, pad: bool):
    """Next-token logits of stream ``target`` after one decode step of the streams in ``live`` (each
    holding the same prompt and given the same token), the step's rows built as the engine builds them."""
    import ctypes

    import numpy as np

    lib = engine._lib
    prompt = engine.prepare(req(QUESTIONS[0]))[0]
    cx = engine._context(6, 512)
    try:
        for s in live:
            engine._decode(cx, [(t, i, s, False) for i, t in enumerate(prompt)])
        rows = engine.step_rows(cx.n_seq, [(100, len(prompt), s) for s in live], pad)
        engine._decode(cx, rows)
        ptr = lib.llama_get_logits_ith(cx.ctx, [seq for _, _, seq, _ in rows].index(target))
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)),
                                     shape=(engine.n_vocab,)).copy()
    finally:
        lib.llama_memory_clear(cx.mem, True)


@pytest.mark.slow
def test_row_mode_is_measured_per_model(engine, f16_engine):
    assert engine.row_mode() == "any"  # the embedded file: no padding, so no cost
    assert f16_engine.row_mode() in ("pad", "any")


@pytest.mark.slow
def test_logits_do_not_depend_on_busy_neighbouring_streams(f16_engine):
    """llama.cpp computes each run of adjacent busy streams as its own micro-batch: stream 0 alone, beside
    stream 1, or beside nothing (streams 0 and 2) would get different kernels without the padding."""
    import numpy as np

    pad = f16_engine.row_mode() == "pad"
    ref = seq_logits(f16_engine, [0, 1], 0, pad)
    for live, target in [([0], 0), ([0, 2], 0), ([0, 2], 2), ([0, 1, 3], 3), ([3, 1, 0], 1), ([1, 2, 3, 4], 3),
                         ([5], 5), ([4, 0, 2], 2)]:
        assert np.array_equal(seq_logits(f16_engine, live, target, pad), ref), (live, target)
    if pad:  # the padding has a reason: without it a lone stream gets the one-row kernel
        assert not np.array_equal(seq_logits(f16_engine, [0, 2], 2, False), ref)


@pytest.mark.slow
def test_f16_output_does_not_depend_on_the_batch(f16_engine):
    reqs = [req(q, max_tokens=10 + 3 * (i % 3)) for i, q in enumerate(QUESTIONS[:8])]
    alone = [run(f16_engine, [r], 1)[0][0] for r in reqs]
    for batch in (8, 3):  # 3: slots are freed and reused, leaving lone and non-adjacent streams
        assert [key(r) for r in run(f16_engine, reqs, batch)[0]] == [key(r) for r in alone], batch
