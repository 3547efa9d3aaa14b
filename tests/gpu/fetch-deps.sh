#!/usr/bin/env bash
# fetch-deps.sh: on a Debian 12 machine with network, download the Debian packages pgd builds and runs against
# (the -dev packages it links and the shared libraries they need, recursively) and unpack them into a bundle
# for a machine that has none of them and no network (docs/gpu.md): gpu-deps/root (unpacked, pruned to what
# pgd needs) and gpu-deps/bundle/pgd-deps.tar.xz (the same, packed: the one thing to carry along).
# Usage: bash tests/gpu/fetch-deps.sh [DIR]   (from the project root; DIR defaults to gpu-deps)
# Left out: libc6, libgcc-s1, libstdc++6 (any machine with a C compiler and nvcc has them).
set -euo pipefail
dir=${1:-gpu-deps}
arch=x86_64-linux-gnu

# The -dev packages of launch/deps.sh that the link line (Makefile LDLIBS, TEST_LDLIBS) needs: headers and
# the libX.so names. Their own -dev dependencies are not needed (no static linking, no pkg-config).
dev=(libcunit1-dev libzmq3-dev libpng-dev zlib1g-dev libopenslide-dev libtiff-dev libturbojpeg0-dev
     libopenblas-dev libopenblas-pthread-dev)
# The shared libraries behind them; their Depends and Pre-Depends are followed below.
runtime=(libcunit1 libzmq5 libpng16-16 zlib1g libopenslide0 libtiff6 libturbojpeg0 libopenblas0-pthread)
skip=" libc6 libgcc-s1 libstdc++6 gcc-12-base "

if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
  echo "fetch-deps: needs apt-get and dpkg (Debian 12)" >&2
  exit 1
fi
command -v readelf >/dev/null || { echo "fetch-deps: needs readelf (binutils)" >&2; exit 1; }

# Breadth-first over Depends/Pre-Depends, first alternative only, following only libraries: packages such as
# debconf, fontconfig-config or shared-mime-info (configuration and data) are noted and left out.
declare -A seen=()
queue=("${runtime[@]}")
pkgs=()
notes=()
while [ ${#queue[@]} -gt 0 ]; do
  p=${queue[0]}; queue=("${queue[@]:1}")
  [ -n "${seen[$p]:-}" ] && continue
  seen[$p]=1
  case "$skip" in *" $p "*) continue ;; esac
  if [[ $p != lib* && $p != zlib1g ]]; then notes+=("$p"); continue; fi
  pkgs+=("$p")
  alt=0
  while IFS= read -r line; do
    # "  |Depends: a" starts a group of alternatives whose next lines are the others: keep the first only.
    if [[ $line =~ ^\ *(\|?)(Pre)?Depends:\ (.*)$ ]]; then
      name=${BASH_REMATCH[3]}
      if [ "$alt" -eq 0 ] && [[ $name != \<* ]]; then queue+=("${name%%:*}"); fi
      if [ -n "${BASH_REMATCH[1]}" ]; then alt=1; else alt=0; fi
    fi
  done < <(apt-cache depends --important "$p" 2>/dev/null | tail -n +2)
done
all=("${dev[@]}" "${pkgs[@]}")
echo "fetch-deps: ${#all[@]} packages: ${all[*]}"
[ ${#notes[@]} -eq 0 ] || echo "fetch-deps: not libraries, left out: ${notes[*]}"

mkdir -p "$dir/debs"
(cd "$dir/debs" && apt-get download -q "${all[@]}" >/dev/null)
rm -rf "$dir/root"
mkdir -p "$dir/root"
: >"$dir/root/PACKAGES"
for p in "${all[@]}"; do
  deb=$(ls -t "$dir/debs/${p}_"*.deb | head -n 1)
  dpkg -x "$deb" "$dir/root"
  echo "$(basename "$deb")" >>"$dir/root/PACKAGES"
done
root=$(cd "$dir/root" && pwd)
mapfile -t debs < <(sed "s#^#$dir/debs/#" "$root/PACKAGES")
debsize=$(du -cb "${debs[@]}" | tail -n 1 | cut -f1)

# Absolute symlinks (zlib1g-dev's libz.so -> /lib/...) would point at this machine's files: make them point
# into the bundle.
while IFS= read -r l; do
  t=$(readlink "$l")
  [[ $t == /* ]] || continue
  ln -sfn "$(realpath -m --relative-to="$(dirname "$l")" "$root$t")" "$l"
done < <(find "$root" -type l)

# Keep only headers, the libX.so names of the link line and the shared objects they need (NEEDED, closed);
# drop documentation, data, programs, static libraries, plugins and libraries nothing here loads.
libdirs=("$root/usr/lib/$arch/openblas-pthread" "$root/usr/lib/$arch" "$root/lib/$arch")
links=(libopenblas.so libopenslide.so libtiff.so libturbojpeg.so libzmq.so libpng.so libz.so libcunit.so)
find_lib() { # soname -> path in the bundle, or nothing
  local d
  for d in "${libdirs[@]}"; do [ -e "$d/$1" ] && { echo "$d/$1"; return; }; done
  return 0
}
declare -A keep=()
todo=()
for l in "${links[@]}"; do
  f=$(find_lib "$l")
  [ -n "$f" ] || { echo "fetch-deps: $l is not in the bundle" >&2; exit 1; }
  todo+=("$f")
done
while [ ${#todo[@]} -gt 0 ]; do
  f=${todo[0]}; todo=("${todo[@]:1}")
  [ -n "${keep[$f]:-}" ] && continue
  keep[$f]=1
  # every link on the way to the file is kept too
  g=$f
  while [ -L "$g" ]; do g=$(realpath -s -m "$(dirname "$g")/$(readlink "$g")"); keep[$g]=1; done
  # what it needs, and its own SONAME (the name programs linked with it ask for: libzmq.so -> libzmq.so.5)
  for n in $(readelf -d "$(realpath "$f")" | sed -n 's/.*(\(NEEDED\|SONAME\)).*\[\(.*\)\]/\2/p'); do
    h=$(find_lib "$n")
    [ -n "$h" ] && todo+=("$h")
  done
done
for d in usr/share usr/bin usr/sbin bin sbin etc "usr/lib/$arch/cmake" "usr/lib/$arch/openblas-pthread/cmake"; do
  rm -rf "${root:?}/$d"
done
find "$root" \( -name '*.a' -o -name '*.la' -o -name '*.pc' \) -delete
while IFS= read -r f; do
  [ -n "${keep[$f]:-}" ] || rm -f "$f"
done < <(find "$root" \( -name '*.so' -o -name '*.so.*' \) \( -type f -o -type l \))
find "$root" -depth -type d -empty -delete

# Check: every shared object of the bundle finds each library it needs in the bundle, or is one of libc's,
# libgcc's or libstdc++'s.
ldp=$(IFS=:; echo "${libdirs[*]}")
bad=0
while IFS= read -r f; do
  while IFS= read -r line; do
    case "$line" in
      *"not found"*) echo "fetch-deps: $f: $line" >&2; bad=1 ;;
      *"=> $root/"*|*linux-vdso*|*ld-linux*) ;;
      *"=> "*)
        lib=${line%% *}
        case "$lib" in
          libc.so.*|libm.so.*|libdl.so.*|librt.so.*|libpthread.so.*|libresolv.so.*|libgcc_s.so.*|libstdc++.so.*) ;;
          *) echo "fetch-deps: $f: $lib comes from outside the bundle:$line" >&2; bad=1 ;;
        esac ;;
    esac
  done < <(LD_LIBRARY_PATH=$ldp ldd "$f" | sed 's/^[[:space:]]*//')
done < <(find "$root" -name '*.so*' -type f)
for l in "${links[@]}"; do
  n=$(readelf -d "$(realpath "$(find_lib "$l")")" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  [ -e "$(find_lib "$n")" ] || { echo "fetch-deps: $l: its SONAME $n is not in the bundle" >&2; bad=1; }
done
[ "$bad" -eq 0 ] || { echo "fetch-deps: the bundle is incomplete" >&2; exit 1; }

# The newest glibc and libstdc++ symbol versions the bundle needs: the machine that uses it must have those.
syms=$(find "$root" -name '*.so*' -type f -exec objdump -T {} + 2>/dev/null)
glibc=$(grep -o 'GLIBC_[0-9.]*' <<<"$syms" | sort -uV | tail -n 1)
glibcxx=$(grep -o 'GLIBCXX_[0-9.]*' <<<"$syms" | sort -uV | tail -n 1)
npkg=$(wc -l <"$root/PACKAGES")
echo "needs $glibc and ${glibcxx:-no libstdc++}" >>"$root/PACKAGES"

mkdir -p "$dir/bundle"
tar -C "$dir" -cJf "$dir/bundle/pgd-deps.tar.xz" root
touch "$root/PACKAGES" # newer than the tarball: env.sh unpacks it only where root/ is missing or older
echo "fetch-deps: $npkg packages ($((debsize / 1024)) KiB of .deb) unpacked into $root:" \
     "$(du -sk "$root" | cut -f1) KiB, $(find "$root" -name '*.so*' -type f | wc -l) shared objects"
echo "fetch-deps: the machine needs at least $glibc${glibcxx:+ and $glibcxx} (libc6, libstdc++6 are not bundled)"
echo "fetch-deps: carry $dir/bundle ($(du -sk "$dir/bundle" | cut -f1) KiB); there: source tests/gpu/env.sh"
