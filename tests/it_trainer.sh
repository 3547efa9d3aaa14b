#!/usr/bin/env bash
# it_trainer.sh: pgd-trainer on the real graph (pgd-sampler + pgd-loader serve, synthetic slides): PatchGD
# training for 2 epochs, the same weights on a rerun (with Z mirrored to a zstore segment), 1 epoch + resume =
# 2 epochs byte for byte, evaluation and inference with the checkpoint (Z in the zstore and as .npy / PNG files),
# evaluation with Z filled in chunks of max_patches (same scores, less backend memory), fp16 (resumed byte for byte)
# and bf16 training, frozen-BN training with inner steps in chunks, GD, a memory budget (an auto plan, refusals),
# bad options; pgd-trainer embed's exit codes.
set -u
B=${PGD_BUILD:-build}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/it_trainer.XXXXXX")
pids=()
zs="it_trainer.$$"   # zstore segments of this test: $zs.t, $zs.i
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  rm -f "/dev/shm/pgd.$zs.t" "/dev/shm/pgd.$zs.i"
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
for b in pgd-sampler pgd-trainer pgd-loader pgd-synth pgd-zstore; do [ -x "$B/$b" ] || fail "$B/$b is not built"; done

"$B/pgd-synth" --task panda --count 6 --out "$tmp/s" --width 640 --height 480 --seed 3 --quiet || fail "pgd-synth"

# graph TAG NLOADERS "SAMPLER-ARGS" TRAINER-ARGS...: sampler, loaders and trainer on ipc endpoints
graph() {
  local tag=$1 n=$2 sargs=$3; shift 3
  # shellcheck disable=SC2086
  "$B/pgd-sampler" --manifest "${manifest:-$tmp/s/train.csv}" --loaders-endpoint "ipc://$tmp/$tag.l" \
    --consumer-endpoint "ipc://$tmp/$tag.c" --heartbeat-ms 100 --heartbeat-timeout-ms 2000 --loader-wait-ms 20000 \
    $sargs 2>"$tmp/$tag.sampler.log" &
  local sp=$!
  local lps=()
  for i in $(seq "$n"); do
    "$B/pgd-loader" serve --connect "ipc://$tmp/$tag.l" --heartbeat-ms 100 2>"$tmp/$tag.loader$i.log" &
    lps+=($!)
  done
  pids=("$sp" "${lps[@]}")
  "$B/pgd-trainer" run --connect "ipc://$tmp/$tag.c" --run-dir "$tmp/$tag" --idle-ms 60000 "$@" \
    >"$tmp/$tag.out" 2>"$tmp/$tag.trainer.log"
  trainer_rc=$?
  wait "$sp"; sampler_rc=$?
  for p in "${lps[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  pids=()
  [ "$trainer_rc" = 0 ] || { tail -20 "$tmp/$tag.trainer.log"; fail "$tag: trainer exit $trainer_rc"; }
  [ "$sampler_rc" = 0 ] || { tail -20 "$tmp/$tag.sampler.log"; fail "$tag: sampler exit $sampler_rc"; }
}

fit="--fit-size 256 --patch 64 --batch-size 2 --fill-chunk 16 --seed 5"
model=(--arch small_cnn --proj 16 --head-width 16 --classes 6 --batch-size 2 --seed 7 --threads 1)

# --- PatchGD, 2 epochs: metrics per epoch, a checkpoint -------------------------------------------------
graph t1 2 "$fit --epochs 2 --sampling 0.25" "${model[@]}" --epochs 2 --warmup-epochs 1 --manifest "$tmp/s/train.csv"
[ "$(grep -c '"phase":"train"' "$tmp/t1/metrics.jsonl")" = 2 ] || { cat "$tmp/t1/metrics.jsonl"; fail "2 train lines"; }
grep -q '"epoch":1,"images":6' "$tmp/t1/metrics.jsonl" || fail "epoch 1 did not see 6 images"
[ -s "$tmp/t1/model.safetensors" ] || fail "no checkpoint"
grep -q '^arch = small_cnn$' "$tmp/t1/trainer.conf" || fail "trainer.conf lacks the arch"

[ -s "$tmp/t1/state.safetensors" ] || fail "no training state"

# --- the same run again (other loaders, same seeds, Z mirrored): the same weights, byte for byte -----------
graph t2 1 "$fit --epochs 2 --sampling 0.25" "${model[@]}" --epochs 2 --warmup-epochs 1 --manifest "$tmp/s/train.csv" \
  --zstore "$zs.t"
cmp -s "$tmp/t1/model.safetensors" "$tmp/t2/model.safetensors" || fail "a rerun gave other weights"
grep -q "zstore: created pgd.$zs.t: 4x4x16 f32, 2 slots" "$tmp/t2.trainer.log" || { cat "$tmp/t2.trainer.log"; fail "zstore created"; }
[ ! -e "/dev/shm/pgd.$zs.t" ] || fail "the trainer left its zstore segment behind"

# --- 1 epoch, stop, resume for the 2nd (the sampler starts at epoch 1): the 2-epoch weights, byte for byte ---
graph r1 1 "$fit --epochs 1 --sampling 0.25" "${model[@]}" --epochs 2 --warmup-epochs 1 --manifest "$tmp/s/train.csv"
cmp -s "$tmp/t1/model.safetensors" "$tmp/r1/model.safetensors" && fail "1 epoch gave the 2-epoch weights"
graph r2 2 "$fit --epochs 2 --start-epoch 1 --sampling 0.25" "${model[@]}" --epochs 2 --warmup-epochs 1 \
  --manifest "$tmp/s/train.csv" --resume "$tmp/r1"
grep -q "resume: $tmp/r1 at epoch 1 batch 0" "$tmp/r2.trainer.log" || { cat "$tmp/r2.trainer.log"; fail "resume line"; }
[ "$(grep -c '"phase":"train"' "$tmp/r2/metrics.jsonl")" = 1 ] || fail "the resumed run trained more than 1 epoch"
cmp -s "$tmp/t1/model.safetensors" "$tmp/r2/model.safetensors" || fail "1 epoch + resume differs from 2 epochs"
cmp -s "$tmp/t1/state.safetensors" "$tmp/r2/state.safetensors" || fail "the resumed state differs"

# --- mixed precision: fp16 with dynamic loss scaling (doubling every 2 updates, so the scale moves), 1 epoch +
# resume = 2 epochs byte for byte (the scaler's state travels in the checkpoint); bf16 trains ----------------
fp16=(--precision fp16 --loss-scale 1024 --loss-scale-interval 2)
graph h1 1 "$fit --epochs 2 --sampling 0.25" "${model[@]}" "${fp16[@]}" --epochs 2 --manifest "$tmp/s/train.csv"
grep -q "cpu backend in fp16" "$tmp/h1.trainer.log" || { cat "$tmp/h1.trainer.log"; fail "fp16 not logged"; }
grep -q '"loss_scale":[0-9]' "$tmp/h1/metrics.jsonl" || { cat "$tmp/h1/metrics.jsonl"; fail "fp16: no loss scale in the metrics"; }
grep -q '"skipped_updates":[0-9]' "$tmp/h1/metrics.jsonl" || fail "fp16: no skipped updates in the metrics"
grep '"phase":"train"' "$tmp/h1/metrics.jsonl" | tail -1 | grep -q '"loss_scale":1024,' && fail "fp16: the scale never moved"
graph h2 1 "$fit --epochs 1 --sampling 0.25" "${model[@]}" "${fp16[@]}" --epochs 2 --manifest "$tmp/s/train.csv"
graph h3 1 "$fit --epochs 2 --start-epoch 1 --sampling 0.25" "${model[@]}" "${fp16[@]}" --epochs 2 \
  --manifest "$tmp/s/train.csv" --resume "$tmp/h2"
cmp -s "$tmp/h1/model.safetensors" "$tmp/h3/model.safetensors" || fail "fp16: 1 epoch + resume differs from 2 epochs"
cmp -s "$tmp/t1/model.safetensors" "$tmp/h1/model.safetensors" && fail "fp16 gave the fp32 weights"
graph b1 1 "$fit --epochs 1 --sampling 0.25" "${model[@]}" --precision bf16
grep -q "cpu backend in bf16" "$tmp/b1.trainer.log" || fail "bf16 not logged"
grep -q '"loss_scale"' "$tmp/b1/metrics.jsonl" && fail "bf16 scales its loss"
"$B/pgd-trainer" run --connect "ipc://$tmp/none" --precision fp8 >/dev/null 2>"$tmp/bad.log"
[ $? = 2 ] || fail "precision fp8: exit 2"
grep -q "fp32|bf16|fp16" "$tmp/bad.log" || { cat "$tmp/bad.log"; fail "the precision error lists the choices"; }

# --- evaluation and inference with the checkpoint -------------------------------------------------------
graph e1 2 "$fit --mode eval" "${model[@]}" --weights "$tmp/t1/model.safetensors"
grep -q '"phase":"eval","epoch":0,"images":6' "$tmp/e1/metrics.jsonl" || { cat "$tmp/e1/metrics.jsonl"; fail "eval line"; }
# the same evaluation with Z filled 4 patches at a time: the same scores, less backend memory
graph e2 1 "$fit --mode eval" "${model[@]}" --weights "$tmp/t1/model.safetensors" --max-patches 4
num() { grep '"phase":"eval"' "$1" | tail -1 | grep -o "\"$2\":[-0-9.e]*" | cut -d: -f2; }
for k in accuracy qwk; do
  [ "$(num "$tmp/e1/metrics.jsonl" $k)" = "$(num "$tmp/e2/metrics.jsonl" $k)" ] || fail "max_patches 4 changed the $k"
done
awk -v a="$(num "$tmp/e1/metrics.jsonl" backend_peak_mb)" -v b="$(num "$tmp/e2/metrics.jsonl" backend_peak_mb)" \
  'BEGIN { exit !(b > 0 && b < a) }' || { cat "$tmp/e1/metrics.jsonl" "$tmp/e2/metrics.jsonl"; fail "max_patches 4: no less memory"; }
graph i1 2 "$fit --mode infer" "${model[@]}" --weights "$tmp/t1/model.safetensors" --zstore "$zs.i" --zstore-keep yes \
  --manifest "$tmp/s/train.csv" --z-export "$tmp/i1/z" --z-heatmap "$tmp/i1/png"
[ "$(head -1 "$tmp/i1/predictions.csv")" = "image_id,predicted,p0,p1,p2,p3,p4,p5,status,reason" ] || fail "predictions header"
[ "$(grep -c ',ok,$' "$tmp/i1/predictions.csv")" = 6 ] || { cat "$tmp/i1/predictions.csv"; fail "6 predictions"; }
cut -d, -f1 "$tmp/i1/predictions.csv" | tail -n +2 | sort | diff - <(tail -n +2 "$tmp/s/train.csv" | cut -d, -f1 | sort) \
  >/dev/null || fail "predictions are not one per slide"
# Z of every slide: kept in the segment (6 slots, one per slide, with its id) and written as files
"$B/pgd-zstore" ls "$zs.i" >"$tmp/i1.ls" || fail "pgd-zstore ls of the kept segment"
[ "$(grep -c ' ready ' "$tmp/i1.ls")" = 6 ] || { cat "$tmp/i1.ls"; fail "6 ready slots"; }
[ "$(ls "$tmp/i1/z" | wc -l)" = 6 ] && [ "$(ls "$tmp/i1/png" | wc -l)" = 6 ] || fail "6 Z files and 6 heatmaps"
for slot in 0 5; do
  id=$(awk -v s="$slot" '$1 == s && / ready / {print $NF}' "$tmp/i1.ls")
  [ -n "$id" ] || { cat "$tmp/i1.ls"; fail "slot $slot has no image id"; }
  "$B/pgd-zstore" dump "$zs.i" "$slot" --out "$tmp/d$slot.npy" >/dev/null || fail "dump slot $slot"
  "$B/pgd-zstore" dump "$zs.i" "$slot" --out "$tmp/d$slot.png" >/dev/null || fail "dump slot $slot as png"
  cmp -s "$tmp/d$slot.npy" "$tmp/i1/z/$id.npy" || fail "slot $slot and z_export/$id.npy differ"
  cmp -s "$tmp/d$slot.png" "$tmp/i1/png/$id.png" || fail "slot $slot and z_heatmap/$id.png differ"
done
"$B/pgd-zstore" rm "$zs.i" >/dev/null || fail "pgd-zstore rm"

# --- a corrupt slide: reported by the sampler, left out of its batch; the other five are evaluated ---------
mkdir -p "$tmp/c"
cp "$tmp"/s/*.tiff "$tmp/s/train.csv" "$tmp/c/"
truncate -s 3000 "$tmp/c/panda_00001.tiff"
manifest=$tmp/c/train.csv graph c1 2 "--fit-size 256 --patch 64 --batch-size 3 --fill-chunk 8 --mode infer" \
  "${model[@]}" --batch-size 3 --weights "$tmp/t1/model.safetensors"
grep -q '^panda_00001	' "$tmp/c1.run/errors.tsv" 2>/dev/null || grep -q 'panda_00001' "$tmp/c1.sampler.log" \
  || fail "the corrupt slide is not reported"
[ "$(grep -c ',ok,$' "$tmp/c1/predictions.csv")" = 5 ] || { cat "$tmp/c1/predictions.csv"; fail "5 predictions"; }
! grep -q '^panda_00001,' "$tmp/c1/predictions.csv" || fail "a prediction for the corrupt slide"
[ "$(cut -d, -f1 "$tmp/c1/predictions.csv" | sort -u | wc -l)" = 6 ] || fail "a slide predicted twice"
unset manifest

# --- GD: whole images (a 1 x 1 grid) -------------------------------------------------------------------------
graph g1 1 "--fit-size 64 --patch 64 --batch-size 3 --epochs 2 --sampling 1 --seed 5" \
  --method gd --arch small_cnn --classes 6 --batch-size 3 --epochs 2 --threads 1
[ "$(grep -c '"phase":"train"' "$tmp/g1/metrics.jsonl")" = 2 ] || fail "gd: 2 train lines"

# --- frozen batch norm and inner steps in chunks of 2 patches (recomputed for the backward) ------------------
graph k1 1 "$fit --epochs 1 --sampling 0.25" "${model[@]}" --freeze-bn --inner-chunk 2
[ "$trainer_rc" = 0 ] && [ "$(grep -c '"phase":"train"' "$tmp/k1/metrics.jsonl")" = 1 ] || fail "inner_chunk run"
"$B/pgd-trainer" run --connect "ipc://$tmp/none" --inner-chunk 2 >/dev/null 2>"$tmp/bad.log"
[ $? = 2 ] || fail "inner_chunk without freeze_bn: exit 2"
grep -q "inner_chunk: chunked inner steps need freeze_bn" "$tmp/bad.log" || { cat "$tmp/bad.log"; fail "inner_chunk error"; }

# --- a memory budget (docs/trainer.md, "Memory budget"): an auto plan with chunks is logged and trains; a budget
# that fits nothing, or a GD batch beyond it, is refused before anything runs (exit 2); without frozen BN an inner
# step that does not fit one forward is refused at that step (exit 1), naming --freeze-bn --inner-chunk ---------
graph m1 1 "$fit --epochs 1 --sampling 0.25" "${model[@]}" --freeze-bn --mem-gb 0.004
grep -q "memory plan: budget 4.10 MiB = backend 0.0 MiB + nets .* inner steps in chunks of 3" "$tmp/m1.trainer.log" \
  || { cat "$tmp/m1.trainer.log"; fail "the memory plan line"; }
[ "$(grep -c '"phase":"train"' "$tmp/m1/metrics.jsonl")" = 1 ] || fail "a run within a budget"
peak=$(grep -o '"backend_peak_mb":[0-9.]*' "$tmp/m1/metrics.jsonl" | cut -d: -f2)
awk -v p="$peak" 'BEGIN { exit !(p > 0 && p <= 0.004 * 1024) }' || fail "backend_peak_mb $peak is over the budget"
# graph_refused TAG "SAMPLER-ARGS" TRAINER-ARGS...: the trainer is expected to fail; the sampler is then stopped
graph_refused() {
  local tag=$1 sargs=$2; shift 2
  # shellcheck disable=SC2086
  "$B/pgd-sampler" --manifest "$tmp/s/train.csv" --loaders-endpoint "ipc://$tmp/$tag.l" \
    --consumer-endpoint "ipc://$tmp/$tag.c" --heartbeat-ms 100 --heartbeat-timeout-ms 2000 $sargs \
    2>"$tmp/$tag.sampler.log" &
  local sp=$!
  "$B/pgd-loader" serve --connect "ipc://$tmp/$tag.l" --heartbeat-ms 100 2>"$tmp/$tag.loader.log" &
  local lp=$!
  pids=("$sp" "$lp")
  "$B/pgd-trainer" run --connect "ipc://$tmp/$tag.c" --run-dir "$tmp/$tag" --idle-ms 60000 "$@" \
    >"$tmp/$tag.out" 2>"$tmp/$tag.trainer.log"
  trainer_rc=$?
  kill "$sp" "$lp" 2>/dev/null
  wait "$sp" "$lp" 2>/dev/null
  pids=()
}
graph_refused m2 "$fit --epochs 1 --sampling 0.25" "${model[@]}" --freeze-bn --mem-gb 0.00001
[ "$trainer_rc" = 2 ] || { cat "$tmp/m2.trainer.log"; fail "a budget that fits nothing: exit 2, not $trainer_rc"; }
grep -q "memory budget 0.01 MiB: one patch per backbone forward needs .* MiB fixed.*not even one patch per forward \
fits" \
  "$tmp/m2.trainer.log" || { cat "$tmp/m2.trainer.log"; fail "the budget refusal names the numbers"; }
graph_refused m3 "$fit --epochs 1 --sampling 0.25" "${model[@]}" --mem-gb 0.0025
[ "$trainer_rc" = 1 ] || { cat "$tmp/m3.trainer.log"; fail "an inner step over the budget: exit 1, not $trainer_rc"; }
grep -q "an inner step of 8 patches (k x B) in one forward needs .*at most 1 patch per forward fit; use --freeze-bn \
--inner-chunk 1" "$tmp/m3.trainer.log" || { cat "$tmp/m3.trainer.log"; fail "the inner-step refusal's hint"; }
graph_refused g2 "--fit-size 64 --patch 64 --batch-size 3 --epochs 1 --sampling 1 --seed 5" --method gd \
  --arch small_cnn --classes 6 --batch-size 3 --epochs 1 --threads 1 --mem-gb 0.0025
[ "$trainer_rc" = 2 ] || { cat "$tmp/g2.trainer.log"; fail "a GD batch over the budget: exit 2, not $trainer_rc"; }
grep -q "memory budget 2.56 MiB: a GD step of 3 images (batch_size) needs .*at most 1 image per forward fit" \
  "$tmp/g2.trainer.log" || { cat "$tmp/g2.trainer.log"; fail "the GD refusal names the numbers"; }

# --- bad options: exit 2 before anything runs ------------------------------------------------------------------
"$B/pgd-trainer" run --connect "ipc://$tmp/none" --arch nope >/dev/null 2>"$tmp/bad.log"
[ $? = 2 ] || fail "unknown arch: exit 2"
grep -q "resnet50" "$tmp/bad.log" || { cat "$tmp/bad.log"; fail "the error lists the known archs"; }
"$B/pgd-trainer" frobnicate >/dev/null 2>&1
[ $? = 2 ] || fail "unknown command: exit 2"
"$B/pgd-trainer" run --connect "ipc://$tmp/none" --resume "$tmp/nowhere" >/dev/null 2>"$tmp/bad.log"
[ $? = 2 ] || fail "resume from a missing folder: exit 2"
grep -q "resume: $tmp/nowhere/model.safetensors: No such file" "$tmp/bad.log" || { cat "$tmp/bad.log"; fail "resume error"; }
"$B/pgd-trainer" run --connect "ipc://$tmp/none" --resume "$tmp/r1" --weights "$tmp/r1/model.safetensors" \
  >/dev/null 2>"$tmp/bad.log"
[ $? = 2 ] || fail "resume with weights: exit 2"

# --- embed: exit codes (values are checked by tests/test_embed.c) ---------------------------------------------
"$B/pgd-trainer" embed --model small_cnn --input "$tmp/none.npy" >/dev/null 2>"$tmp/bad.log"
[ $? = 2 ] || fail "embed without --out: exit 2"
"$B/pgd-trainer" embed --model nope --input "$tmp/d0.npy" --out "$tmp/e.npy" >/dev/null 2>"$tmp/bad.log"
[ $? = 2 ] || fail "embed with an unknown model: exit 2"
"$B/pgd-trainer" embed --model small_cnn --input "$tmp/d0.npy" --out "$tmp/e.npy" >/dev/null 2>"$tmp/bad.log"
[ $? = 1 ] || fail "embed of a [4, 4, 16] .npy: exit 1"
grep -q "$tmp/d0.npy: expected float32 \[N, 3, S, S\] (N >= 1), found float32 \[4, 4, 16\]" "$tmp/bad.log" \
  || { cat "$tmp/bad.log"; fail "embed names the bad .npy and its shape"; }
echo "it_trainer: ok"
