#!/usr/bin/env bash
# The CUDA checks, for a machine with a GPU: the no-sync test and the CUDA benchmarks.
# Usage: bash benchmarks/gpu.sh RESULTS.json    (about 5 minutes on one modern GPU)
set -euo pipefail
out="${1:?usage: bash benchmarks/gpu.sh RESULTS.json}"
cd "$(dirname "$0")/.."
python3 -m venv .venv-gpu
.venv-gpu/bin/pip install --quiet '.[test]'
.venv-gpu/bin/python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), torch.__version__)"
cd tests && ../.venv-gpu/bin/python -m pytest -q -p no:cacheprovider -m cuda ; cd ..
GRADSCOPE_BENCH_ROUNDS=9 .venv-gpu/bin/python -m pytest benchmarks -q -p no:cacheprovider \
  -o python_files='bench_*.py' -k "cuda" --benchmark-only -s --benchmark-json="$out"
