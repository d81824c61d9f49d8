"""The study's "=" split (Sec. 4.2, Fig. 4): on MMLU and MMLU-Pro, is CoT's gain concentrated on
items that involve an equation?

Each paired item goes into one bin:

* ``no_answer`` — the CoT response gave no parseable answer (``parse_status == "unparseable"``);
  the study also set these apart ("No Answer"), because their outcome says nothing about "=".
* ``equals`` — the question or the CoT response contains "=".
* ``no_equals`` — everything else.

Option ``include_gold`` (off by default): also search the gold answer's text (the gold option's
text for multiple choice). The study's code searched ``question + answer + cot_response`` where
``answer`` was the gold option text, so turning it on reproduces the study; it leaks the label
into the binning, which is why it is not our default. ``include_choices`` also searches all
option texts (a looser "the item involves an equation" reading).

Share of gain: ``share_of_gain`` is the bin's net gained items (Σd over the bin, d = correct_cot −
correct_direct) over the net gain of all items; ``share_of_answered_gain`` leaves the
``no_answer`` bin out of the denominator, which is what the study's percentages reduce to.
Both are NaN when their denominator is 0, and they can fall outside [0, 1] when bins pull in
opposite directions.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from cotbench.analysis.gains import Z95, paired_gain
from cotbench.analysis.paired import dataset_family, pair_shots
from cotbench.records import LETTERS

EQUALS_DATASETS = ("mmlu", "mmlu_pro")
BINS = ("equals", "no_equals", "no_answer")


def gold_text(gold: str, choices) -> str:
    """The gold option's text for a letter answer with options; otherwise the gold string."""
    gold = "" if gold is None else str(gold)
    if choices is not None and len(gold) == 1 and gold in LETTERS:
        i = LETTERS.index(gold)
        if i < len(choices):
            return str(choices[i])
    return gold


def assign_bin(question: str, cot_response: str, cot_parsed: bool, gold: str = "", choices=None,
               include_gold: bool = False, include_choices: bool = False) -> str:
    if not cot_parsed:
        return "no_answer"
    text = (question or "") + "\n" + (cot_response or "")
    if include_gold:
        text += "\n" + gold_text(gold, choices)
    if include_choices and choices is not None:
        text += "\n" + "\n".join(str(c) for c in choices)
    return "equals" if "=" in text else "no_equals"


def bin_items(pairs: pd.DataFrame, include_gold: bool = False, include_choices: bool = False) -> pd.Series:
    """The bin of each paired row (see the module docstring)."""
    if pairs.empty:
        return pd.Series([], dtype=object)
    choices = pairs["choices"] if "choices" in pairs.columns else pd.Series([None] * len(pairs), index=pairs.index)
    return pd.Series(
        [assign_bin(q, r, ps == "ok", g, c, include_gold, include_choices)
         for q, r, ps, g, c in zip(pairs["question"], pairs["response_treat"], pairs["parse_status_treat"],
                                   pairs["gold"], choices)],
        index=pairs.index, dtype=object)


COLUMNS = ["model", "dataset", "shots", "bin", "n", "acc_direct", "acc_cot", "gain", "se", "ci_low", "ci_high",
           "net_gain_items", "share_of_gain", "share_of_answered_gain"]


def _select(df: pd.DataFrame, datasets) -> pd.DataFrame:
    fam = df["dataset"].map(dataset_family)
    keep = df["dataset"].isin(datasets) | fam.isin(datasets)
    out = df[keep].copy()
    # sub-tasks such as mmlu/<subject> are pooled into their family
    sub = ~out["dataset"].isin(datasets)
    out.loc[sub, "example_id"] = out.loc[sub, "dataset"] + "::" + out.loc[sub, "example_id"].astype(str)
    out.loc[sub, "dataset"] = out.loc[sub, "dataset"].map(dataset_family)
    return out


def equals_split(df: pd.DataFrame, datasets=EQUALS_DATASETS, shots: tuple[str, ...] = ("zs", "fs"),
                 include_gold: bool = False, include_choices: bool = False) -> pd.DataFrame:
    """Per model × dataset × shots × bin: n, accuracies, gain with 95% CI, shares of the total gain."""
    sel = _select(df, tuple(datasets))
    pairs = pair_shots(sel, shots) if len(sel) else pd.DataFrame()
    rows = []
    if len(pairs):
        pairs = pairs.assign(bin=bin_items(pairs, include_gold, include_choices))
        for (model, dataset, s), p in pairs.groupby(["model", "dataset", "shots"], sort=True):
            total = p["d"].sum()
            answered = p.loc[p["bin"] != "no_answer", "d"].sum()
            for b in BINS:
                q = p[p["bin"] == b]
                gain, se = paired_gain(q["d"].to_numpy())
                net = int(q["d"].sum())
                rows.append({
                    "model": model, "dataset": dataset, "shots": s, "bin": b, "n": len(q),
                    "acc_direct": q["correct_base"].mean() if len(q) else np.nan,
                    "acc_cot": q["correct_treat"].mean() if len(q) else np.nan,
                    "gain": gain, "se": se, "ci_low": gain - Z95 * se, "ci_high": gain + Z95 * se,
                    "net_gain_items": net,
                    "share_of_gain": net / total if total != 0 else np.nan,
                    "share_of_answered_gain": (net / answered if answered != 0 else np.nan)
                    if b != "no_answer" else np.nan,
                })
    out = pd.DataFrame(rows, columns=COLUMNS)
    if not out.empty:
        out = out.assign(_s=out["shots"].map({"zs": 0, "fs": 1}), _b=out["bin"].map({b: i for i, b in enumerate(BINS)}))
        out = out.sort_values(["_s", "dataset", "model", "_b"], kind="mergesort").drop(columns=["_s", "_b"])
    return out.reset_index(drop=True)
