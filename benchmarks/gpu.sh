#!/usr/bin/env bash
# The CUDA checks, for a machine with a GPU: the no-sync tests and the CUDA benchmarks.
# Uses the machine's own python3 and installs nothing (a GPU machine may reach no package index):
# torch, matplotlib, seaborn, click, jinja2, pytest and pytest-benchmark must be there already.
# Usage: bash benchmarks/gpu.sh RESULTS.json    (about 5 minutes on one modern GPU)
set -euo pipefail
out="${1:?usage: bash benchmarks/gpu.sh RESULTS.json}"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch, gradscope; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), torch.__version__, 'gradscope', gradscope.__version__)"
(cd tests && python3 -m pytest -q -p no:cacheprovider -m cuda)
GRADSCOPE_BENCH_ROUNDS=9 python3 -m pytest benchmarks -q -p no:cacheprovider \
  -o python_files='bench_*.py' -k "cuda" --benchmark-only -s --benchmark-json="$out"
