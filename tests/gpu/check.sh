#!/usr/bin/env bash
# check.sh: every GPU check in one command (make gpu-check): the CUDA op suite (also under PGD_CUDA_SYNC=1 and,
# when compute-sanitizer is there, its memcheck), the allocator and CPU op suites, and the PyTorch comparisons
# (tests/gpu/torch_compare.py). Fails when the build has no CUDA, there is no CUDA device, or PyTorch is missing:
# a skip here would hide that nothing was verified.
# Usage: HAVE_CUDA=0|1 bash tests/gpu/check.sh BUILD   (from the project root; make gpu-check passes both)
set -euo pipefail
build=${1:-build}
logs=$build/gpu-check
mkdir -p "$logs"
results=()
failed=0

step() { # name, command...: runs it with its output in $logs/name.log, shown in full
  local name=$1; shift
  local t0=$SECONDS rc=0
  echo "== gpu-check: $name: $*"
  "$@" 2>&1 | tee "$logs/$name.log" || rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 0 ]; then
    results+=("pass  $name ($((SECONDS - t0))s)")
  else
    [ "$rc" -eq 77 ] && echo "gpu-check: $name skipped itself (exit 77): on this command that is a failure"
    results+=("FAIL  $name (exit $rc, log $logs/$name.log)")
    failed=1
  fi
}

if [ "${HAVE_CUDA:-0}" != 1 ]; then
  echo "gpu-check: FAILED: this build has no CUDA (the Makefile found no nvcc and cudnn.h; set CUDA_HOME)"
  exit 1
fi
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi

step gpu_ops "$build/tests/test_gpu_ops"
if grep -q 'skipped: no CUDA device' "$logs/gpu_ops.log"; then
  echo "gpu-check: FAILED: no CUDA device; nothing on the GPU was verified"
  exit 1
fi
step gpu_ops_sync env PGD_CUDA_SYNC=1 "$build/tests/test_gpu_ops"
if command -v compute-sanitizer >/dev/null || [ -x /usr/local/cuda/bin/compute-sanitizer ]; then
  cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  # The ops without cuDNN/cuBLAS inside are our own kernels: memcheck them for out-of-bounds accesses.
  for c in pool global_avgpool relu dropout2d elementwise xent optim u8_to_float z_scatter_gather; do
    step "memcheck_$c" "$cs" --tool memcheck --error-exitcode 1 "$build/tests/test_gpu_ops" "$c"
  done
else
  results+=("skip  memcheck (compute-sanitizer not found)")
fi
step gpu_pool "$build/tests/test_gpu_pool"
step cpu_ops "$build/tests/test_ops"
if python3 -c 'import torch, torchvision, numpy' 2>/dev/null; then
  step torch_compare python3 tests/gpu/torch_compare.py --tool "$build/tests/gpu/gpu_compare" --work "$logs/torch" \
    --backends cuda,cpu
else
  echo "gpu-check: python3 cannot import torch, torchvision and numpy"
  results+=("FAIL  torch_compare (PyTorch, torchvision or NumPy missing)")
  failed=1
fi

echo "== gpu-check summary (logs in $logs)"
printf '  %s\n' "${results[@]}"
if [ "$failed" -ne 0 ]; then
  echo "gpu-check: FAILED"
  exit 1
fi
echo "gpu-check: all GPU checks passed"
