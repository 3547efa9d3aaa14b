#!/usr/bin/env bash
# it_sampler.sh: pgd-sampler + pgd-loader serve + pgd-sink from the command line: a train stream and an eval
# stream in native geometry, identical digests on a rerun with more loaders, run folder files, SIGTERM, CURVE
# (server key; an allow-list of loader keys checked by the sampler's ZAP handler), exit codes.
set -u
B=${PGD_BUILD:-build}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/it_sampler.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
for b in pgd-sampler pgd-sink pgd-loader pgd-synth; do [ -x "$B/$b" ] || fail "$B/$b is not built"; done

"$B/pgd-synth" --task panda --count 5 --out "$tmp/s" --width 640 --height 480 --seed 2 --quiet || fail "pgd-synth"

# run TAG NLOADERS SAMPLER-ARGS...: the graph on ipc endpoints; digests in $tmp/TAG.digest
run() {
  local tag=$1 n=$2; shift 2
  "$B/pgd-sampler" --manifest "$tmp/s/train.csv" --loaders-endpoint "ipc://$tmp/$tag.l" \
    --consumer-endpoint "ipc://$tmp/$tag.c" --heartbeat-ms 100 --heartbeat-timeout-ms 1000 --loader-wait-ms 20000 \
    --run-dir "$tmp/$tag.run" "$@" 2>"$tmp/$tag.sampler.log" &
  local sp=$!
  local lps=()
  for i in $(seq "$n"); do
    "$B/pgd-loader" serve --connect "ipc://$tmp/$tag.l" --heartbeat-ms 100 2>"$tmp/$tag.loader$i.log" &
    lps+=($!)
  done
  pids=("$sp" "${lps[@]}")
  "$B/pgd-sink" --connect "ipc://$tmp/$tag.c" --digest --idle-ms 30000 >"$tmp/$tag.digest" 2>"$tmp/$tag.sink.log"
  sink_rc=$?
  wait "$sp"; sampler_rc=$?
  # The sampler's STOP ends the loaders at once; one that outlives a failed sampler is killed after 10 s
  # (loaders wait for a sampler forever by design), so a failure shows as an exit code, never as a hang.
  for p in "${lps[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  pids=()
}

# --- train, fit geometry: one loader, then three: the same stream --------------------------------------
train=(--fit-size 256 --patch 64 --batch-size 2 --epochs 2 --sampling 0.3 --fill-chunk 8 --seed 9)
run t1 1 "${train[@]}"
[ "$sink_rc" = 0 ] || { cat "$tmp/t1.sink.log"; fail "sink exit $sink_rc"; }
[ "$sampler_rc" = 0 ] || { cat "$tmp/t1.sampler.log"; fail "sampler exit $sampler_rc"; }
grep -q '^# sink: END; ' "$tmp/t1.digest" || fail "no sink summary"
grep -q 'skipped 0, out of order 0, bad 0' "$tmp/t1.digest" || fail "sink saw a gap or a bad message"
n=$(grep -vc '^#' "$tmp/t1.digest")
[ "$n" -gt 10 ] || fail "only $n BATCH messages"
[ "$(head -1 "$tmp/t1.digest" | cut -d' ' -f1-7)" = "0 0 0 0 0x01 2 8" ] || fail "first message: $(head -1 "$tmp/t1.digest")"
grep -q 'stream complete' "$tmp/t1.sampler.log" || fail "no summary in the sampler log"
grep -q '^seed = 9$' "$tmp/t1.run/run.conf" || fail "run.conf lacks the seed"
[ "$(cat "$tmp/t1.run/errors.tsv")" = "$(printf 'image_id\treason')" ] || fail "errors.tsv is not empty"
[ "$(grep -vc '^#' "$tmp/t1.run/progress.log")" = "$n" ] || fail "progress.log: one line per BATCH"
run t3 3 "${train[@]}"
[ "$sink_rc" = 0 ] && [ "$sampler_rc" = 0 ] || fail "3 loaders: exits $sink_rc $sampler_rc"
diff <(grep -v '^#' "$tmp/t1.digest") <(grep -v '^#' "$tmp/t3.digest") >/dev/null || fail "1 and 3 loaders differ"
run t4 1 "${train[@]}" --seed 10
! diff <(grep -v '^#' "$tmp/t1.digest") <(grep -v '^#' "$tmp/t4.digest") >/dev/null || fail "another seed, same stream"

# --- eval, native geometry (grids learned by opening the slides): 1 pass, flag EVAL ----------------------
run e1 2 --mode eval --geometry native --level 1 --patch 64 --batch-size 2 --fill-chunk 64
[ "$sink_rc" = 0 ] && [ "$sampler_rc" = 0 ] || fail "eval: exits $sink_rc $sampler_rc"
# 640 x 480 at level 1 is 320 x 240: a 4 x 5 grid of 64 px patches, one message per batch
[ "$(grep -v '^#' "$tmp/e1.digest" | cut -d' ' -f2-7)" = "$(printf '0 0 0 0x14 2 20\n0 1 0 0x14 2 20\n0 2 0 0x34 1 20')" ] \
  || { cat "$tmp/e1.digest"; fail "eval messages"; }

# --- SIGTERM: STOP to the consumer, exit 1 ------------------------------------------------------------------
"$B/pgd-sampler" --manifest "$tmp/s/train.csv" --loaders-endpoint "ipc://$tmp/x.l" --consumer-endpoint "ipc://$tmp/x.c" \
  --loader-wait-ms 20000 2>"$tmp/x.log" &
sp=$!; pids=("$sp")
"$B/pgd-sink" --connect "ipc://$tmp/x.c" >"$tmp/x.digest" 2>&1 &
kp=$!; pids+=("$kp")
sleep 0.3
kill -TERM "$sp"
wait "$sp"; rc=$?
[ "$rc" = 1 ] || fail "sampler after SIGTERM: exit $rc"
grep -q 'stopped by a signal' "$tmp/x.log" || fail "no signal summary"
wait "$kp"; rc=$?
[ "$rc" = 1 ] || fail "sink after STOP: exit $rc"
grep -q '^# sink: STOP' "$tmp/x.digest" || fail "sink did not see STOP"
pids=()

# --- CURVE on a tcp link: a loader with the sampler's public key is served, one with another key never is -----
"$B/pgd-sampler" keygen "$tmp/good" >/dev/null || fail "keygen"
"$B/pgd-sampler" keygen "$tmp/other" >/dev/null || fail "keygen (second pair)"
[ "$(stat -c %a "$tmp/good.key")" = 600 ] || fail "secret key file mode $(stat -c %a "$tmp/good.key")"
"$B/pgd-sampler" keygen "$tmp/good" >/dev/null 2>&1 && fail "keygen overwrote a key pair"
port=$((20000 + RANDOM % 20000))
"$B/pgd-sampler" --manifest "$tmp/s/train.csv" --loaders-endpoint "tcp://127.0.0.1:$port" \
  --consumer-endpoint "ipc://$tmp/cv.c" --curve-secret-file "$tmp/good.key" --heartbeat-ms 100 \
  --heartbeat-timeout-ms 1000 --loader-wait-ms 20000 "${train[@]}" 2>"$tmp/cv.sampler.log" &
sp=$!; pids=("$sp")
"$B/pgd-loader" serve --connect "tcp://127.0.0.1:$port" --curve-server-key "$tmp/other.pub" --name wrong-key \
  --heartbeat-ms 100 2>"$tmp/cv.wrong.log" &
wp=$!; pids+=("$wp")
"$B/pgd-loader" serve --connect "tcp://127.0.0.1:$port" --name no-key --heartbeat-ms 100 2>"$tmp/cv.plain.log" &
np=$!; pids+=("$np")
sleep 0.5 # the two others try first
"$B/pgd-loader" serve --connect "tcp://127.0.0.1:$port" --curve-server-key "$tmp/good.pub" --name right-key \
  --heartbeat-ms 100 2>"$tmp/cv.right.log" &
rp=$!; pids+=("$rp")
"$B/pgd-sink" --connect "ipc://$tmp/cv.c" --digest --idle-ms 30000 >"$tmp/cv.digest" 2>/dev/null || fail "curve: sink"
wait "$sp" || { cat "$tmp/cv.sampler.log"; fail "curve: sampler"; }
diff <(grep -v '^#' "$tmp/t1.digest") <(grep -v '^#' "$tmp/cv.digest") >/dev/null || fail "curve: another stream"
grep -q "first loader registered: 'right-key'" "$tmp/cv.sampler.log" || fail "curve: the right key was not served"
grep -q "loaders 1, declared dead 0" "$tmp/cv.sampler.log" || fail "curve: a loader without the key registered"
for p in "$rp"; do wait "$p" || fail "curve: loader exit"; done
kill -TERM "$wp" "$np"; wait "$wp"; wait "$np"
grep -q "jobs ok 0, failed 0" "$tmp/cv.wrong.log" || fail "curve: the wrong key got a job"
grep -q "jobs ok 0, failed 0" "$tmp/cv.plain.log" || fail "curve: a loader without keys got a job"
pids=()
# --- CURVE with an allow-list (ZAP): a loader whose public key is listed is served, an unlisted one is refused ---
"$B/pgd-sampler" keygen "$tmp/listed" >/dev/null || fail "keygen (listed loader)"
"$B/pgd-sampler" keygen "$tmp/unlisted" >/dev/null || fail "keygen (unlisted loader)"
{ echo "# loaders allowed"; echo; cat "$tmp/listed.pub"; } >"$tmp/clients"
port=$((20000 + RANDOM % 20000))
"$B/pgd-sampler" --manifest "$tmp/s/train.csv" --loaders-endpoint "tcp://127.0.0.1:$port" \
  --consumer-endpoint "ipc://$tmp/za.c" --curve-secret-file "$tmp/good.key" --curve-clients-file "$tmp/clients" \
  --heartbeat-ms 100 --heartbeat-timeout-ms 1000 --loader-wait-ms 20000 "${train[@]}" 2>"$tmp/za.sampler.log" &
sp=$!; pids=("$sp")
"$B/pgd-loader" serve --connect "tcp://127.0.0.1:$port" --curve-server-key "$tmp/good.pub" \
  --curve-secret-file "$tmp/unlisted.key" --name unlisted --heartbeat-ms 100 2>"$tmp/za.unlisted.log" &
up=$!; pids+=("$up")
sleep 0.5 # the unlisted one tries first
"$B/pgd-loader" serve --connect "tcp://127.0.0.1:$port" --curve-server-key "$tmp/good.pub" \
  --curve-secret-file "$tmp/listed.key" --name listed --heartbeat-ms 100 2>"$tmp/za.listed.log" &
lp=$!; pids+=("$lp")
"$B/pgd-sink" --connect "ipc://$tmp/za.c" --digest --idle-ms 30000 >"$tmp/za.digest" 2>/dev/null || fail "zap: sink"
wait "$sp" || { cat "$tmp/za.sampler.log"; fail "zap: sampler"; }
diff <(grep -v '^#' "$tmp/t1.digest") <(grep -v '^#' "$tmp/za.digest") >/dev/null || fail "zap: another stream"
grep -q "first loader registered: 'listed'" "$tmp/za.sampler.log" || fail "zap: the listed key was not served"
grep -q "loaders 1, declared dead 0" "$tmp/za.sampler.log" || fail "zap: the unlisted loader registered"
grep -qF "refused a loader (key not in curve_clients_file): $(grep -v '^#' "$tmp/unlisted.pub")" "$tmp/za.sampler.log" \
  || { cat "$tmp/za.sampler.log"; fail "zap: no refusal of the unlisted key logged"; }
wait "$lp" || fail "zap: listed loader exit"
kill -TERM "$up"; wait "$up"
grep -q "jobs ok 0, failed 0" "$tmp/za.unlisted.log" || fail "zap: the unlisted loader got a job"
pids=()
printf 'not a key\n' >"$tmp/badclients"
"$B/pgd-sampler" --manifest "$tmp/s/train.csv" --curve-secret-file "$tmp/good.key" --curve-clients-file "$tmp/badclients" \
  >"$tmp/e" 2>&1; [ $? = 2 ] || fail "bad clients file: expected exit 2"
grep -q "curve_clients_file.*badclients line 1" "$tmp/e" || fail "bad clients file error does not name file and line"
"$B/pgd-sampler" --manifest "$tmp/s/train.csv" --curve-clients-file "$tmp/clients" >"$tmp/e" 2>&1; [ $? = 2 ] \
  || fail "clients file without a secret key: expected exit 2"
grep -q "needs 'curve_secret_file'" "$tmp/e" || fail "clients file without a secret key: no reason given"

printf 'not a key\n' >"$tmp/bad.key"
"$B/pgd-sampler" --manifest "$tmp/s/train.csv" --curve-secret-file "$tmp/bad.key" >"$tmp/e" 2>&1; [ $? = 2 ] \
  || fail "bad key file: expected exit 2"
grep -q "curve_secret_file" "$tmp/e" || fail "bad key file error does not name the key"

# --- exit codes ---------------------------------------------------------------------------------------------
"$B/pgd-sampler" --help >"$tmp/help" 2>&1 || fail "--help exit $?"
grep -q 'heartbeat_timeout_ms' "$tmp/help" || fail "--help lacks heartbeat_timeout_ms"
"$B/pgd-sampler" >/dev/null 2>&1; [ $? = 2 ] || fail "no --manifest: expected exit 2"
"$B/pgd-sampler" --manifest "$tmp/nope.csv" >/dev/null 2>&1; [ $? = 2 ] || fail "missing manifest: expected exit 2"
"$B/pgd-sampler" --manifest "$tmp/s/train.csv" --fit-size 100 --patch 64 >"$tmp/e" 2>&1; [ $? = 2 ] || fail "fit 100 / patch 64"
grep -q "fit_size" "$tmp/e" || fail "fit_size error does not name the key"
"$B/pgd-sampler" --manifest "$tmp/s/train.csv" --loaders-endpoint bogus://x >/dev/null 2>&1; [ $? = 2 ] || fail "bad endpoint"
"$B/pgd-sink" >/dev/null 2>&1; [ $? = 2 ] || fail "sink without --connect: expected exit 2"
"$B/pgd-sampler" --manifest "$tmp/s/train.csv" --loaders-endpoint "ipc://$tmp/n.l" --consumer-endpoint "ipc://$tmp/n.c" \
  --loader-wait-ms 100 >/dev/null 2>&1; [ $? = 1 ] || fail "no loader: expected exit 1"
echo "it_sampler: ok"
