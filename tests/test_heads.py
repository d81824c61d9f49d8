"""Retrieval heads, head interventions and LoFiT (cotbench.heads) and the transformers backend.

Pure parts run everywhere; model parts load the embedded SmolLM2-135M GGUF through transformers once
per module (needs the extra ``[heads]``: torch, transformers, gguf) and keep every probe tiny.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cotbench.analysis.heads import intervention_effects
from cotbench.heads import probes as pr
from cotbench.heads.intervene import (
    Intervention,
    parse_heads,
    random_heads,
    resolve,
    top_heads,
)
from cotbench.heads.retrieval import overlap, retrieval_hits, top_k

# ---------------------------------------------------------------- pure parts


def test_retrieval_hits_counts_only_copies_of_the_emitted_token_inside_the_span():
    prompt = [5, 7, 9, 7, 3]  # span = positions 1..2 (tokens 7, 9); position 3 is a 7 outside it
    span = [1, 2]
    answer = [7, 9, 4]  # 4 is not a span token: never a hit
    argmax = np.array([[[1, 2, 2],   # head 0: right place at both copy steps -> 2 hits
                        [3, 2, 1],   # head 1: 7 outside the span, then right -> 1 hit
                        [2, 1, 0]]])  # head 2: in the span but the wrong token -> 0
    assert retrieval_hits(argmax, prompt, answer, span).tolist() == [[2, 0 + 1, 0]]


def test_top_k_and_overlap():
    a = np.array([[0.9, 0.1], [0.5, 0.0]])
    b = np.array([[0.8, 0.0], [0.1, 0.6]])
    assert top_k(a, 2) == [(0, 0), (1, 0)]
    ov = overlap(a, b, 2)
    assert ov["shared_topk"] == 1 and ov["jaccard_topk"] == pytest.approx(1 / 3)
    assert overlap(a, a, 2)["spearman_rho"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        overlap(a, np.zeros((3, 2)), 1)


def test_needle_probes_are_seeded_and_place_one_needle():
    a = pr.needle_probes(4, context_words=60, seed=3)
    assert a == pr.needle_probes(4, context_words=60, seed=3)
    assert a != pr.needle_probes(4, context_words=60, seed=4)
    for p in a:
        text = p.messages[0]["content"]
        assert text.count(p.answer) == 1 and len(p.answer) == 6
        assert p.prefill.endswith(" is")
    deep = pr.needle_probes(1, context_words=200, depth=1.0, seed=0)[0].messages[0]["content"]
    shallow = pr.needle_probes(1, context_words=200, depth=0.0, seed=0)[0].messages[0]["content"]
    assert deep.index("special magic") > shallow.index("special magic")
    with pytest.raises(ValueError):
        pr.needle_probes(1, depth=1.5)


def test_item_probes_keep_items_whose_gold_text_is_in_the_context():
    from cotbench.pipeline.prompts import load_prompt_file
    from cotbench.records import Example

    spec = load_prompt_file("musr")
    inside = Example("x/1", "musr/murder_mysteries", "Ann and Bo met. Bo left early.\n\nWho is the murderer?",
                     "B", "choice", ("Ann", "Bo"))
    outside = Example("x/2", "musr/murder_mysteries", "Someone met. They left.\n\nWho is the murderer?",
                      "A", "choice", ("Cy", "Di"))
    got = pr.item_probes([inside, outside], spec)
    assert [p.id for p in got] == ["x/1"] and got[0].answer == "Bo"


def test_intervention_fingerprint_is_stable_and_sensitive():
    a = Intervention(((1, 2), (0, 3)), label="x")
    assert a.fingerprint() == Intervention(((0, 3), (1, 2)), label="other").fingerprint()
    assert a.fingerprint() != Intervention(((0, 3),)).fingerprint()
    off = Intervention(offsets={(0, 1): (0.1, 0.2)})
    assert off.fingerprint() != Intervention(offsets={(0, 1): (0.1, 0.25)}).fingerprint()
    assert Intervention().fingerprint() == "" and Intervention().empty


def test_resolve_specs(tmp_path):
    csv = tmp_path / "r.csv"
    pd.DataFrame({"layer": [0, 1, 2], "head": [0, 1, 2], "score": [0.1, 0.9, 0.5]}).to_csv(csv, index=False)
    assert top_heads(csv, 2) == ((1, 1), (2, 2))
    iv = resolve(f"knockout-top:2:{csv}", 4, 3, 8)
    assert iv.knockout == ((1, 1), (2, 2)) and iv.label == "ko-top2"
    rnd = resolve(f"knockout-random:2:7:{csv}", 4, 3, 8)
    assert not set(rnd.knockout) & {(1, 1), (2, 2)} and rnd.knockout == random_heads(2, 4, 3, 7, ((1, 1), (2, 2)))
    lof = tmp_path / "l.json"
    lof.write_text(json.dumps({"offsets": {"3.0": [0.5] * 8}}))
    both = resolve(f"knockout:0.1+lofit:{lof}", 4, 3, 8)
    assert both.knockout == ((0, 1),) and both.offsets == {(3, 0): (0.5,) * 8}
    for bad, msg in [("knockout:9.0", "outside"), ("knockout:a.b", "LAYER.HEAD"), ("zap:1", "unknown kind"),
                     (f"lofit:{tmp_path / 'none.json'}", "not found")]:
        with pytest.raises(ValueError, match=msg):
            resolve(bad, 4, 3, 8)
    lof.write_text(json.dumps({"offsets": {"3.0": [0.5] * 3}}))
    with pytest.raises(ValueError, match="expected 8 floats"):
        resolve(f"lofit:{lof}", 4, 3, 8)
    assert parse_heads("1.2, 3.4") == ((1, 2), (3, 4))


def test_lofit_split_is_seeded_and_disjoint():
    from cotbench.heads.lofit import split_rows

    rows = [{}] * 20
    tr, te = split_rows(rows, 12, 5, seed=0)
    assert (tr, te) == split_rows(rows, 12, 5, seed=0) and len(tr) == 12 and len(te) == 5
    assert not set(tr) & set(te) and split_rows(rows, 12, 5, seed=1) != (tr, te)
    with pytest.raises(ValueError, match="has 20"):
        split_rows(rows, 18, 5, seed=0)


def test_intervention_needs_the_transformers_backend():
    from cotbench.cli import main

    assert main(["run", "--intervention", "knockout:0.0", "--limit", "1"]) == 2


def _rows(model, setting, correct):
    return [{"model": model, "dataset": "d", "setting": setting, "example_id": str(i), "sample_index": 0,
             "correct": bool(c)} for i, c in enumerate(correct)]


def test_intervention_effects_pair_items_and_difference_the_drops():
    base = _rows("m", "zs_direct", [1, 1, 0, 0]) + _rows("m", "zs_cot", [1, 1, 1, 1])
    iv = _rows("m+ko", "zs_direct", [1, 1, 0, 0]) + _rows("m+ko", "zs_cot", [0, 0, 1, 1])
    t = intervention_effects(pd.DataFrame(base + iv), ("zs",), n_boot=500)
    (row,) = t.to_dict("records")
    assert row["intervention"] == "ko" and row["n"] == 4
    assert row["d_direct"] == 0 and row["d_cot"] == -0.5 and row["did"] == -0.5
    assert row["did_lo"] < -0.2 and row["did_hi"] <= 0
    # no base run: nothing to compare
    assert intervention_effects(pd.DataFrame(iv), ("zs",), n_boot=10).empty


# ---------------------------------------------------------------- the embedded model through transformers

@pytest.fixture(scope="module")
def loaded():
    for mod in ("torch", "transformers", "gguf"):
        pytest.importorskip(mod, reason="needs the extra [heads]: pip install torch==2.13.0 'cotbench[heads]'")
    import torch

    from cotbench.backends.transformers_local import load_model
    from cotbench.pipeline.model_registry import embedded_gguf

    torch.manual_seed(0)
    path = embedded_gguf()
    model, tok = load_model(path, "cpu")
    return path, model, tok


@pytest.fixture(scope="module")
def needles():
    return pr.needle_probes(5, context_words=40, seed=0)


@pytest.fixture(scope="module")
def needle_scores(loaded, needles):
    from cotbench.heads.retrieval import score_probes

    _, model, tok = loaded
    return score_probes(model, tok, needles, "generate")


@pytest.mark.slow
def test_model_shape_and_attention(loaded, needle_scores):
    from cotbench.heads.intervene import model_shape

    _, model, _ = loaded
    assert model_shape(model) == (30, 9, 64)
    mean, per = needle_scores
    assert mean.shape == (30, 9) and mean.max() > 0.75  # some head points at the needle while copying it
    assert sum(p.copied for p in per) >= 4  # the model copies most short-context needles


@pytest.mark.slow
def test_knocking_out_retrieval_heads_hurts_needles_more_than_random_heads(loaded, needles, needle_scores):
    from cotbench.heads.retrieval import needle_accuracy

    _, model, tok = loaded
    k = 10
    top = tuple(top_k(needle_scores[0], k))
    base = np.mean([p.copied for p in needle_scores[1]])  # scoring ran the same greedy answers
    knocked, _ = needle_accuracy(model, tok, needles, Intervention(top))
    rand = [needle_accuracy(model, tok, needles, Intervention(random_heads(k, 30, 9, s, top)))[0] for s in range(2)]
    assert knocked < min(rand), (base, knocked, rand)
    assert knocked <= base - 0.25, (base, knocked, rand)


@pytest.mark.slow
def test_harness_builds_the_transformers_backend_for_the_embedded_model(loaded, monkeypatch):
    from cotbench.backends import transformers_local
    from cotbench.pipeline.config import build_config
    from cotbench.pipeline.harness import make_backend
    from cotbench.pipeline.model_registry import resolve_model

    path, model, tok = loaded
    seen = []
    monkeypatch.setattr(transformers_local, "load_model", lambda p, *a: seen.append(str(p)) or (model, tok))
    cfg = build_config(None, {"backend": "transformers", "intervention": "knockout:0.0"})
    be = make_backend(resolve_model(cfg.generation.model, cfg.generation.backend), cfg)
    assert seen == [str(path)] and be.name == "transformers"
    assert be.model_id == "smollm2-135m-instruct+ko1" and "+iv-" in be.revision


@pytest.mark.slow
def test_backend_generates_and_the_intervention_changes_the_request_key(loaded, tmp_path):
    from cotbench.backends.transformers_local import TransformersBackend
    from cotbench.pipeline.config import build_config
    from cotbench.pipeline.harness import run

    path, model, tok = loaded
    base = TransformersBackend(str(path), "smollm2-135m-instruct", loaded=(model, tok))
    ko = TransformersBackend(str(path), "smollm2-135m-instruct", intervention="knockout:3.1,10.4",
                             loaded=(model, tok))
    assert ko.revision.startswith(base.revision + "+iv-") and ko.model_id.endswith("+ko2")
    data = tmp_path / "two.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n"
                            for q, a in [("What is 2 + 3?", "5"), ("What is 10 - 4?", "6")]))
    keys = {}
    for name, be, iv in (("base", base, None), ("ko", ko, "knockout:3.1,10.4")):
        cfg = build_config(None, {"backend": "transformers", "intervention": iv, "dataset_file": str(data),
                                  "answer_type": "number", "datasets": [], "settings": ["zs_direct"],
                                  "out": str(tmp_path / name), "progress": False, "max_tokens_direct": 8})
        out = run(cfg, backend=be)
        rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and all(r["response"] for r in rows)
        keys[name] = {r["key"] for r in rows}
        assert {r["model"] for r in rows} == {"smollm2-135m-instruct" + ("+ko2" if iv else "")}
    assert not keys["base"] & keys["ko"]
    ko.close()  # the harness writes the manifest after closing its backend
    assert ko.describe()["intervention"]["label"] == "ko2"


@pytest.mark.slow
def test_lofit_trains_end_to_end_and_touches_only_the_selected_heads(loaded, tmp_path):
    import torch

    from cotbench.heads import lofit as lf
    from cotbench.heads.intervene import applied, o_projs, resolve
    from cotbench.tasks import get_task

    path, model, tok = loaded
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = [{"question": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
             "answer": f"Tom has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}"}
            for a, b in [(3, 4), (5, 2), (6, 1)]]
    items = lf.train_items(get_task("gsm8k"), rows)
    assert len(items) == 6 and items[1].target.endswith("The answer is 7.") and "<<" not in items[1].target
    cfg = lf.LofitConfig(k=3, steps_select=2, steps_offset=3, batch_size=2, max_len=128, lr_offset=0.05)
    res = lf.train(model, tok, items, cfg)
    assert len(res.heads) == 3 and res.trained_params == 3 * 64 and set(res.offsets) == set(res.heads)
    assert any(abs(x) > 0 for v in res.offsets.values() for x in v)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the base weights never change
    out = tmp_path / "lofit.json"
    lf.save(res, out, {"dataset": "gsm8k"})
    iv = resolve(f"lofit:{out}", 30, 9, 64)
    assert set(iv.offsets) == set(res.heads)

    # every o_proj input as the projection sees it (after the edits), with and without the offsets:
    # layers before the first edited one are untouched; in that layer only the selected heads' slices
    # move, and by exactly their offsets
    first = min(l for l, _ in res.heads)
    seen: dict[str, list] = {"base": [], "lofit": []}
    ids = torch.tensor([tok("The answer is", add_special_tokens=False)["input_ids"]])
    projs = o_projs(model)
    for name in seen:
        hooks = [p.register_forward_hook(lambda m, args, out, s=seen[name]: s.append(args[0].detach().clone()))
                 for p in projs[:first + 1]]
        try:
            with torch.inference_mode(), applied(model, iv if name == "lofit" else None):
                model(ids)
        finally:
            for h in hooks:
                h.remove()
    for l in range(first):
        assert torch.equal(seen["base"][l], seen["lofit"][l])
    diff = (seen["lofit"][first] - seen["base"][first]).view(1, -1, 9, 64)
    for hd in range(9):
        want = torch.tensor(iv.offsets[(first, hd)]) if (first, hd) in iv.offsets else torch.zeros(64)
        assert torch.allclose(diff[0, :, hd, :], want.expand_as(diff[0, :, hd, :]), atol=1e-6), hd
