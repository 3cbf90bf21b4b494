#!/usr/bin/env bash
# Data-parallel P-Tuning v2 on a 2-GPU machine (docs/performance.md, "Multi-GPU"): the same ptv2-train run
# with 1 and 2 processes (torchrun, NCCL) at the same global batch, on a roberta-large-shaped backbone
# (random weights, RTE) and on real MiniLM (Quoref), then a 4-job sweep on 1 GPU vs spread over 2
# (joblib launcher, one job per GPU). Needs .carry (python scripts/prepare_real_evidence.py) and .whl/base
# (bash scripts/prepare_gpu_wheels.sh) carried; summary -> stdout, results -> $OUT/ddp.tgz.
#   bash scripts/ddp_scaling.sh            # ~8 min on 2 x H100/H200
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # never NVLink multicast
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/ddp_out}
RESULTS=results/ddp
mkdir -p "$OUT"
exec > >(tee -a "$OUT/ddp.log") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/base/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
DATA=/tmp/real_data
[ -d $DATA/data ] || { mkdir -p $DATA && tar -xzf .carry/data.tar.gz -C $DATA; } || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

LARGE="model=tiny-roberta model.name=roberta-large-shape model.tiny.config.hidden_size=1024
  model.tiny.config.num_hidden_layers=24 model.tiny.config.num_attention_heads=16 model.tiny.config.intermediate_size=4096"
# Per-GPU batches large enough to keep an H100 busy: 32 x ~180 tokens (roberta-large shape), 32 x 384 (MiniLM).
LARGE_RUN="$LARGE task=rte task.max_length=256 train.batch_size=64 train.epochs=6 train.lr=5e-3"
MINILM_RUN="model=minilm model.path=.carry/minilm task=quoref train.batch_size=64 train.epochs=3 train.lr=1e-2"
COMMON="data.root=$DATA/data train.progress=false results.root=$RESULTS"
one() { python3 -m ptv2.cli $COMMON results.experiment=gpu1 "$@" 2>&1 | tail -3; }
two() { torchrun --standalone --nproc_per_node 2 -m ptv2.cli $COMMON results.experiment=gpu2 "$@" 2>&1 | tail -3; }

# Smoke test first: a broken setup costs seconds, not the whole budget.
two $LARGE task=rte data.max_train_samples=128 train.epochs=1 results.experiment=smoke || exit 1
ls $RESULTS/smoke/rte/*/pt2/*/metrics.json > /dev/null || { echo "smoke run wrote no metrics"; exit 1; }

for launch in one two; do $launch $LARGE_RUN; done
for launch in one two; do $launch $MINILM_RUN; done

SWEEP="-m $COMMON $LARGE task=rte task.max_length=256 train.epochs=8 train.lr=5e-3 prompt_length=8,16,32,64"
t0=$(date +%s.%N)
CUDA_VISIBLE_DEVICES=0 python3 -m ptv2.cli $SWEEP results.experiment=sweep1 > $OUT/sweep1.log 2>&1
t1=$(date +%s.%N)
python3 -m ptv2.cli $SWEEP results.experiment=sweep2 hydra/launcher=parallel hydra.launcher.n_jobs=2 \
  train.gpu_per_job=true > $OUT/sweep2.log 2>&1
t2=$(date +%s.%N)
python3 - "$t0" "$t1" "$t2" <<'PY'
import json, sys
from pathlib import Path
t0, t1, t2 = map(float, sys.argv[1:])
runs = {}
for path in sorted(Path("results/ddp").glob("*/*/*/pt2/*/metrics.json")):
    m = json.loads(path.read_text())
    runs.setdefault(path.parts[2], []).append(m)
print("run                   model               procs  dev   tokens/s  train s  allreduce share  peak MB/GPU  trainable")
for experiment in ("gpu1", "gpu2"):
    for m in runs.get(experiment, []):
        t, dev = m["timing"], m["best"]["dev"][m["primary_metric"]]
        print(f"{experiment:<21} {m['model']:<19} {t['processes']:>5}  {dev:5.1f} {t['train_tokens_per_s']:>9.0f} {t['train_s']:>8.1f}"
              f" {100 * t['allreduce_share']:>15.2f}% {t['peak_memory_mb']:>12.0f}  {m['params']['trainable']:>9}")
by_model = {e: {m["model"]: m for m in runs.get(e, [])} for e in ("gpu1", "gpu2")}
for model, m1 in by_model["gpu1"].items():
    if (m2 := by_model["gpu2"].get(model)):
        ratio = m2["timing"]["train_tokens_per_s"] / m1["timing"]["train_tokens_per_s"]
        print(f"scaling {model}: {ratio:.2f}x train tokens/s on 2 GPUs vs 1 (same global batch)")
for sweep, seconds in (("sweep1", t1 - t0), ("sweep2", t2 - t1)):
    done = sum(m["status"] == "done" for m in runs.get(sweep, []))
    print(f"{sweep}: {done} jobs done in {seconds:.0f} s ({'1 GPU' if sweep == 'sweep1' else '2 GPUs, one job per GPU'})")
print(f"sweep speed-up: {(t1 - t0) / (t2 - t1):.2f}x")
for m in runs.get("sweep2", []):
    print(f"  sweep2 P={m['prompt_length']}: {m['timing']['device']}, {m['timing']['wall_s']:.0f} s, created {m['created']}")
PY
tar -czf "$OUT/ddp.tgz" --exclude='*.safetensors' --exclude='checkpoint' $RESULTS
