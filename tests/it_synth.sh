#!/usr/bin/env bash
# it_synth.sh: pgd-synth end to end: small sets of both tasks, byte-identical reruns, the preview, exit codes.
set -u
bin=${PGD_BUILD:-build}/pgd-synth
tmp=$(mktemp -d "${TMPDIR:-/tmp}/it_synth.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
[ -x "$bin" ] || fail "$bin is not built"

# --- a panda set with two worker processes --------------------------------------------------------------
"$bin" --task panda --count 6 --out "$tmp/p1" --width 700 --height 500 --seed 3 --jobs 2 >"$tmp/out1" 2>"$tmp/err1" \
  || { cat "$tmp/err1"; fail "panda set: exit $?"; }
[ "$(grep -c '^\[[0-9]/6\] panda_0000[0-5] label [0-5] ' "$tmp/out1")" = 6 ] || { cat "$tmp/out1"; fail "one progress line per slide"; }
grep -q '^pgd-synth: wrote 6 slides' "$tmp/out1" || fail "summary line missing"
[ "$(head -1 "$tmp/p1/train.csv")" = "image_id,data_provider,isup_grade,gleason_score" ] || fail "panda manifest header"
[ "$(wc -l <"$tmp/p1/train.csv")" = 7 ] || fail "panda manifest: expected 6 rows"
labels=$(tail -n +2 "$tmp/p1/train.csv" | cut -d, -f3 | sort | tr -d '\n')
[ "$labels" = "012345" ] || fail "panda labels not balanced: $labels"
tail -n +2 "$tmp/p1/train.csv" | while IFS=, read -r id provider grade gleason; do
  [ -s "$tmp/p1/$id.tiff" ] || fail "missing slide $id.tiff"
  [ "$provider" = "pgd-synth" ] || fail "provider of $id: $provider"
  case "$grade:$gleason" in 0:0+0|1:3+3|2:3+4|3:4+3|4:4+4|5:4+5) ;; *) fail "$id: grade $grade with gleason $gleason" ;; esac
  # BigTIFF little-endian magic: II 2B 00
  [ "$(head -c 4 "$tmp/p1/$id.tiff" | od -An -tx1 | tr -d ' \n')" = "49492b00" ] || fail "$id is not a BigTIFF"
done || exit 1
[ "$(ls "$tmp/p1" | wc -l)" = 7 ] || { ls -la "$tmp/p1"; fail "stray files left in the output folder"; }

# --- same arguments, one process: byte-identical -----------------------------------------------------------
"$bin" --task panda --count 6 --out "$tmp/p2" --width 700 --height 500 --seed 3 --quiet >"$tmp/out2" 2>&1 \
  || fail "panda rerun: exit $?"
[ ! -s "$tmp/out2" ] || fail "--quiet printed: $(cat "$tmp/out2")"
for f in "$tmp"/p1/*; do
  cmp -s "$f" "$tmp/p2/$(basename "$f")" || fail "$(basename "$f") differs between runs"
done
"$bin" --task panda --count 1 --out "$tmp/p3" --width 700 --height 500 --seed 4 --quiet || fail "seed 4 run"
! cmp -s "$tmp/p1/panda_00000.tiff" "$tmp/p3/panda_00000.tiff" || fail "another seed gave the same slide"

# --- ultramnist, options, preview ----------------------------------------------------------------------------
"$bin" --task ultramnist --count 3 --out "$tmp/u" --width 600 --height 400 --tile 240 --quality 70 --mpp 0.25 \
  --levels 2 --subsampling 444 --fit 256 --prefix um- --render-png "$tmp/u.png" --png-size 200 --quiet \
  || fail "ultramnist set: exit $?"
[ "$(head -1 "$tmp/u/train.csv")" = "path,label,id,digits" ] || fail "ultramnist manifest header"
tail -n +2 "$tmp/u/train.csv" | while IFS=, read -r path label id digits; do
  [ -s "$tmp/u/$path" ] || fail "missing $path"
  [ "$path" = "$id.tiff" ] || fail "path $path vs id $id"
  sum=$(( $(echo "$digits" | tr '+' ' ' | sed 's/ / + /g') ))
  [ "$sum" = "$label" ] || fail "$id: digits $digits do not add up to $label"
done || exit 1
[ "$(head -c 8 "$tmp/u.png" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ] || fail "preview is not a PNG"
w=$(od -An -tu1 -j16 -N8 "$tmp/u.png" | awk '{print $3*256+$4, $7*256+$8}')
[ "$w" = "150 100" ] || fail "preview size $w (expected 150 100: 600x400 halved twice, <= 200)"

# --- help and bad arguments: exit 2, the option named, nothing written ----------------------------------------
"$bin" --help | grep -q '^usage: pgd-synth' || fail "--help"
base=(--task panda --count 1 --width 300 --height 300)
check_usage() { # expected message, arguments...
  local want=$1; shift
  "$bin" "$@" >"$tmp/o" 2>"$tmp/e"
  local rc=$?
  [ $rc = 2 ] || { cat "$tmp/e"; fail "'$*': exit $rc, expected 2"; }
  grep -qF -- "$want" "$tmp/e" || { cat "$tmp/e"; fail "'$*': message lacks '$want'"; }
}
check_usage "--task: 'foo' is not a task" --task foo --count 1 --width 300 --height 300 --out "$tmp/bad"
check_usage "--out is required" "${base[@]}"
check_usage "--count is required" --task panda --width 300 --height 300 --out "$tmp/bad"
check_usage "--tile: 100 is outside 240..1024" "${base[@]}" --out "$tmp/bad" --tile 100
check_usage "--tile: 250 is not a multiple of 16" "${base[@]}" --out "$tmp/bad" --tile 250
check_usage "--quality: 0 is outside 1..100" "${base[@]}" --out "$tmp/bad" --quality 0
check_usage "--quality: 101 is outside 1..100" "${base[@]}" --out "$tmp/bad" --quality 101
check_usage "--width: 'abc' is not a whole number" --task panda --count 1 --width abc --height 300 --out "$tmp/bad"
check_usage "--height: '-5' is not a whole number" --task panda --count 1 --width 300 --height -5 --out "$tmp/bad"
check_usage "--levels: 40 is outside 1..24" "${base[@]}" --out "$tmp/bad" --levels 40
check_usage "--levels: 12 is more than the 10 levels" "${base[@]}" --out "$tmp/bad" --levels 12
check_usage "--mpp: '-1' is not a positive number" "${base[@]}" --out "$tmp/bad" --mpp -1
check_usage "--prefix: 'a/b' must be" "${base[@]}" --out "$tmp/bad" --prefix a/b
check_usage "--subsampling: 422 is not 420 or 444" "${base[@]}" --out "$tmp/bad" --subsampling 422
check_usage "--count: 0 is outside 1..1000000" --task panda --count 0 --width 300 --height 300 --out "$tmp/bad"
check_usage "--width: ultramnist needs a canvas of at least 128x128" --task ultramnist --count 1 --width 100 \
  --height 300 --out "$tmp/bad"
check_usage "unknown option --bogus" "${base[@]}" --out "$tmp/bad" --bogus
check_usage "option --seed needs a value" "${base[@]}" --out "$tmp/bad" --seed
check_usage "unexpected argument 'extra'" "${base[@]}" --out "$tmp/bad" extra
[ ! -e "$tmp/bad" ] || fail "a usage error created the output folder"

# --- I/O failures: exit 1, nothing under a final name ---------------------------------------------------------
touch "$tmp/afile"
"$bin" "${base[@]}" --out "$tmp/afile/sub" --quiet 2>"$tmp/e"
rc=$?
[ $rc = 1 ] || fail "unwritable output folder: exit $rc, expected 1"
grep -q "out: .*afile is not a folder" "$tmp/e" || { cat "$tmp/e"; fail "unwritable folder message"; }
mkdir -p "$tmp/blocked/panda_00000.tiff" && touch "$tmp/blocked/panda_00000.tiff/keep"
"$bin" "${base[@]}" --out "$tmp/blocked" --quiet 2>"$tmp/e"
rc=$?
[ $rc = 1 ] || fail "blocked final name: exit $rc, expected 1"
grep -q "panda_00000.tiff" "$tmp/e" || { cat "$tmp/e"; fail "blocked final name message"; }
[ "$(ls "$tmp/blocked")" = "panda_00000.tiff" ] || { ls -la "$tmp/blocked"; fail "files left after a failure"; }
echo "it_synth: ok"
