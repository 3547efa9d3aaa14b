#!/usr/bin/env python3
"""torch_patchgd.py: a PatchGD baseline in eager PyTorch, the same batches as bench/patchgd_bench.c.

The same configuration and the same work per batch as the project's trainer (bench/patchgd_bench.c, whose
comment says what a batch is): backbone f = torchvision's arch with its classifier mapping to s, head g = the
PatchGD head (4 conv 3x3 -> ReLU -> BN -> Dropout2d(0.2) blocks, strides 1, 2, 2, 2, then a linear layer: the
project's, torchvision's names), Adam. Per training batch: Z-filling of every cell in chunks of fill-chunk
patches (no gradient, BN in train mode), then zeta inner steps of k cells per image (the schedule's numbers:
k = ceil(sampling * cells), zeta = ceil(cells / k), the last step the rest), each a forward of f with gradient
on the sampled patches, their Z cells overwritten, g on Z, cross-entropy / zeta, backward; one optimizer step
per batch. Inference: Z-filling in eval mode, g, softmax to the host.

For the baseline's sake, as the benchmark asks: the patches are already on the device (uint8, normalised there
per forward, as our trainer does), torch.autocast(bf16) when --precision bf16 (fp32 master weights and Adam
state, like ours), channels_last for the backbone (--no-channels-last turns it off). Every timed batch ends with
a value on the host, so the device has finished it.

It prints one JSON object: images/s, ms per batch and peak device memory (torch.cuda.max_memory_allocated,
reset before each phase; on the CPU 0) for training and inference (--mem-gb G caps the process's CUDA memory at
G GiB, as ours is capped); with --flops the model FLOPs of one
training and one inference image (torch.utils.flop_counter: convolutions and matmuls, backward included), and
with --peak the measured bf16 (or fp32) matmul rate of the device (8192^3 on a GPU, median of 10), the two numbers
bench/gpu/run.sh turns into model FLOP utilisation.

Usage: python3 bench/gpu/torch_patchgd.py [--arch resnet50] [--fit 4096] [--patch 256] [--sampling 0.1]
       [--batch 4] [--s 256] [--head-width 256] [--classes 6] [--fill-chunk 64] [--batches 3] [--warmup 1]
       [--device cuda|cpu] [--precision fp32|bf16] [--no-channels-last] [--mem-gb G] [--flops] [--peak]
"""
import argparse
import contextlib
import json
import math
import sys
import time

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build_head(s, m, n, width, classes, dropout=0.0):
    """The PatchGD head (trainer/model_head.c) as torchvision-style modules, named head.0 .. head.17."""
    import torch.nn as nn
    layers, h, w = [], m, n
    for i in range(4):
        stride = 1 if i == 0 else 2
        layers += [nn.Conv2d(s if i == 0 else width, width, 3, stride, 1), nn.ReLU(), nn.BatchNorm2d(width),
                   nn.Dropout2d(dropout)]
        h, w = (h + 2 - 3) // stride + 1, (w + 2 - 3) // stride + 1
    layers += [nn.Flatten(), nn.Linear(width * h * w, classes)]

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Sequential(*layers)

        def forward(self, z):
            return self.head(z)

    return Head()


def frac_cells(frac, cells):
    """k of sampler/sched_config.c: ceil(frac * cells) (an exact product not rounded up), within 1..cells."""
    x = frac * cells
    r = round(x)
    v = r if abs(x - r) <= x * 2.0 ** -40 else math.ceil(x)
    return int(min(max(v, 1), cells))


class Bench:
    def __init__(self, a):
        import torch
        import torchvision
        self.a, self.torch = a, torch
        self.dev = torch.device(a.device)
        self.m = a.fit // a.patch
        self.cells = self.m * self.m
        self.k = frac_cells(a.sampling, self.cells)
        self.zeta = -(-self.cells // self.k)
        self.last_k = self.cells - (self.zeta - 1) * self.k
        torch.manual_seed(1)
        self.f = getattr(torchvision.models, a.arch)(weights=None, num_classes=a.s).to(self.dev)
        if a.channels_last:
            self.f = self.f.to(memory_format=torch.channels_last)
        self.g = build_head(a.s, self.m, self.m, a.head_width, a.classes, 0.2).to(self.dev)
        self.opt = torch.optim.Adam(list(self.f.parameters()) + list(self.g.parameters()), lr=1e-3)
        gen = torch.Generator().manual_seed(1)
        total = a.batch * self.cells
        self.pixels = torch.randint(0, 256, (total, a.patch, a.patch, 3), generator=gen, dtype=torch.uint8)
        self.pixels = self.pixels.to(self.dev)
        self.labels = (torch.arange(a.batch) % a.classes).to(self.dev)
        self.mean = torch.tensor(MEAN, device=self.dev).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=self.dev).view(1, 3, 1, 1)
        self.gen = torch.Generator().manual_seed(2)

    def autocast(self):
        if self.a.precision == "bf16":
            return self.torch.autocast(self.dev.type, dtype=self.torch.bfloat16)
        return contextlib.nullcontext()

    def patches(self, idx):
        x = (self.pixels[idx].permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        return x.contiguous(memory_format=self.torch.channels_last) if self.a.channels_last else x

    def fill(self):
        torch, a = self.torch, self.a
        z = torch.zeros(a.batch, a.s, self.cells, device=self.dev)
        total = a.batch * self.cells
        with torch.no_grad(), self.autocast():
            for start in range(0, total, a.fill_chunk):
                idx = torch.arange(start, min(total, start + a.fill_chunk), device=self.dev)
                z[idx // self.cells, :, idx % self.cells] = self.f(self.patches(idx)).float()
        return z

    def train_batch(self):
        torch, a = self.torch, self.a
        import torch.nn.functional as F
        self.f.train()
        self.g.train()
        z = self.fill()
        self.opt.zero_grad(set_to_none=True)
        order = torch.stack([torch.randperm(self.cells, generator=self.gen) for _ in range(a.batch)]).to(self.dev)
        base = (torch.arange(a.batch, device=self.dev) * self.cells).view(-1, 1)
        loss = None
        for step in range(self.zeta):
            k = self.last_k if step == self.zeta - 1 else self.k
            idx = (base + order[:, step * self.k:step * self.k + k]).reshape(-1)
            with self.autocast():
                feats = self.f(self.patches(idx)).float()
                zs = z.clone()
                zs[idx // self.cells, :, idx % self.cells] = feats
                logits = self.g(zs.view(a.batch, a.s, self.m, self.m))
            loss = F.cross_entropy(logits.float(), self.labels) / self.zeta
            loss.backward()
            z[idx // self.cells, :, idx % self.cells] = feats.detach()
        self.opt.step()
        return float(loss.detach())

    def infer_batch(self):
        torch = self.torch
        self.f.eval()
        self.g.eval()
        z = self.fill()
        with torch.no_grad(), self.autocast():
            probs = torch.softmax(self.g(z.view(self.a.batch, self.a.s, self.m, self.m)).float(), 1)
        return probs.cpu()

    def sync(self):
        if self.dev.type == "cuda":
            self.torch.cuda.synchronize()

    def time(self, one):
        torch, a = self.torch, self.a
        if self.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(a.warmup):
            one()
        self.sync()
        t0 = time.perf_counter()
        for _ in range(a.batches):
            one()
        self.sync()
        secs = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() / 2 ** 20 if self.dev.type == "cuda" else 0.0
        return a.batch * a.batches / secs, secs * 1e3 / a.batches, peak

    def flops(self, one):
        from torch.utils.flop_counter import FlopCounterMode
        counter = FlopCounterMode(display=False)
        with counter:
            one()
        return counter.get_total_flops() / self.a.batch


def matmul_peak(torch, dev, precision):
    """TFLOP/s of an n^3 matmul in the precision's format (n 8192 on a GPU, 2048 on the CPU): the median of 10
    after 3 warm-ups."""
    n = 8192 if dev.type == "cuda" else 2048
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    times = []
    for i in range(13):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        (a @ b).sum().item()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    times.sort()
    return 2 * n ** 3 / times[len(times) // 2] / 1e12


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--fit", type=int, default=4096)
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--sampling", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--s", type=int, default=256)
    ap.add_argument("--head-width", type=int, default=256)
    ap.add_argument("--classes", type=int, default=6)
    ap.add_argument("--fill-chunk", type=int, default=64)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    ap.add_argument("--mem-gb", type=float, default=0.0)
    ap.add_argument("--flops", action="store_true")
    ap.add_argument("--peak", action="store_true")
    a = ap.parse_args()
    if a.fit % a.patch or a.patch < 32 or not 0 < a.sampling <= 1 or a.batch < 1 or a.batches < 1:
        ap.error("fit must be a multiple of patch >= 32, 0 < sampling <= 1, batch and batches >= 1")
    import torch
    if a.device == "cuda" and not torch.cuda.is_available():
        print("torch_patchgd: no CUDA device (use --device cpu for a plumbing run)", file=sys.stderr)
        return 1
    torch.backends.cudnn.benchmark = True
    if a.device == "cuda" and a.mem_gb > 0:  # the same cap as ours: an allocation past it raises out-of-memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, a.mem_gb * 2 ** 30 /
                                                       torch.cuda.get_device_properties(0).total_memory))
    b = Bench(a)
    out = dict(side="torch", arch=a.arch, fit=a.fit, patch=a.patch, grid=b.m, k=b.k, zeta=b.zeta, batch=a.batch,
               device=a.device, precision=a.precision, channels_last=a.channels_last, torch=torch.__version__)
    if a.device == "cuda":
        out["gpu"] = torch.cuda.get_device_name(0)
    out["infer_images_per_s"], out["infer_ms"], out["infer_peak_mib"] = b.time(b.infer_batch)
    out["train_images_per_s"], out["train_ms"], out["train_peak_mib"] = b.time(b.train_batch)
    if a.flops:
        out["train_flops_per_image"] = b.flops(b.train_batch)
        out["infer_flops_per_image"] = b.flops(b.infer_batch)
    if a.peak:
        out["matmul_peak_tflops"] = matmul_peak(torch, b.dev, a.precision)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
