#!/usr/bin/env bash
# docs/performance.md's numbers in one GPU call, from the repo root, with .whl/base, .whl/peft and
# .carry/baseline carried (scripts/prepare_gpu_wheels.sh; git archive of the commit compared against):
#   bash benchmarks/gpu.sh      -> $OUT/bench.tgz (bench.md, bench.json, mixed.json, baseline/, logs)
# Parts, each under its own time limit so one stall cannot cost the others:
#   1. the compared commit's own benchmark (ptv2 and ptv2_eval rows: "today's code")
#   2. this checkout's contenders that do not compile (plain and packed ptv2, official, FT)
#   3. ptv2 with its defaults (packing + CUDA graphs), the compile time in its warm-up column
#   4. HF PEFT in its own environment (transformers 5.23 + peft), 5. mixed-prompt prediction (issue 23)
# PARTS picks them (default "today plain default peft": parts 1-4, which is issue 20's table and about what
# one 10-minute device call holds; PARTS="mixed" runs part 5 alone).
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/bench-out}
R=results/bench
PIP=(python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade)
"${PIP[@]}" --target /tmp/site .whl/base/*.whl || exit 1
"${PIP[@]}" --target /tmp/site-peft .whl/peft/*.whl || exit 1
mkdir -p "$OUT" "$R"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
log() { tee -a "$OUT/bench.log"; }
want() { [[ " ${PARTS:-today plain default peft} " == *" $1 "* ]]; }
if want today && [ -d .carry/baseline ]; then
  (cd .carry/baseline && PYTHONPATH=/tmp/site timeout "${BASELINE_S:-100}" python3 scripts/bench_train.py \
    --contenders ptv2 --shapes roberta-large --out "$PWD/../../$R/baseline") 2>&1 | log
fi
# 8 warm-up steps: the compiled contender records a CUDA graph per packed row count, and with 3 the dist
# setting's re-recordings fell into the measured steps (docs/performance.md, varlen section).
want plain && PYTHONPATH=/tmp/site:$PWD timeout "${PLAIN_S:-180}" python3 -m benchmarks.train_speed --out "$R" \
  --warmup 8 --contenders ptv2_eager,ptv2_nopack,official,official_bf16,ft "$@" 2>&1 | log
want default && PYTHONPATH=/tmp/site:$PWD timeout "${DEFAULT_S:-200}" python3 -m benchmarks.train_speed \
  --contender ptv2 --batches "$R/batches.pt" --json-out "$R/ptv2.json" 2>&1 | log
want peft && PYTHONPATH=/tmp/site-peft:/tmp/site:$PWD timeout "${PEFT_S:-60}" python3 -m benchmarks.train_speed \
  --contender peft --batches "$R/batches.pt" --json-out "$R/peft.json" 2>&1 | log
merge=()
for f in "$R/ptv2.json" "$R/peft.json"; do [ -f "$f" ] && merge+=("$f"); done
[ ${#merge[@]} -gt 0 ] && PYTHONPATH=/tmp/site:$PWD python3 -m benchmarks.train_speed --out "$R" --merge "${merge[@]}" 2>&1 | log
want mixed && PYTHONPATH=/tmp/site:$PWD timeout "${MIXED_S:-60}" python3 -m benchmarks.mixed_speed --out "$R" 2>&1 | log
tar czf "$OUT/bench.tgz" --exclude=batches.pt --exclude=mixed -C results bench
cat "$R/bench.md" 2>/dev/null | head -40
