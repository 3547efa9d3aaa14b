#!/usr/bin/env bash
# it_panda.sh: launch/panda.sh end to end on tiny synthetic slides: 2 epochs with a seeded stratified split,
# validation per epoch, metrics, TensorBoard events and the best checkpoint, the same bytes as one graph over both
# epochs; SIGTERM during a validation then --resume; SIGTERM in the middle of an epoch then
# --resume ends with the unbroken run's weights byte for byte; a loader SIGKILLed mid-run changes nothing; a
# corrupt slide is reported and left out; bad arguments exit 2; no child process or shared-memory segment is
# left behind by any of them.
set -u
TEST=it_panda
# shellcheck source=tests/launch_lib.sh
source "$(dirname "$0")/launch_lib.sh"

"$B/pgd-synth" --task panda --count 10 --out "$tmp/s" --width 640 --height 480 --seed 3 --quiet || fail "pgd-synth"
cat >"$tmp/t.conf" <<'EOF'
# a tiny PatchGD run: 256 px images as 4 x 4 patches of 64 px, 2 slides per batch
[panda]
epochs = 2
batch_size = 2
folds = 5      ; 8 training slides, 2 validating
split_seed = 11
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
warmup_epochs = 1
log_every = 1
EOF

lines() { grep -c "\"phase\":\"$2\"" "$1/metrics.jsonl"; }
wait_for() { # FILE PATTERN SECONDS
  local i
  for ((i = 0; i < $3 * 50; i++)); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.02
  done
  fail "waited $3 s for '$2' in $1"
}
pids_of() { awk -v k="$2" '$1 == k {print $2}' "$1"; } # PIDS_FILE ROLE

# --- 2 epochs, unbroken ------------------------------------------------------------------------------
bash launch/panda.sh --data "$tmp/s" --run "$tmp/r1" --config "$tmp/t.conf" --progress lines >"$tmp/r1.out" 2>&1
rc=$?
[ $rc = 0 ] || { tail -20 "$tmp/r1.out"; fail "r1: exit $rc"; }
[ "$(($(wc -l <"$tmp/r1/train.csv") - 1))" = 8 ] && [ "$(($(wc -l <"$tmp/r1/val.csv") - 1))" = 2 ] \
  || fail "r1: the split is not 8 + 2"
[ "$(lines "$tmp/r1" train)" = 2 ] && [ "$(lines "$tmp/r1" eval)" = 2 ] || { cat "$tmp/r1/metrics.jsonl"; fail "r1: 2 train and 2 eval lines"; }
grep -q '"phase":"eval","epoch":1,"images":2,"loss":[0-9]' "$tmp/r1/metrics.jsonl" || fail "r1: the validation line of epoch 1"
grep '"phase":"eval"' "$tmp/r1/metrics.jsonl" | grep -q '"images_per_s":[0-9].*"data_wait":[0-9]' || fail "r1: eval rates"
grep -q '"qwk":' "$tmp/r1/best.json" && [ -s "$tmp/r1/best.safetensors" ] || fail "r1: the best checkpoint"
tb=$tmp/r1/tb/events.out.tfevents.0.pgd
[ -s "$tb" ] || fail "r1: no TensorBoard events"
for tag in train/loss train/accuracy train/images_per_s train/data_wait eval/loss eval/accuracy eval/qwk; do
  [ "$(grep -ac "$tag" "$tb")" -ge 1 ] || fail "r1: TensorBoard tag $tag"
done
grep -q 'brain.Event:2' "$tb" || fail "r1: the events file has no version record"
grep -q 'train epoch 2/2 .*4/4 batches 100%' "$tmp/r1.out" || { cat "$tmp/r1.out"; fail "r1: progress lines"; }
grep -q 'epoch 2/2 validation: loss' "$tmp/r1.out" || fail "r1: the epoch summary"
grep -q '^\[trainer\]' "$tmp/r1/panda.conf" && grep -q '^proj = "16"' "$tmp/r1/panda.conf" || fail "r1: panda.conf"
clean "$tmp/r1"

# --- the same training as one graph over both epochs (no per-epoch restarts): the same bytes ---------------------
one=$tmp/one
mkdir -p "$one"
"$B/pgd-sampler" --manifest "$tmp/r1/train.csv" --slides "$tmp/s" --batch-size 2 --fit-size 256 --patch 64 \
  --fill-chunk 16 --sampling 0.25 --seed 5 --epochs 2 --loaders-endpoint "ipc://$one/l" \
  --consumer-endpoint "ipc://$one/c" 2>"$one/sampler.log" &
sp=$!
"$B/pgd-loader" serve --connect "ipc://$one/l" 2>"$one/loader.log" &
lp=$!
"$B/pgd-trainer" run --connect "ipc://$one/c" --run-dir "$one" --arch small_cnn --proj 16 --head-width 16 --classes 6 \
  --seed 7 --threads 1 --warmup-epochs 1 --batch-size 2 --epochs 2 --manifest "$tmp/r1/train.csv" --progress no \
  2>"$one/trainer.log"
rc=$?
wait "$sp"
src=$?
wait "$lp"
[ $rc = 0 ] && [ $src = 0 ] || { tail -5 "$one"/*.log; fail "one graph: trainer $rc, sampler $src"; }
cmp -s "$tmp/r1/model.safetensors" "$one/model.safetensors" && cmp -s "$tmp/r1/state.safetensors" "$one/state.safetensors" \
  || fail "the per-epoch graphs differ from one graph over both epochs"

# --- SIGTERM mid-epoch (the loaders held, so the epoch cannot end), then --resume: the same weights ---------
zs=it_panda.$$ # r2 mirrors Z into a zstore segment: the trainer removes it, also when stopped
held_build "$tmp/held2" "$tmp/go" pgd-loader "/r2/logs/e001/train/"
PGD_BUILD=$tmp/held2 bash launch/panda.sh --data "$tmp/s" --run "$tmp/r2" --config "$tmp/t.conf" \
  --set "trainer.zstore=$zs" --progress no >"$tmp/r2.out" 2>&1 &
bg=$!
wait_for "$tmp/r2/logs/e001/train/pids" trainer 120
sleep 1
kill -TERM "$bg"
wait "$bg"
rc=$?
bg=""
[ $rc = 1 ] || { tail -20 "$tmp/r2.out"; fail "r2: SIGTERM: exit $rc, not 1"; }
grep -q 'stopped by SIGTERM; continue with: launch/panda.sh --resume' "$tmp/r2.out" || { cat "$tmp/r2.out"; fail "r2: the stop message"; }
grep -q 'checkpoint' "$tmp/r2/logs/e001/train/trainer.log" && fail "r2: epoch 2 was saved: not stopped mid-epoch"
clean "$tmp/r2"
[ "$(lines "$tmp/r2" train)" = 1 ] || fail "r2: 1 train line before the resume"
[ ! -e "/dev/shm/pgd.$zs" ] || fail "r2: the zstore segment is left after the stop"
bash launch/panda.sh --resume "$tmp/r2" --progress no >"$tmp/r2b.out" 2>&1
rc=$?
[ $rc = 0 ] || { tail -20 "$tmp/r2b.out"; fail "r2: resume: exit $rc"; }
grep -q "resume: $tmp/r2 continues at epoch 1" "$tmp/r2b.out" || { cat "$tmp/r2b.out"; fail "r2: the resume line"; }
cmp -s "$tmp/r1/model.safetensors" "$tmp/r2/model.safetensors" || fail "r2: stopped + resumed differs from r1"
cmp -s "$tmp/r1/state.safetensors" "$tmp/r2/state.safetensors" || fail "r2: the training state differs from r1"
cmp -s "$tmp/r1/val.csv" "$tmp/r2/val.csv" || fail "r2: the seeded split differs from r1"
[ "$(lines "$tmp/r2" train)" = 2 ] && [ "$(lines "$tmp/r2" eval)" = 2 ] || fail "r2: 2 train and 2 eval lines in all"
[ ! -e "/dev/shm/pgd.$zs" ] || fail "r2: the zstore segment is left"
grep -q "zstore: created pgd.$zs" "$tmp/r2/logs/e001/train/trainer.log" || fail "r2: no zstore segment was made"
clean "$tmp/r2"

# --- SIGTERM during a validation: --resume validates that epoch first, then goes on: the same weights and best -----
held_build "$tmp/heldv" "$tmp/go" pgd-loader "/rv/logs/e000/val/"
PGD_BUILD=$tmp/heldv bash launch/panda.sh --data "$tmp/s" --run "$tmp/rv" --config "$tmp/t.conf" --progress no \
  >"$tmp/rv.out" 2>&1 &
bg=$!
wait_for "$tmp/rv/logs/e000/val/pids" trainer 120
sleep 0.5
kill -TERM "$bg"
wait "$bg"
rc=$?
bg=""
[ $rc = 1 ] || { tail -20 "$tmp/rv.out"; fail "rv: SIGTERM in a validation: exit $rc, not 1"; }
[ ! -f "$tmp/rv/validated" ] || fail "rv: the cut validation counted"
clean "$tmp/rv"
bash launch/panda.sh --resume "$tmp/rv" --progress no >"$tmp/rv2.out" 2>&1 || { tail -20 "$tmp/rv2.out"; fail "rv: resume"; }
grep -q 'epoch 1/2 validation' "$tmp/rv2.out" || { cat "$tmp/rv2.out"; fail "rv: epoch 1 not validated on resume"; }
cmp -s "$tmp/r1/model.safetensors" "$tmp/rv/model.safetensors" && cmp -s "$tmp/r1/best.json" "$tmp/rv/best.json" \
  && cmp -s "$tmp/r1/best.safetensors" "$tmp/rv/best.safetensors" || fail "rv: other weights or best than r1"
[ "$(lines "$tmp/rv" eval)" = 2 ] || fail "rv: 2 eval lines"
clean "$tmp/rv"

# --- a loader SIGKILLed mid-run (the trainer held, so the epoch cannot end): the same weights -----------------
held_build "$tmp/held3" "$tmp/go3" pgd-trainer "/r3/logs/e000/train/"
PGD_BUILD=$tmp/held3 bash launch/panda.sh --data "$tmp/s" --run "$tmp/r3" --config "$tmp/t.conf" --progress no \
  >"$tmp/r3.out" 2>&1 &
bg=$!
wait_for "$tmp/r3/logs/e000/train/pids" trainer 120
victim=$(pids_of "$tmp/r3/logs/e000/train/pids" loader | head -1)
wait_for "$tmp/r3/logs/e000/train/loader1.log" "serving" 120
sleep 0.5 # it registers and serves jobs until the window is full: the window waits for the consumer
[ "$(cat "/proc/$victim/comm" 2>/dev/null)" = pgd-loader ] || fail "r3: loader $victim is not running"
kill -KILL "$victim"
touch "$tmp/go3"
wait "$bg"
rc=$?
bg=""
[ $rc = 0 ] || { tail -20 "$tmp/r3.out"; fail "r3: exit $rc after a loader was killed"; }
cmp -s "$tmp/r1/model.safetensors" "$tmp/r3/model.safetensors" || fail "r3: a killed loader changed the weights"
! ls /dev/shm/pgd-patch."$victim".* >/dev/null 2>&1 || fail "r3: the killed loader's segment is left"
clean "$tmp/r3"

# --- a corrupt slide: in errors.tsv, left out of training or validation, the run completes --------------------
mkdir -p "$tmp/c"
cp "$tmp"/s/*.tiff "$tmp/s/train.csv" "$tmp/c/"
truncate -s 3000 "$tmp/c/panda_00004.tiff"
bash launch/panda.sh --data "$tmp/c" --run "$tmp/r4" --config "$tmp/t.conf" --epochs 1 --progress no >"$tmp/r4.out" 2>&1
rc=$?
[ $rc = 0 ] || { tail -20 "$tmp/r4.out"; fail "r4: exit $rc with a corrupt slide"; }
grep -q '^panda_00004	.*panda_00004.tiff' "$tmp/r4/errors.tsv" || fail "r4: the corrupt slide is not in errors.tsv"
grep -q 'slide panda_00004 left out' "$tmp/r4.out" || fail "r4: the corrupt slide is not reported"
n=$(grep -o '"images":[0-9]*' "$tmp/r4/metrics.jsonl" | cut -d: -f2 | awk '{s += $1} END {print s}')
[ "$n" = 9 ] || { cat "$tmp/r4/metrics.jsonl"; fail "r4: $n images trained and validated, not 9"; }
clean "$tmp/r4"

# --- bad arguments: exit 2, nothing run --------------------------------------------------------------------
bash launch/panda.sh --run "$tmp/r5" --config "$tmp/t.conf" >"$tmp/bad.out" 2>&1
[ $? = 2 ] && grep -q 'data DIR is required' "$tmp/bad.out" || fail "no --data: exit 2"
bash launch/panda.sh --data "$tmp/s" --run "$tmp/r1" --config "$tmp/t.conf" >"$tmp/bad.out" 2>&1
[ $? = 2 ] && grep -q 'already holds a run' "$tmp/bad.out" || fail "an existing run without --resume: exit 2"
bash launch/panda.sh --data "$tmp/s" --run "$tmp/r5" --config "$tmp/t.conf" --set sampler.manifest=x >"$tmp/bad.out" 2>&1
[ $? = 2 ] && grep -q 'set by panda itself' "$tmp/bad.out" || { cat "$tmp/bad.out"; fail "a reserved key: exit 2"; }
bash launch/panda.sh --data "$tmp/s" --run "$tmp/r5" --config "$tmp/t.conf" --set panda.epoch=3 >"$tmp/bad.out" 2>&1
[ $? = 2 ] && grep -q 'unknown key \[panda\] epoch' "$tmp/bad.out" || fail "an unknown key: exit 2"
bash launch/panda.sh --data "$tmp/s" --run "$tmp/r5" --config "$tmp/t.conf" --set trainer.arch=nope >"$tmp/bad.out" 2>&1
[ $? = 2 ] || { cat "$tmp/bad.out"; fail "an unknown arch: exit 2 (the trainer's)"; }
bash launch/panda.sh --resume "$tmp/r1" --epochs 3 >"$tmp/bad.out" 2>&1
[ $? = 2 ] || fail "resume with a changed epoch count: exit 2"
echo "it_panda: ok"
