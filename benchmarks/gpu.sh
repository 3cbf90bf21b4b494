#!/usr/bin/env bash
# docs/performance.md's numbers on a GPU, from the repo root, with .whl/base, .whl/peft and
# .carry/baseline carried (scripts/prepare_gpu_wheels.sh; git archive of the commit compared against):
#   bash benchmarks/gpu.sh      -> $OUT/bench.tgz (bench.md, bench.json, mixed.json, baseline/, logs)
# Parts, each under its own time limit so one stall cannot cost the others; PARTS picks them (default
# "plain default peft today", issue 20's table, in that order, within one 10-minute device call):
#   today    the compared commit's own benchmark (ptv2 and ptv2_eval rows: "today's code")
#   plain    this checkout's contenders that do not compile (plain and packed ptv2, official, FT eager)
#   default  ptv2 with its defaults (packing + CUDA graphs), the compile time in its warm-up column
#   peft     HF PEFT in its own environment (transformers 5.23 + peft)
#   mixed    mixed-prompt prediction (issue 23)
#   compare  the ptv2 contender of code trees (COMPARE="name ... this": .carry/<name>, this checkout), each in
#            its own process on the same saved batches: a change's before/after in one call; an entry
#            tree+VAR=VALUE[+VAR=VALUE] runs that tree with those environment variables (Inductor's knobs),
#            tree/CONTENDER another ptv2 variant of benchmarks/contenders.py (e.g. this/ptv2_lean_norms)
#   saved    what a step keeps for its backward pass, per token and layer (ptv2 vs FT)
#   kernels  attention kernels and FFN compilation alone
#   realrun  a real MiniLM CoNLL-2003 ptv2-train run's speed (also carry .carry/minilm, .carry/data.tar.gz)
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/bench-out}
R=results/bench ROOT=$PWD
want() { [[ " ${PARTS:-today plain default peft} " == *" $1 "* ]]; }
PIP=(python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade)
"${PIP[@]}" --target /tmp/site .whl/base/*.whl || exit 1
want peft && { "${PIP[@]}" --target /tmp/site-peft .whl/peft/*.whl || exit 1; }
rm -rf "$R"; mkdir -p "$OUT" "$R"  # a warm machine keeps ignored folders: no rows of an earlier call
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
# Every part's output is in $OUT/bench.tgz as soon as the part ends: a call cut off at its limit keeps them.
snapshot() { tar czf "$OUT/bench.tgz" --exclude=batches.pt --exclude=mixed -C results bench; }
log() { tee -a "$OUT/bench.log"; snapshot; }
part() { want "$1" && echo "== part $1 starts at ${SECONDS} s" | log; }  # the log shows what each part cost
# 8 warm-up steps: the compiled contender records a CUDA graph per packed row count, and with 3 the dist
# setting's re-recordings fell into the measured steps (docs/performance.md, varlen section).
part plain
want plain && PYTHONPATH=/tmp/site:$PWD timeout "${PLAIN_S:-140}" python3 -m benchmarks.train_speed --out "$R" \
  --warmup 8 --contenders "${PLAIN_CONTENDERS:-ft_eager,ptv2_eager,ptv2_nopack,official_bf16,official}" "$@" 2>&1 | log
part default
want default && PYTHONPATH=/tmp/site:$PWD timeout "${DEFAULT_S:-320}" python3 -m benchmarks.train_speed \
  --contender ptv2 --batches "$R/batches.pt" --json-out "$R/ptv2.json" ${DEFAULT_SETTINGS:+--only-settings "$DEFAULT_SETTINGS"} \
  2>&1 | log
part peft
want peft && PYTHONPATH=/tmp/site-peft:/tmp/site:$PWD timeout "${PEFT_S:-60}" python3 -m benchmarks.train_speed \
  --contender peft --batches "$R/batches.pt" --json-out "$R/peft.json" 2>&1 | log
# after this checkout's parts: a call cut at its limit loses the compared commit's rows first
part today
if want today && [ -d .carry/baseline ]; then
  (cd .carry/baseline && PYTHONPATH=/tmp/site timeout "${BASELINE_S:-80}" python3 scripts/bench_train.py \
    --contenders ptv2 --shapes roberta-large --out "$PWD/../../$R/baseline") 2>&1 | log
fi
merge=()
for f in "$R/ptv2.json" "$R/peft.json"; do [ -f "$f" ] && merge+=("$f"); done
[ ${#merge[@]} -gt 0 ] && [ -f "$R/bench.json" ] && PYTHONPATH=/tmp/site:$PWD python3 -m benchmarks.train_speed --out "$R" --merge "${merge[@]}" 2>&1 | log
part mixed
want mixed && PYTHONPATH=/tmp/site:$PWD timeout "${MIXED_S:-60}" python3 -m benchmarks.mixed_speed --out "$R" 2>&1 | log
part compare
if want compare; then  # one process per code tree; COMPARE_SETTINGS picks the settings (default dist)
  S=${COMPARE_SETTINGS:-dist}
  [ -f "$R/batches.pt" ] || PYTHONPATH=/tmp/site:$PWD python3 -m benchmarks.train_speed --out "$R" --contenders "" \
    --warmup 8 ${COMPARE_STEPS:+--steps "$COMPARE_STEPS"} --settings "$S" 2>&1 | log
  for entry in ${COMPARE:-this}; do
    tree=${entry%%+*} knobs=(); [ "$entry" != "$tree" ] && IFS=+ read -ra knobs <<< "${entry#*+}"
    contender=ptv2; [[ "$tree" == */* ]] && contender=${tree#*/} tree=${tree%%/*}
    code=.carry/$tree; [ "$tree" = this ] && code=.
    echo "== compare $entry at ${SECONDS} s" | log
    (cd "$code" && env "${knobs[@]}" PYTHONPATH=/tmp/site:$PWD timeout "${COMPARE_S:-150}" python3 -m benchmarks.train_speed \
      --contender "$contender" --no-eval --only-settings "$S" --batches "$ROOT/$R/batches.pt" \
      --json-out "$ROOT/$R/compare_${entry//[^A-Za-z0-9_]/_}.json") 2>&1 | log
  done
fi
part saved
want saved && for n in ${SAVED_LENGTHS:-512}; do PYTHONPATH=/tmp/site:$PWD timeout "${SAVED_S:-60}" python3 -m benchmarks.saved_activations \
  --length $n ${SAVED_CONTENDERS:+--contenders $SAVED_CONTENDERS} 2>&1 | tee -a "$R/saved_activations.txt" | log; done
part realrun
if want realrun; then  # needs .carry/minilm and .carry/data.tar.gz (real CoNLL-2003) carried as well
  mkdir -p /tmp/realrun-data && tar xzf .carry/data.tar.gz -C /tmp/realrun-data
  PYTHONPATH=/tmp/site:$PWD timeout "${REALRUN_S:-300}" python3 -m benchmarks.real_run_speed --epochs "${REALRUN_EPOCHS:-4}" \
    --data-root /tmp/realrun-data/data --variants "${REALRUN_VARIANTS:-default,baseline}" --out "$R/real_run_speed.json" 2>&1 | log
fi
part kernels
want kernels && PYTHONPATH=/tmp/site:$PWD timeout "${KERNELS_S:-150}" python3 -m benchmarks.kernel_speed \
  --out "$R/kernels.json" ${KERNEL_ARGS:-} 2>&1 | log
echo "== done at ${SECONDS} s" | log
cat "$R/bench.md" 2>/dev/null | head -40
