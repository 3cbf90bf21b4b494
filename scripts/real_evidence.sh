#!/usr/bin/env bash
# Real evidence on the GPU machine: MiniLM (real pretrained weights) on real data, FT vs PT vs PT-2, the grid of
# conf/experiment/real_minilm.yaml. From the repo root with .whl/base, .carry/minilm, .carry/data.tar.gz (and
# .carry/baseline for the speed part) carried; build them with: python scripts/prepare_real_evidence.py --wheels
#   bash scripts/real_evidence.sh PART [PART ...]      PART: speed conll sentence qa fidelity convergence
# REAL_PARALLEL runs side by side (default 6); the grid parts share one scheduler and one deadline
# (REAL_DEADLINE_S, default 540 s from the start), after the speed part when asked for; $OUT/real_results.tgz holds metrics.json, curves.csv and config.yaml of every run (no
# weights) and the logs.
set -uo pipefail
START=$(date +%s)
DEADLINE=$((START + ${REAL_DEADLINE_S:-540}))
OUT=${OUT:-/tmp/real_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/real_evidence.log") 2>&1  # the whole log comes back, not only its tail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/base/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
DATA=/tmp/real_data
[ -d $DATA/data ] || { mkdir -p $DATA && tar -xzf .carry/data.tar.gz -C $DATA; } || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
GRID=()  # every part but speed goes to one scheduler, so runs of several parts share the GPU
for part in "$@"; do [ "$part" = speed ] || GRID+=("$part"); done
if [[ " $* " == *" speed "* ]]; then
  timeout $((DEADLINE - $(date +%s))) python3 -m benchmarks.real_run_speed --data-root $DATA/data --out "$OUT/speed.json"
fi
left=$((DEADLINE - $(date +%s)))
if [ ${#GRID[@]} -gt 0 ] && [ $left -gt 30 ]; then
  python3 scripts/real_evidence.py "${GRID[@]}" --deadline-s $left --parallel "${REAL_PARALLEL:-6}" --data-root $DATA/data
fi
# checkpoints under 2 MB (PT: prompt + head) come back so the next call resumes those runs; FT ones are too big
find results -name last.pt -size +2M > /tmp/big_checkpoints
tar -czf "$OUT/real_results.tgz" --exclude='*.safetensors' --exclude='.hydra' -X /tmp/big_checkpoints \
  --exclude='predictions.json' results/real_minilm results/real_minilm_convergence results/fidelity results/real_logs 2>/dev/null
echo "wrote $OUT/real_results.tgz ($(du -h "$OUT/real_results.tgz" | cut -f1)) in $(( $(date +%s) - START ))s"
