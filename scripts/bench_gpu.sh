#!/usr/bin/env bash
# One command on the GPU machine (repo root, .whl carried; see docs/performance.md):
#   bash scripts/bench_gpu.sh            -> $OUT/bench.tar.gz (+ bench.md, bench.json, logs)
# Installs the carried wheels (scripts/prepare_gpu_wheels.sh) into /tmp/site and /tmp/site-peft, runs the
# main benchmark (image's transformers), then PEFT in its own environment (transformers 5.23 + peft) on
# the same saved batches, merges, and packs the results. Extra arguments go to the main benchmark.
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/bench-out}
R=results/bench
PIP=(python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade)
"${PIP[@]}" --target /tmp/site .whl/base/*.whl || exit 1
"${PIP[@]}" --target /tmp/site-peft .whl/peft/*.whl || exit 1
mkdir -p "$OUT" "$R"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
PYTHONPATH=/tmp/site python3 scripts/bench_train.py --out "$R" "$@" 2>&1 | tee "$OUT/main.log"
main_rc=${PIPESTATUS[0]}
PYTHONPATH=/tmp/site-peft:/tmp/site python3 scripts/bench_train.py --contender peft \
  --batches "$R/batches.pt" --json-out "$R/peft.json" 2>&1 | tee "$OUT/peft.log"
if [ -f "$R/peft.json" ] && [ -f "$R/bench.json" ]; then
  PYTHONPATH=/tmp/site python3 scripts/bench_train.py --out "$R" --merge "$R/peft.json"
fi
cp "$R"/bench.md "$R"/bench.json "$OUT"/ 2>/dev/null
tar czf "$OUT/bench.tar.gz" --exclude=batches.pt -C results bench
exit "$main_rc"
