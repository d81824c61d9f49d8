"""Import the study's released per-item generations and re-score them with our extractors.

Sprague et al. published every model's outputs as Hugging Face datasets
``TAUR-Lab/Taur_CoT_Analysis_Project___<org>__<model>`` (one config per dataset, split ``latest``).
Each row holds, for each of ``zero_shot_direct``, ``zero_shot_cot``, ``few_shot_direct`` and
``few_shot_cot``: ``<prefix>_model_response``, ``_parsed_model_answer``, ``_is_correct``,
``_answer_was_parsed``, ``_errored``, ``_messages`` (JSON) — plus ``question``, ``answer`` (gold text),
``answerKey`` (gold label), ``choices`` (JSON ``{"label": [...], "text": [...]}``) and
``additional_information`` (JSON). A configuration that was not run holds the placeholder response
``[invalid] - configuration was not run``; those cells are skipped.

Rows become our sample table (settings zs_direct … fs_cot), re-extracted and re-scored with
:func:`cotbench.scoring.extract.extract_all` (every applicable extractor; the default one's verdict is
``correct``); their verdicts are kept in ``extra["published"]`` so
:func:`cotbench.analysis.disagreements.disagreements` can show where the two scorings differ. Example
ids are ``<config>/<row index>`` (the release has no item ids), so compare runs of the same release.
This module does I/O (hub, files); the ``published`` command lives in ``published/cli.py``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from cotbench.records import LETTERS, DataError, Example, read_rows_any

HUB_PREFIX = "TAUR-Lab/Taur_CoT_Analysis_Project___"
NOT_RUN = "[invalid] - configuration was not run"
PREFIXES = {
    "zero_shot_direct": "zs_direct",
    "zero_shot_cot": "zs_cot",
    "few_shot_direct": "fs_direct",
    "few_shot_cot": "fs_cot",
}

# The study's config names -> (candidate cotbench task names, the study's category group).
STUDY_CONFIGS: dict[str, tuple[tuple[str, ...], str]] = {
    "csqa": (("commonsenseqa", "commonsense_qa", "csqa"), "commonsense"),
    "stratqa": (("strategyqa",), "commonsense"),
    "siqa": (("siqa", "social_i_qa"), "commonsense"),
    "piqa": (("piqa",), "commonsense"),
    "winogrande": (("winogrande",), "commonsense"),
    "arc_easy": (("arc_easy",), "knowledge"),
    "arc_challenge": (("arc_challenge",), "knowledge"),
    "agieval_lsat_lr": (("agieval/lsat-lr",), "soft_reasoning"),
    "agieval_lsat_ar": (("agieval/lsat-ar",), "soft_reasoning"),
    "agieval_lsat_rc": (("agieval/lsat-rc",), "soft_reasoning"),
    "mmlu": (("mmlu",), "knowledge"),
    "mmlu_pro": (("mmlu_pro",), "knowledge"),
    "gpqa": (("gpqa",), "mathematical"),
    "math": (("math",), "mathematical"),
    "gsm8k": (("gsm8k",), "mathematical"),
    "gsm8k_hard": (("gsm8k_hard",), "mathematical"),
    "folio": (("folio",), "symbolic"),
    "bbh": (("bbh",), "symbolic"),
    "contexthub_deductive_level1": (("contexthub/deductive_l1",), "symbolic"),
    "contexthub_deductive_level2": (("contexthub/deductive_l2",), "symbolic"),
    "contexthub_abductive_level1": (("contexthub/abductive_l1",), "symbolic"),
    "contexthub_abductive_level2": (("contexthub/abductive_l2",), "symbolic"),
    "mm_musr": (("musr/murder_mysteries",), "soft_reasoning"),
    "op_musr": (("musr/object_placements",), "soft_reasoning"),
    "ta_musr": (("musr/team_allocation",), "soft_reasoning"),
    "biggen_bench": (("biggen_bench",), "soft_reasoning"),
    "musique_all": (("musique",), "soft_reasoning"),
}


def hub_repo(model: str) -> str:
    """``meta-llama/Meta-Llama-3.1-8B-Instruct`` -> the study's dataset repo for that model."""
    return HUB_PREFIX + model.replace("/", "__")


def load_hub(model: str, config: str, revision: str | None = None) -> list[dict[str, Any]]:
    """Rows of one released config from the hub (needs network access to huggingface.co)."""
    import datasets  # heavy import kept at the edge

    ds = datasets.load_dataset(hub_repo(model), config.replace("/", "__"), split="latest", revision=revision)
    return [dict(r) for r in ds]


def read_file(path: str | Path) -> list[dict[str, Any]]:
    """Rows in the release schema from a local .jsonl, .json (list of rows), .csv or .parquet file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return read_rows_any(p)
    if suffix == ".csv":
        return pd.read_csv(p, keep_default_na=False).to_dict("records")
    if suffix == ".parquet":
        return pd.read_parquet(p).to_dict("records")
    raise DataError(f"{p}: unsupported file type {suffix!r} (use .jsonl, .json, .csv or .parquet)")


def resolve_task(config: str, task_name: str | None = None):
    """Our Task for a study config, or None when the task registry has no match."""
    names = (task_name,) if task_name else STUDY_CONFIGS.get(config, ((config,), ""))[0]
    for name in names:
        t = _try_task(name)
        if t is not None:
            return t
    if task_name:
        raise DataError(f"unknown task {task_name!r}")
    return None


def _row_task(task, config: str, info: Any):
    """The task for one row: the config's task, or for a pooled config such as ``bbh`` the sub-task
    named in ``additional_information`` (keys ``task``/``subtask``/``subset``), when it resolves."""
    if task is not None or not isinstance(info, dict):
        return task
    for k in ("task", "subtask", "subset", "task_name"):
        v = info.get(k)
        if isinstance(v, str) and v:
            for name in (f"{config}/{v}", v):
                t = _try_task(name)
                if t is not None:
                    return t
    return None


def _try_task(name: str):
    try:
        from cotbench.tasks import get_task

        return get_task(name)
    except (ImportError, KeyError, ValueError):
        return None


def _json_field(row: dict[str, Any], name: str, where: str, default: Any) -> Any:
    v = row.get(name)
    if v is None or v == "":
        return default
    if isinstance(v, (dict, list)):
        return v
    try:
        return json.loads(v)
    except (TypeError, json.JSONDecodeError):
        raise DataError(f"{where}: field {name!r} is not valid JSON") from None


def _gold(row: dict[str, Any], answer_type: str, labels, texts: list[str], where: str) -> str:
    """Our canonical gold from the release's ``answerKey``/``answer``."""
    key = str(row.get("answerKey", "")).strip().strip("()")
    answer = str(row.get("answer", "")).strip()
    if answer_type == "choice":
        if labels and key in [str(x) for x in labels]:
            return LETTERS[[str(x) for x in labels].index(key)]
        if len(key) == 1 and key.upper() in LETTERS[: len(texts) or len(LETTERS)]:  # options may sit in the question
            return key.upper()
        if answer in texts:
            return LETTERS[texts.index(answer)]
        raise DataError(f"{where}: cannot map gold answerKey={key!r} / answer={answer!r} to an option")
    if answer in ("", "None"):
        raise DataError(f"{where}: missing field 'answer'")
    if answer_type == "label" and labels:
        by_lower = {str(x).lower(): str(x) for x in labels}
        synonyms = {"true": "yes", "false": "no", "yes": "true", "no": "false"}
        low = answer.lower()
        if low in by_lower:
            return by_lower[low]
        if synonyms.get(low) in by_lower:
            return by_lower[synonyms[low]]
    return answer


def _truthy(v: Any) -> bool:
    """Release booleans, also when a CSV copy turned them into strings ("False" is false)."""
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return bool(v) if v is not None else False


def _answer_type(task, texts: list[str], answer: str) -> str:
    if task is not None:
        return task.answer_type
    if texts:
        return "choice"
    try:
        float(answer.replace(",", ""))
        return "number"
    except ValueError:
        return "text"


def import_rows(rows: Iterable[dict[str, Any]], model: str, config: str, task_name: str | None = None,
                source: str = "") -> list[dict[str, Any]]:
    """Release rows -> sample rows (dicts in the SampleResult schema), re-scored by our extractors.

    A row whose response cannot be re-extracted (an answer type our extractors do not cover) keeps
    ``parse_status="unparseable"`` and ``extract_method="unsupported:<error>"``; it is counted in
    :func:`disagreements` rather than silently dropped.
    """
    from cotbench.scoring.extract import default_extractor, extract_all

    task = resolve_task(config, task_name)
    out: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        where = f"{source or config}: row {i + 1}"
        if not isinstance(row.get("question"), str):
            raise DataError(f"{where}: missing field 'question'")
        ch = _json_field(row, "choices", where, {})
        texts = [str(t) for t in (ch.get("text") or [])] if isinstance(ch, dict) else [str(t) for t in ch]
        labels = ch.get("label") if isinstance(ch, dict) else None
        info = _json_field(row, "additional_information", where, {})
        rtask = _row_task(task, config, info)
        atype = _answer_type(rtask, texts, str(row.get("answer", "")))
        tlabels = rtask.labels if rtask is not None else None
        gold = _gold(row, atype, tlabels if atype == "label" else labels, texts, where)
        dataset = rtask.name if rtask is not None else (task_name or config)
        group = rtask.group if rtask is not None else STUDY_CONFIGS.get(config, ((), "unknown"))[1]
        ex = Example(id=f"{config}/{i}", dataset=dataset, question=row["question"], gold=gold, answer_type=atype,
                     choices=tuple(texts) or None, metadata=info if isinstance(info, dict) else {"info": info})
        for prefix, setting in PREFIXES.items():
            resp = row.get(f"{prefix}_model_response")
            if resp is None or resp == NOT_RUN:
                continue
            if not isinstance(resp, str):
                raise DataError(f"{where}: field '{prefix}_model_response' is not a string")
            try:  # every applicable extractor; the default one's verdict is `correct`
                exts = extract_all(resp, ex, tlabels)
                chosen = exts[default_extractor(ex)]
                answer, method, correct = chosen["answer"], chosen["method"], chosen["correct"]
            except (NotImplementedError, KeyError, ValueError) as e:
                answer, method, correct, exts = None, f"unsupported:{type(e).__name__}", False, {}
            msgs = _json_field(row, f"{prefix}_messages", where, None)
            out.append({
                "model": model, "dataset": dataset, "group": group, "setting": setting,
                "example_id": ex.id, "sample_index": 0, "key": "",
                "messages": msgs if isinstance(msgs, list) else [],
                "response": resp, "extracted": answer, "extract_method": method,
                "parse_status": "ok" if answer is not None else "unparseable",
                "gold": gold, "correct": correct,
                "tokens_in": None, "tokens_out": None, "latency_s": None, "finish_reason": None,
                "question": row["question"], "choices": texts or None, "metadata": ex.metadata,
                "extra": {"published": {
                    "config": config,
                    "extracted": row.get(f"{prefix}_parsed_model_answer"),
                    "correct": _truthy(row.get(f"{prefix}_is_correct")),
                    "parsed": _truthy(row.get(f"{prefix}_answer_was_parsed")),
                    "errored": _truthy(row.get(f"{prefix}_errored")),
                }},
                "extractions": exts,
            })
    return out


def use_their_scores(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of rows with ``correct``/``parse_status`` replaced by the release's own verdicts (ours kept
    in ``extra["ours"]`` so :func:`cotbench.analysis.disagreements.disagreements` still works)."""
    out = []
    for r in rows:
        pub = r["extra"]["published"]
        ours = {"extracted": r["extracted"], "correct": r["correct"], "parse_status": r["parse_status"],
                "extract_method": r["extract_method"]}
        out.append({**r, "correct": pub["correct"], "parse_status": "ok" if pub["parsed"] else "unparseable",
                    "extracted": pub["extracted"], "extract_method": "published",
                    "extra": {**r["extra"], "ours": ours}})
    return out
