#!/usr/bin/env bash
# check.sh: every GPU check in one command (make gpu-check): the CUDA op suite (also under PGD_CUDA_SYNC=1 and,
# when compute-sanitizer is there, its memcheck), the allocator and CPU op suites, the PyTorch comparisons
# (tests/gpu/torch_compare.py) and the demo's training on the GPU in fp32 and bf16 (launch/demo.sh). Fails when the
# build has no CUDA, there is no CUDA device, or PyTorch is missing: a skip here would hide that nothing was
# verified.
# It builds first (MAKE BUILD=BUILD all); when the build or a program fails for a missing library or header, it
# names it and points at the bundle of tests/gpu/fetch-deps.sh and tests/gpu/env.sh (docs/gpu.md).
# Usage: HAVE_CUDA=0|1 MAKE=make bash tests/gpu/check.sh BUILD   (from the project root; make gpu-check passes them)
set -euo pipefail
build=${1:-build}
flags=${MAKEFLAGS:-}
case ${flags%% *} in -*) ;; *n*) echo "gpu-check: (make -n) would run: bash tests/gpu/check.sh $build"; exit 0 ;; esac
logs=$build/gpu-check
mkdir -p "$logs"
results=()
failed=0

package_of() { # library or header name -> the Debian package (or CUDA part) that has it
  case "$1" in
    *openblas*|cblas.h) echo libopenblas-dev ;;
    *openslide*) echo libopenslide-dev ;;
    *turbojpeg*) echo libturbojpeg0-dev ;;
    *tiff*) echo libtiff-dev ;;
    *zmq*) echo libzmq3-dev ;;
    *png*) echo libpng-dev ;;
    *cunit*|*CUnit*) echo libcunit1-dev ;;
    libz.so*|-lz|zlib.h) echo zlib1g-dev ;;
    *cudnn*) echo "cuDNN (set CUDNN_HOME, or have Python's nvidia-cudnn package)" ;;
    *cublas*|*cudart*|*cuda_runtime*) echo "the CUDA toolkit (set CUDA_HOME)" ;;
    *) echo "a Debian package that provides it (apt-file search $1)" ;;
  esac
}

missing_hint() { # LOG: when it shows a missing library or header, say which and how to bring it
  local what=() m
  while IFS= read -r m; do what+=("$m"); done < <(sed -n \
    -e 's/.*cannot find \(-l:\{0,1\}[^ :]*\).*/\1/p' \
    -e 's/.*fatal error: \([^:]*\): No such file or directory.*/\1/p' \
    -e 's/.*error while loading shared libraries: \([^:]*\):.*/\1/p' "$1" | sort -u)
  [ ${#what[@]} -gt 0 ] || return 0
  for m in "${what[@]}"; do echo "gpu-check: missing: $m ($(package_of "$m"))"; done
  case ":${C_INCLUDE_PATH:-}:" in
    *gpu-deps*) echo "gpu-check: tests/gpu/env.sh is sourced, yet its bundle lacks it: run" \
                     "bash tests/gpu/fetch-deps.sh again on a Debian 12 machine with network and bring" \
                     "gpu-deps/bundle along (docs/gpu.md)" ;;
    *) echo "gpu-check: on a machine without pgd's Debian libraries: bash tests/gpu/fetch-deps.sh on a Debian 12" \
            "machine with network, bring gpu-deps/bundle here, then: source tests/gpu/env.sh && make gpu-check" \
            "(docs/gpu.md)" ;;
  esac
}

step() { # name, command...: runs it with its output in $logs/name.log, shown in full
  local name=$1; shift
  local t0=$SECONDS rc=0
  echo "== gpu-check: $name: $*"
  "$@" 2>&1 | tee "$logs/$name.log" || rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 0 ]; then
    results+=("pass  $name ($((SECONDS - t0))s)")
  else
    [ "$rc" -eq 77 ] && echo "gpu-check: $name skipped itself (exit 77): on this command that is a failure"
    missing_hint "$logs/$name.log"
    results+=("FAIL  $name (exit $rc, log $logs/$name.log)")
    failed=1
  fi
}

if [ "${HAVE_CUDA:-0}" != 1 ]; then
  echo "gpu-check: FAILED: this build has no CUDA (the Makefile found no nvcc and cudnn.h; set CUDA_HOME and" \
       "CUDNN_HOME, or source tests/gpu/env.sh, which looks for them)"
  exit 1
fi
echo "== gpu-check: build: ${MAKE:-make} BUILD=$build all"
rc=0
${MAKE:-make} --no-print-directory BUILD="$build" all 2>&1 | tee "$logs/build.log" || rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
  missing_hint "$logs/build.log"
  echo "gpu-check: FAILED: the build failed (log $logs/build.log)"
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
cs=$(command -v compute-sanitizer || true)
for d in "${CUDA_HOME:-}" /usr/local/cuda; do
  [ -z "$cs" ] && [ -n "$d" ] && [ -x "$d/bin/compute-sanitizer" ] && cs=$d/bin/compute-sanitizer
done
memcheck=absent
if [ -n "$cs" ]; then # some sandboxed runtimes (gVisor) refuse the sanitizer the device: a skip, said so
  memcheck=yes
  "$cs" --tool memcheck "$build/tests/test_gpu_ops" relu >"$logs/memcheck_probe.log" 2>&1 ||
    ! grep -q 'Device not supported' "$logs/memcheck_probe.log" || memcheck=refused
fi
if [ "$memcheck" = yes ]; then
  # The ops without cuDNN/cuBLAS inside are our own kernels: memcheck them for out-of-bounds accesses.
  # nonfinite, and conv_half with its conversion kernels (cuDNN inside too, but the staging is ours).
  for c in pool global_avgpool relu dropout2d elementwise xent optim u8_to_float z_scatter_gather nonfinite conv_half; do
    step "memcheck_$c" "$cs" --tool memcheck --error-exitcode 1 "$build/tests/test_gpu_ops" "$c"
  done
elif [ "$memcheck" = refused ]; then
  results+=("skip  memcheck (compute-sanitizer: 'Device not supported' on this machine; log $logs/memcheck_probe.log)")
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

# The demo's training on the GPU (launch/demo.sh with resnet50 on the CUDA backend), in fp32 and in bf16: the whole
# graph, PatchGD and GD at both budgets. PGD_GPU_CHECK_DEMO_EPOCHS epochs (2; 0 leaves the demo out).
demo_epochs=${PGD_GPU_CHECK_DEMO_EPOCHS:-2}
if [ "$demo_epochs" -gt 0 ]; then
  for prec in fp32 bf16; do
    step "demo_cuda_$prec" env PGD_BUILD="$build" PGD_DEMO_DIR="$logs/demo-$prec" PGD_DEMO_DEVICE=cuda \
      PGD_DEMO_PRECISION="$prec" PGD_DEMO_EPOCHS="$demo_epochs" PGD_DEMO_GD_EPOCHS="$demo_epochs" bash launch/demo.sh
  done
fi

echo "== gpu-check summary (logs in $logs)"
printf '  %s\n' "${results[@]}"
if [ "$failed" -ne 0 ]; then
  echo "gpu-check: FAILED"
  exit 1
fi
echo "gpu-check: all GPU checks passed"
