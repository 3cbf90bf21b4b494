#!/usr/bin/env bash
# Wheels the GPU image lacks, fetched here (it has no network) into the ignored folder .whl/:
#   .whl/base  hydra-core, omegaconf, antlr4 (built here: sdist only), seqeval (built here: sdist only), pydantic
#   .whl/peft  transformers 5.23.0 + peft for the PEFT contender's own environment (PEFT refuses
#              BERT/RoBERTa on transformers 5.24; the image's torch 2.11 and accelerate 1.15 serve it).
# Usage: scripts/prepare_gpu_wheels.sh   (then carry .whl; benchmarks/gpu.sh and scripts/real_evidence.sh install them)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PEFT_VERSION=${PEFT_VERSION:-0.21.2}          # newest release; its Requires-Dist: transformers (any), accelerate>=0.21
TRANSFORMERS_PEFT=${TRANSFORMERS_PEFT:-5.23.0}
BIN=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
rm -rf .whl/base .whl/peft
mkdir -p .whl/base .whl/peft
# pure-python wheels: any platform
"$PY" -m pip download -q "${BIN[@]}" -d .whl/base hydra-core==1.3.2 omegaconf==2.3.0
"$PY" -m pip wheel -q --no-deps -w .whl/base antlr4-python3-runtime==4.9.3 seqeval==1.2.2
# pydantic (the config schema, ptv2/schema.py) and what it needs: not on the GPU image
"$PY" -m pip download -q "${BIN[@]}" -d .whl/base pydantic==2.14.4 pydantic_core==2.50.5 annotated-types \
  typing-inspection "typing_extensions>=4.16"
"$PY" -m pip download -q "${BIN[@]}" -d .whl/peft "transformers==$TRANSFORMERS_PEFT" "peft==$PEFT_VERSION"
du -sh .whl/base .whl/peft .whl
ls .whl/base .whl/peft
