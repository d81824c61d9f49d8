"""``run --sample N``: a seeded, subject-stratified item sample (cotbench.pipeline.sampling and its harness use)."""
from __future__ import annotations

import json
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
from tiny_mirror import write_tiny_mirror

from cotbench.backends.table import TableBackend
from cotbench.cli import main
from cotbench.pipeline.config import build_config
from cotbench.pipeline.harness import load_data, resolve_tasks, run
from cotbench.pipeline.sampling import allocate, stratified_sample

SIZES = {"algebra": 100, "law": 1534, "ethics": 895, "virology": 166, "astronomy": 152, "anatomy": 135}


def labelled(sizes: dict[str, int]) -> tuple[list[str], list[str]]:
    items, strata = [], []
    for s, k in sizes.items():
        items += [f"{s}-{i}" for i in range(k)]
        strata += [s] * k
    return items, strata


def test_same_seed_same_sample_other_seed_other_sample():
    items, strata = labelled(SIZES)
    a = stratified_sample(items, strata, 200, seed=0)
    assert a == stratified_sample(items, strata, 200, seed=0)
    assert a != stratified_sample(items, strata, 200, seed=1)
    assert len(a) == 200 and len(set(a)) == 200
    assert a == sorted(a, key=items.index)  # source order


@pytest.mark.parametrize("n", [1, 5, 7, 200, 1000, 2981])
def test_allocation_is_proportional_floor_or_ceiling(n):
    total = sum(SIZES.values())
    for seed in range(5):
        counts = allocate(SIZES, n, seed)
        assert sum(counts.values()) == n
        for s, k in SIZES.items():
            quota = Fraction(n * k, total)
            assert counts[s] in {quota.__floor__(), quota.__ceil__()}, (s, counts[s], quota)


def test_sample_counts_follow_the_allocation():
    items, strata = labelled(SIZES)
    got = Counter(x.split("-")[0] for x in stratified_sample(items, strata, 300, seed=3))
    assert dict(got) == {s: k for s, k in allocate(SIZES, 300, 3).items() if k}


def test_small_samples_do_not_always_pick_the_biggest_strata():
    """Below one item per stratum, the seed decides which strata are drawn (a largest-remainder rule would
    always give the seats to 'law' and 'ethics'); over many seeds each is drawn about as often as its share."""
    picks = Counter()
    for seed in range(400):
        counts = allocate(SIZES, 2, seed)
        picks.update(s for s, k in counts.items() for _ in range(k))
    total = sum(SIZES.values())
    assert picks["algebra"] > 0 and picks["anatomy"] > 0
    for s, k in SIZES.items():
        assert abs(picks[s] / 800 - k / total) < 0.06, (s, picks[s])


def test_n_at_least_the_size_keeps_everything():
    items, strata = labelled({"a": 3, "b": 2})
    assert stratified_sample(items, strata, 5, seed=9) == items
    assert stratified_sample(items, strata, 50, seed=9) == items


@pytest.mark.parametrize("n", [0, -3])
def test_bad_sample_size_is_an_error(n):
    with pytest.raises(ValueError, match="at least 1"):
        allocate({"a": 3}, n, 0)
    with pytest.raises(ValueError, match="--sample must be at least 1"):
        build_config(None, {"sample": n})


def test_sample_and_limit_together_is_an_error(capsys):
    assert main(["run", "--sample", "3", "--limit", "3"]) != 0
    assert "--sample and --limit" in capsys.readouterr().err


@pytest.fixture
def mixed_mmlu(tmp_path) -> Path:
    """The tiny mirror with an MMLU split of three subjects in blocks (first rows all one subject)."""
    root = write_tiny_mirror(tmp_path / "hf")
    rows = [{"question": f"{subj} question {i}?", "subject": subj, "choices": ["w", "x", "y", "z"], "answer": i % 4}
            for subj, k in (("abstract_algebra", 20), ("anatomy", 40), ("virology", 60)) for i in range(k)]
    (root / "mmlu/test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_harness_sample_is_stratified_by_subject_and_recorded(mixed_mmlu):
    cfg = build_config(None, {"datasets": ["mmlu"], "data_dir": str(mixed_mmlu), "sample": 12, "sample_seed": 4})
    data, sources = load_data(resolve_tasks(cfg), cfg)
    (exs,) = data.values()
    assert Counter(ex.metadata["subject"] for ex in exs) == {"abstract_algebra": 2, "anatomy": 4, "virology": 6}
    assert sources["mmlu"]["sample"]["ids"] == [ex.id for ex in exs]
    assert sources["mmlu"]["sample"]["stratum"] == "subject"


def test_sub_tasks_share_the_dataset_sample(tiny_data):
    cfg = build_config(None, {"datasets": ["agieval"], "data_dir": str(tiny_data), "sample": 3})
    data, _ = load_data(resolve_tasks(cfg), cfg)
    assert [len(v) for v in data.values()] == [1, 1, 1]  # 3 of 9, one per sub-task (3 rows each)


def test_the_sample_is_part_of_the_run_identity_and_manifest(mixed_mmlu, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default run directories go under ./runs
    backend = TableBackend(lambda req: "The answer is (A).")
    outs = []
    for seed in (0, 0, 1):
        cfg = build_config(None, {"datasets": ["mmlu"], "data_dir": str(mixed_mmlu), "sample": 6,
                                  "sample_seed": seed, "settings": ["zs_direct"], "progress": False,
                                  "cache": str(tmp_path / "s.sqlite")})
        cfg.reporting.out = None
        outs.append(run(cfg, backend=backend))
    manifests = [json.loads((o / "manifest.json").read_text()) for o in outs]
    assert outs[0] == outs[1] and outs[0] != outs[2]
    ids = [m["datasets"]["mmlu"]["sample"]["ids"] for m in manifests]
    assert ids[0] == ids[1] != ids[2] and len(ids[0]) == 6
    rows = [json.loads(x)["example_id"] for x in (outs[0] / "samples.jsonl").read_text().splitlines()]
    assert rows == ids[0]


def test_quick_suite_uses_a_sample_not_the_first_items(monkeypatch, tmp_path):
    import cotbench.pipeline.harness as harness

    seen = []

    def fake_run(cfg):
        seen.append(cfg)
        out = tmp_path / "run"
        out.mkdir(exist_ok=True)
        (out / "summary.csv").write_text("model,dataset,group,setting,n,accuracy,se,unparseable_rate,mean_tokens_out\n")
        return out

    monkeypatch.setattr(harness, "run", fake_run)
    assert main(["run"]) == 0
    assert seen[0].generation.sample == 5 and seen[0].generation.limit is None
