"""Copy probes: prompts whose answer is a span the model must copy from its context.

Two sources: seeded needle-in-a-haystack items (a "special magic number" hidden at a chosen depth in
filler text of a chosen length, as in Wu et al. 2024) and real items of cotbench's datasets whose gold
answer text appears verbatim in the prompt (e.g. a MuSR suspect's name in the story). Both become
:class:`Probe` records: chat messages, an assistant prefix, and the ``answer`` string to be copied.
Pure functions; nothing here loads a model.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass

from cotbench.records import Message

# Neutral filler, written for cotbench: plain statements with no numbers, so a needle's digits occur
# nowhere else in the context.
FILLER = (
    "The morning fog lifted slowly over the quiet harbour.",
    "A row of old oak trees lined the road to the village.",
    "The library kept its rarest maps in a locked glass case.",
    "Farmers in the valley grew barley, beans and apples.",
    "The museum guide spoke about the history of the bridge.",
    "A small bakery on the corner sold bread before sunrise.",
    "The river was wide and calm after the spring rains.",
    "Children played football in the park behind the school.",
    "The lighthouse keeper wrote in his journal every evening.",
    "Most of the houses in the street had red tiled roofs.",
    "The train to the coast stopped at every small station.",
    "A gentle wind moved the tall grass on the hillside.",
    "The market opened early and closed in the afternoon.",
    "Her grandfather had built the wooden boat by hand.",
    "The choir practised in the church hall on weekdays.",
    "Snow covered the mountain peaks for most of the year.",
    "The old clock in the square no longer kept good time.",
    "Visitors often walked along the cliffs to watch the birds.",
    "The teacher read a story aloud at the end of each day.",
    "A narrow path led from the farm down to the lake.",
)
KEYS = ("Lisbon", "Oslo", "Nairobi", "Lima", "Hanoi", "Dublin", "Quito", "Tunis", "Riga", "Perth",
        "Manila", "Zagreb", "Accra", "Havana", "Seoul", "Cairo", "Vienna", "Dakar", "Sofia", "Bogota")


@dataclass(frozen=True)
class Probe:
    id: str
    messages: tuple[Message, ...]
    prefill: str  # assistant prefix; the answer is copied right after it
    answer: str  # the span to copy; appears verbatim in the user turn
    source: str = "needle"
    depth: float | None = None


def needle_probes(n: int, context_words: int = 200, depth: float | None = None, seed: int = 0,
                  digits: int = 6) -> list[Probe]:
    """``n`` needle-in-a-haystack probes; ``depth`` in [0, 1] places the needle (None: spread evenly).

    Context length is counted in filler words (``context_words``); the needle is one sentence.
    """
    if n < 1 or context_words < 10 or digits < 1:
        raise ValueError("needle probes need n >= 1, context_words >= 10 and digits >= 1")
    if depth is not None and not 0 <= depth <= 1:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        sentences, words = [], 0
        while words < context_words:
            s = rng.choice(FILLER)
            sentences.append(s)
            words += len(s.split())
        d = depth if depth is not None else (i + 0.5) / n
        key = KEYS[i % len(KEYS)] if n <= len(KEYS) else rng.choice(KEYS)
        value = str(rng.randrange(10 ** (digits - 1), 10 ** digits))
        needle = f"The special magic number for {key} is {value}."
        sentences.insert(round(d * len(sentences)), needle)
        context = " ".join(sentences)
        question = (f"{context}\n\nWhat is the special magic number for {key} mentioned in the text above? "
                    f"Answer with the number only.")
        out.append(Probe(id=f"needle/{seed}/{i}", messages=({"role": "user", "content": question},),
                         prefill=f"The special magic number for {key} is", answer=value, depth=round(d, 4)))
    return out


def item_probes(examples, spec, setting_name: str = "zs_direct") -> list[Probe]:
    """Real dataset items as copy probes: the gold answer *text* (the chosen option's text for multiple
    choice) must occur verbatim in the rendered user turn; other items are skipped.

    The prefix is ``"Answer:"``; the probe asks which heads point at the context copy of the answer
    while the model is made to say it (teacher forcing; see :func:`cotbench.heads.retrieval.score_probe`).
    """
    from cotbench.pipeline.prompts import render
    from cotbench.pipeline.settings import get_setting
    from cotbench.records import LETTERS

    setting = get_setting(setting_name)
    out = []
    for ex in examples:
        target = ex.choices[LETTERS.index(ex.gold)] if ex.answer_type == "choice" and ex.choices else ex.gold
        r = render(spec, ex, setting)
        user = r.messages[-1]["content"]
        # the option list repeats every choice; count only copies outside it (the context proper)
        body = user.replace(f"({ex.gold}) {target}", "")
        if not target.strip() or target not in body:
            continue
        out.append(Probe(id=ex.id, messages=r.messages, prefill="Answer:", answer=target, source=ex.dataset))
    return out


def probes_to_jsonl(probes: list[Probe]) -> str:
    """A needle set as a cotbench custom dataset (``--dataset-file X --answer-type number|text``)."""
    lines = []
    for p in probes:
        question = p.messages[-1]["content"].replace(" Answer with the number only.", "")  # the setting says how
        lines.append(json.dumps({"id": p.id, "question": question, "answer": p.answer},
                                ensure_ascii=False))
    return "\n".join(lines) + "\n"
