#!/usr/bin/env bash
# Build gpu_carry/ (git-ignored) for the device tool's GPU machine, which has
# torch/transformers/accelerate but no gguf, no hub and a 64 MiB limit on what travels
# (the tracked tree, ~22 MiB, included):
#   gpu_carry/gguf.part-aa, -ab, -ac   the packaged SmolLM2 GGUF (94 MiB) in parts of 32, 34 and 28 MiB
#                                      (the tracked tree is ~29 MiB: each call carries one part)
#   gpu_carry/wheels/                  gguf, and pydantic with its needs (not in the GPU image)
# data/wikitext and data/magic_words travel as they are. See docs/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p gpu_carry/wheels
GGUF=$(.venv/bin/python -c "from magictokens.models import find_packaged_gguf as f; print(f('smollm2-135m-instruct'))")
rm -f gpu_carry/gguf.part-*
# the call that also carries the wheels takes the last, smallest part
dd if="$GGUF" of=gpu_carry/gguf.part-aa bs=1M count=32 status=none
dd if="$GGUF" of=gpu_carry/gguf.part-ab bs=1M skip=32 count=34 status=none
dd if="$GGUF" of=gpu_carry/gguf.part-ac bs=1M skip=66 status=none
cat gpu_carry/gguf.part-a? | cmp - "$GGUF"
.venv/bin/python -m pip download -q --no-deps gguf -d gpu_carry/wheels
# pydantic (config validation) is not in the GPU image: this venv's versions, built for its Python 3.12
read -r PD PC < <(.venv/bin/python -c "import pydantic, pydantic_core; print(pydantic.VERSION, pydantic_core.__version__)")
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d gpu_carry/wheels "pydantic==$PD" "pydantic_core==$PC" annotated_types typing_inspection
ls -la gpu_carry gpu_carry/wheels
