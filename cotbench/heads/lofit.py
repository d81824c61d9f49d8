"""LoFiT (Yin et al., NeurIPS 2024, arXiv 2406.01563): localized fine-tuning on head representations.

Two steps, both with the base model frozen:

1. **Select heads.** Learn a per-head scaling ``z_h <- z_h * (1 + a_h)`` (``a_h`` of size head_dim, from
   zero) with an L1 penalty ``lambda * sum |a|``; keep the ``k`` heads with the largest ``|a_h|_1``.
2. **Offsets.** Learn only bias vectors ``z_h <- z_h + v_h`` on the selected heads (from zero).

The result is ``k x head_dim`` numbers, saved as a small JSON file that ``run --intervention lofit:FILE``
applies. Training data: prompts rendered exactly as the harness renders them (same templates and chat
template), with the answer the prompt asks for as the target (GSM8K: its worked solution, ``<<calc>>``
marks removed, ending "The answer is N."); the loss is next-token cross-entropy on the target only.
"""
from __future__ import annotations

import json
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cotbench.records import Message


@dataclass(frozen=True)
class TrainItem:
    messages: tuple[Message, ...]
    target: str  # the assistant reply to learn


@dataclass
class LofitConfig:
    k: int = 16  # heads kept after step 1
    l1: float = 1e-3  # step-1 penalty on the scalings
    steps_select: int = 20
    steps_offset: int = 30
    lr_select: float = 5e-3
    lr_offset: float = 1e-2
    batch_size: int = 4
    max_len: int = 256  # tokens per training sequence (prompt + target), longer ones are cut from the left
    seed: int = 0


@dataclass
class LofitResult:
    heads: list[tuple[int, int]]
    offsets: dict[tuple[int, int], list[float]]
    select_norms: list[list[float]]  # (layers, heads) |a_h|_1 after step 1
    losses_select: list[float] = field(default_factory=list)
    losses_offset: list[float] = field(default_factory=list)
    wall_s: dict[str, float] = field(default_factory=dict)
    trained_params: int = 0


def gsm8k_rationale(row: dict[str, Any]) -> tuple[str, str] | None:
    """(worked solution without ``<<...>>`` marks, final number) from a GSM8K row."""
    sol = row.get("answer")
    if not isinstance(sol, str) or "####" not in sol:
        return None
    body, final = sol.rsplit("####", 1)
    body = re.sub(r"<<[^>]*>>", "", body).strip()
    return " ".join(body.split()), final.strip().replace(",", "")


RATIONALES: dict[str, Callable[[dict[str, Any]], tuple[str, str] | None]] = {"gsm8k": gsm8k_rationale}


def train_items(task, rows: list[dict[str, Any]], settings: tuple[str, ...] = ("zs_direct", "zs_cot")) -> list[TrainItem]:
    """Rendered (prompt, target) pairs for a task's raw rows, in each of ``settings``.

    Direct targets are the prompt's own answer phrase (``direct_answer``, default "The answer is X.");
    CoT targets need a worked rationale (:data:`RATIONALES`); tasks without one train on direct only.
    """
    from cotbench.pipeline.prompts import fill, load_prompt_file, render
    from cotbench.pipeline.settings import get_setting

    spec = load_prompt_file(task.prompt_file)
    get_rationale = RATIONALES.get(task.name)
    out = []
    for i, row in enumerate(rows):
        ex = task.to_example(row, i)
        for sname in settings:
            setting = get_setting(sname)
            r = render(spec, ex, setting)
            if setting.mode == "cot":
                got = get_rationale(row) if get_rationale else None
                if got is None:
                    continue
                tmpl = spec.get("cot_answer") or "{rationale} The answer is {answer}."
                target = fill(tmpl, {"rationale": got[0], "answer": got[1]})
            else:
                tmpl = spec.get("direct_answer") or "The answer is {answer}."
                target = fill(tmpl, {"answer": ex.gold})
            out.append(TrainItem(r.messages, target.strip()))
    return out


def encode(tok, items: list[TrainItem], max_len: int) -> list[tuple[list[int], int]]:
    """(token ids, index where the target starts) per item, cut from the left to ``max_len``."""
    from cotbench.backends.transformers_local import prompt_ids

    out = []
    for it in items:
        p = prompt_ids(tok, it.messages)
        t = tok(it.target + (tok.eos_token or ""), add_special_tokens=False)["input_ids"]
        ids = (p + t)[-max_len:]
        out.append((ids, max(1, len(ids) - len(t))))
    return out


def _batch(encoded, idx, pad_id, device):
    import torch

    n = max(len(encoded[i][0]) for i in idx)
    ids = torch.full((len(idx), n), pad_id, dtype=torch.long)
    att = torch.zeros((len(idx), n), dtype=torch.long)
    labels = torch.full((len(idx), n), -100, dtype=torch.long)
    for r, i in enumerate(idx):
        seq, start = encoded[i]
        ids[r, :len(seq)] = torch.tensor(seq)
        att[r, :len(seq)] = 1
        labels[r, start:len(seq)] = torch.tensor(seq[start:])
    return ids.to(device), att.to(device), labels.to(device)


def _loop(model, encoded, params, loss_extra, steps, lr, cfg, pad_id, edit_kwargs, log) -> list[float]:
    """``steps`` Adam steps over seeded mini-batches; returns the loss of each step."""
    import torch

    from cotbench.heads.intervene import edit_heads

    opt = torch.optim.Adam(params, lr=lr)
    rng = random.Random(cfg.seed)
    order: list[int] = []
    losses = []
    for step in range(steps):
        if len(order) < cfg.batch_size:
            more = list(range(len(encoded)))
            rng.shuffle(more)
            order += more
        idx, order = order[:cfg.batch_size], order[cfg.batch_size:]
        ids, att, labels = _batch(encoded, idx, pad_id, model.device)
        with edit_heads(model, **edit_kwargs()):
            out = model(input_ids=ids, attention_mask=att, labels=labels)
        loss = out.loss + loss_extra()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
        if log:
            log(step + 1, steps, losses[-1])
    return losses


def train(model, tok, items: list[TrainItem], cfg: LofitConfig, log=None) -> LofitResult:
    """Run both LoFiT steps on a frozen ``model``; the model's own weights are never changed."""
    import torch

    from cotbench.heads.intervene import model_shape

    if not items:
        raise ValueError("LoFiT needs at least one training item")
    torch.manual_seed(cfg.seed)
    L, H, D = model_shape(model)
    if not 1 <= cfg.k <= L * H:
        raise ValueError(f"k must be in 1..{L * H}, got {cfg.k}")
    was_training = model.training
    model.eval()  # no dropout: the only randomness is the seeded batch order
    frozen = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    encoded = encode(tok, items, cfg.max_len)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    dev = model.device
    try:
        t0 = time.perf_counter()
        a = torch.zeros(L, H, D, device=dev, requires_grad=True)
        losses_a = _loop(model, encoded, [a], lambda: cfg.l1 * a.abs().sum(), cfg.steps_select, cfg.lr_select,
                         cfg, pad, lambda: {"scale": {l: 1 + a[l] for l in range(L)}},
                         (lambda s, n, x: log("select", s, n, x)) if log else None)
        norms = a.detach().abs().sum(-1).cpu()
        t1 = time.perf_counter()
        flat = sorted(range(L * H), key=lambda i: (-float(norms.view(-1)[i]), i))[:cfg.k]
        heads = sorted((i // H, i % H) for i in flat)
        v = torch.zeros(len(heads), D, device=dev, requires_grad=True)

        def bias():
            out: dict[int, Any] = {}
            for j, (l, h) in enumerate(heads):
                if l not in out:
                    out[l] = torch.zeros(H, D, device=dev)
                out[l] = out[l].index_put((torch.tensor([h], device=dev),), v[j:j + 1])
            return {"bias": out}

        losses_v = _loop(model, encoded, [v], lambda: 0.0, cfg.steps_offset, cfg.lr_offset, cfg, pad, bias,
                         (lambda s, n, x: log("offset", s, n, x)) if log else None)
        t2 = time.perf_counter()
    finally:
        for p, f in zip(model.parameters(), frozen):
            p.requires_grad_(f)
        model.train(was_training)
    offsets = {hd: [float(x) for x in v[j].detach().cpu()] for j, hd in enumerate(heads)}
    return LofitResult(heads=heads, offsets=offsets, select_norms=norms.tolist(), losses_select=losses_a,
                       losses_offset=losses_v, wall_s={"select": round(t1 - t0, 2), "offset": round(t2 - t1, 2)},
                       trained_params=len(heads) * D)


def save(result: LofitResult, path: str | Path, meta: dict[str, Any]) -> None:
    """Write the offsets (what ``lofit:FILE`` applies) with the selection norms and training record."""
    data = {"format": "cotbench-lofit/1", "heads": [f"{l}.{h}" for l, h in result.heads],
            "offsets": {f"{l}.{h}": [round(x, 7) for x in v] for (l, h), v in sorted(result.offsets.items())},
            "trained_params": result.trained_params, "wall_s": result.wall_s,
            "losses_select": [round(x, 5) for x in result.losses_select],
            "losses_offset": [round(x, 5) for x in result.losses_offset],
            "select_norms": [[round(x, 6) for x in row] for row in result.select_norms], **meta}
    from cotbench.records import atomic_write

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(p, json.dumps(data, indent=1) + "\n")


def lora_params(model, rank: int = 8, targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")) -> int:
    """Trainable parameters of a rank-``rank`` LoRA on ``targets`` of every layer (for comparison)."""
    import torch

    n = 0
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            n += rank * (mod.in_features + mod.out_features)
    return n


def split_rows(rows: list[dict[str, Any]], n_train: int, n_test: int, seed: int) -> tuple[list[int], list[int]]:
    """Seeded disjoint index sets (train, test) drawn from one file's rows."""
    if n_train + n_test > len(rows):
        raise ValueError(f"asked for {n_train} train + {n_test} test items but the file has {len(rows)}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    return sorted(order[n_test:n_test + n_train]), sorted(order[:n_test])

