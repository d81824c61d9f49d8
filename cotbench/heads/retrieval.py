"""Retrieval scores (Wu et al. 2024, "Retrieval Head Mechanistically Explains Long-Context Factuality").

A head *retrieves* at a decoding step when the token the model emits is a token of the span to be
copied and the head's strongest attention (argmax over keys) is on a context position holding that
very token inside the span. A head's retrieval score on a probe is the number of such steps divided by
the span's length in tokens; the score of a probe set is the mean over probes.

Attention comes from transformers itself (eager attention, ``output_attentions=True``): the prompt is
run once into a cache, then the answer tokens are run on top of it, which yields exactly the rows of
the attention matrix that produced them (``n_answer x T`` per head), never the full ``T x T``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

from cotbench.heads.probes import Probe


@dataclass
class ProbeScore:
    probe_id: str
    scores: np.ndarray  # (layers, heads)
    copied: bool  # generate mode: the model's output contained the answer; gold mode: True
    output: str
    span_tokens: int


def span_positions(tok, text: str, answer: str) -> tuple[list[int], list[list[int]]]:
    """Token ids of ``text`` and, for each occurrence of ``answer``, the positions of its tokens."""
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    groups = []
    start = text.find(answer)
    while start >= 0:
        end = start + len(answer)
        groups.append([i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start])
        start = text.find(answer, start + 1)
    return ids, [g for g in groups if g]


def retrieval_hits(argmax: np.ndarray, prompt_ids: list[int], answer_ids: list[int],
                   span: list[int]) -> np.ndarray:
    """Count retrieval steps per head (pure; the heart of the score).

    ``argmax``: (layers, heads, steps) key position each head attends to most at each answer step;
    step ``t`` emits ``answer_ids[t]``. A hit: the emitted token occurs in the span, and the attended
    position is in the span and holds the same token.
    """
    span_set = set(span)
    span_tokens = {prompt_ids[p] for p in span}
    ids = np.asarray(prompt_ids + answer_ids)
    hits = np.zeros(argmax.shape[:2])
    for t, y in enumerate(answer_ids):
        if y not in span_tokens:
            continue
        j = argmax[:, :, t]
        in_span = np.isin(j, list(span_set))
        hits += in_span & (ids[np.clip(j, 0, len(ids) - 1)] == y)
    return hits


def answer_attention_argmax(model, prompt: list[int], answer: list[int]) -> np.ndarray:
    """(layers, heads, len(answer)) argmax key positions of the queries that emitted ``answer``."""
    import torch

    dev = model.device
    # transformers 5 calls the KV cache `cache`; 4.x called it `past_key_values`
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.inference_mode():
        first = model(torch.tensor([prompt[:-1]], device=dev), use_cache=True)
        rest = torch.tensor([prompt[-1:] + answer[:-1]], device=dev)
        out = model(rest, **{name: getattr(first, name)}, use_cache=True, output_attentions=True)
    if out.attentions is None or out.attentions[0] is None:
        raise RuntimeError("the model returned no attention weights; load it with attn_implementation='eager'")
    return np.stack([a[0].argmax(-1).cpu().numpy() for a in out.attentions])  # (L, H, steps)


def score_probe(model, tok, probe: Probe, mode: str = "generate", max_new_tokens: int | None = None,
                intervention=None) -> ProbeScore:
    """Retrieval scores of every head on one probe.

    ``generate``: the model answers greedily and its own tokens are scored (Wu et al.'s procedure);
    ``gold``: the answer span is teacher-forced (for items a small model would not copy by itself).
    The score's denominator is the span's length in tokens as it occurs in the context, so a head that
    points at every copied token scores 1.
    """
    import torch

    from cotbench.backends.transformers_local import prompt_text
    from cotbench.heads.intervene import applied

    ids, groups = span_positions(tok, prompt_text(tok, probe.messages, probe.prefill), probe.answer)
    span = sorted({p for g in groups for p in g})
    gold_ids = tok(" " + probe.answer, add_special_tokens=False)["input_ids"]
    if mode == "gold":
        answer = gold_ids
        output = probe.answer
    elif mode == "generate":
        x = torch.tensor([ids], device=model.device)
        with torch.inference_mode(), applied(model, intervention):
            out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, temperature=None,
                                 top_p=None, top_k=None, max_new_tokens=max_new_tokens or len(gold_ids) + 2,
                                 pad_token_id=tok.pad_token_id)
        answer = out[0, len(ids):].tolist()
        output = tok.decode(answer, skip_special_tokens=True)
    else:
        raise ValueError(f"mode must be 'generate' or 'gold', got {mode!r}")
    n_span = len(groups[0]) if groups else 1  # tokens of the span as the context holds it
    if not span or not answer:
        return ProbeScore(probe.id, np.zeros(_shape(model)), False, output, n_span)
    with applied(model, intervention):
        argmax = answer_attention_argmax(model, ids, answer)
    hits = retrieval_hits(argmax, ids, answer, span)
    return ProbeScore(probe.id, np.minimum(hits / n_span, 1.0), probe.answer in output, output, n_span)


def _shape(model) -> tuple[int, int]:
    from cotbench.heads.intervene import model_shape

    l, h, _ = model_shape(model)
    return l, h


def score_probes(model, tok, probes: list[Probe], mode: str = "generate", progress=None) -> tuple[np.ndarray, list[ProbeScore]]:
    """Mean retrieval score per head over ``probes``, and each probe's result."""
    per = []
    for i, p in enumerate(probes):
        per.append(score_probe(model, tok, p, mode))
        if progress:
            progress(i + 1, len(probes))
    mean = np.mean([s.scores for s in per], axis=0) if per else np.zeros(_shape(model))
    return mean, per


def scores_frame(scores: np.ndarray, probe_set: str, n_probes: int):
    """Long table: one row per (layer, head) with its score and rank (1 = strongest)."""
    import pandas as pd

    L, H = scores.shape
    df = pd.DataFrame({"probe_set": probe_set, "layer": np.repeat(np.arange(L), H),
                       "head": np.tile(np.arange(H), L), "score": scores.reshape(-1).round(6),
                       "n_probes": n_probes})
    df["rank"] = df["score"].rank(ascending=False, method="min").astype(int)
    return df


def top_k(scores: np.ndarray, k: int) -> list[tuple[int, int]]:
    """The ``k`` highest-scoring heads; ties go to the lower (layer, head), so the order is stable."""
    flat = scores.reshape(-1)
    order = sorted(range(flat.size), key=lambda i: (-flat[i], i))
    H = scores.shape[1]
    return [(i // H, i % H) for i in order[:k]]


def overlap(a: np.ndarray, b: np.ndarray, k: int) -> dict[str, float]:
    """How alike two probe sets' head rankings are: top-k Jaccard, and Spearman's rho over all heads."""
    from scipy.stats import spearmanr

    if a.shape != b.shape:
        raise ValueError(f"score arrays differ in shape: {a.shape} vs {b.shape}")
    ta, tb = set(top_k(a, k)), set(top_k(b, k))
    rho = spearmanr(a.reshape(-1), b.reshape(-1)).statistic if a.std() > 0 and b.std() > 0 else float("nan")
    return {"k": k, "jaccard_topk": len(ta & tb) / len(ta | tb), "shared_topk": len(ta & tb),
            "spearman_rho": float(rho)}


def needle_accuracy(model, tok, probes: list[Probe], intervention=None) -> tuple[float, list[bool]]:
    """Share of needle probes whose greedy answer contains the needle value, under ``intervention``."""
    import torch

    from cotbench.backends.transformers_local import prompt_ids
    from cotbench.heads.intervene import applied

    hits = []
    for p in probes:
        ids = prompt_ids(tok, p.messages, p.prefill)
        n_new = len(tok(" " + p.answer, add_special_tokens=False)["input_ids"]) + 2
        x = torch.tensor([ids], device=model.device)
        with torch.inference_mode(), applied(model, intervention):
            out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, temperature=None,
                                 top_p=None, top_k=None, max_new_tokens=n_new, pad_token_id=tok.pad_token_id)
        hits.append(p.answer in tok.decode(out[0, len(ids):], skip_special_tokens=True))
    return (sum(hits) / len(hits) if hits else float("nan")), hits
