#!/usr/bin/env bash
# demo.sh: the main job. Synthesises a small PANDA-style slide set, trains PatchGD and the GD baseline on it
# through the real process graph (pgd-sampler, pgd-loader, pgd-trainer; CPU backend) at two memory budgets,
# evaluates them on held-out slides and prints a table. `make demo` builds everything first and runs it.
#
# Settings (environment): PGD_BUILD (build/), PGD_DEMO_DIR (demo-run/, replaced), PGD_DEMO_TRAIN (720
# training slides), PGD_DEMO_VAL (120 held-out slides), PGD_DEMO_EPOCHS (PatchGD epochs, 15),
# PGD_DEMO_GD_EPOCHS (GD epochs, 15), PGD_DEMO_LOADERS (cores - 1, at least 1), PGD_DEMO_DEVICE (cpu: small_cnn
# on the CPU backend; cuda: resnet50 on the CUDA backend, whose results on a GPU are not verified yet),
# PGD_DEMO_PRECISION (fp32, bf16 or fp16: what convolutions and linear layers compute in; fp32).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
B=${PGD_BUILD:-$root/build}
out=${PGD_DEMO_DIR:-$root/demo-run}
n_train=${PGD_DEMO_TRAIN:-720}
n_val=${PGD_DEMO_VAL:-120}
epochs=${PGD_DEMO_EPOCHS:-15}
gd_epochs=${PGD_DEMO_GD_EPOCHS:-15}
cores=$(nproc)
loaders=${PGD_DEMO_LOADERS:-$((cores > 1 ? cores - 1 : 1))}
device=${PGD_DEMO_DEVICE:-cpu}
precision=${PGD_DEMO_PRECISION:-fp32}

# The task: slides fitted into 256 x 256 (the design size of the synthetic structures), cut into an 8 x 8
# grid of 32 px patches. Two memory budgets, as in the paper's 16 GB / 4 GB comparison: per image and inner
# step PatchGD back-propagates through k = 16 patches (25% of the cells; 16 x 32 x 32 = 128 x 128 pixels) or
# k = 4 (6.25%; 64 x 64 pixels), visiting half or a quarter of the cells per batch (2 or 4 inner steps). The
# GD baseline gets the same pixels with gradient per image, so the same activation budget: the whole slide
# downscaled to 128 x 128 or 64 x 64.
fit=256 patch=32 batch=8
# A dense variant of the panda task: every gland cell inside tissue holds a gland, 80% of a graded slide's
# glands show its grade, and the tissue blobs are 1.6x the default size, so a 512 x 384 slide carries several
# label-bearing glands (the defaults are sized for slides tens of thousands of pixels across).
task=(--task panda --width 512 --height 384 --fit "$fit" --gland-density 1 --tumour-fraction 0.8 --tissue 1.6)
# The head pools over the grid (--head-pool): it sees what the cells hold, not where, so it cannot learn the
# tissue layout of each training slide by heart (with a flattening head PatchGD fits the 720 training slides
# and stays at chance on held-out ones).
head=(--proj 64 --head-width 64 --head-pool)
case $device in
cpu) model=(--arch small_cnn --threads 1) ;;
cuda) model=(--arch resnet50 --device cuda) ;;
*) echo "demo: PGD_DEMO_DEVICE must be cpu or cuda, not '$device'" >&2; exit 2 ;;
esac
case $precision in
fp32 | bf16 | fp16) ;;
*) echo "demo: PGD_DEMO_PRECISION must be fp32, bf16 or fp16, not '$precision'" >&2; exit 2 ;;
esac
model+=(--classes 6 --batch-size "$batch" --seed 1 --precision "$precision")

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
  [ "$rc" = 0 ] || kill "$sp" 2>/dev/null || true # a failed trainer: the sampler need not wait for it
  wait "$sp" || { [ "$rc" != 0 ] || rc=1; }
  for p in "${pids[@]:1}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  if [ "$rc" != 0 ]; then
    tail -n 5 "$dir/trainer.log" "$dir/sampler.log" >&2
    echo "demo: $tag failed (logs in $dir)" >&2
    exit 1
  fi
}

# field FILE PHASE KEY: KEY of the last metrics line of PHASE
field() { grep "\"phase\":\"$2\"" "$1" | tail -1 | grep -o "\"$3\":[-0-9.e]*" | head -1 | cut -d: -f2; }

t_start=$(date +%s)
say "synthesising $n_train training and $n_val held-out slides into $out/slides"
"$B/pgd-synth" "${task[@]}" --count "$n_train" --out "$out/slides/train" \
  --seed 11 --jobs "$cores" --quiet
"$B/pgd-synth" "${task[@]}" --count "$n_val" --out "$out/slides/val" \
  --seed 12 --jobs "$cores" --quiet --prefix val_
train_csv=$out/slides/train/train.csv val_csv=$out/slides/val/train.csv

# pair K SAMPLING MAX_SAMPLED GD_SIZE: PatchGD with K patches per image and inner step and GD at GD_SIZE,
# trained on the training slides and evaluated on the held-out ones (runs patchgd-K, patchgd-K-eval, gd-SIZE,
# gd-SIZE-eval). Z-filling also goes K cells per image at a time (--fill-chunk), so the backbone never runs on
# more patches at once than in an inner step: the largest activation set is the same as GD's.
pair() {
  local k=$1 sampling=$2 max_sampled=$3 gd=$4
  say "PatchGD, k = $k: $epochs epochs, ${fit}x${fit} images as an 8x8 grid of ${patch} px patches, $loaders loader(s)"
  graph "patchgd-$k" "$train_csv" \
    "--fit-size $fit --patch $patch --epochs $epochs --sampling $sampling --max-sampled $max_sampled --fill-chunk $k" \
    "${model[@]}" "${head[@]}" --epochs "$epochs" --epsilon 1 --warmup-epochs 1 --manifest "$train_csv"
  graph "patchgd-$k-eval" "$val_csv" "--mode eval --fit-size $fit --patch $patch --fill-chunk $k" \
    "${model[@]}" "${head[@]}" --weights "$out/patchgd-$k/model.safetensors"
  say "GD at the same budget: $gd_epochs epochs on whole images downscaled to ${gd}x${gd}"
  graph "gd-$gd" "$train_csv" "--fit-size $gd --patch $gd --epochs $gd_epochs --sampling 1" \
    "${model[@]}" --method gd --epochs "$gd_epochs" --warmup-epochs 1 --manifest "$train_csv"
  graph "gd-$gd-eval" "$val_csv" "--mode eval --fit-size $gd --patch $gd" \
    "${model[@]}" --method gd --weights "$out/gd-$gd/model.safetensors"
}
pair 16 0.25 0.5 128
pair 4 0.0625 0.25 64

num() { [[ $2 =~ ^-?[0-9] ]] && printf "$1" "$2" || printf 'n/a'; } # FORMAT VALUE ("null" -> n/a)
row() { # BUDGET METHOD INPUT TAG
  local m=$out/$4-eval/metrics.jsonl t=$out/$4/metrics.jsonl
  printf '| %s | %s | %s | %s | %s | %s s | %s MiB |\n' "$1" "$2" "$3" "$(num %.3f "$(field "$m" eval accuracy)")" \
    "$(num %.3f "$(field "$m" eval qwk)")" "$(cat "$out/$4/seconds")" "$(num %.1f "$(field "$t" train backend_peak_mb)")"
}
acc() { field "$out/$1-eval/metrics.jsonl" eval accuracy; }
gap() { awk -v a="$(acc "$1")" -v b="$(acc "$2")" 'BEGIN { if (a == "" || b == "") print "n/a"; else printf "%+.3f", a - b }'; }
{
  echo "| budget (pixels with gradient per image and step) | method | what the network sees | held-out accuracy | held-out QWK | training time | backend peak memory |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  row "128 x 128" PatchGD "${fit}x${fit}, 8x8 patches of ${patch} px, 16 with gradient per step" patchgd-16
  row "128 x 128" GD "the image at 128x128" gd-128
  row "64 x 64" PatchGD "${fit}x${fit}, 8x8 patches of ${patch} px, 4 with gradient per step" patchgd-4
  row "64 x 64" GD "the image at 64x64" gd-64
  echo
  echo "$n_train training and $n_val held-out synthetic slides, 6 classes (chance: accuracy 0.167, QWK 0)."
  echo "Held-out accuracy, PatchGD minus GD: $(gap patchgd-16 gd-128) at 128 x 128, $(gap patchgd-4 gd-64) at 64 x 64."
  echo "Total $(($(date +%s) - t_start)) s on $cores core(s), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')."
} | tee "$out/results.md"
