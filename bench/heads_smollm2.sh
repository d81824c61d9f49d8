#!/usr/bin/env bash
# The committed heads result for the embedded model (results/heads_smollm2/): retrieval heads, knockout
# direct vs CoT on a needle task, LoFiT on GSM8K. About 15 minutes on the shared 2-core machine.
# Needs the extra [heads] and the local data (COTBENCH_DATA_DIR, default ../shared/data/hf).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${COTBENCH_DATA_DIR:-../shared/data/hf}
OUT=results/heads_smollm2
RUNS=runs/heads_smollm2
FIG=results/figures/heads_smollm2
mkdir -p "$OUT" "$RUNS"
FROM=${FROM_STEP:-1}  # FROM_STEP=N starts at step N (the run stores resume finished generations anyway)
[ "$FROM" -gt 1 ] || : > "$OUT/wall_times.txt"
t() {  # run a command, append its wall time and the command to wall_times.txt
  local s=$SECONDS
  "$@"
  echo "$((SECONDS - s))s	$*" >> "$OUT/wall_times.txt"
}
cb() { python -m cotbench "$@"; }

# 1. retrieval scores: 16 needles (150 filler words) and MuSR object-placement items (gold text forced);
#    overlap of the two head sets; needle accuracy with the top-10 heads vs 10 random heads knocked out
[ "$FROM" -gt 1 ] || t cb heads retrieval --needles 16 --context-words 150 --dataset musr/object_placements --data-dir "$DATA" \
  --limit 4 --top-k 10 --knockout-seeds 2 --out "$OUT/retrieval"

# 2. knockout, direct vs CoT, on a held-out needle set (seed 1): base, top-10 retrieval heads, 10 random heads
[ "$FROM" -gt 2 ] || t cb heads needles 10 --context-words 150 --seed 1 --out "$RUNS/needles_seed1.jsonl"
CSV="$OUT/retrieval/retrieval_needle.csv"
for spec in base "knockout-top:10:$CSV" "knockout-random:10:0:$CSV"; do
  name=${spec%%:*}
  iv=(); [ "$spec" = base ] || iv=(--intervention "$spec")
  [ "$FROM" -gt 2 ] || t cb run --backend transformers "${iv[@]}" --dataset-file "$RUNS/needles_seed1.jsonl" --answer-type number \
    --settings zs_direct zs_cot --max-tokens-cot 64 --out "$RUNS/needle_$name" --no-progress
done

# 3. LoFiT on GSM8K: 32 training items and a disjoint seeded test sample of 8, both drawn from the local
#    test file (the train split is not in the local data); then base vs LoFiT on the test sample
[ "$FROM" -gt 3 ] || t cb heads lofit --dataset gsm8k --data-dir "$DATA" --n-train 32 --n-test 8 --seed 0 --k 16 \
  --steps-select 8 --steps-offset 12 --out "$OUT/lofit_gsm8k.json" --test-data-dir "$RUNS/gsm8k_test_sample"
for spec in base "lofit:$OUT/lofit_gsm8k.json"; do
  name=${spec%%:*}
  iv=(); [ "$spec" = base ] || iv=(--intervention "$spec")
  [ "$FROM" -gt 3 ] || t cb run --backend transformers "${iv[@]}" --datasets gsm8k --data-dir "$RUNS/gsm8k_test_sample" \
    --settings zs_direct zs_cot --max-tokens-cot 128 --out "$RUNS/gsm8k_$name" --no-progress
done

# 4. analysis and figures (aggregates only are committed: samples quote dataset items)
t cb analyze "$RUNS"/needle_* --sections gains,heads --out "$OUT/analysis_knockout" > /dev/null
t cb analyze "$RUNS"/gsm8k_{base,lofit} --sections gains,heads --out "$OUT/analysis_lofit" > /dev/null
t cb heads figures --retrieval "$OUT/retrieval/retrieval_scores.csv" --lofit "$OUT/lofit_gsm8k.json" \
  --runs "$RUNS"/needle_* "$RUNS"/gsm8k_{base,lofit} --out "$FIG"
for d in "$RUNS"/needle_* "$RUNS"/gsm8k_{base,lofit}; do
  [ -d "$d" ] || continue
  mkdir -p "$OUT/runs/$(basename "$d")"
  cp "$d/summary.csv" "$d/manifest.json" "$OUT/runs/$(basename "$d")/"
done
echo "done: $OUT ($SECONDS s)"
