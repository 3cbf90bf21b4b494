#!/usr/bin/env bash
# Data-parallel P-Tuning v2 on a 2-GPU machine (docs/performance.md, "Multi-GPU"): the same run with 1 and
# 2 processes (torchrun, NCCL) at the same global batch, on a roberta-large-shaped backbone (random
# weights) and on real MiniLM, plus a 2-job sweep on 1 GPU vs spread over 2 (joblib launcher).
# Needs .carry (python scripts/prepare_real_evidence.py) and .whl/base carried; results -> $OUT/ddp.tgz.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # never NVLink multicast
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/ddp_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/ddp.log") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/base/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
DATA=/tmp/real_data
[ -d $DATA/data ] || { mkdir -p $DATA && tar -xzf .carry/data.tar.gz -C $DATA; } || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
LARGE="model=tiny-roberta model.name=roberta-large-shape model.tiny.config.hidden_size=1024
  model.tiny.config.num_hidden_layers=24 model.tiny.config.num_attention_heads=16 model.tiny.config.intermediate_size=4096"
COMMON="task=rte data.root=$DATA/data train.batch_size=32 train.progress=false results.root=results/ddp"
run1() { python3 -m ptv2.cli $COMMON results.experiment=gpu1 "$@" | tail -2; }
run2() { torchrun --standalone --nproc_per_node 2 -m ptv2.cli $COMMON results.experiment=gpu2 "$@" | tail -2; }
for launch in run1 run2; do
  $launch $LARGE train.epochs=2 train.lr=5e-3
  $launch model=minilm model.path=.carry/minilm train.epochs=5 train.lr=1e-2
done
SWEEP="-m $COMMON model=minilm model.path=.carry/minilm train.epochs=3 prompt_length=8,16,32,64"
t0=$(date +%s); CUDA_VISIBLE_DEVICES=0 python3 -m ptv2.cli $SWEEP results.experiment=sweep1 > /dev/null; t1=$(date +%s)
python3 -m ptv2.cli $SWEEP results.experiment=sweep2 hydra/launcher=parallel hydra.launcher.n_jobs=2 \
  train.gpu_per_job=true > /dev/null; t2=$(date +%s)
echo "sweep of 4 jobs: 1 GPU $((t1 - t0)) s, 2 GPUs (joblib, one job per GPU) $((t2 - t1)) s"
python3 - <<'PY'
import json
from pathlib import Path
for path in sorted(Path("results/ddp").glob("gpu*/rte/*/pt2/*/metrics.json")):
    m = json.loads(path.read_text())
    t = m["timing"]
    print(f"{path.parts[2]} {m['model']:>20}: dev acc {m['best']['dev']['accuracy']:.2f}  "
          f"train tokens/s {t['train_tokens_per_s']:.0f}  train s {t['train_s']:.1f}  peak MB/GPU {t['peak_memory_mb']:.0f}")
PY
tar -czf "$OUT/ddp.tgz" --exclude='*.safetensors' --exclude='.hydra' --exclude='checkpoint' results/ddp
