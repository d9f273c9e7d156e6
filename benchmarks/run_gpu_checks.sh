#!/usr/bin/env bash
# One-shot GPU checks for the scale work (issue 8), run on the device machine from the repo root:
# the CUDA-parametrised scale tests, then the MFU benchmark. Installs nothing but the wheels of
# tikmix dependencies missing from the device image (zarr and its codecs, carried in
# benchmarks/out/whl). Writes everything under $OUT (default benchmarks/out/gpu).
set -uo pipefail
OUT=${OUT:-benchmarks/out/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:-}"
if ! python3 -c "import zarr" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
        benchmarks/out/whl/*.whl && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
export PYTHONPATH="$PWD:$PYTHONPATH"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_scale_projection.py \
    tests/test_scale_precision.py -k cuda -rs 2>&1 | tee "$OUT/pytest-cuda.txt"
timeout 330 python3 benchmarks/bench_gpu_mfu.py --json "$OUT/mfu.json" "$@" 2>&1 | tee "$OUT/mfu.txt"
