#!/usr/bin/env bash
# run.sh: the project's PatchGD trainer beside a PyTorch PatchGD on the same device, one command, one table.
#
#   bash bench/gpu/run.sh [--build DIR] [--device cuda|cpu] [--precision bf16|fp32] [--mem-gb G] [--batches N]
#                         [--out DIR] [--quick]
#
# For each configuration (arch, fit, patch, batch) it runs build/bench/patchgd_bench (ours, fed from host memory)
# and bench/gpu/torch_patchgd.py (eager PyTorch, autocast, channels_last, the patches already on the device),
# both capped at --mem-gb (16) GiB, then prints training and inference images/s, their ratios, peak device
# memory and model FLOP utilisation (FLOPs per image counted by PyTorch's flop counter, over the device's
# measured matmul rate in the precision). Raw JSON lines and logs go to --out (BUILD/bench-gpu).
# The configurations: resnet50 4096/256, resnet50 2048/128, mobilenet_v2 4096/256, sampling 0.1, each at the
# largest batch our trainer's memory plan fits into the cap (patchgd_bench --batch 0; PGD_BENCH_B1..B3 set them),
# PyTorch at the same batch. --quick: resnet18 at 256/64, batch 2, for a plumbing run on a CPU.
# Exit status 1 when a run fails (its log says why: a batch over the cap fails with the budget message).
set -u
build=build device=cuda precision=bf16 mem=16 batches=3 out="" quick=0
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --precision) precision=$2; shift 2 ;;
    --mem-gb) mem=$2; shift 2 ;;
    --batches) batches=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    *) echo "usage: bench/gpu/run.sh [--build DIR] [--device cuda|cpu] [--precision bf16|fp32] [--mem-gb G]" \
         "[--batches N] [--out DIR] [--quick]" >&2; exit 2 ;;
  esac
done
out=${out:-$build/bench-gpu}
mkdir -p "$out"
[ -x "$build/bench/patchgd_bench" ] || { echo "run.sh: $build/bench/patchgd_bench is not built (make)" >&2; exit 1; }
python3 -c 'import torch, torchvision' 2>/dev/null || {
  echo "run.sh: python3 cannot import torch and torchvision" >&2
  exit 1
}

if [ "$quick" = 1 ]; then
  configs=("resnet18 256 64 2 16")
else
  configs=("resnet50 4096 256 ${PGD_BENCH_B1:-0} 256" "resnet50 2048 128 ${PGD_BENCH_B2:-0} 256"
           "mobilenet_v2 4096 256 ${PGD_BENCH_B3:-0} 256")
fi
results=$out/results.jsonl
: >"$results"
failed=0
peak=--peak
for c in "${configs[@]}"; do
  read -r arch fit patch batch s <<<"$c"
  if [ "$batch" = 0 ]; then # the largest that our memory plan fits into the cap
    batch=$("$build/bench/patchgd_bench" --arch "$arch" --fit "$fit" --patch "$patch" --s "$s" --head-width "$s" \
      --sampling 0.1 --device "$device" --precision "$precision" --mem-gb "$mem" --batch 0 --batches 0 |
      sed -n 's/^batch \([0-9]*\).*/\1/p')
    [ -n "$batch" ] || { echo "run.sh: $arch $fit/$patch: no batch fits $mem GiB" >&2; failed=1; continue; }
  fi
  common=(--arch "$arch" --fit "$fit" --patch "$patch" --batch "$batch" --s "$s" --head-width "$s" --sampling 0.1
          --batches "$batches" --device "$device" --precision "$precision" --mem-gb "$mem")
  tag=$arch-$fit-$patch-b$batch
  echo "run.sh: $tag: ours" >&2
  if ! "$build/bench/patchgd_bench" "${common[@]}" --json >"$out/$tag.pgd.json" 2>"$out/$tag.pgd.log"; then
    echo "run.sh: $tag: patchgd_bench failed: $(tail -1 "$out/$tag.pgd.log")" >&2
    failed=1
  fi
  echo "run.sh: $tag: PyTorch" >&2
  if ! python3 bench/gpu/torch_patchgd.py "${common[@]}" --flops $peak >"$out/$tag.torch.json" 2>"$out/$tag.torch.log"
  then
    echo "run.sh: $tag: torch_patchgd failed: $(tail -1 "$out/$tag.torch.log")" >&2
    failed=1
  fi
  peak="" # the matmul rate is the device's: measured once
  cat "$out/$tag.pgd.json" "$out/$tag.torch.json" >>"$results" 2>/dev/null
done

python3 - "$results" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
peak = next((r["matmul_peak_tflops"] for r in rows if "matmul_peak_tflops" in r), None)
key = lambda r: (r["arch"], r["fit"], r["patch"], r["batch"])
by = {}
for r in rows:
    by.setdefault(key(r), {})[r["side"]] = r
dev = next((r.get("gpu") or r["device"] for r in rows if r["side"] == "torch"), "?")
prec = rows[0]["precision"] if rows else "?"
print("PatchGD, ours (pgd) against PyTorch on %s, %s; matmul peak %s TFLOP/s" % (
    dev, prec, "%.1f" % peak if peak else "?"))
hdr = ("config", "B", "k", "zeta", "train pgd", "torch", "x", "infer pgd", "torch", "x", "MiB pgd", "torch",
       "MFU pgd", "torch")
fmt = "%-22s %3s %4s %4s %9s %9s %5s %9s %9s %5s %8s %8s %7s %7s"
print(fmt % hdr)
for k, sides in by.items():
    p, t = sides.get("pgd"), sides.get("torch")
    any_ = p or t
    def g(r, f, spec="%.3g"):
        return spec % r[f] if r and f in r else "-"
    def ratio(f):
        return "%.2f" % (p[f] / t[f]) if p and t and t[f] > 0 else "-"
    def mfu(r):
        if not (r and t and peak and "train_flops_per_image" in t):
            return "-"
        return "%.1f%%" % (100 * r["train_images_per_s"] * t["train_flops_per_image"] / (peak * 1e12))
    print(fmt % ("%s %d/%d" % (k[0], k[1], k[2]), k[3], any_["k"], any_["zeta"], g(p, "train_images_per_s"),
                 g(t, "train_images_per_s"), ratio("train_images_per_s"), g(p, "infer_images_per_s"),
                 g(t, "infer_images_per_s"), ratio("infer_images_per_s"), g(p, "train_peak_mib", "%.0f"),
                 g(t, "train_peak_mib", "%.0f"), mfu(p), mfu(t)))
print("images/s per side; x = pgd / torch (target >= 1.3 for training and inference); MiB: peak device memory in "
      "training (target: pgd <= torch); MFU: training FLOPs (PyTorch's count) per second over the matmul peak")
EOF
exit $failed
