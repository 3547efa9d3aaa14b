#!/usr/bin/env bash
# it_loader_cli.sh: pgd-loader info and decode end to end on a synthetic slide: PNG sizes, JSON, usage errors
# (exit 2) and unreadable slides (exit 1, the file named).
set -u
build=${PGD_BUILD:-build}
bin=$build/pgd-loader
synth=$build/pgd-synth
tmp=$(mktemp -d "${TMPDIR:-/tmp}/it_loader_cli.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
[ -x "$bin" ] || fail "$bin is not built"
[ -x "$synth" ] || fail "$synth is not built"

png_size() { # prints "W H" from a PNG's IHDR
  od -An -tu1 -j16 -N8 "$1" | awk '{print $1*16777216+$2*65536+$3*256+$4, $5*16777216+$6*65536+$7*256+$8}'
}

"$synth" --task panda --count 1 --out "$tmp/s" --width 700 --height 500 --mpp 0.5 --quiet || fail "pgd-synth"
slide=$tmp/s/panda_00000.tiff

# --- info ----------------------------------------------------------------------------------------------
"$bin" info "$slide" >"$tmp/info" 2>"$tmp/err" || { cat "$tmp/err"; fail "info: exit $?"; }
for want in "^vendor      generic-tiff" "^backend     fast (every level is a tiled JPEG YCbCr 4:2:0" \
  "^mpp         0.5 x 0.5 (from tiff.XResolution (centimeter))" "^levels      3" \
  "^ *0 *700 *500 *1 *0.5 *256x256"; do
  grep -q -- "$want" "$tmp/info" || { cat "$tmp/info"; fail "info lacks '$want'"; }
done
"$bin" info "$slide" --json >"$tmp/json" || fail "info --json: exit $?"
[ "$(wc -l <"$tmp/json")" = 1 ] || fail "info --json: not one line"
for want in '"backend":"fast"' '"vendor":"generic-tiff"' '"mpp_x":0.5' '{"w":350,"h":250,"downsample":2'; do
  grep -qF -- "$want" "$tmp/json" || { cat "$tmp/json"; fail "info --json lacks $want"; }
done
"$bin" info "$slide" --backend openslide | grep -q "^backend     openslide (OpenSlide was asked for)" \
  || fail "info --backend openslide"

# --- decode --------------------------------------------------------------------------------------------
check_png() { # file, "W H"
  [ -s "$1" ] || fail "$1 not written"
  [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ] || fail "$1 is not a PNG"
  [ "$(png_size "$1")" = "$2" ] || fail "$1 is $(png_size "$1"), expected $2"
}
"$bin" decode "$slide" --fit 256 --patch 64 --grid --out "$tmp/fit.png" >"$tmp/out" || fail "decode --fit: exit $?"
check_png "$tmp/fit.png" "256 256"
grep -q "fit 256 from level 1 (350x250, fast backend)" "$tmp/out" || { cat "$tmp/out"; fail "decode --fit summary"; }
"$bin" decode "$slide" --fit 256 --patch 64 --out "$tmp/fit-os.png" --backend openslide >/dev/null \
  || fail "decode --fit --backend openslide"
check_png "$tmp/fit-os.png" "256 256"
# native at level 0: 700 x 500 in 128-pixel patches -> 4 rows, 6 columns
"$bin" decode "$slide" --level 0 --patch 128 --out "$tmp/l0.png" >/dev/null || fail "decode --level 0"
check_png "$tmp/l0.png" "768 512"
# at 1 micron per pixel: level 1 (350 x 250) -> 3 rows, 4 columns of 100
"$bin" decode "$slide" --mpp 1 --patch 100 --out "$tmp/m1.png" >/dev/null || fail "decode --mpp 1"
check_png "$tmp/m1.png" "400 300"
# at 0.8 microns per pixel: level 0 resampled to 437.5 x 312.5 -> 4 x 5 of 100
"$bin" decode "$slide" --mpp 0.8 --patch 100 --out "$tmp/m08.png" >/dev/null || fail "decode --mpp 0.8"
check_png "$tmp/m08.png" "500 400"
"$bin" decode "$slide" --level 0 --patch 128 --cells 1:3,2:5 --out "$tmp/cells.png" >/dev/null \
  || fail "decode --cells"
check_png "$tmp/cells.png" "384 256"

# --- usage errors: exit 2, nothing written ---------------------------------------------------------------
check_usage() { # expected message, arguments...
  local want=$1; shift
  "$bin" "$@" >"$tmp/o" 2>"$tmp/e"
  local rc=$?
  [ $rc = 2 ] || { cat "$tmp/e"; fail "'$*': exit $rc, expected 2"; }
  grep -qF -- "$want" "$tmp/e" || { cat "$tmp/e"; fail "'$*': message lacks '$want'"; }
}
check_usage "no command given"
check_usage "unknown command 'decod'" decod "$slide"
check_usage "the command comes first" --fit 256 decode
check_usage "missing required option --out" decode "$slide" --fit 256
check_usage "give exactly one of --fit S, --level L, --mpp X (2 given)" decode "$slide" --fit 256 --level 0 \
  --out "$tmp/bad.png"
check_usage "give exactly one of --fit S, --level L, --mpp X (0 given)" decode "$slide" --out "$tmp/bad.png"
check_usage "fit_size: 100 is not a multiple of the patch size 64" decode "$slide" --fit 100 --patch 64 \
  --out "$tmp/bad.png"
check_usage "--out $tmp/bad.jpg: the name must end in .png" decode "$slide" --fit 256 --out "$tmp/bad.jpg"
check_usage "--grid goes with --fit" decode "$slide" --level 0 --grid --out "$tmp/bad.png"
check_usage "--cells: 'x' is not r0:r1,c0:c1" decode "$slide" --level 0 --cells x --out "$tmp/bad.png"
check_usage "--cells: '0:9,0:1' runs past the 4 x 6 grid" decode "$slide" --level 0 --patch 128 --cells 0:9,0:1 \
  --out "$tmp/bad.png"
check_usage "more than --max-pixels 1000" decode "$slide" --level 0 --max-pixels 1000 --out "$tmp/bad.png"
check_usage "--patch: 0 is out of range" decode "$slide" --fit 256 --patch 0 --out "$tmp/bad.png"
check_usage "--bogus: unknown option" info "$slide" --bogus
check_usage "missing SLIDE" info
check_usage "unexpected argument 'two'" info "$slide" two
[ ! -e "$tmp/bad.png" ] || fail "a usage error wrote a file"
"$bin" --help | grep -q "^  decode SLIDE --out FILE.png" || fail "--help lacks decode"
"$bin" decode --help | grep -q -- "--max_pixels <int>" || fail "decode --help lacks --max_pixels"

# --- unreadable slides: exit 1, the file named ----------------------------------------------------------------
check_fail() { # expected message, arguments...
  local want=$1; shift
  "$bin" "$@" >"$tmp/o" 2>"$tmp/e"
  local rc=$?
  [ $rc = 1 ] || { cat "$tmp/e"; fail "'$*': exit $rc, expected 1"; }
  grep -qF -- "$want" "$tmp/e" || { cat "$tmp/e"; fail "'$*': message lacks '$want'"; }
}
check_fail "open $tmp/none.svs: No such file or directory" info "$tmp/none.svs"
check_fail "open $tmp/none.svs: No such file or directory" decode "$tmp/none.svs" --fit 256 --out "$tmp/bad.png"
: >"$tmp/empty.svs"
check_fail "$tmp/empty.svs: empty file" info "$tmp/empty.svs"
check_fail "level 5 does not exist (levels 0..2)" decode "$slide" --level 5 --out "$tmp/bad.png"
# zero the first bytes of level 0's first tile (it starts right after the 16-byte BigTIFF header)
cp "$slide" "$tmp/bad.tiff" && printf '\0\0\0\0\0\0\0\0' | dd of="$tmp/bad.tiff" bs=1 seek=16 conv=notrunc 2>/dev/null
check_fail "$tmp/bad.tiff: level 0 tile (0, 0): jpeg: Not a JPEG file" decode "$tmp/bad.tiff" --level 0 \
  --out "$tmp/bad.png"
check_fail "$tmp/bad.tiff: openslide: level 0 region" decode "$tmp/bad.tiff" --level 0 --backend openslide \
  --out "$tmp/bad.png"
[ ! -e "$tmp/bad.png" ] || fail "a failed decode left a PNG"
data=${PGD_TESTDATA:-../shared/testdata}
if [ -f "$data/unopenable.tiff" ]; then
  check_fail "unopenable.tiff: openslide: Unsupported TIFF compression: 52479" info "$data/unopenable.tiff"
  check_fail "unreadable.svs: level 0 tile (0, 0): jpeg: Bogus marker length" decode "$data/unreadable.svs" \
    --level 0 --patch 16 --out "$tmp/bad.png"
  "$bin" info "$data/boxes.tiff" | grep -q "^backend     openslide (no fast path: level 0 is deflate compression (8))" \
    || fail "boxes.tiff: backend line"
fi
echo "it_loader_cli: ok"
