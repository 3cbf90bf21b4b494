#!/usr/bin/env bash
# Real evidence on the GPU machine: MiniLM (real pretrained weights) x real data, FT vs PT vs PT-2.
# Run from the repo root with .carry and .whl carried (build them: python scripts/prepare_real_evidence.py --wheels):
#   bash scripts/real_evidence.sh [all|1|2]
# part 1: CB, COPA, WSC, RTE x seeds 11,22,33 (~6 min on an H100); part 2: WiC, SST-2, CoNLL03, Quoref, seed 11
# (~5 min); all = both under one deadline. Each sweep stops at its deadline (REAL_DEADLINE_S, default 560 s
# from the start) and the tables/curves/tarball are made from whatever finished; finished runs are skipped
# when a part is run again on the same (warm) machine, so a rerun resumes.
# REAL_EXTRA="key=value ..." appends overrides to every sweep (smoke test: data.max_train_samples=8 train.epochs=1).
set -uo pipefail
PART=${1:-all}
START=$(date +%s)
DEADLINE=$((START + ${REAL_DEADLINE_S:-560}))
OUT=${OUT:-/tmp/real_out}
RESULTS=results/real_minilm
mkdir -p "$OUT"
exec > >(tee -a "$OUT/real_evidence.log") 2>&1  # the whole log comes back, not only its tail

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/base/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
DATA=/tmp/real_data
[ -d $DATA/data ] || { mkdir -p $DATA && tar -xzf .carry/data.tar.gz -C $DATA; } || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

# Only tasks/methods whose config exists on this checkout (conll03, quoref and pt come from other branches).
present() { local kind=$1; shift; local out=(); for x in "$@"; do
  if [ -f "conf/$kind/$x.yaml" ]; then out+=("$x"); else echo "skipping $kind=$x: conf/$kind/$x.yaml missing" >&2; fi
done; local IFS=,; echo "${out[*]}"; }
METHODS=$(present method ft pt pt2)

sweep() {  # sweep SEEDS TASK...: seeds outermost, so a deadline leaves every cell with its first seed
  local seeds=$1; shift
  local tasks; tasks=$(present task "$@")
  local left=$((DEADLINE - $(date +%s)))
  [ -n "$tasks" ] && [ -n "$METHODS" ] || return 0
  if [ $left -le 10 ]; then echo "deadline reached: not starting tasks $tasks" >&2; return 0; fi
  echo "== sweep seeds=$seeds tasks=$tasks methods=$METHODS (${left}s left)"
  timeout --signal=INT --kill-after=20 $left python3 -m ptv2.cli -m seed="$seeds" task="$tasks" method="$METHODS" \
    lr_choice=lo,hi +experiment=real_minilm model.path=.carry/minilm data.root=$DATA/data ${REAL_EXTRA:-} \
    || echo "sweep ended with status $? (124 = deadline; failed jobs are marked in their metrics.json)" >&2
}

case $PART in
  1) sweep 11,22,33 cb copa wsc rte ;;
  2) sweep 11 conll03 quoref sst2 wic ;;  # the paper's key claims (NER, QA) first
  all) sweep 11,22,33 cb copa wsc rte; sweep 11 wic sst2 conll03 quoref ;;
  *) echo "usage: bash scripts/real_evidence.sh [all|1|2]" >&2; exit 2 ;;
esac

python3 -m ptv2.report.tables --results $RESULTS --out $RESULTS/tables
python3 - <<'PY'
from pathlib import Path
from ptv2.report.figures import plot_curves
for curves in sorted(Path("results/real_minilm").glob("*/*/*/*/curves.csv")):
    try:
        plot_curves(curves.parent)
    except Exception as error:  # one unreadable run must not cost the others' plots
        print(f"no plot for {curves.parent}: {error}")
PY
python3 - <<'PY'
import json
from pathlib import Path
rows = [json.loads(p.read_text()) for p in Path("results/real_minilm").glob("*/*/*/*/metrics.json")]
for status in ("done", "running", "failed"):
    print(f"{status}: {sum(r.get('status') == status for r in rows)} runs")
for r in rows:
    if r.get("status") == "failed":
        print(f"  failed {r.get('task')} {r.get('method')} seed {r.get('seed')}: {r.get('error')}")
print(f"train seconds, all runs: {sum(r.get('timing', {}).get('train_s', 0) for r in rows):.0f}")
PY
tar -czf "$OUT/real_results.tgz" --exclude='*.safetensors' --exclude='.hydra' --exclude='checkpoint' --exclude='predictions.json' "$RESULTS"
cat $RESULTS/tables/real_minilm.md
echo "wrote $OUT/real_results.tgz ($(du -h "$OUT/real_results.tgz" | cut -f1)) in $(( $(date +%s) - START ))s"
