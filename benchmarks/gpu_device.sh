#!/usr/bin/env bash
# benchmarks/gpu.py on a lent GPU machine (the device tool), where this project is not installed:
# the repository root goes on PYTHONPATH, and wheels carried in .whl/ (OpenCV contrib for the
# pipeline section's selective search) are installed first. Arguments go to gpu.py; see
# benchmarks/gpu_bundle.py for what to carry and the two commands to run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec python3 benchmarks/gpu.py "$@"
