"""Where the time of in-process generation goes: prefill and decode-step costs per model file.

For each GGUF given, the engine's context is driven directly: ``--prompt`` tokens are prefilled per
sequence, then ``--steps`` decode steps run over 1 sequence and over ``--batch`` sequences. Reported per
file: prefill ms per prompt token, decode ms per step and tokens/s, and the batched/single decode ratio.
This separates what batching can save (decode steps) from what it cannot (per-sequence prefill), and
shows how much depends on the weights' type: llama.cpp's batched CPU kernels (llamafile sgemm) cover
F32, F16, BF16, Q8_0, Q4_0, Q5_0 and IQ4_NL, not Q4_1 (the embedded SmolLM2 file).

    python bench/bench_decode_steps.py                                  # the embedded model
    python bench/bench_decode_steps.py --convert f16 q8_0 --batch 16    # plus converted copies (tmp dir)

``--convert`` writes copies of the embedded model with ``llama_model_quantize`` (requantized from Q4_1;
f32/f16 hold the Q4_1 weights' values exactly or to f16 rounding, q8_0/q4_0 re-round them). Those
copies are other models: their texts differ, so cotbench does not use them by default.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from cotbench.backends.threads import openmp_wait_defaults  # noqa: E402

openmp_wait_defaults()  # before llama_cpp loads; the environment's own values win

from _common import machine, median, write_json  # noqa: E402

from cotbench.backends.llamacpp_engine import FTYPES, BatchedEngine, convert_weights  # noqa: E402
from cotbench.pipeline.model_registry import embedded_gguf  # noqa: E402


def convert(src: str, kind: str, out_dir: Path) -> str:
    return convert_weights(src, kind, str(out_dir / f"{Path(src).stem}.{kind}.gguf"))


def measure(path: str, threads: int, n_prompt: int, steps: int, batch: int, reps: int) -> dict:
    import llama_cpp as lib

    e = BatchedEngine(path, n_ctx=4096, n_threads=threads)
    out = {}
    for nseq in (1, batch):
        prefill, decode = [], []
        for _ in range(reps):
            cx = e._context(nseq, n_prompt + steps + 16)
            t = time.perf_counter()
            for s in range(nseq):  # token ids are arbitrary: cost does not depend on them
                e._decode(cx, [(100 + i, i, s, i == n_prompt - 1) for i in range(n_prompt)])
            prefill.append((time.perf_counter() - t) / (n_prompt * nseq))
            t = time.perf_counter()
            for step in range(steps):
                e._decode(cx, [(200 + step, n_prompt + step, s, True) for s in range(nseq)])
            decode.append((time.perf_counter() - t) / steps)
            lib.llama_memory_clear(cx.mem, True)
        out[f"seq={nseq}"] = {"prefill_ms_per_token": round(1000 * median(prefill), 3),
                              "decode_ms_per_step": round(1000 * median(decode), 2),
                              "decode_tokens_per_s": round(nseq / median(decode), 1)}
    e.close()
    out["batched_over_single_decode"] = round(out[f"seq={batch}"]["decode_tokens_per_s"]
                                              / out["seq=1"]["decode_tokens_per_s"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", nargs="*", default=[], help="model files (default: the embedded model)")
    ap.add_argument("--convert", nargs="*", default=[], choices=sorted(FTYPES),
                    help="also measure copies of the embedded model converted to these types")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--prompt", type=int, default=140, help="prompt tokens per sequence")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", help="results JSON (default results/bench/decode_steps.json)")
    a = ap.parse_args()
    files = a.gguf or [str(embedded_gguf())]
    with tempfile.TemporaryDirectory() as tmp:
        files += [convert(str(embedded_gguf()), k, Path(tmp)) for k in a.convert]
        results = {}
        for f in files:
            results[Path(f).name] = measure(f, a.threads, a.prompt, a.steps, a.batch, a.reps)
            print(Path(f).name, results[Path(f).name], flush=True)
    payload = {"benchmark": "prefill and decode-step costs per model file (engine context driven directly)",
               "command": "python bench/bench_decode_steps.py" + (f" --convert {' '.join(a.convert)}" if a.convert else "")
               + f" --threads {a.threads} --prompt {a.prompt} --steps {a.steps} --batch {a.batch} --reps {a.reps}",
               "omp_env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")},
               "results": results, "machine": machine()}
    print(f"-> {write_json('decode_steps', payload, a.out)}")


if __name__ == "__main__":
    main()
