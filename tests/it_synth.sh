#!/usr/bin/env bash
# it_synth.sh: pgd-synth end to end: small sets of both tasks, byte-identical reruns, config files, the preview,
# exit codes.
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

# --- a config file, a command-line override (--key=value), both key spellings ------------------------------
cat >"$tmp/p.conf" <<'CONF'
# the panda set above, but seed 4: the command line sets 3
task = panda
count = 6
width = 700
height = 500
seed = 4
CONF
"$bin" --config "$tmp/p.conf" --seed=3 --out="$tmp/p4" --quiet=yes >"$tmp/out4" 2>&1 || { cat "$tmp/out4"; fail "--config run"; }
[ ! -s "$tmp/out4" ] || fail "--quiet=yes printed: $(cat "$tmp/out4")"
for f in "$tmp"/p1/*; do
  cmp -s "$f" "$tmp/p4/$(basename "$f")" || fail "--config + --seed=3: $(basename "$f") differs from the command-line run"
done

# --- ultramnist, options, preview ----------------------------------------------------------------------------
"$bin" --task ultramnist --count 3 --out "$tmp/u" --width 600 --height 400 --tile 240 --quality 70 --mpp 0.25 \
  --levels 2 --subsampling 444 --fit 256 --prefix um- --render-png "$tmp/u.png" --png-size 200 --quiet \
  --save-config "$tmp/u.conf" || fail "ultramnist set: exit $?"
grep -qx 'subsampling = 444' "$tmp/u.conf" || { cat "$tmp/u.conf"; fail "--save-config: subsampling not written"; }
grep -qx 'mpp = 0.25' "$tmp/u.conf" || { cat "$tmp/u.conf"; fail "--save-config: mpp not written"; }
# the written file alone (out and the preview moved elsewhere) makes the same set
"$bin" --config "$tmp/u.conf" --out "$tmp/u2" --render_png "$tmp/u2.png" >"$tmp/out5" 2>&1 \
  || { cat "$tmp/out5"; fail "run from the saved config: exit $?"; }
[ ! -s "$tmp/out5" ] || fail "the saved config lost --quiet: $(cat "$tmp/out5")"
[ "$(ls "$tmp/u" | wc -l)" = 4 ] || { ls -la "$tmp/u"; fail "ultramnist set: expected 3 slides and train.csv"; }
for f in "$tmp"/u/* "$tmp/u.png"; do
  g=$tmp/u2/$(basename "$f"); [ "$f" = "$tmp/u.png" ] && g=$tmp/u2.png
  cmp -s "$f" "$g" || fail "saved config: $(basename "$f") differs"
done
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
"$bin" --help >"$tmp/help" || fail "--help: exit $?"
for want in '^usage: pgd-synth' '^  --task <panda|ultramnist>' '^  --config <file>' '^  --save-config <file>' \
  '^Exit status: 0 done, 1 .*, 2 bad arguments'; do
  grep -q -- "$want" "$tmp/help" || { cat "$tmp/help"; fail "--help lacks $want"; }
done
"$bin" --bogus --help >/dev/null || fail "--help with a bad option: exit $?"
base=(--task panda --count 1 --width 300 --height 300)
check_usage() { # expected message, arguments...
  local want=$1; shift
  "$bin" "$@" >"$tmp/o" 2>"$tmp/e"
  local rc=$?
  [ $rc = 2 ] || { cat "$tmp/e"; fail "'$*': exit $rc, expected 2"; }
  grep -qF -- "$want" "$tmp/e" || { cat "$tmp/e"; fail "'$*': message lacks '$want'"; }
}
check_usage "--task: 'foo' is not one of panda|ultramnist" --task foo --count 1 --width 300 --height 300 --out "$tmp/bad"
check_usage "missing required option --out (set on the command line or in a config file)" "${base[@]}"
check_usage "missing required options --count, --width" --task panda --height 300 --out "$tmp/bad"
check_usage "--tile: 100 is out of range 240..1024" "${base[@]}" --out "$tmp/bad" --tile 100
check_usage "--tile: 250 is not a multiple of 16" "${base[@]}" --out "$tmp/bad" --tile 250
check_usage "--quality: 0 is out of range 1..100" "${base[@]}" --out "$tmp/bad" --quality 0
check_usage "--quality: 101 is out of range 1..100" "${base[@]}" --out "$tmp/bad" --quality=101
check_usage "--width: 'abc' is not an integer" --task panda --count 1 --width abc --height 300 --out "$tmp/bad"
check_usage "--height: -5 is out of range 1..1048576" --task panda --count 1 --width 300 --height -5 --out "$tmp/bad"
check_usage "--levels: 40 is out of range 0..24" "${base[@]}" --out "$tmp/bad" --levels 40
check_usage "--levels: 12 is more than the 10 levels" "${base[@]}" --out "$tmp/bad" --levels 12
check_usage "--fit: 10 is outside 64..65536" "${base[@]}" --out "$tmp/bad" --fit 10
check_usage "--mpp: -1 is out of range 1e-06..1000000" "${base[@]}" --out "$tmp/bad" --mpp -1
check_usage "--prefix: 'a/b' must be" "${base[@]}" --out "$tmp/bad" --prefix a/b
check_usage "--subsampling: '422' is not one of 420|444" "${base[@]}" --out "$tmp/bad" --subsampling 422
check_usage "--count: 0 is out of range 1..1000000" --task panda --count 0 --width 300 --height 300 --out "$tmp/bad"
check_usage "--jobs: 65 is out of range 1..64" "${base[@]}" --out "$tmp/bad" --jobs 65
check_usage "--seed: -1 is out of range 0..inf" "${base[@]}" --out "$tmp/bad" --seed -1
check_usage "--quiet: 'maybe' is not a boolean" "${base[@]}" --out "$tmp/bad" --quiet=maybe
check_usage "--width: ultramnist needs a canvas of at least 128x128" --task ultramnist --count 1 --width 100 \
  --height 300 --out "$tmp/bad"
check_usage "--bogus: unknown option" "${base[@]}" --out "$tmp/bad" --bogus
check_usage "--tiles: unknown option (did you mean --tile?)" "${base[@]}" --out "$tmp/bad" --tiles 256
check_usage "-q: unknown option (options start with --)" "${base[@]}" --out "$tmp/bad" -q
check_usage "--seed: missing value" "${base[@]}" --out "$tmp/bad" --seed
check_usage "unexpected argument 'extra'" "${base[@]}" --out "$tmp/bad" extra
printf 'task = panda\ntiles = 256\n' >"$tmp/bad.conf"
check_usage "bad.conf line 2: unknown key 'tiles' (did you mean 'tile'?)" --config "$tmp/bad.conf" --count 1 \
  --width 300 --height 300 --out "$tmp/bad"
check_usage "open $tmp/none.conf: No such file or directory" "${base[@]}" --out "$tmp/bad" --config "$tmp/none.conf"
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
