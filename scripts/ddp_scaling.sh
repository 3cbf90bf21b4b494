#!/usr/bin/env bash
# Data-parallel P-Tuning v2 on a 2-GPU machine (docs/performance.md, "Multi-GPU"): the same ptv2-train run
# with 1 and 2 processes (torchrun, NCCL) at the same global batch, on a roberta-large-shaped backbone
# (random weights, RTE) and on real MiniLM (Quoref), then a 4-job sweep on 1 GPU vs spread over 2
# (joblib launcher, one job per GPU). Needs .carry (python scripts/prepare_real_evidence.py) and .whl/base
# (bash scripts/prepare_gpu_wheels.sh) carried; summary -> stdout, results -> $OUT/ddp.tgz.
#   bash scripts/ddp_scaling.sh            # ~8 min on 2 x H100/H200 (DDP_SWEEP=0: runs only, ~6 min)
set -uo pipefail
DEADLINE=$(($(date +%s) + ${DDP_DEADLINE_S:-560}))  # the sweeps stop here so the summary and tarball still come
left() { echo $((DEADLINE - $(date +%s))); }
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
COMMON="data.root=$DATA/data train.progress=false results.root=$RESULTS"
one() { python3 -m ptv2.cli $COMMON results.experiment=gpu1 "$@" 2>&1 | tail -2; }
two() { torchrun --standalone --nproc_per_node 2 -m ptv2.cli $COMMON results.experiment=gpu2 "$@" 2>&1 | tail -2; }

# Smoke test first: a broken setup costs seconds, not the whole budget.
two $LARGE task=rte data.max_train_samples=128 train.epochs=1 results.experiment=smoke || exit 1
ls $RESULTS/smoke/rte/*/pt2/*/metrics.json > /dev/null || { echo "smoke run wrote no metrics"; exit 1; }

# The bare all-reduce of the trainable gradients (roberta-large shape, P=16, MLP reparam: 788,482 floats).
cat > /tmp/allreduce.py <<'PY'
import os, time, torch, torch.distributed as dist
dist.init_process_group("nccl"); torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
flat = torch.randn(788_482, device="cuda")
for _ in range(20): dist.all_reduce(flat)
torch.cuda.synchronize(); start = time.perf_counter()
for _ in range(200): dist.all_reduce(flat)
torch.cuda.synchronize()
if dist.get_rank() == 0: print(f"all-reduce of {flat.numel():,} floats: {(time.perf_counter() - start) / 200 * 1e6:.0f} us")
dist.destroy_process_group()
PY
torchrun --standalone --nproc_per_node 2 /tmp/allreduce.py 2>&1 | grep all-reduce

# Each run with 1 process and with 2 at the same global batch. Per-GPU batches below ~64 sequences leave the
# GPUs waiting on the host (docs/performance.md): 64 and 128 per GPU here.
RUNS=(
  "$LARGE task=rte task.max_length=256 train.batch_size=128 train.epochs=10 train.lr=5e-3"
  "$LARGE task=rte task.max_length=256 train.batch_size=256 train.epochs=10 train.lr=5e-3"
  "model=minilm model.path=.carry/minilm task=quoref train.batch_size=128 train.epochs=3 train.lr=1e-2"
  "model=minilm model.path=.carry/minilm task=quoref train.batch_size=256 train.epochs=3 train.lr=1e-2"
  ${DDP_EXTRA_RUNS:-}
)
for run in "${RUNS[@]}"; do
  for launch in one two; do
    if [ "$(left)" -lt 90 ]; then echo "deadline: skipping $launch $run"; continue; fi
    $launch $run
  done
done

# A 4-job sweep on 1 GPU, then spread over both (joblib launcher, each job claims a free GPU). DDP_SWEEP=0 skips.
SWEEP="-m $COMMON $LARGE task=rte task.max_length=256 train.epochs=8 train.lr=5e-3 prompt_length=8,16,32,64"
t0=$(date +%s.%N); t1=$t0; t2=$t0
if [ "${DDP_SWEEP:-1}" = 1 ]; then
  CUDA_VISIBLE_DEVICES=0 timeout $(( $(left) * 6 / 10 )) python3 -m ptv2.cli $SWEEP results.experiment=sweep1 > $OUT/sweep1.log 2>&1
  t1=$(date +%s.%N)
  timeout $(left) python3 -m ptv2.cli $SWEEP results.experiment=sweep2 hydra/launcher=parallel hydra.launcher.n_jobs=2 \
    train.gpu_per_job=true > $OUT/sweep2.log 2>&1
  t2=$(date +%s.%N)
fi
python3 - "$t0" "$t1" "$t2" <<'PY'
import json, sys
from pathlib import Path
t0, t1, t2 = map(float, sys.argv[1:])
runs = {}
for path in sorted(Path("results/ddp").glob("*/*/*/pt2/*/metrics.json")):
    runs.setdefault(path.parts[2], []).append(json.loads(path.read_text()))

def steady(m):  # tokens/s without the first epoch (allocator and kernel warm-up); every epoch sees the same data
    epochs = m["epochs"]
    if len(epochs) < 2:
        return m["timing"]["train_tokens_per_s"]
    per_epoch = m["timing"]["train_tokens_per_s"] * m["timing"]["train_s"] / len(epochs)
    return per_epoch * (len(epochs) - 1) / sum(e["train_s"] for e in epochs[1:])

def key(m):
    return m["task"], m["model"], m["hparams"]["batch_size"]

print("task     model               batch procs   dev  tokens/s  steady tok/s  train s  allreduce  peak MB/GPU")
for experiment in ("gpu1", "gpu2"):
    for m in runs.get(experiment, []):
        t, dev = m["timing"], m["best"]["dev"][m["primary_metric"]]
        print(f"{m['task']:<8} {m['model']:<19} {m['hparams']['batch_size']:>5} {t['processes']:>5} {dev:5.1f}"
              f" {t['train_tokens_per_s']:>9.0f} {steady(m):>13.0f} {t['train_s']:>8.1f} {100 * t['allreduce_share']:>9.1f}%"
              f" {t['peak_memory_mb']:>12.0f}")
one = {key(m): m for m in runs.get("gpu1", [])}
for m2 in runs.get("gpu2", []):
    if (m1 := one.get(key(m2))):
        ratio = m2["timing"]["train_tokens_per_s"] / m1["timing"]["train_tokens_per_s"]
        print(f"scaling {key(m2)}: {ratio:.2f}x train tokens/s on 2 GPUs vs 1, {steady(m2) / steady(m1):.2f}x after epoch 1")
if runs.get("sweep1"):
    for sweep, seconds in (("sweep1", t1 - t0), ("sweep2", t2 - t1)):
        done = sum(m["status"] == "done" for m in runs.get(sweep, []))
        print(f"{sweep}: {done} jobs done in {seconds:.0f} s ({'1 GPU' if sweep == 'sweep1' else '2 GPUs, one job per GPU'})")
    print(f"sweep speed-up: {(t1 - t0) / (t2 - t1):.2f}x")
    for m in runs.get("sweep2", []):
        print(f"  sweep2 P={m['prompt_length']}: {m['timing']['device']}, {m['timing']['wall_s']:.0f} s, created {m['created']}")
PY
tar -czf "$OUT/ddp.tgz" --exclude='*.safetensors' --exclude='checkpoint' $RESULTS
