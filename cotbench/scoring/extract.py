"""Answer extractors: pure functions from model text to a canonical answer, or None (= unparseable).

Public API used by the runner: ``extract_all(text, example, labels, finish_reason)`` (every applicable
extractor's verdict, stored per sample), ``extract_answer`` (one named extractor) and ``score``.
Named extractors live in :data:`EXTRACTORS` (lm-eval style "filters"). :data:`APPLICABLE` gives each
answer type three, by role: ``*_strict`` reads only the answer format the prompts ask for (boxed, or an
answer phrase; lm-eval's strict-match); the default (:data:`DEFAULT_EXTRACTOR`, whose verdict is a
sample's ``correct``) adds the rules below that still require the response to *state* an answer;
``*_flexible`` then guesses (lm-eval's flexible-extract) and is never the default. Every extractor takes
``(text, example, labels, finish_reason)`` and returns an :class:`Extraction`.

Rules (default extractor):

1. ``<think>…</think>`` blocks are removed. A closing tag without an opening one (templates that put
   ``<think>`` in the prompt) drops everything before it. An opening tag that is never closed is a
   truncated reasoning trace: it and everything after it are dropped, so such a response is
   unparseable unless an answer was written *before* the block.
2. The answer stated *last* wins, whether in ``\\boxed{…}`` / ``\\fbox{…}`` or after an answer phrase
   ("\\boxed{3} … so the final answer is 5" reads 5). Answer phrases: "the (best|final|correct) answer
   is", "Answer:", "the answer (arabic numerals) is" (a short parenthesised qualifier), "the
   correct/best option is". "Options:", "Answer choices:" and "Let's check each option:" are not answer
   phrases (they open or echo the option list), and a value that continues as a list ("(A) 40 (B) 62")
   is not a choice. A value on the line after the phrase must stand alone ("Answer:\\nC"). The value
   must stand on its own: "Answer: Based on…" is not choice B, because a letter must be followed by
   punctuation, the end of the line, or (for A and I, which are English words) a connective such as
   "because"; a number must open the phrase's sentence ("The answer is 9 * 120 = 1080." reads 1080,
   "Answer: Let's compute 16 - 3 = 13…" reads nothing); text answers are the phrase's first sentence;
   MATH answers are the first ``$…$`` after the phrase or a short formula. Numbers and MATH also take
   GSM8K's line markers ``#### 18`` (strict too) and ``A: 18`` (default).
3. A response that *is* the answer ("C", "(C) Paris", "B\\n\\nExplanation…", "True.", "18 dollars"): what
   direct prompts ask for. Long reasoning that merely opens with "(a)" or "A. Let us…" is not choice A.
   The default choice extractor also maps an option's exact text ("The answer is London.") to its letter.
4. Numbers only: the last number of the final sentence, *if the response is finished*. The backend
   knows: ``finish_reason`` "length" (or "max_tokens", "context_overflow") means cut off, any other
   value means the model stopped. Only when it is unknown (None: older rows, imported generations) is
   the last character used (``.``, ``!``, or a closing bracket/``$`` = finished). A cut-off CoT is
   unparseable rather than scored on a stray intermediate number.

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
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable

from cotbench.records import Example, Extraction

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


def _boxes(text: str) -> list[tuple[int, str]]:
    """(position, contents) of every ``\\boxed{..}``/``\\fbox{..}`` with balanced braces, in order."""
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
            out.append((m.start(), text[m.end(): i - 1].strip()))
    return out


def _boxed_contents(text: str) -> list[str]:
    return [b for _, b in _boxes(text)]


_VERB = (r"(?:(?:is|would\s+be|should\s+be|will\s+be|must\s+be|=)\s*"
         r"(?:therefore|thus|then|clearly|probably|likely|indeed)?\s*:?|:)")
# "answer" may carry a short qualifier: "the answer (arabic numerals) is 70". "option"/"choice" count only
# with a qualifier ("the correct option is C"): "Let's check each option:" opens a list, and plural forms
# ("Answer choices:", "Options:") echo the question's options rather than choosing one.
_PHRASE = re.compile(
    rf"\banswer\s*(?:\([^()\n]{{1,40}}\)\s*)?{_VERB}"
    rf"|\b(?:correct|best|right|final)\s+(?:option|choice)\s*{_VERB}",
    re.I,
)
# Line-initial answer markers of GSM8K-style solutions: "#### 18" (the dataset's own format) and "A: 18"
# (the Q:/A: format of few-shot exemplars). Used for number and MATH answers only: for a multiple-choice
# item "A:" is as likely to be option A.
_MARKERS = {"hash_marker": re.compile(r"^[ \t]*####", re.M), "a_marker": re.compile(r"^[ \t]*A:", re.M)}


@dataclass(frozen=True)
class _Span:
    pos: int  # where the phrase starts (later statements win)
    text: str  # the rest of its line, or the next line when the phrase ends its line
    same_line: bool
    method: str
    after: str = ""  # the line after the value (an option list continues there)


def _phrase_spans(text: str, markers: tuple[str, ...] = ()) -> list[_Span]:
    """Every answer phrase (and the named line markers) with the value text after it, last first."""
    found = [(m, "answer_phrase") for m in _PHRASE.finditer(text)]
    for name in markers:
        found += [(m, name) for m in _MARKERS[name].finditer(text)]
    spans = []
    for m, method in found:
        rest = text[m.end():]
        same = bool(rest.split("\n", 1)[0].strip())
        if not same:  # "Answer:\nC" puts the value on the next line
            rest = rest.lstrip(" \t\n")
        line, _, after = rest.partition("\n")
        spans.append(_Span(m.start(), line.strip(), same, method, after.lstrip(" \t\n").split("\n", 1)[0]))
    return sorted(spans, key=lambda sp: -sp.pos)


def _latest(text: str, parse_box: Callable[[str], str | None], parse_span: Callable[[_Span], str | None],
            markers: tuple[str, ...] = ()) -> Extraction | None:
    """The answer stated *last*, whether boxed or after an answer phrase: "\\boxed{3} ... so the final
    answer is 5" is 5, and "The answer is $\\boxed{5}$" is 5 either way."""
    best: tuple[int, str, str] | None = None
    for pos, b in reversed(_boxes(text)):
        v = parse_box(b)
        if v is not None:
            best = (pos, v, "boxed")
            break
    for sp in _phrase_spans(text, markers):
        if best is not None and sp.pos < best[0]:
            break
        v = parse_span(sp)
        if v is not None:
            best = (sp.pos, v, sp.method)
            break
    return Extraction(best[1], best[2]) if best else None


def _unbox_text(b: str) -> str:
    return re.sub(r"\\text(?:bf)?\{([^}]*)\}", r"\1", b)


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


_OPTION_MARK = re.compile(r"(?:^|\s)\(?([A-Z])[).:]\s")


def _is_option_list(span: str) -> bool:
    """An echoed option list ("(A) 40 (B) 62 (C) 82"): it names A and then B, in that order."""
    return [m.group(1) for m in _OPTION_MARK.finditer(" " + span)][:2] == ["A", "B"]


# "So the answer is (A) or (B)." names two options: a hedge, not a choice.
_HEDGED = re.compile(r"[\s*_:\"'\[]*\(?[A-Z]\)?\s*(?:,|/|or|and)\s*(?:option\s+)?\(?[A-Z]\)?\s*(?:[.,;!]|$)", re.I)


def _letter_alone(span: str, example: Example) -> str | None:
    """A letter that makes up the whole line, optionally with its own option text: "C", "(C)", "C. Paris"."""
    letter = _letter_at_start(span, len(example.choices or ()))
    if not letter:
        return None
    rest = re.sub(r"^[\s*_:\"'\[]*(?:option|choice|letter)?\s*\(?\s*[A-Za-z]\s*\)?[.:)]?", "", span, flags=re.I)
    rest = _norm_text(rest)
    opt = _norm_text(example.choices[LETTERS.index(letter)]) if example.choices else ""
    return letter if not rest or rest == opt else None


def _choice_span(example: Example) -> Callable[[_Span], str | None]:
    n = len(example.choices or ())

    def parse(sp: _Span) -> str | None:
        if _is_option_list(sp.text) or _HEDGED.match(sp.text):
            return None
        if not sp.same_line:  # a value on the next line must stand alone, not open a list of options
            return None if _is_option_list(sp.text + " " + sp.after) else _letter_alone(sp.text, example)
        return _letter_at_start(sp.text, n)

    return parse


def _norm_text(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip().strip(".").strip("\"'").strip()).casefold()


def _choice_by_text(span: str, choices: tuple[str, ...] | None) -> str | None:
    """Map an answer given as the option's text (e.g. "The answer is Paris.") to its letter."""
    if not choices:
        return None
    s = _norm_text(span)
    hits = [i for i, c in enumerate(choices) if _norm_text(c) and _norm_text(c) == s]
    return LETTERS[hits[0]] if len(hits) == 1 else None


_STATED = re.compile(r"[,;:\-\u2014]?\s*(?:because|since|as)\b"
                     r"|(?:is|would\s+be)\s+(?:the\s+)?(?:correct|right|best|answer)\b", re.I)


def _leading_letter(t: str, example: Example) -> str | None:
    """A response that *is* a choice: "C", "(C) Paris", "B, because ...", or a first line made of the letter
    and the start of that option's own text. Long reasoning that merely opens with an enumerator ("(a) First,
    ..." or "A. Let us ...") is not a choice."""
    s = t.strip()
    letter = _letter_at_start(s, len(example.choices or ()))
    if not letter:
        return None
    first = s.split("\n", 1)[0]
    if len(s.split()) <= 6 and "\n" not in s:
        return letter
    if _letter_alone(first, example):
        return letter
    rest = re.sub(r"^[\s*_:\"'\[]*\(?\s*[A-Za-z]\s*\)?[.:)]?\s*", "", first)
    if _STATED.match(rest):  # "B, because ...", "B is correct since ..."
        return letter
    opt = (example.choices or ())[LETTERS.index(letter)].strip()
    if opt and rest.casefold().startswith(opt.casefold()) and not rest[len(opt):len(opt) + 1].isalnum():
        return letter
    return None


def choice_strict(text: str, example: Example, labels=None, finish_reason=None) -> Extraction:
    """The prompt's answer format only: a boxed letter or an answer phrase + letter (lm-eval strict-match)."""
    t = _clean(text)
    n = len(example.choices or ())
    ex = _latest(t, lambda b: _letter_at_start(_unbox_text(b), n), _choice_span(example))
    return ex or Extraction(None, "none")


def choice_text(text: str, example: Example, labels=None, finish_reason=None) -> Extraction:
    """``choice_strict``, then a response that is the letter, then an answer phrase followed by an option's
    exact text (the default)."""
    ex = choice_strict(text, example)
    if ex.parsed:
        return ex
    t = _clean(text)
    letter = _leading_letter(t, example)
    if letter:
        return Extraction(letter, "leading_letter")
    for sp in _phrase_spans(t):
        letter = _choice_by_text(sp.text, example.choices)
        if letter:
            return Extraction(letter, "answer_phrase_text")
    letter = _choice_by_text(t, example.choices)
    if letter:
        return Extraction(letter, "whole_response_text")
    return Extraction(None, "none")


def choice_flexible(text: str, example: Example, labels=None, finish_reason=None) -> Extraction:
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


# Finish reasons that mean the backend cut the response off (OpenAI/vLLM/llama.cpp "length", Anthropic
# "max_tokens", cotbench's own "context_overflow"); any other known reason means the model stopped.
CUT_OFF = frozenset({"length", "max_tokens", "context_overflow"})


def _finished(t: str, finish_reason: str | None = None) -> bool:
    """Whether the response is complete. The backend knows (``finish_reason``); only when it did not say
    (None: old rows, imported generations) is a cut-off guessed from the last character."""
    if finish_reason is not None:
        return finish_reason not in CUT_OFF
    s = t.rstrip().rstrip("*_ ")
    if re.fullmatch(r"\$?\s?-?\d[\d,]*(?:\.\d+)?\s?%?", s.rsplit("\n", 1)[-1].strip()):
        return True  # a last line that is only a number ("...\n\n$80") states it; a cut sentence does not end so
    return bool(s) and s[-1] in ".!)]}$"


def _leading_number(t: str, finish_reason: str | None = None) -> str | None:
    """A short one-line response ("18", "$1,080.", "18 dollars", "The total is 18.").

    It must hold a single number or be finished: "She sells 9 eggs at $2 each, so" is a cut-off CoT.
    """
    s = t.strip()
    if not s or "\n" in s or len(s.split()) > 12:
        return None
    nums = _NUM.findall(s)
    if not nums or (len(nums) > 1 and not _finished(s, finish_reason)):
        return None
    return normalize_number(nums[-1])


def _number_box(b: str) -> str | None:
    return _number_in_span(re.sub(r"\\text\{[^}]*\}|\\(?:,|!|;)", "", b).replace("{,}", ""), anchored=False)


def number_strict(text: str, example: Example, labels=None, finish_reason=None) -> Extraction:
    """The answer format only: boxed number, "The answer is N" / "Answer: N", or GSM8K's "#### N"."""
    ex = _latest(_clean(text), _number_box, lambda sp: _number_in_span(sp.text), ("hash_marker",))
    return ex or Extraction(None, "none")


def number(text: str, example: Example, labels=None, finish_reason=None) -> Extraction:
    """``number_strict`` (plus an "A: N" line), a short one-line response, then the last number of the final
    sentence of a *finished* response (see :func:`_finished`)."""
    t = _clean(text)
    ex = _latest(t, _number_box, lambda sp: _number_in_span(sp.text), ("hash_marker", "a_marker"))
    if ex:
        return ex
    v = _leading_number(t, finish_reason)
    if v is not None:
        return Extraction(v, "short_response")
    if _finished(t, finish_reason):
        sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z\\$])|\n+", t.strip())
        nums = _NUM.findall(sentences[-1]) if sentences else []
        if nums:
            v = normalize_number(nums[-1])
            if v is not None:
                return Extraction(v, "last_number_final_sentence")
    return Extraction(None, "none")


def number_flexible(text: str, example: Example, labels=None, finish_reason=None) -> Extraction:
    """``number``, then the last number anywhere (lm-eval flexible-extract; guesses)."""
    ex = number(text, example, finish_reason=finish_reason)
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


def _math_box(b: str) -> str | None:
    return b or None


def math_strict(text: str, example: Example, labels=None, finish_reason=None) -> Extraction:
    """The answer format only: the last-stated ``\\boxed{}`` or answer-phrase value."""
    t = strip_think(text).replace("**", "")
    ex = _latest(t, _math_box, lambda sp: _math_span(sp.text), ("hash_marker",))
    return ex or Extraction(None, "none")


def boxed_math(text: str, example: Example, labels=None, finish_reason=None) -> Extraction:
    """``math_strict`` (plus an "A: x" line), else a short one-line response (the default for MATH)."""
    t = strip_think(text).replace("**", "")
    ex = _latest(t, _math_box, lambda sp: _math_span(sp.text), ("hash_marker", "a_marker"))
    if ex:
        return ex
    s = t.strip()
    if s and "\n" not in s and len(s) <= 40:
        v = _math_span(s)
        if v:
            return Extraction(v, "short_response")
    return Extraction(None, "none")


def math_flexible(text: str, example: Example, labels=None, finish_reason=None) -> Extraction:
    """``boxed_math``, then the last inline formula of the last line, then the last number (guesses)."""
    ex = boxed_math(text, example)
    if ex.parsed:
        return ex
    lines = [ln for ln in strip_think(text).strip().split("\n") if ln.strip()]
    if lines:
        formulas = re.findall(r"\$([^$]+)\$", lines[-1])
        if formulas:
            v = formulas[-1].split("=")[-1].strip()
            if v:
                return Extraction(v, "last_formula")
    ex = number_flexible(text, example, finish_reason=finish_reason)
    return ex if ex.parsed else Extraction(None, "none")


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


def _label_setup(text: str, example: Example, labels) -> tuple[str, list[tuple[str, str]]]:
    labs = tuple(labels or example.metadata.get("labels") or ())
    if not labs:
        raise ValueError(f"{example.dataset}: label extraction needs the task's labels")
    return _clean(text), _label_forms(labs)


def label_strict(text: str, example: Example, labels: tuple[str, ...] | None = None, finish_reason=None) -> Extraction:
    """The answer format only: a boxed label or an answer phrase + label (synonyms mapped)."""
    t, forms = _label_setup(text, example, labels)
    ex = _latest(t, lambda b: _label_at_start(_unbox_text(b), forms, loose=True),
                 lambda sp: _label_at_start(sp.text, forms, loose=True))
    return ex or Extraction(None, "none")


def label(text: str, example: Example, labels: tuple[str, ...] | None = None, finish_reason=None) -> Extraction:
    """``label_strict``, then a response that starts with a label (True/False/Uncertain, Yes/No, ...)."""
    ex = label_strict(text, example, labels)
    if ex.parsed:
        return ex
    t, forms = _label_setup(text, example, labels)
    s = t.strip()
    lab = _label_at_start(s, forms, loose=len(s.split()) <= 6)
    if lab:
        return Extraction(lab, "leading_label")
    return Extraction(None, "none")


def label_flexible(text: str, example: Example, labels: tuple[str, ...] | None = None,
                   finish_reason=None) -> Extraction:
    """``label``, then the label word that occurs last anywhere (a guess)."""
    ex = label(text, example, labels)
    if ex.parsed:
        return ex
    t, forms = _label_setup(text, example, labels)
    low = t.casefold()
    best = max(((m.start(), lab) for form, lab in forms for m in re.finditer(rf"\b{re.escape(form)}\b", low)),
               default=None)
    return Extraction(best[1], "last_label") if best else Extraction(None, "none")


# ------------------------------------------------------------------------------------------------ text


def _text_value(span: str) -> str | None:
    """The answer part of a span: its first sentence, without emphasis, quotes or a final period."""
    s = re.split(r"\.\s+(?=[A-Z])", span.strip(), maxsplit=1)[0]  # "Paris. It is ..." -> "Paris"
    s = s.strip().strip("*_").strip()
    s = re.sub(r"\.$", "", s).strip().strip("\"'").strip()
    return s or None


def text_strict(text: str, example: Example, labels=None, finish_reason=None) -> Extraction:
    """The answer format only: boxed text or an answer phrase up to the end of its sentence."""
    ex = _latest(_clean(text), lambda b: _text_value(_unbox_text(b)), lambda sp: _text_value(sp.text))
    return ex or Extraction(None, "none")


def text_answer(text: str, example: Example, labels=None, finish_reason=None) -> Extraction:
    """``text_strict``; else a one-line response (at most 20 words, unless the task matches exact text such
    as a sorted word list)."""
    ex = text_strict(text, example)
    if ex.parsed:
        return ex
    s = _clean(text).strip()
    limit = 10**6 if example.metadata.get("text_match") == "exact" else 20
    if s and "\n" not in s and len(s.split()) <= limit and not re.search(r"\.\s+[A-Z]", s):
        v = _text_value(s)  # one sentence only: "Let me think. First ..." is a cut-off CoT
        if v:
            return Extraction(v, "whole_response")
    return Extraction(None, "none")


def text_flexible(text: str, example: Example, labels=None, finish_reason=None) -> Extraction:
    """``text``, then the first sentence of the last non-empty line (a guess)."""
    ex = text_answer(text, example)
    if ex.parsed:
        return ex
    lines = [ln for ln in _clean(text).strip().split("\n") if ln.strip()]
    v = _text_value(lines[-1]) if lines else None
    return Extraction(v, "last_line") if v else Extraction(None, "none")


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


def judge_response(text: str, example: Example, labels=None, finish_reason=None) -> Extraction:
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
    "math_strict": math_strict,
    "boxed_math": boxed_math,
    "math_flexible": math_flexible,
    "label_strict": label_strict,
    "label": label,
    "label_flexible": label_flexible,
    "text_strict": text_strict,
    "text": text_answer,
    "text_flexible": text_flexible,
    "judge": judge_response,
}
# Per answer type, the extractors every sample is scored with, by role: "strict" reads only the answer
# format the prompt asks for (lm-eval's strict-match), "default" is what `correct` holds, "flexible"
# also guesses (lm-eval's flexible-extract). Judge items have one verdict.
APPLICABLE: dict[str, dict[str, str]] = {
    "choice": {"strict": "choice_strict", "default": "choice", "flexible": "choice_flexible"},
    "number": {"strict": "number_strict", "default": "number", "flexible": "number_flexible"},
    "math": {"strict": "math_strict", "default": "boxed_math", "flexible": "math_flexible"},
    "label": {"strict": "label_strict", "default": "label", "flexible": "label_flexible"},
    "text": {"strict": "text_strict", "default": "text", "flexible": "text_flexible"},
    "judge": {"default": "judge"},
}
DEFAULT_EXTRACTOR: dict[str, str] = {kind: roles["default"] for kind, roles in APPLICABLE.items()}
ROLES = ("strict", "default", "flexible")


def default_extractor(example: Example) -> str:
    """The extractor whose verdict is the sample's ``correct``: a per-example override, else the type's default."""
    return example.metadata.get("extractor") or DEFAULT_EXTRACTOR[example.answer_type]


def extract_answer(
    text: str, example: Example, labels: tuple[str, ...] | None = None, extractor: str | None = None,
    finish_reason: str | None = None,
) -> Extraction:
    """Run the named extractor (default: the one for the example's answer type).

    ``finish_reason`` is the backend's ("stop", "length", ...): it decides whether the response was cut
    off; None means unknown, and then the last character decides (see :func:`_finished`).
    """
    name = extractor or example.metadata.get("extractor") or DEFAULT_EXTRACTOR.get(example.answer_type)
    if name not in EXTRACTORS:
        raise ValueError(f"unknown extractor {name!r}; choose from {', '.join(EXTRACTORS)}")
    return EXTRACTORS[name](text or "", example, labels, finish_reason=finish_reason)


def extract_all(text: str, example: Example, labels: tuple[str, ...] | None = None,
                finish_reason: str | None = None) -> dict[str, dict]:
    """Every applicable extractor's reading of one response: name -> {answer, method, correct, role}.

    This is what a sample stores (``SampleResult.extractions``), so an analysis can show how much a
    result depends on parsing. A per-example default override is included with role "default".
    """
    roles = {**APPLICABLE[example.answer_type], "default": default_extractor(example)}
    out: dict[str, dict] = {}
    for role in ("default", "strict", "flexible"):  # the default first: an override may name a strict one
        name = roles.get(role)
        if name is None or name in out:
            continue
        ex = extract_answer(text, example, labels, name, finish_reason)
        out[name] = {"answer": ex.answer, "method": ex.method, "correct": bool(score(example, ex)), "role": role}
    return out


def score(example: Example, extraction: Extraction) -> bool:
    """Correctness of one extraction; unparseable is wrong. Judge items are scored by their task's judge."""
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
        # text is never a verdict; a judge's verdict is read by its task's judge (Task.score), which alone
        # knows the pass score
        if extraction.method == "judge_score":
            raise ValueError(f"{example.id}: a judge verdict is scored by its task's judge (Task.score)")
        return False
    raise ValueError(f"unknown answer type {kind!r}")
