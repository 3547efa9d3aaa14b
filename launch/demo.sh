#!/usr/bin/env bash
# demo.sh: the main job. Synthesises a small PANDA-style slide set, trains PatchGD and the GD baseline on it
# through the real process graph (pgd-sampler, pgd-loader, pgd-trainer; CPU backend), evaluates both on
# held-out slides and prints a table. `make demo` builds everything first and runs it.
#
# Settings (environment): PGD_BUILD (build/), PGD_DEMO_DIR (demo-run/, replaced), PGD_DEMO_TRAIN (720
# training slides), PGD_DEMO_VAL (120 held-out slides), PGD_DEMO_EPOCHS (PatchGD epochs, 10),
# PGD_DEMO_GD_EPOCHS (GD epochs, 10), PGD_DEMO_LOADERS (cores - 1, at least 1).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
B=${PGD_BUILD:-$root/build}
out=${PGD_DEMO_DIR:-$root/demo-run}
n_train=${PGD_DEMO_TRAIN:-720}
n_val=${PGD_DEMO_VAL:-120}
epochs=${PGD_DEMO_EPOCHS:-10}
gd_epochs=${PGD_DEMO_GD_EPOCHS:-10}
cores=$(nproc)
loaders=${PGD_DEMO_LOADERS:-$((cores > 1 ? cores - 1 : 1))}

# The task: slides fitted into 256 x 256 (the design size of the synthetic structures), cut into an 8 x 8
# grid of 32 px patches. PatchGD back-propagates through 16 patches per image per inner step (25% of the
# cells): 16 x 32 x 32 = 128 x 128 pixels. The GD baseline gets the same pixels with gradient per image, so
# the same activation budget: the whole slide downscaled to 128 x 128.
fit=256 patch=32 gd_size=128 batch=8
model=(--arch small_cnn --classes 6 --batch-size "$batch" --seed 1 --threads 1)

for b in pgd-synth pgd-sampler pgd-loader pgd-trainer; do
  [ -x "$B/$b" ] || { echo "demo: $B/$b is not built (run make demo)" >&2; exit 2; }
done
rm -rf "$out"
mkdir -p "$out"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'echo "demo: interrupted" >&2; exit 1' INT TERM
say() { printf '%s demo: %s\n' "$(date +%H:%M:%S)" "$*"; }

# graph TAG MANIFEST "SAMPLER ARGS" TRAINER ARGS...: one run of the process graph on ipc endpoints in
# $out/TAG; logs there. Fails the demo when the trainer or the sampler fails.
graph() {
  local tag=$1 manifest=$2 sargs=$3
  shift 3
  local dir=$out/$tag
  mkdir -p "$dir"
  # shellcheck disable=SC2086
  "$B/pgd-sampler" --manifest "$manifest" --loaders-endpoint "ipc://$dir/loaders" \
    --consumer-endpoint "ipc://$dir/consumer" --run-dir "$dir/sampler" --batch-size "$batch" --seed 1 \
    $sargs 2>"$dir/sampler.log" &
  local sp=$!
  pids=("$sp")
  for i in $(seq "$loaders"); do
    "$B/pgd-loader" serve --connect "ipc://$dir/loaders" 2>"$dir/loader$i.log" &
    pids+=($!)
  done
  local t0 rc=0
  t0=$(date +%s%N)
  "$B/pgd-trainer" run --connect "ipc://$dir/consumer" --run-dir "$dir" "$@" 2>"$dir/trainer.log" || rc=$?
  echo $((($(date +%s%N) - t0) / 1000000000)) >"$dir/seconds"
  wait "$sp" || { [ "$rc" != 0 ] || rc=1; }
  for p in "${pids[@]:1}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  if [ "$rc" != 0 ]; then
    tail -5 "$dir/trainer.log" "$dir/sampler.log" >&2
    echo "demo: $tag failed (logs in $dir)" >&2
    exit 1
  fi
}

# field FILE PHASE KEY: KEY of the last metrics line of PHASE
field() { grep "\"phase\":\"$2\"" "$1" | tail -1 | grep -o "\"$3\":[-0-9.e]*" | head -1 | cut -d: -f2; }

t_start=$(date +%s)
say "synthesising $n_train training and $n_val held-out slides into $out/slides"
"$B/pgd-synth" --task panda --count "$n_train" --out "$out/slides/train" --width 512 --height 384 --fit "$fit" \
  --seed 11 --jobs "$cores" --quiet
"$B/pgd-synth" --task panda --count "$n_val" --out "$out/slides/val" --width 512 --height 384 --fit "$fit" \
  --seed 12 --jobs "$cores" --quiet --prefix val_
train_csv=$out/slides/train/train.csv val_csv=$out/slides/val/train.csv

say "PatchGD: $epochs epochs, ${fit}x${fit} images as an 8x8 grid of ${patch} px patches, $loaders loader(s)"
graph patchgd "$train_csv" "--fit-size $fit --patch $patch --epochs $epochs --sampling 0.25 --max-sampled 0.5 --fill-chunk 64" \
  "${model[@]}" --proj 64 --head-width 64 --epochs "$epochs" --epsilon 1 --warmup-epochs 1 --manifest "$train_csv"
say "PatchGD: evaluating on the held-out slides"
graph patchgd-eval "$val_csv" "--mode eval --fit-size $fit --patch $patch --fill-chunk 64" \
  "${model[@]}" --proj 64 --head-width 64 --weights "$out/patchgd/model.safetensors"

say "GD: $gd_epochs epochs on whole images downscaled to ${gd_size}x${gd_size}"
graph gd "$train_csv" "--fit-size $gd_size --patch $gd_size --epochs $gd_epochs --sampling 1" \
  "${model[@]}" --method gd --epochs "$gd_epochs" --warmup-epochs 1 --manifest "$train_csv"
say "GD: evaluating on the held-out slides"
graph gd-eval "$val_csv" "--mode eval --fit-size $gd_size --patch $gd_size" \
  "${model[@]}" --method gd --weights "$out/gd/model.safetensors"

num() { [[ $2 =~ ^-?[0-9] ]] && printf "$1" "$2" || printf 'n/a'; } # FORMAT VALUE ("null" -> n/a)
row() { # METHOD INPUT TAG
  local m=$out/$3-eval/metrics.jsonl t=$out/$3/metrics.jsonl
  printf '| %s | %s | %s | %s | %s s | %s MB |\n' "$1" "$2" "$(num %.3f "$(field "$m" eval accuracy)")" \
    "$(num %.3f "$(field "$m" eval qwk)")" "$(cat "$out/$3/seconds")" "$(num %.0f "$(field "$t" train peak_rss_mb)")"
}
{
  echo "| method | what the network sees | held-out accuracy | held-out QWK | training time | trainer peak memory |"
  echo "| --- | --- | --- | --- | --- | --- |"
  row PatchGD "${fit}x${fit}, 8x8 patches of ${patch} px, 16 with gradient per step" patchgd
  row GD "the image at ${gd_size}x${gd_size}" gd
  echo
  echo "$n_train training and $n_val held-out synthetic slides, 6 classes (chance: accuracy 0.167, QWK 0)."
  echo "Total $(($(date +%s) - t_start)) s on $cores core(s), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')."
} | tee "$out/results.md"
