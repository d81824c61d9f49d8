"""Per-head interventions on a transformers decoder: knockout and LoFiT scales/offsets.

Every attention layer ends in an output projection ``o_proj`` whose *input* is the concatenation of
the heads' outputs, ``[z_0 | z_1 | ... | z_{H-1}]`` (each ``head_dim`` wide). A forward pre-hook there
sees every head separately, so one mechanism serves all edits::

    z_h  <-  keep_h * (z_h * scale_h + bias_h)

Knockout sets ``keep_h = 0`` (the head contributes nothing); LoFiT's first step learns ``scale_h = 1 +
a_h``, its second learns ``bias_h``. An :class:`Intervention` is plain data with a stable
:meth:`~Intervention.fingerprint`, which the transformers backend puts into the request key, so an
intervened run never reads a base run's cached generations.
"""
from __future__ import annotations

import hashlib
import json
import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from cotbench.records import read_json

Head = tuple[int, int]  # (layer, head)


@dataclass(frozen=True)
class Intervention:
    """What to change: heads to knock out and LoFiT bias offsets (head -> ``head_dim`` floats)."""

    knockout: tuple[Head, ...] = ()
    offsets: dict[Head, tuple[float, ...]] = field(default_factory=dict)
    label: str = ""  # short human name, e.g. "ko-top8"; not part of the fingerprint

    @property
    def empty(self) -> bool:
        return not self.knockout and not self.offsets

    def fingerprint(self) -> str:
        """Hash of what changes the model (heads and offset values), independent of label and order."""
        if self.empty:
            return ""
        payload = {"knockout": sorted([list(h) for h in set(self.knockout)]),
                   "offsets": {f"{l}.{h}": list(v) for (l, h), v in sorted(self.offsets.items())}}
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "fingerprint": self.fingerprint(),
                "knockout": [f"{l}.{h}" for l, h in self.knockout],
                "offset_heads": [f"{l}.{h}" for l, h in sorted(self.offsets)]}


def parse_heads(text: str) -> tuple[Head, ...]:
    """``"3.1,5.0"`` -> ((3, 1), (5, 0)); a malformed entry raises ValueError naming it."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            l, h = part.split(".")
            out.append((int(l), int(h)))
        except ValueError:
            raise ValueError(f"head {part!r}: expected LAYER.HEAD, e.g. 12.3") from None
    return tuple(out)


def check_heads(heads, n_layers: int, n_heads: int, where: str) -> None:
    bad = [f"{l}.{h}" for l, h in heads if not (0 <= l < n_layers and 0 <= h < n_heads)]
    if bad:
        raise ValueError(f"{where}: head(s) {bad} outside the model's {n_layers} layers x {n_heads} heads")


def random_heads(k: int, n_layers: int, n_heads: int, seed: int, exclude=()) -> tuple[Head, ...]:
    """``k`` distinct heads drawn with a fixed seed, never one of ``exclude`` (the control for a knockout)."""
    pool = [(l, h) for l in range(n_layers) for h in range(n_heads) if (l, h) not in set(exclude)]
    if k > len(pool):
        raise ValueError(f"cannot draw {k} random heads from {len(pool)}")
    return tuple(sorted(random.Random(seed).sample(pool, k)))


def resolve(spec: str | None, n_layers: int, n_heads: int, head_dim: int) -> Intervention:
    """Turn an ``--intervention`` string into an :class:`Intervention` for a model of this shape.

    Parts joined by ``+``:
      ``knockout:L.H,L.H``          these heads;
      ``knockout-top:K:CSV``        the K best heads of a retrieval-score CSV (``cotbench heads retrieval``);
      ``knockout-random:K:SEED[:CSV]`` K random heads (seeded), excluding that CSV's top K;
      ``lofit:FILE``                LoFiT offsets trained by ``cotbench heads lofit``.
    """
    if not spec:
        return Intervention()
    knock: list[Head] = []
    offsets: dict[Head, tuple[float, ...]] = {}
    labels = []
    for part in spec.split("+"):
        kind, _, rest = part.partition(":")
        if kind == "knockout":
            heads = parse_heads(rest)
            knock += heads
            labels.append(f"ko{len(heads)}")
        elif kind in ("knockout-top", "knockout-random"):
            bits = rest.split(":", 2 if kind == "knockout-random" else 1)
            try:
                k = int(bits[0])
            except ValueError:
                raise ValueError(f"--intervention {part!r}: K must be an integer") from None
            if kind == "knockout-top":
                if len(bits) < 2:
                    raise ValueError(f"--intervention {part!r}: expected knockout-top:K:CSV")
                heads = top_heads(bits[1], k)
                labels.append(f"ko-top{k}")
            else:
                seed = int(bits[1]) if len(bits) > 1 and bits[1] else 0
                excl = top_heads(bits[2], k) if len(bits) > 2 else ()
                heads = random_heads(k, n_layers, n_heads, seed, excl)
                labels.append(f"ko-rand{k}s{seed}")
            knock += heads
        elif kind == "lofit":
            offsets.update(load_offsets(rest, n_layers, n_heads, head_dim))
            labels.append(f"lofit-{Path(rest).stem}")
        else:
            raise ValueError(f"--intervention {part!r}: unknown kind {kind!r}; use knockout, knockout-top, "
                             f"knockout-random or lofit")
    check_heads(knock, n_layers, n_heads, f"--intervention {spec!r}")
    return Intervention(tuple(dict.fromkeys(knock)), offsets, "+".join(labels))


def top_heads(csv_path: str | Path, k: int) -> tuple[Head, ...]:
    """The ``k`` heads with the highest ``score`` in a retrieval CSV (ties broken by layer, head)."""
    import pandas as pd

    p = Path(csv_path)
    if not p.is_file():
        raise ValueError(f"retrieval score file not found: {p}")
    df = pd.read_csv(p)
    missing = {"layer", "head", "score"} - set(df.columns)
    if missing:
        raise ValueError(f"{p}: missing column(s) {sorted(missing)} (expected layer, head, score)")
    df = df.sort_values(["score", "layer", "head"], ascending=[False, True, True], kind="mergesort")
    return tuple((int(r.layer), int(r.head)) for r in df.head(k).itertuples())


def load_offsets(path: str | Path, n_layers: int, n_heads: int, head_dim: int) -> dict[Head, tuple[float, ...]]:
    """Read a LoFiT file (JSON written by :func:`cotbench.heads.lofit.save`) and check it fits the model."""
    p = Path(path)
    try:
        data = read_json(p)
    except FileNotFoundError:
        raise ValueError(f"LoFiT file not found: {p}") from None
    if not isinstance(data, dict) or not isinstance(data.get("offsets"), dict):
        raise ValueError(f"{p}: expected an object with an 'offsets' mapping LAYER.HEAD -> list of floats")
    out = {}
    for key, vec in data["offsets"].items():
        (head,) = parse_heads(key) or [None]
        if head is None or not isinstance(vec, list) or len(vec) != head_dim:
            raise ValueError(f"{p}: offsets[{key!r}]: expected {head_dim} floats for head LAYER.HEAD")
        out[head] = tuple(float(x) for x in vec)
    check_heads(out, n_layers, n_heads, str(p))
    return out


def model_shape(model) -> tuple[int, int, int]:
    """(layers, attention heads, head_dim) of a transformers decoder."""
    cfg = model.config
    n_heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    return cfg.num_hidden_layers, n_heads, head_dim


def o_projs(model) -> list:
    """Each layer's attention output projection (Llama/Mistral/Qwen/Gemma-style decoders)."""
    layers = getattr(getattr(model, "model", model), "layers", None)
    if layers is None or not all(hasattr(getattr(l, "self_attn", None), "o_proj") for l in layers):
        raise ValueError(f"{type(model).__name__}: head interventions need decoder layers with self_attn.o_proj")
    return [l.self_attn.o_proj for l in layers]


@contextmanager
def edit_heads(model, scale: dict[int, Any] | None = None, bias: dict[int, Any] | None = None,
               keep: dict[int, Any] | None = None) -> Iterator[None]:
    """Apply per-layer tensors while the block runs: ``scale``/``bias`` of shape (H, head_dim) and
    ``keep`` of shape (H,), each keyed by layer index. Tensors may require grad (LoFiT training)."""
    scale, bias, keep = scale or {}, bias or {}, keep or {}
    n_layers, n_heads, head_dim = model_shape(model)
    handles = []

    def make_hook(layer: int):
        def hook(module, args):
            x = args[0]
            z = x.view(*x.shape[:-1], n_heads, head_dim)
            if layer in scale:
                z = z * scale[layer].to(z.dtype)
            if layer in bias:
                z = z + bias[layer].to(z.dtype)
            if layer in keep:
                z = z * keep[layer].to(z.dtype)[:, None]
            return (z.reshape(x.shape), *args[1:])

        return hook

    try:
        for layer, proj in enumerate(o_projs(model)):
            if layer in scale or layer in bias or layer in keep:
                handles.append(proj.register_forward_pre_hook(make_hook(layer)))
        yield
    finally:
        for h in handles:
            h.remove()


def tensors_for(iv: Intervention, model) -> dict[str, dict[int, Any]]:
    """The ``edit_heads`` arguments that realise an :class:`Intervention` on ``model``'s device."""
    import torch

    n_layers, n_heads, head_dim = model_shape(model)
    device = next(model.parameters()).device
    keep: dict[int, Any] = {}
    for l, h in iv.knockout:
        keep.setdefault(l, torch.ones(n_heads, device=device))[h] = 0.0
    bias: dict[int, Any] = {}
    for (l, h), vec in iv.offsets.items():
        bias.setdefault(l, torch.zeros(n_heads, head_dim, device=device))[h] = torch.tensor(vec, device=device)
    return {"keep": keep, "bias": bias}


@contextmanager
def applied(model, iv: Intervention | None) -> Iterator[None]:
    """Run the block with ``iv`` applied (nothing when it is None or empty)."""
    if iv is None or iv.empty:
        yield
        return
    with edit_heads(model, **tensors_for(iv, model)):
        yield
