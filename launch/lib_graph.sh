# lib_graph.sh: shared by launch/panda.sh and launch/infer.sh (sourced, not run): sectioned config files, one run
# of the process graph (pgd-sampler, N x pgd-loader serve, pgd-trainer run) with signals forwarded, children
# waited for and their shared-memory segments removed.
#
# The caller sets B (the build folder with the binaries) and PGD_TAG (a name for messages), and may set
# GRAPH_LOADER_ARGS (extra pgd-loader serve arguments, an array).
# shellcheck shell=bash

# ---- messages -----------------------------------------------------------------------------------------
say() { printf '%s %s: %s\n' "$(date -u +%H:%M:%S)" "$PGD_TAG" "$*"; }
die_usage() { echo "$PGD_TAG: $*" >&2; exit 2; }
need_binaries() { # the graph's programs are built in $B
  local b
  for b in pgd-sampler pgd-loader pgd-trainer; do
    [ -x "$B/$b" ] || die_usage "$B/$b is not built (make, or set PGD_BUILD)"
  done
}

# ---- config files: [section] then key = value; '#' and ';' start comments; values may be "quoted" ----------
declare -gA CONF=()
conf_set() { # KEY VALUE: KEY is section.key ('-' read as '_')
  local k=${1//-/_}
  [[ $k =~ ^[a-z]+\.[A-Za-z0-9_.]+$ ]] || die_usage "config: '$1' is not SECTION.KEY"
  CONF[$k]=$2
}
conf_load() { # FILE
  local file=$1 line n=0 section="" key value
  [ -r "$file" ] || die_usage "config: cannot read $file"
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    line=${line%$'\r'}
    line=${line#"${line%%[![:space:]]*}"}
    [[ -z $line || $line == \#* || $line == \;* ]] && continue
    if [[ $line =~ ^\[([A-Za-z0-9_]+)\][[:space:]]*$ ]]; then
      section=${BASH_REMATCH[1]}
      continue
    fi
    [[ $line =~ ^([A-Za-z0-9_.-]+)[[:space:]]*=[[:space:]]*(.*)$ ]] || die_usage "$file line $n: expected 'key = value'"
    key=${BASH_REMATCH[1]} value=${BASH_REMATCH[2]}
    if [[ $value == \"* ]]; then
      [[ $value =~ ^\"(([^\"\\]|\\.)*)\"[[:space:]]*([#\;].*)?$ ]] || die_usage "$file line $n: unterminated quote"
      value=${BASH_REMATCH[1]}
      value=${value//\\\"/\"}
      value=${value//\\\\/\\}
    else
      value=${value%%[[:space:]][#;]*}
      value=${value%"${value##*[![:space:]]}"}
    fi
    [ -n "$section" ] || die_usage "$file line $n: '$key' before any [section]"
    conf_set "$section.$key" "$value"
  done <"$file"
}
conf_get() { # KEY DEFAULT
  if [ -n "${CONF[$1]+x}" ]; then printf '%s' "${CONF[$1]}"; else printf '%s' "$2"; fi
}
conf_save() { # FILE: the resolved config, loadable by conf_load
  local k s last=""
  {
    echo "# written by $PGD_TAG on $(date -u +%Y-%m-%dT%H:%M:%SZ); load it with --config"
    for k in $(printf '%s\n' "${!CONF[@]}" | LC_ALL=C sort); do
      s=${k%%.*}
      [ "$s" = "$last" ] || { echo; echo "[$s]"; last=$s; }
      local v=${CONF[$k]//\\/\\\\}
      printf '%s = "%s"\n' "${k#*.}" "${v//\"/\\\"}"
    done
  } >"$1.tmp" && mv "$1.tmp" "$1"
}
# conf_args SECTION RESERVED...: "--key value" words of every SECTION.key into the array ARGS; a reserved key
# (set by the launcher itself) is a usage error.
conf_args() {
  local section=$1 k key r
  shift
  ARGS=()
  for k in $(printf '%s\n' "${!CONF[@]}" | LC_ALL=C sort); do
    [[ $k == "$section".* ]] || continue
    key=${k#*.}
    for r in "$@"; do
      [ "$key" != "$r" ] || die_usage "config: [$section] $key is set by $PGD_TAG itself"
    done
    ARGS+=("--$key" "${CONF[$k]}")
  done
}

# ---- endpoints ----------------------------------------------------------------------------------------
# ipc_dir RUN_DIR: a folder for ipc:// sockets: RUN_DIR/sock when its path is short enough for a socket name
# (108 bytes), else a private folder under /tmp (removed by graph_cleanup_all).
IPC_TMP=""
ipc_dir() {
  local d
  d=$(cd "$1" && pwd)/sock
  if [ ${#d} -le 80 ]; then
    mkdir -p "$d"
  else
    IPC_TMP=$(mktemp -d /tmp/pgd-ipc.XXXXXX)
    d=$IPC_TMP
  fi
  printf '%s' "$d"
}

# ---- the graph ----------------------------------------------------------------------------------------
GRAPH_PIDS=()   # children now running: sampler, trainer, loaders
STOP_SIGNAL=""  # set by the trap when SIGINT / SIGTERM arrived
GRAPH_LOADER_ARGS=()

on_signal() { # SIG: forward SIGTERM to every child (each finishes cleanly), remember to stop
  STOP_SIGNAL=$1
  local p
  for p in "${GRAPH_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM

# is_ours PID: PID still runs one of our binaries (a pid is not signalled once it may belong to someone else)
is_ours() { [[ $(cat "/proc/$1/comm" 2>/dev/null) == pgd-* ]]; }

# wait_gone PID SECONDS: wait for a child to exit, SIGKILL it after SECONDS; its status in WAIT_RC.
wait_gone() {
  local p=$1 t=$(($2 * 10)) i
  for ((i = 0; i < t; i++)); do
    kill -0 "$p" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$p" 2>/dev/null && is_ours "$p" && kill -KILL "$p" 2>/dev/null
  WAIT_RC=0
  wait "$p" 2>/dev/null || WAIT_RC=$?
}

# Remove the shared-memory segments of a finished child: the sampler's BATCH ring (pgd-batch.PID.*) and a
# loader's patch segment (pgd-patch.PID.*); both remove their own at a clean exit, a killed one cannot.
shm_cleanup() { # PID...
  local p f
  for p in "$@"; do
    for f in /dev/shm/pgd-batch."$p".* /dev/shm/pgd-patch."$p".*; do
      [ -e "$f" ] && rm -f "$f"
    done
  done
  return 0
}

# graph DIR NLOADERS LOADERS_ENDPOINT CONSUMER_ENDPOINT -- SAMPLER ARGS... -- TRAINER ARGS...
# Starts the sampler (log DIR/sampler.log, run folder DIR/sampler), NLOADERS local loaders (DIR/loaderI.log)
# connecting to LOADERS_ENDPOINT (a tcp endpoint bound to 0.0.0.0 / * is reached through 127.0.0.1), and the
# trainer (stdout: ours, for its progress; log DIR/trainer.log); waits for the trainer, stopping the others
# when one fails; then waits for (or kills) the rest and removes their segments. Sets GRAPH_RC (the trainer's
# exit status, 1 when the sampler failed) and returns 0.
graph() {
  local dir=$1 n=$2 lend=$3 cend=$4
  shift 4
  [ "$1" = "--" ] && shift
  local sargs=() targs=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do sargs+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  targs=("$@")
  mkdir -p "$dir"
  local connect=$lend
  [[ $connect =~ ^tcp://(0\.0\.0\.0|\*):(.*)$ ]] && connect="tcp://127.0.0.1:${BASH_REMATCH[2]}"
  setsid "$B/pgd-sampler" "${sargs[@]}" --loaders-endpoint "$lend" --consumer-endpoint "$cend" \
    --run-dir "$dir/sampler" >"$dir/sampler.log" 2>&1 </dev/null &
  local sp=$! i lps=()
  for ((i = 1; i <= n; i++)); do
    setsid "$B/pgd-loader" serve --connect "$connect" "${GRAPH_LOADER_ARGS[@]}" >"$dir/loader$i.log" 2>&1 </dev/null &
    lps+=($!)
  done
  setsid "$B/pgd-trainer" run --connect "$cend" "${targs[@]}" 2>"$dir/trainer.log" </dev/null &
  local tp=$!
  GRAPH_PIDS=("$tp" "$sp" "${lps[@]}")
  printf '%s\n' "sampler $sp" "trainer $tp" "${lps[@]/#/loader }" >"$dir/pids.tmp" && mv "$dir/pids.tmp" "$dir/pids"
  [ -z "$STOP_SIGNAL" ] || on_signal "$STOP_SIGNAL"
  local trc="" src="" fin st usage="" live=("${lps[@]}") j
  while [ -z "$trc" ]; do
    fin=""
    st=0
    if [ -z "$src" ]; then wait -n -p fin "$tp" "$sp" "${live[@]}" || st=$?
    else wait -n -p fin "$tp" "${live[@]}" || st=$?; fi
    if [ -z "${fin:-}" ]; then # a signal interrupted the wait (the trap forwarded it)
      continue
    fi
    if [ "$fin" = "$tp" ]; then
      trc=$st
    elif [ "$fin" = "$sp" ]; then
      src=$st
      # the sampler is gone: a trainer still waiting for its stream would wait for idle_ms; stop it
      [ "$src" = 0 ] || [ -n "$STOP_SIGNAL$usage" ] || kill -TERM "$tp" 2>/dev/null || true
    else # a loader: one that dies is the sampler's business (re-issue), one refusing its options ends the graph
      for j in "${!live[@]}"; do [ "${live[$j]}" != "$fin" ] || unset 'live[j]'; done
      live=("${live[@]}")
      if [ "$st" = 2 ] && [ -z "$usage" ]; then
        usage="loader $fin"
        kill -TERM "$tp" "$sp" 2>/dev/null || true
      fi
    fi
  done
  if [ -z "$src" ]; then
    [ "$trc" = 0 ] || [ -n "$STOP_SIGNAL" ] || kill -TERM "$sp" 2>/dev/null || true
    wait_gone "$sp" 30
    src=$WAIT_RC
  fi
  # loaders that registered got STOP; one that never did would say HELLO to nobody: SIGTERM ends either cleanly
  for i in "${lps[@]}"; do kill -TERM "$i" 2>/dev/null || true; done
  for i in "${lps[@]}"; do wait_gone "$i" 10; done
  GRAPH_PIDS=()
  shm_cleanup "$sp" "${lps[@]}"
  GRAPH_RC=$trc
  [ "$trc" -le 2 ] || GRAPH_RC=1 # killed by a signal: a failure
  [ "$trc" != 0 ] || [ "$src" = 0 ] || GRAPH_RC=1
  [ "$src" != 2 ] && [ -z "$usage" ] || GRAPH_RC=2 # a process refused its options: nothing was done
  if [ "$GRAPH_RC" != 0 ] && [ -z "$STOP_SIGNAL" ]; then
    echo "$PGD_TAG: the graph in $dir failed (trainer exit $trc, sampler exit $src${usage:+, $usage exit 2});" \
      "the last log lines:" >&2
    tail -n 5 "$dir/trainer.log" "$dir/sampler.log" >&2 || true
    [ -z "$usage" ] || tail -n 3 "$dir"/loader*.log >&2 || true
  fi
  return 0
}

# The trainer's zstore segment (a [trainer] zstore key): it removes the one it created at exit unless told to keep
# it; one killed cannot, so the launcher removes what is left (pgd-zstore rm refuses a segment whose creator runs).
zstore_cleanup() { # NAME KEEP
  [ -n "$1" ] && [[ ! $2 =~ ^(yes|true|on|1)$ ]] && [ -e "/dev/shm/pgd.$1" ] || return 0
  "$B/pgd-zstore" rm "$1" >/dev/null 2>&1 || true
}

# Merge the sampler's errors.tsv of a graph into ERRORS (one line per image), reporting new ones.
merge_errors() { # SAMPLER_ERRORS_TSV ERRORS
  local src=$1 dst=$2 id reason
  [ -f "$src" ] || return 0
  [ -f "$dst" ] || printf 'image_id\treason\n' >"$dst"
  while IFS=$'\t' read -r id reason; do
    [ "$id" != image_id ] || continue
    if ! cut -f1 "$dst" | grep -qxF -- "$id"; then
      printf '%s\t%s\n' "$id" "$reason" >>"$dst"
      say "slide $id left out: $reason"
    fi
  done <"$src"
}

graph_cleanup_all() {
  local p
  for p in "${GRAPH_PIDS[@]}"; do ! is_ours "$p" || kill -KILL "$p" 2>/dev/null || true; done
  [ -z "$IPC_TMP" ] || rm -rf "$IPC_TMP"
}
