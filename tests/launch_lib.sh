#!/usr/bin/env bash
# launch_lib.sh: what it_panda.sh and it_infer.sh share (sourced with the test's name set in TEST): the build
# folder B, a scratch folder tmp removed at exit with every pgd process the launchers started, fail, and clean.
B=${PGD_BUILD:-build}
B=$(cd "$B" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/$TEST.XXXXXX")
bg="" # a launcher running in the background, killed at exit
cleanup() {
  [ -z "$bg" ] || kill -KILL "$bg" 2>/dev/null
  for f in "$tmp"/*/logs/*/pids "$tmp"/*/logs/*/*/pids; do
    [ -f "$f" ] || continue
    for p in $(awk '{print $2}' "$f"); do # only what still runs our binaries
      [[ $(cat "/proc/$p/comm" 2>/dev/null) == pgd-* ]] && kill -KILL "$p" 2>/dev/null
    done
  done
  rm -f "/dev/shm/pgd.$TEST.$$"
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
for b in pgd-sampler pgd-trainer pgd-loader pgd-synth; do [ -x "$B/$b" ] || fail "$B/$b is not built"; done
export PGD_BUILD=$B

# held_build DIR GATE NAME [LOG]: a build folder DIR whose NAME (pgd-loader, pgd-trainer), when its stdout or
# stderr is a file whose path contains LOG (any, without LOG), waits until the file GATE exists, then runs ours;
# the rest are links to B. With PGD_BUILD=DIR a launcher starts that graph and it cannot finish while GATE is
# absent, so what the test does then lands mid-job however fast the machine is.
held_build() {
  local f
  mkdir -p "$1"
  for f in "$B"/*; do [ "${f##*/}" = "$3" ] || ln -s "$f" "$1/"; done
  printf '#!/usr/bin/env bash\n[[ "$(readlink /proc/$$/fd/1) $(readlink /proc/$$/fd/2)" != *%q* ]] ||\n  while [ ! -e %q ]; do sleep 0.05; done\nexec %q "$@"\n' \
    "${4:-}" "$2" "$B/$3" >"$1/$3"
  chmod +x "$1/$3"
}

# clean DIR: every process a launcher started for DIR (a run or an inference output) is gone, and so are their
# shared-memory segments
clean() {
  local f p n=0
  for f in "$1"/logs/*/pids "$1"/logs/*/*/pids; do
    [ -f "$f" ] || continue
    for p in $(awk '{print $2}' "$f"); do
      n=$((n + 1))
      [[ $(cat "/proc/$p/comm" 2>/dev/null) != pgd-* ]] || fail "$1: process $p ($(grep " $p\$" "$f" | cut -d' ' -f1)) is still running"
      ! ls /dev/shm/pgd-batch."$p".* /dev/shm/pgd-patch."$p".* >/dev/null 2>&1 || fail "$1: a segment of $p is left"
    done
  done
  [ "$n" -gt 0 ] || fail "$1: no graph was started"
}
