# env.sh: source it (bash) before make on a machine without pgd's Debian libraries: points the build at the
# bundle of tests/gpu/fetch-deps.sh and at the CUDA toolkit and cuDNN, wherever they are, and prints what it found.
# Usage: source tests/gpu/env.sh [DIR]   (DIR: the bundle folder, default gpu-deps beside this repository's Makefile)
#   project libraries: DIR/root, unpacked from DIR/bundle/pgd-deps.tar.xz when missing. Its headers go to
#     C_INCLUDE_PATH and CPLUS_INCLUDE_PATH (system headers, as in /usr/include: no warnings from their macros;
#     CPATH would make them -I folders). Its libraries go to LDFLAGS, as -L (LIBRARY_PATH would come after the
#     compiler's own /usr/lib folders) and into the RPATH of every binary built: no LD_LIBRARY_PATH is needed,
#     and no other program on the machine sees these older libraries;
#   CUDA_HOME: kept when set, else the toolkit of the nvcc on PATH, /usr/local/cuda, /usr/local/cuda-*, or the
#     nvcc of Python's pip packages (nvidia/cu13, nvidia/cuda_nvcc);
#   CUDNN_HOME: only when cudnn.h is neither in CUDA_HOME nor in /usr/include: Python's nvidia/cudnn;
#   CUDA_EXTRA_HOMES: pip packages with cuBLAS or the CUDA runtime when CUDA_HOME lacks them.
# Sourced, so it sets no shell options; it returns 1 (and says why) when the bundle is missing.
# shellcheck shell=bash

pgd_env_main() {
  local repo deps root tarball arch=x86_64-linux-gnu
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  deps=${1:-$repo/gpu-deps}
  [ -d "$deps" ] && deps=$(cd "$deps" && pwd) # absolute: it goes into the binaries' rpath
  root=$deps/root
  tarball=$deps/bundle/pgd-deps.tar.xz

  # --- the project's libraries --------------------------------------------------------------------------
  if [ -f "$tarball" ] && { [ ! -d "$root" ] || [ "$tarball" -nt "$root/PACKAGES" ]; }; then
    echo "env: unpacking $tarball"
    rm -rf "$root"
    if command -v xz >/dev/null; then
      tar -C "$deps" -xJf "$tarball" || return 1
    else
      python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$tarball" "$deps" || return 1
    fi
    touch "$root/PACKAGES"
  fi
  if [ ! -f "$root/PACKAGES" ]; then
    echo "env: no bundle in $deps (neither root/ nor bundle/pgd-deps.tar.xz): run bash tests/gpu/fetch-deps.sh" \
         "on a Debian 12 machine with network and bring $deps/bundle along" >&2
    return 1
  fi
  local inc=("$root/usr/include" "$root/usr/include/$arch" "$root/usr/include/$arch/openblas-pthread")
  local lib=("$root/usr/lib/$arch/openblas-pthread" "$root/usr/lib/$arch" "$root/lib/$arch")
  local d i
  for ((i = ${#inc[@]} - 1; i >= 0; i--)); do
    pgd_env_add C_INCLUDE_PATH "${inc[i]}"
    pgd_env_add CPLUS_INCLUDE_PATH "${inc[i]}"
  done
  PGD_DEPS_LIBS=$(IFS=:; echo "${lib[*]}")
  export C_INCLUDE_PATH CPLUS_INCLUDE_PATH PGD_DEPS_LIBS
  # DT_RPATH (not RUNPATH): it also serves the libraries' own dependencies (libopenslide -> libglib ...).
  case " ${LDFLAGS:-} " in
    *" -Wl,-rpath,$PGD_DEPS_LIBS "*) ;;
    *) export LDFLAGS="${LDFLAGS:+$LDFLAGS }${lib[*]/#/-L} -Wl,--disable-new-dtags -Wl,-rpath,$PGD_DEPS_LIBS" ;;
  esac
  local need have
  need=$(sed -n 's/^needs GLIBC_\([0-9.]*\).*/\1/p' "$root/PACKAGES")
  have=$(getconf GNU_LIBC_VERSION 2>/dev/null | sed 's/^glibc //')
  echo "env: libraries: $(grep -c '\.deb$' "$root/PACKAGES") Debian 12 packages in $root" \
       "(glibc ${have:-?} here, $need needed)"
  if [ -n "$need" ] && [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n 1)" != "$need" ]
  then
    echo "env: WARNING: this machine's glibc $have is older than the $need the bundle needs:" \
         "its programs will not start" >&2
  fi

  # --- CUDA -----------------------------------------------------------------------------------------------
  local nv=() py
  py=$(command -v python3 || true)
  if [ -n "$py" ]; then
    # the folders of Python's 'nvidia' namespace package (pip wheels of CUDA, cuDNN, cuBLAS)
    mapfile -t nv < <("$py" -c 'import nvidia; print(*nvidia.__path__, sep="\n")' 2>/dev/null)
  fi
  if [ -z "${CUDA_HOME:-}" ]; then
    local nvcc=
    nvcc=$(command -v nvcc || true)
    # the first with bin/nvcc and include/ (a wrapper script named nvcc has no include/ beside it)
    for d in ${nvcc:+"$(dirname "$(dirname "$(realpath "$nvcc")")")"} /usr/local/cuda \
             $(ls -d /usr/local/cuda-* 2>/dev/null | sort -rV) \
             "${nv[@]/%//cu13}" "${nv[@]/%//cu12}" "${nv[@]/%//cuda_nvcc}"; do
      [ -x "$d/bin/nvcc" ] && [ -d "$d/include" ] && { CUDA_HOME=$d; break; }
    done
  fi
  if [ -z "${CUDA_HOME:-}" ] || [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
    echo "env: WARNING: no nvcc (CUDA_HOME=${CUDA_HOME:-unset}, none on PATH, in /usr/local/cuda* or Python's nvidia" \
         "packages): the build will be CPU-only and make gpu-check fails" >&2
  else
    export CUDA_HOME
    echo "env: CUDA: $("$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/nvcc \1/p') in $CUDA_HOME"
  fi
  local cuda=${CUDA_HOME:-/usr/local/cuda} cudnn_h=
  if [ -n "${CUDNN_HOME:-}" ]; then
    cudnn_h=$CUDNN_HOME/include/cudnn.h
  else
    for d in "$cuda/include" /usr/include "/usr/include/$arch"; do
      [ -f "$d/cudnn.h" ] && { cudnn_h=$d/cudnn.h; break; }
    done
    if [ -z "$cudnn_h" ]; then
      for d in "${nv[@]}"; do
        [ -f "$d/cudnn/include/cudnn.h" ] && { export CUDNN_HOME=$d/cudnn; cudnn_h=$CUDNN_HOME/include/cudnn.h; break; }
      done
    fi
  fi
  if [ -n "$cudnn_h" ] && [ -f "$cudnn_h" ]; then
    local v
    v=$(sed -n 's/^#define CUDNN_\(MAJOR\|MINOR\|PATCHLEVEL\) *\([0-9]*\).*/\2/p' \
          "$(dirname "$cudnn_h")/cudnn_version.h" 2>/dev/null | paste -sd.)
    echo "env: cuDNN: ${v:-?} ($cudnn_h${CUDNN_HOME:+; CUDNN_HOME=$CUDNN_HOME})"
  else
    echo "env: WARNING: no cudnn.h (${CUDNN_HOME:+CUDNN_HOME=$CUDNN_HOME, }$cuda/include, /usr/include, Python's" \
         "nvidia/cudnn): the build will be CPU-only and make gpu-check fails" >&2
  fi
  # cuBLAS and the CUDA runtime: from CUDA_HOME, else from the pip packages (CUDA 12 wheels keep each apart)
  local extra=() h f
  for f in cublas_v2.h cuda_runtime.h; do
    [ -f "$cuda/include/$f" ] && continue
    for d in "${nv[@]}"; do
      for h in "$d/cu13" "$d/cu12" "$d/cublas" "$d/cuda_runtime"; do
        [ -f "$h/include/$f" ] || continue
        case " ${extra[*]} " in *" $h "*) ;; *) extra+=("$h") ;; esac
        break 2
      done
    done
  done
  if [ ${#extra[@]} -gt 0 ]; then
    export CUDA_EXTRA_HOMES="${extra[*]}"
    echo "env: cuBLAS / CUDA runtime from: $CUDA_EXTRA_HOMES"
  fi
  if command -v nvidia-smi >/dev/null; then
    echo "env: GPU: $(nvidia-smi -L 2>/dev/null | head -n 1)"
  fi
  echo "env: now: make gpu-check (or make BUILD=DIR all)"
}

pgd_env_add() { # VAR DIR: put DIR first in the colon list VAR, once
  local cur=${!1:-}
  case ":$cur:" in *":$2:"*) return 0 ;; esac
  printf -v "$1" '%s' "$2${cur:+:$cur}"
}

pgd_env_main "$@"
