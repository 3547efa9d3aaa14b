#!/usr/bin/env bash
# panda.sh: train on a PANDA-style set (a folder of slides + train.csv) through the process graph: a seeded
# stratified k-fold split (fold `fold` validates), then per epoch one training graph (pgd-sampler, N x
# pgd-loader serve, pgd-trainer run, resuming from the previous epoch's save) and one validation graph on the
# held-out fold with that epoch's checkpoint. metrics.jsonl, TensorBoard events, the best checkpoint by
# validation QWK, logs and the resolved config land in the run folder. docs/usage.md is the manual.
#
#   launch/panda.sh --data DIR --run RUN_DIR [--config FILE] [--epochs E] [--loaders N] [--set SECTION.KEY=VALUE]...
#   launch/panda.sh --resume RUN_DIR [--loaders N] [--progress auto|bar|lines|no]
#
# Exit status: the trainer's: 0 every epoch trained and validated; 1 a process failed, or SIGINT / SIGTERM
# stopped the run (continue it with --resume RUN_DIR); 2 bad arguments or config (nothing ran).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
B=${PGD_BUILD:-$root/build}
PGD_TAG=panda
# shellcheck source=launch/lib_graph.sh
source "$root/launch/lib_graph.sh"

usage() {
  cat <<EOF
usage: launch/panda.sh --data DIR --run RUN_DIR [options]     train (a new run)
       launch/panda.sh --resume RUN_DIR [--loaders N] [--progress MODE]   continue a stopped run
options (each is also a [panda] key of the config file):
  --config FILE          key = value lines in [panda], [sampler], [loader], [trainer] sections
  --epochs E             epochs (default 30)
  --batch-size B         images per batch, for the sampler and the trainer (default 4)
  --folds K --fold F     stratified K-fold split of train.csv, fold F validates (default 5, 0); K = 1: no validation
  --split-seed S         the split's seed (default 0)
  --loaders N            local loader processes (default: cores - 2, at least 1)
  --ext EXT              slide file extension (default .tiff)
  --progress MODE        auto|bar|lines|no: the trainer's progress on stdout (default auto)
  --set SECTION.KEY=VALUE  any config key (repeatable), after the config file
exit status: 0 done, 1 a process failed or the run was stopped (resume it), 2 bad arguments
EOF
}

# ---- arguments ----------------------------------------------------------------------------------------
config="" resume="" sets=()
declare -A flag=()
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --config) config=${2?--config needs a value}; shift 2 ;;
    --resume) resume=${2?--resume needs a value}; shift 2 ;;
    --set) sets+=("${2?--set needs SECTION.KEY=VALUE}"); shift 2 ;;
    --data | --run | --epochs | --batch-size | --folds | --fold | --split-seed | --loaders | --ext | --progress)
      [ $# -ge 2 ] || die_usage "$1 needs a value"
      k=${1#--}
      flag[${k//-/_}]=$2
      shift 2 ;;
    *) usage >&2; die_usage "unknown argument '$1'" ;;
  esac
done
need_binaries

if [ -n "$resume" ]; then
  run=$resume
  [ -f "$run/panda.conf" ] || die_usage "resume: $run/panda.conf not found (not a panda.sh run folder)"
  [ -z "$config" ] && [ ${#sets[@]} = 0 ] || die_usage "resume: the run's own panda.conf is used; no --config / --set"
  for k in "${!flag[@]}"; do
    [ "$k" = loaders ] || [ "$k" = progress ] || die_usage "resume: only --loaders and --progress may change"
  done
  conf_load "$run/panda.conf"
else
  [ -z "$config" ] || conf_load "$config"
  for s in "${sets[@]}"; do
    [[ $s == *=* ]] || die_usage "--set '$s': expected SECTION.KEY=VALUE"
    conf_set "${s%%=*}" "${s#*=}"
  done
fi
for k in "${!flag[@]}"; do conf_set "panda.$k" "${flag[$k]}"; done

cores=$(nproc)
data=$(conf_get panda.data "")
[ -n "$resume" ] || run=$(conf_get panda.run "")
epochs=$(conf_get panda.epochs 30)
bs=$(conf_get panda.batch_size 4)
folds=$(conf_get panda.folds 5)
fold=$(conf_get panda.fold 0)
split_seed=$(conf_get panda.split_seed 0)
loaders=$(conf_get panda.loaders $((cores > 3 ? cores - 2 : 1)))
ext=$(conf_get panda.ext .tiff)
progress=$(conf_get panda.progress auto)
lend_cfg=$(conf_get panda.loaders_endpoint "")
zstore=$(conf_get trainer.zstore "")
zstore_keep=$(conf_get trainer.zstore_keep no)
for k in "${!CONF[@]}"; do
  case $k in
    panda.data | panda.run | panda.epochs | panda.batch_size | panda.folds | panda.fold | panda.split_seed | \
      panda.loaders | panda.ext | panda.progress | panda.loaders_endpoint) ;;
    panda.*) die_usage "config: unknown key [panda] ${k#panda.}" ;;
    sampler.* | loader.* | trainer.*) ;;
    *) die_usage "config: unknown section [${k%%.*}] (panda, sampler, loader, trainer)" ;;
  esac
done
[ -n "$data" ] || die_usage "--data DIR is required (the folder with train.csv and the slides)"
[ -n "$run" ] || die_usage "--run RUN_DIR is required"
[ -f "$data/train.csv" ] || die_usage "$data/train.csv not found"
for v in epochs bs folds fold split_seed loaders; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die_usage "$v: '${!v}' is not a whole number"
done
[ "$epochs" -ge 1 ] && [ "$bs" -ge 1 ] && [ "$folds" -ge 1 ] || die_usage "epochs, batch_size and folds must be >= 1"
[ "$folds" = 1 ] || [ "$fold" -lt "$folds" ] || die_usage "fold $fold is not below folds $folds"
[ "$loaders" -ge 1 ] || [[ $lend_cfg == tcp://* ]] || die_usage "loaders: 0 needs a tcp loaders_endpoint"
[[ $progress =~ ^(auto|bar|lines|no)$ ]] || die_usage "progress: '$progress' is not auto|bar|lines|no"

# the options each process gets from the config, with the keys panda.sh sets itself refused
conf_args sampler manifest slides ext loaders_endpoint consumer_endpoint run_dir epochs start_epoch start_batch \
  mode batch_size
sampler_args=("${ARGS[@]}")
conf_args trainer connect run_dir resume weights manifest epochs batch_size metrics tensorboard report_epoch best \
  predictions errors progress z_export z_heatmap
trainer_args=("${ARGS[@]}")
conf_args loader connect
GRAPH_LOADER_ARGS=("${ARGS[@]}")

# ---- the run folder -----------------------------------------------------------------------------------
if [ -z "$resume" ]; then
  [ ! -e "$run/panda.conf" ] || die_usage "$run already holds a run (continue it with --resume $run)"
  mkdir -p "$run"
  data=$(cd "$data" && pwd)
  conf_set panda.data "$data"
  unset 'CONF[panda.run]'
  conf_save "$run/panda.conf"
  if [ "$folds" -ge 2 ]; then
    "$B/pgd-trainer" kfold --manifest "$data/train.csv" --slides "$data" --ext "$ext" --folds "$folds" \
      --fold "$fold" --seed "$split_seed" --train-out "$run/train.csv" --val-out "$run/val.csv" >"$run/split.log" 2>&1 \
      || { cat "$run/split.log" >&2; exit 2; }
  else
    cp "$data/train.csv" "$run/train.csv"
  fi
fi
run=$(cd "$run" && pwd)
trap 'graph_cleanup_all' EXIT
sock=$(ipc_dir "$run")
lend=${lend_cfg:-ipc://$sock/loaders}
cend=ipc://$sock/consumer
mkdir -p "$run/logs"

# where the run stands: the epoch the saved state continues at, the last epoch validated
next=0
if [ -f "$run/state.safetensors" ]; then
  st=$("$B/pgd-trainer" state "$run" 2>>"$run/logs/state.log") \
    || { echo "panda: cannot read $run/state.safetensors" >&2; exit 1; }
  next=$(echo "$st" | awk '{print $2}')
fi
validated=-1
[ -f "$run/validated" ] && validated=$(cat "$run/validated")
[ -n "$resume" ] && say "resume: $run continues at epoch $next (epochs validated: $((validated + 1)))"

# json_field LINE KEY: KEY's value in a metrics line
json_field() { grep -o "\"$2\":[^,}]*" <<<"$1" | head -1 | cut -d: -f2; }
# num LINE KEY [SCALE [DIGITS]]: a metrics value x SCALE, rounded for people (null stays null)
num() {
  awk -v v="$(json_field "$1" "$2")" -v k="${3:-1}" -v d="${4:-4}" \
    'BEGIN { if (v ~ /^-?[0-9]/) { x = v * k; if (x < 5e-5 && x > -5e-5) x = 0; printf "%.*f", d, x } else printf "%s", v }'
}
# the best validation so far: "qwk Q at epoch E" (epochs counted from 1)
best_note() {
  local b
  b=$(cat "$run/best.json" 2>/dev/null) || { echo "none yet"; return; }
  echo "qwk $(num "$b" qwk) at epoch $(($(json_field "$b" epoch) + 1))"
}

stop_now() { # the trainer's status, 1 when it ended well but the run is cut short
  local rc=$1
  [ "$rc" != 0 ] || rc=1
  if [ -n "$STOP_SIGNAL" ]; then
    say "stopped by SIG$STOP_SIGNAL; continue with: launch/panda.sh --resume $run"
  else
    say "failed (logs in $run/logs); continue with: launch/panda.sh --resume $run"
  fi
  exit "$rc"
}

validate() { # EPOCH: the validation fold through the eval graph with the epoch's checkpoint
  local e=$1 d
  d=$run/logs/$(printf 'e%03d' "$e")/val
  rm -rf "$d"
  graph "$d" "$loaders" "$lend" "$cend" -- --manifest "$run/val.csv" --slides "$data" --ext "$ext" \
    --batch-size "$bs" "${sampler_args[@]}" --mode eval -- \
    "${trainer_args[@]}" --batch-size "$bs" --manifest "$run/val.csv" --run-dir "$run/val" \
    --weights "$run/model.safetensors" --metrics "$d/metrics.jsonl" --tensorboard "$run/tb" \
    --report-epoch "$e" --best "$run" --progress "$progress"
  merge_errors "$d/sampler/errors.tsv" "$run/errors.tsv"
  zstore_cleanup "$zstore" "$zstore_keep"
  [ "$GRAPH_RC" = 0 ] && [ -z "$STOP_SIGNAL" ] || stop_now "$GRAPH_RC"
  # The eval line goes into the run's metrics only now: a validation cut by a signal, even one whose trainer
  # had already written its line, is done again on --resume and counted once.
  local line
  line=$(grep '"phase":"eval"' "$d/metrics.jsonl" | tail -1)
  printf '%s\n' "$line" >>"$run/metrics.jsonl"
  echo "$e" >"$run/validated.tmp" && mv "$run/validated.tmp" "$run/validated"
  say "epoch $((e + 1))/$epochs validation: loss $(num "$line" loss), accuracy $(num "$line" accuracy)," \
    "qwk $(num "$line" qwk); best $(best_note)"
}

# a checkpoint saved but not validated yet (the run stopped between the two graphs)
if [ "$folds" -ge 2 ] && [ "$next" -gt 0 ] && [ "$validated" -lt $((next - 1)) ]; then
  validate $((next - 1))
fi
val_note="no validation"
[ "$folds" -lt 2 ] || val_note="$(($(wc -l <"$run/val.csv") - 1)) validation slides (fold $fold of $folds)"
say "run $run: epochs $((next + 1))..$epochs of $epochs, $(($(wc -l <"$run/train.csv") - 1)) training slides," \
  "$val_note, $loaders loader(s)"
for ((e = next; e < epochs; e++)); do
  d=$run/logs/$(printf 'e%03d' "$e")/train
  rm -rf "$d"
  resume_args=()
  [ "$e" = 0 ] || resume_args=(--resume "$run")
  graph "$d" "$loaders" "$lend" "$cend" -- --manifest "$run/train.csv" --slides "$data" --ext "$ext" \
    --batch-size "$bs" "${sampler_args[@]}" --epochs $((e + 1)) --start-epoch "$e" --start-batch 0 -- \
    "${trainer_args[@]}" --batch-size "$bs" --epochs "$epochs" --manifest "$run/train.csv" --run-dir "$run" \
    --tensorboard "$run/tb" --progress "$progress" "${resume_args[@]}"
  merge_errors "$d/sampler/errors.tsv" "$run/errors.tsv"
  zstore_cleanup "$zstore" "$zstore_keep"
  [ "$GRAPH_RC" = 0 ] && [ -z "$STOP_SIGNAL" ] || stop_now "$GRAPH_RC"
  line=$(grep '"phase":"train"' "$run/metrics.jsonl" | tail -1)
  say "epoch $((e + 1))/$epochs training: loss $(num "$line" loss), accuracy $(num "$line" accuracy)," \
    "$(num "$line" images_per_s 1 1) images/s, data wait $(num "$line" data_wait 100 1)%"
  [ "$folds" -lt 2 ] || validate "$e"
done
if [ "$folds" -ge 2 ]; then
  say "done: $run/model.safetensors (last epoch), $run/best.safetensors (best validation $(best_note))"
else
  say "done: $run/model.safetensors"
fi
exit 0
