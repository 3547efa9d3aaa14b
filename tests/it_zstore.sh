#!/usr/bin/env bash
# it_zstore.sh: drive pgd-zstore end to end: create, ls, put, dump (.npy and .png), rm, reclaim, config files
# and --save-config, --help, usage errors.
# Run from the project root with PGD_BUILD set (tests/run.sh does); exits non-zero on the first failure.
set -u
build=${PGD_BUILD:-build}
zs=$build/pgd-zstore
[ -x "$zs" ] || { echo "it_zstore: $zs not built" >&2; exit 1; }

tag=it$$
live=$tag-live      # owned by this script
other=$tag-other    # made with --key=value options, default owner
stale=$tag-stale    # owned by a process that is gone
saved=$tag-saved    # made with --save-config
loaded=$tag-loaded  # made from config files
tmp=$(mktemp -d "${TMPDIR:-/tmp}/pgd-it-zstore.XXXXXX")
sleeper=
cleanup() {
  [ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null
  for n in "$live" "$other" "$stale" "$saved" "$loaded" "$loaded-2"; do "$zs" rm --force "$n" >/dev/null 2>&1; done
  rm -rf "$tmp"
}
trap cleanup EXIT

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok:   $*"; }

# expect RC PATTERN CMD...: run CMD, check its exit status and that its output (stdout+stderr) matches PATTERN
expect() {
  local want=$1 pat=$2; shift 2
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" -ne "$want" ]; then
    fail "'$*' exited $rc, expected $want; output: $out"; return 1
  fi
  if [ -n "$pat" ] && ! grep -q -- "$pat" <<<"$out"; then
    fail "'$*' output lacks '$pat': $out"; return 1
  fi
  pass "$* -> $rc"
}

# --- create ------------------------------------------------------------------------------------------
expect 0 "created pgd.$live: 4x3x8 f32, 3 slots" "$zs" create "$live" --m 4 --n 3 --s 8 --slots 3 --owner-pid $$
expect 1 "already exists" "$zs" create "$live" --m 4 --n 3 --s 8 --slots 3 --owner-pid $$
# --key=value form, f16, and the default owner: this script, the command's parent
"$zs" create "$other" --m=2 --n=2 --s=4 --slots=1 --dtype=f16 >"$tmp/create.out" 2>&1 \
  || fail "create --key=value: $(cat "$tmp/create.out")"
grep -q "2x2x4 f16, 1 slots, .* owner pid $$\$" "$tmp/create.out" \
  && pass "create --key=value, default owner is the parent ($$)" || fail "create output: $(cat "$tmp/create.out")"
[ "$(stat -c %a "/dev/shm/pgd.$live")" = 600 ] && pass "mode 0600" || fail "mode of /dev/shm/pgd.$live"

# --- ls -----------------------------------------------------------------------------------------------
expect 0 "" "$zs" ls
"$zs" ls >"$tmp/ls.out" 2>&1
grep -E -q "^$live +4x3x8 +f32 +3 .* $$ +alive\$" "$tmp/ls.out" && pass "ls lists $live as alive" \
  || fail "ls table: $(cat "$tmp/ls.out")"
expect 0 "shape 4x3x8 f32, 3 slots" "$zs" ls "$live"
[ "$("$zs" ls "$live" | grep -c ' empty ')" = 3 ] && pass "3 empty slots" || fail "ls $live: $("$zs" ls "$live")"

# --- put: a hand-made float32 .npy of shape (4, 3, 8), cell c holding the value 2^(c % 4) / 2 ----------
in=$tmp/in.npy
{
  hdr="{'descr': '<f4', 'fortran_order': False, 'shape': (4, 3, 8), }"
  printf '\x93NUMPY\x01\x00\x76\x00%s' "$hdr"
  printf '%*s\n' $((117 - ${#hdr})) ''
  vals=('\x00\x00\x00\x3f' '\x00\x00\x80\x3f' '\x00\x00\x00\x40' '\x00\x00\x80\x40') # 0.5 1 2 4
  for c in $(seq 0 11); do for k in $(seq 1 8); do printf "${vals[$((c % 4))]}"; done; done
} >"$in"
[ "$(stat -c %s "$in")" = 512 ] || fail "test input $in is $(stat -c %s "$in") bytes, not 512"
expect 0 "wrote" "$zs" put "$live" 0 "$in" --id slide-1 --label 3
expect 0 " ready .* 3 ok .* slide-1\$" "$zs" ls "$live"

# --- dump .npy: the same bytes come back -----------------------------------------------------------------
out=$tmp/out.npy
expect 0 "dumped pgd.$live slot 0 (image 'slide-1', label 3, generation 1)" "$zs" dump "$live" 0 --out "$out"
[ "$(head -c 6 "$out" | od -An -tx1 | tr -d ' \n')" = 934e554d5059 ] && pass ".npy magic" || fail ".npy magic"
head -c 128 "$out" | grep -aq "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 3, 8), }" \
  && pass ".npy header text" || fail ".npy header: $(head -c 128 "$out" | tail -c 118)"
[ "$(stat -c %s "$out")" = 512 ] && pass ".npy size 512" || fail ".npy size $(stat -c %s "$out")"
cmp -s "$in" "$out" && pass "put + dump round trip is byte-exact" || fail "dumped .npy differs from the input"

# --- dump .png: the heatmap, 4x3 cells scaled by 64 to 192x256 --------------------------------------------
png=$tmp/out.png
expect 0 "" "$zs" dump "$live" 0 --out="$png"
[ "$(head -c 8 "$png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] && pass "PNG signature" \
  || fail "PNG signature"
ihdr=$(head -c 26 "$png" | tail -c 14 | od -An -tx1 | tr -d ' \n')
[ "$ihdr" = 49484452000000c0000001000802 ] && pass "PNG IHDR: 192x256, 8-bit RGB" || fail "PNG IHDR $ihdr"

# --- outcomes that are failures (exit 1) ----------------------------------------------------------------
expect 1 "slot 1 is empty" "$zs" dump "$live" 1 --out "$tmp/empty.npy"
[ ! -e "$tmp/empty.npy" ] && pass "no file for an empty slot" || fail "file written for an empty slot"
expect 1 "no such segment" "$zs" ls "nosuch$tag"
expect 1 "no such segment" "$zs" dump "nosuch$tag" 0 --out "$tmp/x.npy"
expect 1 "no such segment" "$zs" rm "nosuch$tag"
expect 1 "has shape (4, 3, 8), pgd.$other holds blocks of (2, 2, 4)" "$zs" put "$other" 0 "$in"
expect 1 "is live" "$zs" rm "$live"
expect 1 "is live" "$zs" rm "$live" --force=no

# --- config files: --config, --save-config, precedence -----------------------------------------------------
# (expect runs the command in a subshell that ends: give these segments this script as their owner)
printf '# shape for create\nm = 4\nn = 3\ns = 8   # values per cell\nslots = 2\nowner_pid = %s\n' $$ \
  >"$tmp/shape.conf"
expect 0 "created pgd.$loaded: 4x3x8 f32, 2 slots" "$zs" create "$loaded" --config "$tmp/shape.conf"
expect 0 "created pgd.$loaded-2: 4x3x8 bf16, 5 slots" "$zs" create "$loaded-2" --slots=5 --config="$tmp/shape.conf" \
  --dtype=bf16
expect 0 "created pgd.$saved: 3x2x5 f16, 2 slots" "$zs" create "$saved" --m 3 --n=2 --s 5 --slots 2 --dtype f16 \
  --owner-pid=$$ --save-config "$tmp/saved.conf"
grep -q '^m = 3$' "$tmp/saved.conf" && grep -q '^dtype = f16$' "$tmp/saved.conf" \
  && pass "--save-config wrote m, dtype" || fail "saved config: $(cat "$tmp/saved.conf" 2>&1)"
"$zs" rm --force "$saved" >/dev/null 2>&1
expect 0 "created pgd.$saved: 3x2x5 f16, 2 slots" "$zs" create "$saved" --config "$tmp/saved.conf" \
  --save-config "$tmp/again.conf"
cmp -s "$tmp/saved.conf" "$tmp/again.conf" && pass "a saved config loads back to the same settings" \
  || fail "re-saved config differs: $(diff "$tmp/saved.conf" "$tmp/again.conf")"
printf 'm = 4\nn = 3\ns = x\nslots = 2\n' >"$tmp/bad.conf"
expect 2 "bad.conf line 3: 's': 'x' is not an integer" "$zs" create "u$tag" --config "$tmp/bad.conf"
printf 'm = 4\nn = 3\ns = 8\nslots = 2\nout = a.npy\n' >"$tmp/other.conf"
expect 2 "other.conf line 5: unknown key 'out'" "$zs" create "u$tag" --config "$tmp/other.conf"
expect 2 "open $tmp/nosuch.conf" "$zs" create "u$tag" --config "$tmp/nosuch.conf"

# --- usage errors (exit 2) ------------------------------------------------------------------------------
expect 2 "no command given" "$zs"
expect 2 "unknown command 'frobnicate'" "$zs" frobnicate
expect 2 "'--m': the command comes first" "$zs" --m 1 create "u$tag"
expect 2 "missing required option --m " "$zs" create "u$tag" --n 1 --s 1 --slots 1
expect 2 "missing required options --s, --slots" "$zs" create "u$tag" --m 1 --n 1
expect 2 "create: --m: 'abc' is not an integer" "$zs" create "u$tag" --m abc --n 1 --s 1 --slots 1
expect 2 "--slots: 0 is out of range 1..4294967295" "$zs" create "u$tag" --m 1 --n 1 --s 1 --slots 0
expect 2 "--dtype: 'f64' is not one of f32|f16|bf16" "$zs" create "u$tag" --m 1 --n 1 --s 1 --slots 1 --dtype f64
expect 2 "--dtype: 'F16' is not one of f32|f16|bf16" "$zs" create "u$tag" --m 1 --n 1 --s 1 --slots 1 --dtype=F16
expect 2 "--m: missing value" "$zs" create "u$tag" --n 1 --s 1 --slots 1 --m
expect 2 "--owner-pid: -1 is out of range" "$zs" create "u$tag" --m 1 --n 1 --s 1 --slots 1 --owner-pid -1
expect 2 "ls: --bogus: unknown option" "$zs" ls --bogus
expect 2 "create: --slot: unknown option (did you mean --slots?)" "$zs" create "u$tag" --m 1 --n 1 --s 1 --slot 1
expect 2 "-x: unknown option (options start with --)" "$zs" ls -x
# an option of another command is refused, not ignored
expect 2 "ls: --force: unknown option" "$zs" ls --force
expect 2 "create: --out: unknown option" "$zs" create "u$tag" --m 1 --n 1 --s 1 --slots 1 --out "$tmp/x.npy"
expect 2 "put: --m: unknown option" "$zs" put "$live" 0 "$in" --m 4
expect 2 "reclaim: --dtype: unknown option" "$zs" reclaim --dtype f16
expect 2 "character 2 is not one of" "$zs" create "a/b" --m 1 --n 1 --s 1 --slots 1
expect 2 "unexpected argument" "$zs" ls "$live" extra
expect 2 "missing argument" "$zs" rm
expect 2 "missing required option --out" "$zs" dump "$live" 0
expect 2 "SLOT: 'x1' is not a slot number" "$zs" dump "$live" x1 --out "$tmp/x.npy"
expect 2 "--label: 2147483648 is out of range" "$zs" put "$live" 0 "$in" --label 2147483648
expect 2 "--id: '$(printf 'i%.0s' $(seq 64))' is longer than 63 bytes" "$zs" put "$live" 0 "$in" \
  --id "$(printf 'i%.0s' $(seq 64))"
expect 2 "must end in .npy or .png" "$zs" dump "$live" 0 --out "$tmp/x.txt"
expect 2 "slot 3 out of range" "$zs" dump "$live" 3 --out "$tmp/x.npy"
expect 2 "--force: 'maybe' is not a boolean (true|false" "$zs" rm "$live" --force=maybe
[ -e "/dev/shm/pgd.u$tag" ] && fail "a usage error created a segment"
[ -e "/dev/shm/pgd.$live" ] || fail "a usage error removed $live"

# --- help (exit 0, whatever else is on the line) ------------------------------------------------------------
expect 0 "usage: pgd-zstore COMMAND" "$zs" --help
expect 0 "reclaim" "$zs" help
expect 0 "usage: pgd-zstore create NAME --m M" "$zs" create --help
expect 0 "--slots <int> .*required" "$zs" create "u$tag" --m bogus -h
expect 0 "usage: pgd-zstore rm NAME" "$zs" rm --help
"$zs" rm --help | grep -q -- '--m ' && fail "rm --help lists create's options" || pass "rm --help lists only its own"

# --- stale segments: reclaim removes them, never a live one -----------------------------------------------
sleep 60 & sleeper=$!
expect 0 "owner pid $sleeper" "$zs" create "$stale" --m 1 --n 1 --s 2 --slots 1 --owner-pid "$sleeper"
"$zs" ls | grep -E -q "^$stale .* alive\$" && pass "$stale alive while its owner runs" || fail "ls: $("$zs" ls)"
kill "$sleeper"; wait "$sleeper" 2>/dev/null; sleeper=
"$zs" ls | grep -E -q "^$stale .* stale\$" && pass "$stale stale once its owner is gone" || fail "ls: $("$zs" ls)"
expect 0 "creator pid .* (stale)" "$zs" ls "$stale"
expect 0 "removed pgd.$stale (creator pid" "$zs" reclaim
[ ! -e "/dev/shm/pgd.$stale" ] && pass "stale segment removed" || fail "reclaim left $stale"
[ -e "/dev/shm/pgd.$live" ] && pass "live segment kept" || fail "reclaim removed the live $live"

# --- rm --------------------------------------------------------------------------------------------------
expect 0 "removed pgd.$live" "$zs" rm --force "$live"
[ ! -e "/dev/shm/pgd.$live" ] && pass "rm --force removed it" || fail "rm --force left $live"
expect 0 "removed pgd.$other" "$zs" rm --force "$other"
for n in "$saved" "$loaded" "$loaded-2"; do expect 0 "removed pgd.$n" "$zs" rm "$n" --force=yes; done

if [ "$failures" -ne 0 ]; then
  echo "it_zstore: $failures failure(s)" >&2
  exit 1
fi
echo "it_zstore: all passed"
