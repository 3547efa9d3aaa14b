#!/usr/bin/env bash
# infer.sh: predictions for a folder or a manifest of slides with a trained checkpoint, through the process graph
# (pgd-sampler --mode infer, N x pgd-loader serve, pgd-trainer run on the CPU). Writes OUT/predictions.csv as it
# goes (image_id, predicted grade, per-class probabilities, status, reason); a slide that cannot be read gets a
# status=error row with the reason and the job goes on; a rerun skips the slides already predicted (status ok)
# and tries the others again. Optional Z per slide as .npy and as heatmap PNGs. docs/usage.md is the manual.
#
#   launch/infer.sh --from-run RUN_DIR --slides DIR --out OUT [options]         model and geometry of a panda.sh run
#   launch/infer.sh --weights W.safetensors --config FILE --manifest M.csv --out OUT [options]
#
# Exit status: the trainer's: 0 every slide has a row (ok or error); 1 a process failed or SIGINT / SIGTERM
# stopped the job (rerun the same command to go on); 2 bad arguments or config (nothing ran).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
B=${PGD_BUILD:-$root/build}
PGD_TAG=infer
# shellcheck source=launch/lib_graph.sh
source "$root/launch/lib_graph.sh"

usage() {
  cat <<EOF
usage: launch/infer.sh (--from-run RUN_DIR | --weights W --config FILE) (--slides DIR | --manifest M) --out OUT [options]
  --from-run RUN_DIR   a panda.sh run: its panda.conf ([sampler], [loader], [trainer]) and best.safetensors
                       (model.safetensors when there is no best)
  --weights W          the checkpoint (overrides the run's)
  --config FILE        [infer], [sampler], [loader], [trainer] sections (after the run's panda.conf)
  --slides DIR         every slide file in DIR (.svs .tif .tiff .ndpi .mrxs .scn .vms .vmu .bif .svslide .jpg .jpeg .png)
  --manifest M         a manifest instead (PANDA train.csv: slides in --slides DIR or M's folder; or path[,label],id)
  --out OUT            the output folder: predictions.csv, z/, heatmaps/, logs/
  --loaders N          local loader processes (default: cores - 2, at least 1)
  --batch-size B       slides per batch (default 4)
  --z-export           each slide's Z as OUT/z/<image_id>.npy (PatchGD models)
  --z-heatmap          each slide's Z as a heatmap OUT/heatmaps/<image_id>.png
  --progress MODE      auto|bar|lines|no (default auto)
  --set SECTION.KEY=VALUE  any config key (repeatable)
exit status: 0 every slide has a row, 1 a process failed or the job was stopped (rerun it), 2 bad arguments
EOF
}

from_run="" config="" sets=()
declare -A flag=()
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --from-run) from_run=${2?--from-run needs a value}; shift 2 ;;
    --config) config=${2?--config needs a value}; shift 2 ;;
    --set) sets+=("${2?--set needs SECTION.KEY=VALUE}"); shift 2 ;;
    --z-export | --z-heatmap) k=${1#--}; flag[${k//-/_}]=yes; shift ;;
    --weights | --slides | --manifest | --out | --loaders | --batch-size | --ext | --progress)
      [ $# -ge 2 ] || die_usage "$1 needs a value"
      k=${1#--}
      flag[${k//-/_}]=$2
      shift 2 ;;
    *) usage >&2; die_usage "unknown argument '$1'" ;;
  esac
done
need_binaries

# ---- config: the training run's, then the file, then --set, then the flags --------------------------------
weights_default=""
if [ -n "$from_run" ]; then
  [ -f "$from_run/panda.conf" ] || die_usage "--from-run: $from_run/panda.conf not found"
  conf_load "$from_run/panda.conf"
  if [ -f "$from_run/best.safetensors" ]; then weights_default=$from_run/best.safetensors
  else weights_default=$from_run/model.safetensors; fi
fi
[ -z "$config" ] || conf_load "$config"
for k in "${!CONF[@]}"; do # a training config's [panda] section: where its data was, how long it trained
  [[ $k != panda.* ]] || { [ "$k" = panda.ext ] && conf_set infer.ext "${CONF[$k]}"; unset "CONF[$k]"; }
done
for s in "${sets[@]}"; do
  [[ $s == *=* ]] || die_usage "--set '$s': expected SECTION.KEY=VALUE"
  conf_set "${s%%=*}" "${s#*=}"
done
for k in "${!flag[@]}"; do conf_set "infer.$k" "${flag[$k]}"; done
for k in "${!CONF[@]}"; do
  case $k in
    infer.weights | infer.slides | infer.manifest | infer.out | infer.loaders | infer.batch_size | infer.ext | \
      infer.progress | infer.z_export | infer.z_heatmap | infer.loaders_endpoint) ;;
    infer.*) die_usage "config: unknown key [infer] ${k#infer.}" ;;
    sampler.* | loader.* | trainer.*) ;;
    *) die_usage "config: unknown section [${k%%.*}] (infer, sampler, loader, trainer)" ;;
  esac
done
cores=$(nproc)
weights=$(conf_get infer.weights "$weights_default")
slides=$(conf_get infer.slides "")
manifest=$(conf_get infer.manifest "")
out=$(conf_get infer.out "")
loaders=$(conf_get infer.loaders $((cores > 3 ? cores - 2 : 1)))
bs=$(conf_get infer.batch_size 4)
ext=$(conf_get infer.ext .tiff)
progress=$(conf_get infer.progress auto)
z_export=$(conf_get infer.z_export no)
z_heatmap=$(conf_get infer.z_heatmap no)
lend_cfg=$(conf_get infer.loaders_endpoint "")
[ -n "$weights" ] || die_usage "--weights or --from-run is required"
[ -r "$weights" ] || die_usage "weights: cannot read $weights"
[ -n "$out" ] || die_usage "--out OUT is required"
[ -n "$slides" ] || [ -n "$manifest" ] || die_usage "--slides DIR or --manifest M is required"
[ -z "$manifest" ] || [ -r "$manifest" ] || die_usage "manifest: cannot read $manifest"
[ -n "$manifest" ] || [ -d "$slides" ] || die_usage "slides: $slides is not a folder"
for v in loaders bs; do [[ ${!v} =~ ^[0-9]+$ ]] || die_usage "$v: '${!v}' is not a whole number"; done
[ "$bs" -ge 1 ] || die_usage "batch_size must be >= 1"
[ "$loaders" -ge 1 ] || [[ $lend_cfg == tcp://* ]] || die_usage "loaders: 0 needs a tcp loaders_endpoint"
[[ $progress =~ ^(auto|bar|lines|no)$ ]] || die_usage "progress: '$progress' is not auto|bar|lines|no"

# the sampler's schedule keys of a training run do not apply to one inference pass
for k in epochs start_epoch start_batch sampling max_sampled zeta inner_chunk shared_positions drop_last; do
  unset "CONF[sampler.$k]"
done
conf_args sampler manifest slides ext loaders_endpoint consumer_endpoint run_dir mode batch_size
sampler_args=("${ARGS[@]}")
for k in resume weights epochs warmup_epochs manifest; do unset "CONF[trainer.$k]"; done
conf_args trainer connect run_dir batch_size metrics tensorboard report_epoch best predictions errors progress \
  z_export z_heatmap
trainer_args=("${ARGS[@]}")
# inference runs on the CPU backend: where the trainer has a device option, ask for the CPU unless told otherwise
if [ -z "${CONF[trainer.device]+x}" ] && "$B/pgd-trainer" run --help 2>/dev/null | grep -q '^ *--device[ =[]'; then
  trainer_args+=(--device cpu)
fi
conf_args loader connect
GRAPH_LOADER_ARGS=("${ARGS[@]}")

# ---- what is left to do -------------------------------------------------------------------------------
mkdir -p "$out/logs"
out=$(cd "$out" && pwd)
weights=$(cd "$(dirname "$weights")" && pwd)/$(basename "$weights")
conf_set infer.weights "$weights"
conf_save "$out/infer.conf"
trap 'graph_cleanup_all' EXIT
man_args=()
if [ -z "$manifest" ]; then
  "$B/pgd-trainer" scan --dir "$slides" --out "$out/slides.csv" >"$out/logs/scan.log" 2>&1 \
    || { cat "$out/logs/scan.log" >&2; exit 1; }
  manifest=$out/slides.csv
else # PANDA slides: in --slides DIR, or beside their manifest
  sdir=${slides:-$(dirname "$manifest")}
  man_args=(--slides "$(cd "$sdir" && pwd)" --ext "$ext")
fi
"$B/pgd-trainer" pending --manifest "$manifest" "${man_args[@]}" --predictions "$out/predictions.csv" \
  --out "$out/todo.csv" >"$out/logs/pending.log" 2>&1 || { cat "$out/logs/pending.log" >&2; exit 1; }
say "$(cat "$out/logs/pending.log")"
todo=$(($(wc -l <"$out/todo.csv") - 1))
if [ "$todo" -le 0 ]; then
  say "nothing to do: every slide has a prediction in $out/predictions.csv"
  exit 0
fi

z_args=()
[ "$z_export" != yes ] || z_args+=(--z-export "$out/z")
[ "$z_heatmap" != yes ] || z_args+=(--z-heatmap "$out/heatmaps")
sock=$(ipc_dir "$out")
lend=${lend_cfg:-ipc://$sock/loaders}
d=$out/logs/$(date -u +%Y%m%dT%H%M%S)-$$
say "$todo slide(s) with $weights, $loaders loader(s); logs in $d"
graph "$d" "$loaders" "$lend" "ipc://$sock/consumer" -- --manifest "$out/todo.csv" "${man_args[@]}" \
  --batch-size "$bs" "${sampler_args[@]}" --mode infer -- \
  "${trainer_args[@]}" --batch-size "$bs" --weights "$weights" --manifest "$out/todo.csv" --run-dir "$out/run" \
  --predictions "$out/predictions.csv" --errors "$d/sampler/errors.tsv" --progress "$progress" "${z_args[@]}"
rc=$GRAPH_RC
zstore_cleanup "$(conf_get trainer.zstore "")" "$(conf_get trainer.zstore_keep no)"
ok=$(grep -c ',ok,$' "$out/predictions.csv" || true)
bad=$(grep -vc ',ok,$' "$out/predictions.csv" || true)
if [ -n "$STOP_SIGNAL" ]; then
  [ "$rc" != 0 ] || rc=1
  say "stopped by SIG$STOP_SIGNAL: $ok slide(s) predicted so far; rerun the same command to go on"
elif [ "$rc" != 0 ]; then
  say "failed (logs in $d): $ok slide(s) predicted so far; rerun the same command to go on"
else
  say "done: $out/predictions.csv: $ok ok, $((bad - 1)) error(s)"
fi
exit "$rc"
