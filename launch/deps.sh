#!/usr/bin/env bash
# deps.sh: install the Debian packages pgd needs to build and test, when any is missing.
# Idempotent and silent when everything is there. Needs root (or sudo) only when it installs.
set -euo pipefail

packages=(
  build-essential pkg-config
  libcunit1-dev   # tests
  libzmq3-dev     # wire transport
  libpng-dev zlib1g-dev
  libopenslide-dev libtiff-dev libturbojpeg0-dev  # slides
  libopenblas-dev # trainer: CPU sgemm
  clang libclang-rt-14-dev  # make fuzz (libFuzzer)
)

missing=()
for p in "${packages[@]}"; do
  [[ $p == \#* ]] && continue
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "deps: installing ${missing[*]}"
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then sudo=(sudo); else
    echo "deps: missing packages ${missing[*]}; run as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: done"
