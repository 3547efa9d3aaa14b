#!/usr/bin/env bash
# it_infer.sh: launch/infer.sh end to end on tiny synthetic slides with a model trained by launch/panda.sh: one row
# per slide in predictions.csv, a corrupt slide as a status=error row with its reason, Z files and heatmaps; a
# rerun skips the slides done (and retries the failed one); a manifest instead of a folder; SIGTERM mid-job then a
# rerun completes the table with no slide twice; bad arguments exit 2; no child process or segment left behind.
set -u
TEST=it_infer
# shellcheck source=tests/launch_lib.sh
source "$(dirname "$0")/launch_lib.sh"

"$B/pgd-synth" --task panda --count 6 --out "$tmp/s" --width 640 --height 480 --seed 3 --quiet || fail "pgd-synth"
cat >"$tmp/t.conf" <<'EOF'
[panda]
epochs = 1
batch_size = 2
folds = 1
loaders = 2
[sampler]
fit_size = 256
patch = 64
fill_chunk = 16
sampling = 0.25
seed = 5
heartbeat_ms = 100
heartbeat_timeout_ms = 2000
[loader]
heartbeat_ms = 100
[trainer]
arch = small_cnn
proj = 16
head_width = 16
classes = 6
seed = 7
threads = 1
EOF
bash launch/panda.sh --data "$tmp/s" --run "$tmp/run" --config "$tmp/t.conf" --progress no >"$tmp/run.out" 2>&1 \
  || { tail -20 "$tmp/run.out"; fail "training the model"; }
[ -s "$tmp/run/model.safetensors" ] || fail "no model"

ids() { tail -n +2 "$1" | cut -d, -f1 | sort; }

# --- a folder with a corrupt slide: 5 ok rows, 1 error row with its reason, Z files of the 5 ---------------------
mkdir -p "$tmp/c"
cp "$tmp"/s/*.tiff "$tmp/c/"
cp "$tmp/c/panda_00002.tiff" "$tmp/good2.tiff"
truncate -s 3000 "$tmp/c/panda_00002.tiff"
zs=it_infer.$$ # Z mirrored into a zstore segment too: removed at the end (no zstore_keep)
bash launch/infer.sh --from-run "$tmp/run" --slides "$tmp/c" --out "$tmp/o" --batch-size 2 --z-export --z-heatmap \
  --set "trainer.zstore=$zs" --progress lines >"$tmp/o1.out" 2>&1
rc=$?
[ $rc = 0 ] || { tail -20 "$tmp/o1.out"; fail "o: exit $rc"; }
p=$tmp/o/predictions.csv
[ "$(head -1 "$p")" = "image_id,predicted,p0,p1,p2,p3,p4,p5,status,reason" ] || fail "o: header"
[ "$(tail -n +2 "$p" | wc -l)" = 6 ] || { cat "$p"; fail "o: 6 rows"; }
ids "$p" | diff - <(tail -n +2 "$tmp/s/train.csv" | cut -d, -f1 | sort) >/dev/null || fail "o: one row per slide"
[ "$(grep -c ',ok,$' "$p")" = 5 ] || fail "o: 5 ok rows"
grep -q '^panda_00002,,,,,,,,error,.*panda_00002.tiff' "$p" || { cat "$p"; fail "o: the error row and its reason"; }
awk -F, 'NR > 1 && $9 == "ok" {s = $3 + $4 + $5 + $6 + $7 + $8; if (s < 0.999 || s > 1.001 || $2 !~ /^[0-5]$/) bad = 1} END {exit bad}' "$p" \
  || fail "o: probabilities do not sum to 1 or a grade is out of range"
[ "$(ls "$tmp/o/z" | wc -l)" = 5 ] && [ "$(ls "$tmp/o/heatmaps" | wc -l)" = 5 ] || fail "o: 5 Z files and 5 heatmaps"
[ -s "$tmp/o/z/panda_00000.npy" ] && [ -s "$tmp/o/heatmaps/panda_00000.png" ] || fail "o: Z of panda_00000"
grep -q 'infer .*slides.*ETA' "$tmp/o1.out" || { cat "$tmp/o1.out"; fail "o: progress with ETA"; }
grep -q 'done: .*5 ok, 1 error' "$tmp/o1.out" || { cat "$tmp/o1.out"; fail "o: the summary"; }
[ ! -e "/dev/shm/pgd.$zs" ] || fail "o: the zstore segment is left"
clean "$tmp/o"

# --- rerun: only the failed slide again; the ok rows stay as they were -----------------------------------------
grep ',ok,$' "$p" >"$tmp/ok1"
bash launch/infer.sh --from-run "$tmp/run" --slides "$tmp/c" --out "$tmp/o" --batch-size 2 --progress no >"$tmp/o2.out" 2>&1
[ $? = 0 ] || { tail -20 "$tmp/o2.out"; fail "o: rerun"; }
grep -q 'pending: 1 of 6 slides to do' "$tmp/o2.out" || { cat "$tmp/o2.out"; fail "o: the rerun did not skip the 5 done"; }
[ "$(tail -n +2 "$p" | wc -l)" = 6 ] && [ "$(ids "$p" | uniq | wc -l)" = 6 ] || { cat "$p"; fail "o: rerun: 6 rows, one per slide"; }
grep ',ok,$' "$p" | cmp -s - "$tmp/ok1" || fail "o: the rerun changed the ok rows"
# the slide repaired: its prediction replaces the error row
cp "$tmp/good2.tiff" "$tmp/c/panda_00002.tiff"
bash launch/infer.sh --from-run "$tmp/run" --slides "$tmp/c" --out "$tmp/o" --batch-size 2 --progress no >"$tmp/o3.out" 2>&1
[ $? = 0 ] && [ "$(grep -c ',ok,$' "$p")" = 6 ] && [ "$(tail -n +2 "$p" | wc -l)" = 6 ] || { cat "$p"; fail "o: the repaired slide"; }
bash launch/infer.sh --from-run "$tmp/run" --slides "$tmp/c" --out "$tmp/o" --progress no >"$tmp/o4.out" 2>&1
[ $? = 0 ] && grep -q 'nothing to do' "$tmp/o4.out" || fail "o: all done: nothing to do"
clean "$tmp/o"

# --- a PANDA manifest, weights and config given apart: the same predictions as the folder ---------------------
bash launch/infer.sh --weights "$tmp/run/model.safetensors" --config "$tmp/t.conf" --set infer.batch_size=3 \
  --manifest "$tmp/s/train.csv" --out "$tmp/m" --loaders 1 --progress no >"$tmp/m.out" 2>&1
rc=$?
[ $rc = 0 ] || { tail -20 "$tmp/m.out"; fail "m: exit $rc"; }
grep ',ok,$' "$tmp/m/predictions.csv" | sort | cmp -s - <(grep ',ok,$' "$p" | sort) || fail "m: other predictions than o"
clean "$tmp/m"

# --- SIGTERM mid-job (the loaders held at their start), then the same command again: every slide once ----------
held_build "$tmp/held" "$tmp/go" pgd-loader
PGD_BUILD=$tmp/held bash launch/infer.sh --from-run "$tmp/run" --slides "$tmp/s" --out "$tmp/k" --batch-size 2 \
  --progress no >"$tmp/k1.out" 2>&1 &
bg=$!
for _ in $(seq 6000); do [ -n "$(ls "$tmp"/k/logs/*/pids 2>/dev/null)" ] && break; sleep 0.02; done
ls "$tmp"/k/logs/*/pids >/dev/null 2>&1 || fail "k: no graph started"
sleep 0.5
kill -TERM "$bg"
wait "$bg"
rc=$?
bg=""
[ $rc = 1 ] || { tail -20 "$tmp/k1.out"; fail "k: SIGTERM: exit $rc, not 1"; }
grep -q 'stopped by SIGTERM' "$tmp/k1.out" || { cat "$tmp/k1.out"; fail "k: the stop message"; }
[ ! -e "$tmp/k/predictions.csv" ] || ! grep -q ',ok,$' "$tmp/k/predictions.csv" || fail "k: a row from loaders that never ran"
clean "$tmp/k"
bash launch/infer.sh --from-run "$tmp/run" --slides "$tmp/s" --out "$tmp/k" --batch-size 2 --progress no >"$tmp/k2.out" 2>&1
[ $? = 0 ] || { tail -20 "$tmp/k2.out"; fail "k: the rerun"; }
[ "$(grep -c ',ok,$' "$tmp/k/predictions.csv")" = 6 ] && [ "$(ids "$tmp/k/predictions.csv" | uniq | wc -l)" = 6 ] \
  || { cat "$tmp/k/predictions.csv"; fail "k: 6 rows, one per slide"; }
clean "$tmp/k"

# --- bad arguments: exit 2 --------------------------------------------------------------------------------------
bash launch/infer.sh --slides "$tmp/s" --out "$tmp/x" >/dev/null 2>&1
[ $? = 2 ] || fail "no weights: exit 2"
bash launch/infer.sh --from-run "$tmp/run" --out "$tmp/x" >/dev/null 2>&1
[ $? = 2 ] || fail "no slides: exit 2"
bash launch/infer.sh --from-run "$tmp/run" --slides "$tmp/s" --out "$tmp/x" --set infer.colour=red >/dev/null 2>&1
[ $? = 2 ] || fail "an unknown key: exit 2"
echo "it_infer: ok"
