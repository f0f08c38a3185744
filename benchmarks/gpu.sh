#!/usr/bin/env bash
# The checks that need a CUDA device, in one go: the tests marked gpu, then the GPU benchmarks.
# Run from the repository root on a machine with CUDA:   bash benchmarks/gpu.sh [LOG_DIR]
# Each step has its own time limit so that one slow step cannot hide the others' figures; the limits add
# up to 450 s, so the whole script ends within 8 minutes on one H100 or H200 (a lent window is 15 minutes,
# machine start included). The 7B throughput step needs about 20 GB of GPU memory and 20 GB of temp disk.
set -u
LOG=${1:-bench_out/gpu}
mkdir -p "$LOG"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=${PYTHON:-python3}
step() {  # step NAME SECONDS command...
  local name=$1 secs=$2; shift 2
  echo "=== $name (limit ${secs}s) ==="
  local t0=$SECONDS
  timeout "$secs" "$@" 2>&1 | tee "$LOG/$name.txt"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s ==="
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$LOG/device.txt"
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$LOG/device.txt"
# Only the files that hold gpu tests: the GUI tests need PySide6, which a bare GPU machine may lack.
step tests 140 $PY -m pytest -m gpu -p no:cacheprovider -q \
  tests/core/test_gpu.py tests/core/test_segment.py tests/core/test_explain.py tests/core/test_memory.py \
  tests/core/test_rrr_two_pass.py tests/lvlm/test_gpu_lvlm.py tests/lvlm/test_local.py
step ppeps 35 $PY benchmarks/segment.py --device cuda --images 64 --size 224 --repeats 3
step rrr_step 45 $PY benchmarks/rrr_step.py --device cuda --repeats 20 --archs small_cnn resnet18 resnet50
step lvlm_7b 230 $PY benchmarks/lvlm.py throughput --shape 7b --batches 1 32 --profile
echo "=== all steps: $SECONDS s ==="
