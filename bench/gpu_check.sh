#!/usr/bin/env bash
# The GPU machine's check behind docs/RESULTS.md "GPU": run there from the repository root, carrying
# .devdata (here: `.venv/bin/python bench/gpu.py prepare --run <run> --pg all --out .devdata`) and .whl
# (pydantic and its four dependencies as cp312 manylinux wheels; the GPU image has torch, pandas, numpy,
# scipy, scikit-learn, pyyaml and tqdm but no pydantic). Writes its tables to $OUT (or /tmp/gpu-check).
set -euo pipefail
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  echo "CPU: $(nproc) cores, $(grep -o -m1 avx512_bf16 /proc/cpuinfo || echo 'no avx512_bf16')"
  python3 -c 'import torch, pandas, numpy; print("torch", torch.__version__, "pandas", pandas.__version__, "numpy", numpy.__version__)'
} | tee "$out/machine.txt"
python3 bench/gpu.py run --data .devdata --repeats 3 --embed-dims 256,512 | tee "$out/run.md"
python3 bench/gpu.py pgs --data .devdata --cpu-pgs kitchen_garden_pets,automotive --json "$out/pgs.json" \
  --variant 'CUDA fp32, batch auto (the demo config)=train.device=cuda' \
  --variant 'CUDA bf16 autocast, batch auto=train.device=cuda,train.amp=true' \
  --variant 'CUDA fp32, batch 1024=train.device=cuda,train.batch_size=1024' | tee "$out/pgs.md"
