#!/usr/bin/env bash
# Check a commit on a CUDA machine in one go (about 5-8 minutes on an H100/H200): the gpu-marked tests (training of
# both families, fp16 + Grokfast, a killed run resumed, analyses, transfer, the smoke study, stacked runs, compiled
# vs eager), then the speed table (benchmarks/bench_gpu.py). Uses the machine's own torch; installs grokscope from
# this checkout without dependencies when it is not importable.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
$PY -c "import grokscope" 2>/dev/null || $PY -m pip install --quiet --no-deps --no-build-isolation -e .
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
$PY -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider
$PY benchmarks/bench_gpu.py --device cuda "$@"
