#!/usr/bin/env bash
# it_bench_patchgd.sh: the PatchGD benchmark pair on a tiny configuration on the CPU: patchgd_bench's JSON (the
# schedule's k and zeta, positive rates, peaks), a budget too small fails with the budget message, bad arguments
# exit 2; where python3 imports torch and torchvision, torch_patchgd.py on the same configuration and
# bench/gpu/run.sh --quick print the side-by-side table.
set -u
build=${PGD_BUILD:-build}
bin=$build/bench/patchgd_bench
tmp=$(mktemp -d "${TMPDIR:-/tmp}/it_bench_patchgd.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
[ -x "$bin" ] || fail "$bin is not built"
tiny=(--arch resnet18 --fit 256 --patch 64 --batch 2 --s 16 --head-width 16 --batches 1 --warmup 0)

# 4 x 4 cells at sampling 0.1: k = ceil(1.6) = 2, zeta = 16 / 2 = 8 (docs/schedule.md)
"$bin" "${tiny[@]}" --threads 1 --json >"$tmp/pgd.json" 2>"$tmp/pgd.err" \
  || { cat "$tmp/pgd.err"; fail "patchgd_bench"; }
python3 - "$tmp/pgd.json" <<'EOF' || fail "patchgd_bench's JSON"
import json, sys
r = json.load(open(sys.argv[1]))
assert (r["side"], r["grid"], r["k"], r["zeta"], r["batch"]) == ("pgd", 4, 2, 8, 2), r
for f in ("train_images_per_s", "infer_images_per_s", "train_ms", "infer_ms", "train_peak_mib", "infer_peak_mib"):
    assert r[f] > 0, (f, r)
assert r["train_peak_mib"] >= r["infer_peak_mib"], r
EOF
"$bin" "${tiny[@]}" --threads 1 --mem-gb 0.05 >"$tmp/small.out" 2>&1
[ $? = 1 ] && grep -q 'over the budget' "$tmp/small.out" \
  || { cat "$tmp/small.out"; fail "a 50 MB budget: exit 1, the budget message"; }
# --batch 0: the largest batch the memory plan fits into the cap: it runs within the cap, one more does not
picked=$("$bin" "${tiny[@]}" --batch 0 --mem-gb 0.2 --batches 0 | sed -n 's/^batch \([0-9]*\) (k 2, zeta 8)$/\1/p')
[ -n "$picked" ] && [ "$picked" -ge 1 ] || fail "--batch 0 at 0.2 GiB: no batch picked"
"$bin" "${tiny[@]}" --batch "$picked" --mem-gb 0.2 --threads 1 --json >"$tmp/plan.json" 2>"$tmp/plan.err" \
  || { cat "$tmp/plan.err"; fail "patchgd_bench at the picked batch $picked"; }
python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); assert r["train_peak_mib"] <= 204.8, r' \
  "$tmp/plan.json" || fail "the picked batch $picked: over 0.2 GiB"
"$bin" "${tiny[@]}" --batch $((picked + 1)) --mem-gb 0.2 --threads 1 >"$tmp/over.out" 2>&1
[ $? = 1 ] || { cat "$tmp/over.out"; fail "batch $((picked + 1)) fits 0.2 GiB: $picked was not the largest"; }
"$bin" "${tiny[@]}" --batch 0 --mem-gb 0.01 --batches 0 >"$tmp/none.out" 2>&1
[ $? = 1 ] && grep -q 'not even a batch of 1' "$tmp/none.out" || { cat "$tmp/none.out"; fail "--batch 0 at 0.01 GiB"; }
"$bin" --fit 300 --patch 64 >/dev/null 2>&1
[ $? = 2 ] || fail "a fit that is no multiple of the patch: exit 2"
"$bin" --sampling 0 >/dev/null 2>&1
[ $? = 2 ] || fail "sampling 0: exit 2"

if python3 -c 'import torch, torchvision' 2>/dev/null; then
  python3 bench/gpu/torch_patchgd.py "${tiny[@]}" --device cpu --precision fp32 --flops >"$tmp/torch.json" \
    2>"$tmp/torch.err" || { cat "$tmp/torch.err"; fail "torch_patchgd"; }
  python3 - "$tmp/torch.json" <<'EOF' || fail "torch_patchgd's JSON"
import json, sys
r = json.load(open(sys.argv[1]))
assert (r["side"], r["grid"], r["k"], r["zeta"], r["batch"]) == ("torch", 4, 2, 8, 2), r
assert r["train_images_per_s"] > 0 and r["infer_images_per_s"] > 0, r
assert r["train_flops_per_image"] > r["infer_flops_per_image"] > 0, r
EOF
  bash bench/gpu/run.sh --build "$build" --device cpu --precision fp32 --quick --batches 1 --mem-gb 0 \
    --out "$tmp/run" >"$tmp/run.out" 2>&1 || { cat "$tmp/run.out"; fail "run.sh --quick"; }
  grep -q '^resnet18 256/64 ' "$tmp/run.out" || { cat "$tmp/run.out"; fail "run.sh: the table row"; }
else
  echo "it_bench_patchgd: python3 cannot import torch: torch_patchgd.py and run.sh not run"
fi
echo "it_bench_patchgd: ok"
