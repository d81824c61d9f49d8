"""Answer extractors: pure functions from model text to a canonical answer, or None (= unparseable).

Public API used by the runner: ``extract_answer(text, example, labels)`` and ``score(example, extraction)``.
Named extractors live in :data:`EXTRACTORS` (lm-eval style "filters"); :data:`DEFAULT_EXTRACTOR` picks one
per answer type. Every extractor takes ``(text, example, labels)`` and returns an :class:`Extraction`.

Rules, in the order they are tried (the first rule that yields a valid value wins):

1. ``<think>…</think>`` blocks are removed. A closing tag without an opening one (templates that put
   ``<think>`` in the prompt) drops everything before it. An opening tag that is never closed is a
   truncated reasoning trace: it and everything after it are dropped, so such a response is
   unparseable unless an answer was written *before* the block.
2. ``\\boxed{…}`` / ``\\fbox{…}`` (the last one).
3. An explicit answer phrase — "the (best|final|correct) answer is", "Answer:", "the correct option
   is" — read at its *last* occurrence that holds a valid value for the answer type (a restated answer
   later in a CoT wins). The value must stand on its own: "Answer: Based on…" is not choice B, because a
   letter must be followed by punctuation, the end of the line, or (for A and I, which are English
   words) a connective such as "because"; a number must open the phrase's sentence ("The answer is
   9 * 120 = 1080." reads 1080, "Answer: Let's compute 16 - 3 = 13…" reads nothing); text answers are the
   phrase's first sentence; MATH answers are the first ``$…$`` after the phrase or a short formula.
   The default choice extractor also maps an option's exact text ("The answer is London.") to its letter.
4. A bare answer at the very start of the response ("C", "(C) Paris", "True.", "18 dollars"), which is
   what direct prompts ask for and what a prefilled "The answer is" turn continues with.
5. Numbers only: the last number of the final sentence, *if the response ends in a finished sentence*
   (its last character is ``.``, ``!``, or a closing bracket/``$``). A CoT cut off by the token budget
   ends mid-sentence, so it is unparseable rather than scored on a stray intermediate number. The
   ``number_strict`` extractor skips this rule; ``number_flexible`` takes the last number anywhere
   (lm-eval's "flexible-extract"; it guesses and is never the default).

Nothing else is guessed: a long response with no answer phrase is unparseable for choice, label,
math and text answers. Scoring: letters exactly; numbers as numbers (see :func:`number_equal`); MATH
through math-verify (:func:`math_equal`); labels case-insensitively after synonym mapping
("Unknown" -> "Uncertain"); text by SQuAD-normalised exact match against the gold and its aliases, or
whitespace-normalised exact match where ``metadata["text_match"] == "exact"`` (BBH Dyck, word sorting).
"""
from __future__ import annotations

import math
import re
import string
import threading
from collections import Counter
from decimal import Decimal
from typing import Callable

from cotbench.types import Example, Extraction

LETTERS = string.ascii_uppercase  # BBH colored-objects questions go up to (R)

# ----------------------------------------------------------------------------------------------- text prep

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.S | re.I)


def strip_think(text: str) -> str:
    """Drop reasoning blocks; a truncated (unclosed) block drops everything from ``<think>`` on."""
    t = _THINK_BLOCK.sub("", text)
    low = t.lower()
    close = low.rfind("</think>")
    if close >= 0:
        t = t[close + len("</think>"):]
        low = t.lower()
    opened = low.find("<think>")
    if opened >= 0:
        t = t[:opened]
    return t


def _clean(text: str) -> str:
    """Remove markdown emphasis and code ticks, unify minus signs and spaces."""
    t = strip_think(text)
    t = t.replace("**", "").replace("__", "").replace("`", "")
    t = t.replace("\u2212", "-").replace("\u2013", "-").replace("\u00a0", " ")
    return t


def _boxed_contents(text: str) -> list[str]:
    """Contents of every ``\\boxed{..}``/``\\fbox{..}`` with balanced braces, in order."""
    out = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        if depth == 0:
            out.append(text[m.end(): i - 1].strip())
    return out


_PHRASE = re.compile(
    r"\b(?:answer|option|choice)s?\s*"
    r"(?:(?:is|would\s+be|should\s+be|will\s+be|must\s+be|=)\s*"
    r"(?:therefore|thus|then|clearly|probably|likely|indeed)?\s*:?|:)",
    re.I,
)


def _phrase_spans(text: str) -> list[str]:
    """Text after each answer phrase up to the end of its line, last occurrence first."""
    spans = []
    for m in _PHRASE.finditer(text):
        rest = text[m.end():]
        line = rest.split("\n", 1)[0]
        if not line.strip():  # "Answer:\nC" puts the value on the next line
            nxt = rest.lstrip("\n").split("\n", 1)[0] if rest.strip() else ""
            line = nxt
        spans.append(line.strip())
    return spans[::-1]


# --------------------------------------------------------------------------------------------- choices

_CONNECTIVES = ("because", "since", "as", "is", "was", "-", "(", "which", "the", "it")


def _letter_at_start(span: str, n_choices: int) -> str | None:
    """A choice letter at the start of ``span`` that stands on its own, or None."""
    valid = LETTERS[: max(n_choices, 0)]
    if not valid:
        return None
    s = span.lstrip(" \t*_:\"'[")
    s = re.sub(r"^(?:option|choice|letter)\s*", "", s, flags=re.I)
    m = re.match(r"\(\s*([A-Za-z])\s*\)", s)  # "(C)" / "(c)"
    if m:
        letter = m.group(1).upper()
        return letter if letter in valid else None
    m = re.match(r"([A-Z])(?![A-Za-z0-9])", s)
    if not m or m.group(1) not in valid:
        return None
    letter, rest = m.group(1), s[m.end():]
    if not rest.strip() or rest[0] in ").:,;]*'\"!?/\\}\n":
        return letter
    if rest[0].isspace():
        nxt = rest.strip()
        if nxt[0] in ").:,;(-[" or letter not in "AI":
            return letter
        word = re.match(r"[A-Za-z]+", nxt)
        if word and word.group(0).lower() in _CONNECTIVES:
            return letter
    return None


def _norm_text(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip().strip(".").strip("\"'").strip()).casefold()


def _choice_by_text(span: str, choices: tuple[str, ...] | None) -> str | None:
    """Map an answer given as the option's text (e.g. "The answer is Paris.") to its letter."""
    if not choices:
        return None
    s = _norm_text(span)
    hits = [i for i, c in enumerate(choices) if _norm_text(c) and _norm_text(c) == s]
    return LETTERS[hits[0]] if len(hits) == 1 else None


def choice_strict(text: str, example: Example, labels=None) -> Extraction:
    """Boxed letter, answer phrase + letter, or a response that starts with the letter."""
    t = _clean(text)
    n = len(example.choices or ())
    for b in reversed(_boxed_contents(t)):
        letter = _letter_at_start(re.sub(r"\\text\{([^}]*)\}", r"\1", b), n)
        if letter:
            return Extraction(letter, "boxed")
    for span in _phrase_spans(t):
        letter = _letter_at_start(span, n)
        if letter:
            return Extraction(letter, "answer_phrase")
    letter = _letter_at_start(t.strip(), n)
    if letter:
        return Extraction(letter, "leading_letter")
    return Extraction(None, "none")


def choice_text(text: str, example: Example, labels=None) -> Extraction:
    """``choice_strict``, then an answer phrase followed by an option's exact text (the default)."""
    ex = choice_strict(text, example)
    if ex.parsed:
        return ex
    t = _clean(text)
    for span in _phrase_spans(t):
        letter = _choice_by_text(span, example.choices)
        if letter:
            return Extraction(letter, "answer_phrase_text")
    letter = _choice_by_text(t, example.choices)
    if letter:
        return Extraction(letter, "whole_response_text")
    return Extraction(None, "none")


def choice_flexible(text: str, example: Example, labels=None) -> Extraction:
    """``choice_text``, then the last parenthesised letter anywhere (a guess; never the default)."""
    ex = choice_text(text, example)
    if ex.parsed:
        return ex
    valid = LETTERS[: len(example.choices or ())]
    found = re.findall(r"\(([A-Z])\)", _clean(text))
    found = [f for f in found if f in valid]
    if found:
        return Extraction(found[-1], "last_paren_letter")
    return Extraction(None, "none")


# --------------------------------------------------------------------------------------------- numbers

_NUM = re.compile(
    r"(?<![\w.])-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?:\s?/\s?\d+(?:\.\d+)?)?(?![\d])"
)


def normalize_number(s: str) -> str | None:
    """Canonical string for a number as a model writes it ("$1,080.00" -> "1080", "3/4" -> "0.75")."""
    s = s.replace(",", "").replace("$", "").replace(" ", "").strip().rstrip(".")
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            v = float(num) / float(den)
        else:
            v = float(s)
    except (ValueError, ZeroDivisionError):
        return None
    if not math.isfinite(v):
        return None
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    if "/" not in s and "e" not in s.lower():
        return s.lstrip("+")  # keep the written decimals (they set the rounding tolerance)
    return format(Decimal(repr(v)), "f")  # positional, as a model would write it


_HEDGES = re.compile(r"^(?:approximately|about|around|roughly|exactly|just|only|therefore|thus|so)\s+", re.I)


def _number_in_span(span: str, anchored: bool = True) -> str | None:
    """The number an answer phrase states: the span (its first sentence) must *start* with the number
    ("The answer is 9 * 120 = 1080." -> the value after the last '='), so prose such as
    "Answer: Let's compute 16 - 3 = 13. Then ..." is not read as an answer. Boxed contents are not anchored."""
    span = re.split(r"(?<=[^\d])\.\s", span + " ", maxsplit=1)[0]  # first sentence only
    span = span.replace("\\$", "$").replace("\\!", "")
    if anchored:
        head = _HEDGES.sub("", span.lstrip(" \t*_:$(\\[")).lstrip("$")
        if not re.match(r"-?\s?\d", head):
            return None
    if "=" in span:
        span = span.rsplit("=", 1)[1]
    m = _NUM.search(span)
    return normalize_number(m.group(0)) if m else None


def _leading_number(t: str) -> str | None:
    """A short one-line response ("18", "$1,080.", "18 dollars", "The total is 18.").

    It must hold a single number or end like a finished sentence: "She sells 9 eggs at $2 each, so"
    is a cut-off CoT, not an answer.
    """
    s = t.strip()
    if not s or "\n" in s or len(s.split()) > 12:
        return None
    nums = _NUM.findall(s)
    if not nums or (len(nums) > 1 and not _finished(s)):
        return None
    return normalize_number(nums[-1])


def _finished(t: str) -> bool:
    s = t.rstrip().rstrip("*_ ")
    return bool(s) and s[-1] in ".!)]}$"


def _number_common(text: str) -> tuple[Extraction | None, str]:
    t = _clean(text)
    for b in reversed(_boxed_contents(t)):
        v = _number_in_span(re.sub(r"\\text\{[^}]*\}|\\(?:,|!|;)", "", b).replace("{,}", ""), anchored=False)
        if v is not None:
            return Extraction(v, "boxed"), t
    for span in _phrase_spans(t):
        v = _number_in_span(span)
        if v is not None:
            return Extraction(v, "answer_phrase"), t
    v = _leading_number(t)
    if v is not None:
        return Extraction(v, "short_response"), t
    return None, t


def number_strict(text: str, example: Example, labels=None) -> Extraction:
    """Boxed number, answer phrase + number, or a short one-line response; nothing else."""
    ex, _ = _number_common(text)
    return ex or Extraction(None, "none")


def number(text: str, example: Example, labels=None) -> Extraction:
    """``number_strict``, then the last number of the final sentence of a *finished* response."""
    ex, t = _number_common(text)
    if ex:
        return ex
    if _finished(t):
        sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z\\$])|\n+", t.strip())
        nums = _NUM.findall(sentences[-1]) if sentences else []
        if nums:
            v = normalize_number(nums[-1])
            if v is not None:
                return Extraction(v, "last_number_final_sentence")
    return Extraction(None, "none")


def number_flexible(text: str, example: Example, labels=None) -> Extraction:
    """``number``, then the last number anywhere (lm-eval flexible-extract; guesses)."""
    ex = number(text, example)
    if ex.parsed:
        return ex
    nums = _NUM.findall(_clean(text))
    if nums:
        v = normalize_number(nums[-1])
        if v is not None:
            return Extraction(v, "last_number")
    return Extraction(None, "none")


def number_equal(pred: str, gold: str) -> bool:
    """Equal as numbers; a prediction written with >= 2 decimals also matches the gold rounded to them."""
    try:
        a, b = float(pred), float(gold)
    except ValueError:
        return False
    if math.isclose(a, b, rel_tol=1e-14, abs_tol=1e-9):  # float noise only: 6277334001 != 6277334000
        return True
    dec = len(pred.split(".", 1)[1]) if "." in pred else 0
    return dec >= 2 and round(b, dec) == round(a, dec)


# ------------------------------------------------------------------------------------------------ math


def _math_span(span: str) -> str | None:
    s = span.strip()
    m = re.match(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", s)
    if m:
        return next(g for g in m.groups() if g is not None).strip()
    if s.startswith(("$", "\\(", "\\[")) or s.count("{") != s.count("}"):
        return None  # an opened formula that never closes: the response was cut off
    s = re.split(r"\.\s|\.$", s, maxsplit=1)[0].strip()
    if not s or len(s) > 80 or len(re.findall(r"[A-Za-z]{3,}", s)) > 3:
        return None  # prose, not an answer ("Answer: Based on the figure we ...")
    return s


def boxed_math(text: str, example: Example, labels=None) -> Extraction:
    """Last ``\\boxed{}``; else an answer phrase's LaTeX/plain value; else a short one-line response."""
    t = strip_think(text).replace("**", "")
    boxes = _boxed_contents(t)
    if boxes:
        return Extraction(boxes[-1], "boxed")
    for span in _phrase_spans(t):
        v = _math_span(span)
        if v:
            return Extraction(v, "answer_phrase")
    s = t.strip()
    if s and "\n" not in s and len(s) <= 40:
        v = _math_span(s)
        if v:
            return Extraction(v, "short_response")
    return Extraction(None, "none")


def _strip_latex(s: str) -> str:
    s = re.sub(r"\\(?:left|right|!|,|;|displaystyle)", "", s)
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^}]*)\}", r"\1", s)
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("\\%", "").replace("$", "")
    s = s.replace("dfrac", "frac").replace("tfrac", "frac")
    return re.sub(r"\s+", "", s).rstrip(".")


def math_equal(pred: str, gold: str) -> bool:
    """Equivalence through math-verify (symbolic/numeric), with a normalised string match as a floor."""
    if _strip_latex(pred) == _strip_latex(gold):
        return True
    try:
        from math_verify import parse, verify
    except ImportError as e:  # pragma: no cover - declared dependency
        raise RuntimeError("math-verify is required to score MATH answers (pip install math-verify)") from e
    # math-verify's timeouts use signal.alarm, which only works in the main thread; elsewhere run without
    main = threading.current_thread() is threading.main_thread()
    g = parse(f"${gold}$", **({} if main else {"parsing_timeout": None}))
    p = parse(f"${pred}$", **({} if main else {"parsing_timeout": None}))
    if not g or not p:
        return False
    try:
        return bool(verify(g, p, **({} if main else {"timeout_seconds": None})))
    except Exception:  # math-verify can raise on exotic inputs; treat as not equal
        return False


# ---------------------------------------------------------------------------------------------- labels

_SYNONYMS: dict[str, tuple[str, ...]] = {
    "uncertain": ("uncertain", "unknown", "undetermined", "cannot be determined", "can't be determined",
                  "cannot be known", "not enough information", "indeterminate"),
    "true": ("true",),
    "false": ("false",),
    "yes": ("yes",),
    "no": ("no",),
    "valid": ("valid",),
    "invalid": ("invalid",),
}


def _label_forms(labels: tuple[str, ...]) -> list[tuple[str, str]]:
    """(surface form, canonical label) pairs, longest form first so "invalid" beats "valid"."""
    forms = []
    for lab in labels:
        key = lab.casefold()
        group = next((g for g in _SYNONYMS.values() if key in g), (key,))
        forms.extend((f, lab) for f in dict.fromkeys((key, *group)))
    return sorted(forms, key=lambda p: -len(p[0]))


def _label_at_start(span: str, forms: list[tuple[str, str]], loose: bool) -> str | None:
    s = span.lstrip(" \t*_:\"'([{").casefold()
    for form, lab in forms:
        if s.startswith(form):
            rest = s[len(form):]
            if not rest.strip() or rest[0] in ".,;:!?)]}\"'*\n":
                return lab
            if loose and rest[0].isspace() and form != "no":  # "No one knows..." is not an answer
                return lab
    return None


def label(text: str, example: Example, labels: tuple[str, ...] | None = None) -> Extraction:
    """One of the task's labels (True/False/Uncertain, Yes/No, valid/invalid), synonyms mapped."""
    labs = tuple(labels or example.metadata.get("labels") or ())
    if not labs:
        raise ValueError(f"{example.dataset}: label extraction needs the task's labels")
    forms = _label_forms(labs)
    t = _clean(text)
    for b in reversed(_boxed_contents(t)):
        lab = _label_at_start(re.sub(r"\\text\{([^}]*)\}", r"\1", b), forms, loose=True)
        if lab:
            return Extraction(lab, "boxed")
    for span in _phrase_spans(t):
        lab = _label_at_start(span, forms, loose=True)
        if lab:
            return Extraction(lab, "answer_phrase")
    s = t.strip()
    lab = _label_at_start(s, forms, loose=len(s.split()) <= 6)
    if lab:
        return Extraction(lab, "leading_label")
    return Extraction(None, "none")


# ------------------------------------------------------------------------------------------------ text


def _text_value(span: str) -> str | None:
    """The answer part of a span: its first sentence, without emphasis, quotes or a final period."""
    s = re.split(r"\.\s+(?=[A-Z])", span.strip(), maxsplit=1)[0]  # "Paris. It is ..." -> "Paris"
    s = s.strip().strip("*_").strip()
    s = re.sub(r"\.$", "", s).strip().strip("\"'").strip()
    return s or None


def text_answer(text: str, example: Example, labels=None) -> Extraction:
    """Answer phrase up to the end of its sentence; else a one-line response (at most 20 words,
    unless the task matches exact text such as a sorted word list)."""
    t = _clean(text)
    for b in reversed(_boxed_contents(t)):
        v = _text_value(re.sub(r"\\text\{([^}]*)\}", r"\1", b))
        if v:
            return Extraction(v, "boxed")
    for span in _phrase_spans(t):
        v = _text_value(span)
        if v:
            return Extraction(v, "answer_phrase")
    s = t.strip()
    limit = 10**6 if example.metadata.get("text_match") == "exact" else 20
    if s and "\n" not in s and len(s.split()) <= limit and not re.search(r"\.\s+[A-Z]", s):
        v = _text_value(s)  # one sentence only: "Let me think. First ..." is a cut-off CoT
        if v:
            return Extraction(v, "whole_response")
    return Extraction(None, "none")


def squad_normalize(s: str) -> str:
    """SQuAD/MuSiQue answer normalisation: lower case, no punctuation, no articles, single spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def token_f1(pred: str, gold: str) -> float:
    p, g = squad_normalize(pred).split(), squad_normalize(gold).split()
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    prec, rec = same / len(p), same / len(g)
    return 2 * prec * rec / (prec + rec)


def text_golds(example: Example) -> list[str]:
    return [example.gold, *example.metadata.get("answer_aliases", [])]


def text_em(pred: str, example: Example) -> bool:
    if example.metadata.get("text_match") == "exact":
        return " ".join(pred.split()) == " ".join(example.gold.split())
    return any(squad_normalize(pred) == squad_normalize(g) for g in text_golds(example))


def text_f1(pred: str | None, example: Example) -> float:
    """Best token F1 over the gold and its aliases (MuSiQue's answer metric)."""
    if pred is None:
        return 0.0
    return max(token_f1(pred, g) for g in text_golds(example))


# ----------------------------------------------------------------------------------------------- judge


FINAL_RESPONSE = "Final response:"


def judge_response(text: str, example: Example, labels=None) -> Extraction:
    """The text a judge should grade: reasoning blocks dropped, and after the last "Final response:"
    marker when the (CoT) prompt asked for one, so the judge sees the answer, not the scratch work."""
    t = strip_think(text)
    cut = t.lower().rfind(FINAL_RESPONSE.lower())
    if cut >= 0:
        t = t[cut + len(FINAL_RESPONSE):]
    t = t.strip()
    return Extraction(t or None, "judge_pending")


# -------------------------------------------------------------------------------------------- registry

Extractor = Callable[..., Extraction]
EXTRACTORS: dict[str, Extractor] = {
    "choice_strict": choice_strict,
    "choice": choice_text,
    "choice_flexible": choice_flexible,
    "number_strict": number_strict,
    "number": number,
    "number_flexible": number_flexible,
    "boxed_math": boxed_math,
    "label": label,
    "text": text_answer,
    "judge": judge_response,
}
DEFAULT_EXTRACTOR: dict[str, str] = {
    "choice": "choice",
    "number": "number",
    "math": "boxed_math",
    "label": "label",
    "text": "text",
    "judge": "judge",
}


def extract_answer(
    text: str, example: Example, labels: tuple[str, ...] | None = None, extractor: str | None = None
) -> Extraction:
    """Run the named extractor (default: the one for the example's answer type)."""
    name = extractor or example.metadata.get("extractor") or DEFAULT_EXTRACTOR.get(example.answer_type)
    if name not in EXTRACTORS:
        raise ValueError(f"unknown extractor {name!r}; choose from {', '.join(EXTRACTORS)}")
    return EXTRACTORS[name](text or "", example, labels)


def score(example: Example, extraction: Extraction) -> bool:
    """Correctness of one extraction; unparseable is wrong. Judge items need a judge verdict first."""
    ans = extraction.answer
    if ans is None:
        return False
    kind = example.answer_type
    if kind == "choice":
        return ans.strip().upper() == example.gold
    if kind == "number":
        return number_equal(ans, example.gold)
    if kind == "math":
        return math_equal(ans, example.gold)
    if kind == "label":
        return ans.casefold() == example.gold.casefold()
    if kind == "text":
        return text_em(ans, example)
    if kind == "judge":
        # the judge pass stores Extraction(str(score 1-5), "judge_score"); correct at >= 4 (BiGGen rule)
        return extraction.method == "judge_score" and ans.isdigit() and int(ans) >= 4
    raise ValueError(f"unknown answer type {kind!r}")
