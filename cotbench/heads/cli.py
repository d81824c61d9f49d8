"""``cotbench heads retrieval|lofit|figures``: where in the model CoT works (optional extra ``[heads]``)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _model_args(p) -> None:
    p.add_argument("--model", default=None, help="HF model directory or .gguf file (default: the embedded "
                                                 "SmolLM2-135M-Instruct GGUF)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument("--threads", type=int, help="torch CPU threads")


def register(sub) -> None:
    h = sub.add_parser("heads", help="retrieval heads, head knockout and LoFiT (needs cotbench[heads])",
                       description="Look inside a transformers model: which heads copy from context, "
                                   "and tiny head-localized fine-tuning.")
    hs = h.add_subparsers(dest="heads_command", metavar="WHAT")

    r = hs.add_parser("retrieval", help="retrieval score of every head on needle and/or real-item probes",
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _model_args(r)
    r.add_argument("--needles", type=int, default=20, help="needle probes (0: none)")
    r.add_argument("--context-words", type=int, default=200, help="filler words around each needle")
    r.add_argument("--depth", type=float, help="needle depth in [0, 1] (default: spread over the probes)")
    r.add_argument("--digits", type=int, default=6, help="digits of the needle number")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--dataset", help="also score real items of this task whose gold text is in the prompt")
    r.add_argument("--data-dir", help="local data for --dataset")
    r.add_argument("--limit", type=int, default=20, help="real items to try from --dataset")
    r.add_argument("--mode", choices=["generate", "gold"], default="generate",
                   help="needles: score the model's own answer (generate) or the teacher-forced answer (gold); "
                        "real items are always teacher-forced")
    r.add_argument("--top-k", type=int, default=10, help="k for the overlap and the knockout check")
    r.add_argument("--knockout-seeds", type=int, default=3,
                   help="needle accuracy with the top-k heads knocked out vs this many random k-head sets "
                        "(0: skip the check)")
    r.add_argument("--out", required=True, metavar="DIR")
    r.set_defaults(func=cmd_retrieval)

    lo = hs.add_parser("lofit", help="train LoFiT head offsets on a dataset's training items",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _model_args(lo)
    lo.add_argument("--dataset", required=True, help="task name, e.g. gsm8k")
    lo.add_argument("--data-dir", help="local data folder the task reads (hub schema)")
    lo.add_argument("--train-file", help="JSONL of training rows in the task's schema (e.g. GSM8K train)")
    lo.add_argument("--n-train", type=int, default=64, help="training items (from --train-file, or held out)")
    lo.add_argument("--n-test", type=int, default=0,
                    help="without --train-file: draw N test items and N-TRAIN disjoint training items from the "
                         "task's own file, and write the test sample as a data folder for `run --data-dir`")
    lo.add_argument("--test-data-dir", metavar="DIR",
                    help="with --n-test: where the held-out test sample is written (default: beside --out); keep "
                         "it out of the repository, it quotes the dataset")
    lo.add_argument("--settings", nargs="+", default=["zs_direct", "zs_cot"], help="prompt formats trained on")
    lo.add_argument("--k", type=int, default=16, help="heads kept after the L1 selection step")
    lo.add_argument("--l1", type=float, default=1e-3)
    lo.add_argument("--steps-select", type=int, default=20)
    lo.add_argument("--steps-offset", type=int, default=30)
    lo.add_argument("--lr-select", type=float, default=5e-3)
    lo.add_argument("--lr-offset", type=float, default=1e-2)
    lo.add_argument("--batch-size", type=int, default=4)
    lo.add_argument("--max-len", type=int, default=256)
    lo.add_argument("--seed", type=int, default=0)
    lo.add_argument("--out", required=True, metavar="FILE.json")
    lo.set_defaults(func=cmd_lofit)

    n = hs.add_parser("needles", help="write a seeded needle set as a dataset file for `run --dataset-file`",
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    n.add_argument("n", type=int)
    n.add_argument("--context-words", type=int, default=200)
    n.add_argument("--depth", type=float)
    n.add_argument("--digits", type=int, default=6)
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--out", required=True, metavar="FILE.jsonl")
    n.set_defaults(func=cmd_needles)

    f = hs.add_parser("figures", help="head heatmaps (retrieval CSV, LoFiT file) and before/after accuracy")
    f.add_argument("--retrieval", nargs="*", default=[], metavar="CSV")
    f.add_argument("--lofit", nargs="*", default=[], metavar="FILE.json")
    f.add_argument("--runs", nargs="*", default=[], metavar="RUN_DIR",
                   help="base and intervened run directories: accuracy by setting, before/after")
    f.add_argument("--out", required=True, metavar="DIR")
    f.set_defaults(func=cmd_figures)
    h.set_defaults(func=lambda a: (h.print_help(), 0)[1])


def _load(args):
    import torch

    from cotbench.backends.transformers_local import load_model
    from cotbench.pipeline.model_registry import embedded_gguf

    if args.threads:
        torch.set_num_threads(args.threads)
    path = args.model or str(embedded_gguf())
    t0 = time.perf_counter()
    model, tok = load_model(path, args.device)
    return path, model, tok, time.perf_counter() - t0


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_retrieval(args) -> int:
    import numpy as np

    from cotbench.heads import probes as pr
    from cotbench.heads import retrieval as rt
    from cotbench.heads.intervene import Intervention, model_shape, random_heads

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path, model, tok, load_s = _load(args)
    L, H, _ = model_shape(model)
    _say(f"loaded {path} in {load_s:.1f}s: {L} layers x {H} heads on {model.device}")
    sets: dict[str, list] = {}
    if args.needles:
        sets["needle"] = pr.needle_probes(args.needles, args.context_words, args.depth, args.seed, args.digits)
        (out / "needle.jsonl").write_text(pr.probes_to_jsonl(sets["needle"]), encoding="utf-8")
    if args.dataset:
        from cotbench.pipeline.prompts import load_prompt_file
        from cotbench.tasks import get_task

        task = get_task(args.dataset)
        examples = task.load(args.data_dir, args.limit)
        items = pr.item_probes(examples, load_prompt_file(task.prompt_file))
        if not items:
            raise ValueError(f"{args.dataset}: none of the first {args.limit} items has its gold text in the prompt")
        sets[task.name.replace("/", "_")] = items
    if not sets:
        raise ValueError("nothing to score: give --needles N and/or --dataset NAME")
    summary: dict = {"model": path, "load_s": round(load_s, 2), "layers": L, "heads": H, "sets": {},
                     "command": sys.argv}
    scores: dict[str, np.ndarray] = {}
    frames = []
    for name, probes in sets.items():
        t0 = time.perf_counter()
        mode = args.mode if name == "needle" else "gold"
        mean, per = rt.score_probes(model, tok, probes, mode,
                                    progress=lambda i, n, nm=name: _say(f"  {nm}: {i}/{n}") if i % 5 == 0 or i == n else None)
        scores[name] = mean
        frames.append(rt.scores_frame(mean, name, len(probes)))
        summary["sets"][name] = {"n_probes": len(probes), "mode": mode, "wall_s": round(time.perf_counter() - t0, 2),
                                 "copied": sum(p.copied for p in per) if mode == "generate" else None,
                                 "top_heads": [f"{l}.{h}" for l, h in rt.top_k(mean, args.top_k)]}
        _say(f"{name}: {len(probes)} probes in {summary['sets'][name]['wall_s']}s; top heads "
             f"{', '.join(summary['sets'][name]['top_heads'])}")
    import pandas as pd

    table = pd.concat(frames, ignore_index=True)
    table.to_csv(out / "retrieval_scores.csv", index=False)
    for name in sets:
        table[table["probe_set"] == name].to_csv(out / f"retrieval_{name}.csv", index=False)
    names = list(scores)
    if len(names) > 1:
        ov = [{"a": a, "b": b, **rt.overlap(scores[a], scores[b], args.top_k)}
              for i, a in enumerate(names) for b in names[i + 1:]]
        pd.DataFrame(ov).to_csv(out / "overlap.csv", index=False)
        summary["overlap"] = ov
    if args.knockout_seeds and "needle" in scores:
        t0 = time.perf_counter()
        probes = sets["needle"]
        top = tuple(rt.top_k(scores["needle"], args.top_k))
        ko = {"base": rt.needle_accuracy(model, tok, probes)[0],
              f"top{args.top_k}": rt.needle_accuracy(model, tok, probes, Intervention(top, label="top"))[0]}
        rand = []
        for s in range(args.knockout_seeds):
            heads = random_heads(args.top_k, L, H, seed=s, exclude=top)
            rand.append(rt.needle_accuracy(model, tok, probes, Intervention(heads, label=f"rand{s}"))[0])
        ko["random_mean"] = float(np.mean(rand))
        ko["random_each"] = rand
        ko["wall_s"] = round(time.perf_counter() - t0, 2)
        summary["needle_knockout"] = ko
        _say(f"needle accuracy: base {ko['base']:.2f}, top-{args.top_k} knocked out {ko[f'top{args.top_k}']:.2f}, "
             f"random {args.top_k} knocked out {ko['random_mean']:.2f} (each {rand})")
    from cotbench.heads.figures import heatmap

    for name, s in scores.items():
        heatmap(s, out / f"heatmap_{name}.png", f"Retrieval score ({name}, {len(sets[name])} probes)")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"wrote {out}/retrieval_scores.csv, summary.json and heatmaps")
    return 0


def cmd_lofit(args) -> int:
    from cotbench.heads import lofit as lf
    from cotbench.records import read_jsonl
    from cotbench.tasks import get_task

    task = get_task(args.dataset)
    eval_dir = None
    if args.train_file:
        train_rows = read_jsonl(Path(args.train_file))[:args.n_train]
        split = {"train_file": args.train_file}
    else:
        if not args.n_test:
            raise ValueError("give --train-file, or --n-test N to hold a test sample out of the task's own file")
        if not args.data_dir:
            raise ValueError("--n-test needs --data-dir (the task's local file is split)")
        rows, src = task.rows_from_local(Path(args.data_dir))
        tr, te = lf.split_rows(rows, args.n_train, args.n_test, args.seed)
        train_rows = [rows[i] for i in tr]
        rel = next(r for r in task.local_files if (Path(args.data_dir) / r).resolve() == src.resolve())
        eval_dir = Path(args.test_data_dir or Path(args.out).parent / (Path(args.out).stem + "_test_data"))
        (eval_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (eval_dir / rel).write_text("".join(json.dumps(rows[i], ensure_ascii=False) + "\n" for i in te),
                                    encoding="utf-8")
        split = {"source": str(src), "train_rows": tr, "test_rows": te, "test_data_dir": str(eval_dir),
                 "seed": args.seed}
    items = lf.train_items(task, train_rows, tuple(args.settings))
    path, model, tok, load_s = _load(args)
    cfg = lf.LofitConfig(k=args.k, l1=args.l1, steps_select=args.steps_select, steps_offset=args.steps_offset,
                         lr_select=args.lr_select, lr_offset=args.lr_offset, batch_size=args.batch_size,
                         max_len=args.max_len, seed=args.seed)
    _say(f"LoFiT on {task.name}: {len(train_rows)} rows -> {len(items)} training sequences; k={cfg.k}")
    res = lf.train(model, tok, items, cfg, log=lambda ph, s, n, x: _say(f"  {ph} {s}/{n} loss {x:.4f}")
                   if s % 5 == 0 or s == n else None)
    from dataclasses import asdict

    from cotbench.backends.transformers_local import model_digest

    meta = {"model": path, "model_sha256_16": model_digest(path), "dataset": task.name, "settings": args.settings,
            "n_train_rows": len(train_rows), "n_train_sequences": len(items), "config": asdict(cfg),
            "split": split, "lora_r8_params": lf.lora_params(model), "load_s": round(load_s, 2),
            "command": sys.argv}
    lf.save(res, args.out, meta)
    print(f"wrote {args.out}: {res.trained_params} trained parameters on heads {', '.join(f'{l}.{h}' for l, h in res.heads)}; "
          f"wall {res.wall_s}")
    if eval_dir:
        print(f"held-out test sample: {eval_dir} (run --data-dir {eval_dir} --datasets {task.name})")
    return 0


def cmd_needles(args) -> int:
    from cotbench.heads.probes import needle_probes, probes_to_jsonl

    probes = needle_probes(args.n, args.context_words, args.depth, args.seed, args.digits)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(probes_to_jsonl(probes), encoding="utf-8")
    print(f"wrote {len(probes)} needles to {args.out} (run it with --dataset-file {args.out} --answer-type number)")
    return 0


def cmd_figures(args) -> int:
    from cotbench.heads import figures as fg

    written = fg.make_all(args.retrieval, args.lofit, args.runs, Path(args.out))
    for p in written:
        print(p)
    return 0
