#!/usr/bin/env python3
"""torch_compare.py: our backends against PyTorch on whole models and on one PatchGD step.

For resnet50 and mobilenet_v2 (torchvision, random init, BN affine and running statistics randomised too) it
exports the weights as safetensors with torchvision's names (our checkpoint format), writes a fixed input and
labels, runs tests/gpu/gpu_compare on each of our backends (train-mode forward, mean cross-entropy, backward)
and compares logits, loss, every parameter gradient and the updated BN running statistics with PyTorch's.
mobilenet_v2's classifier dropout is given the mask our forward drew (gpu_compare writes it), so both sides
drop the same features.

Then one PatchGD step (Algorithm 1 of the paper, as trainer/patchgd.c runs it): backbone f = torchvision
ResNet with its fc mapping to s, head g = the PatchGD head (dropout 0, so no mask is involved), the same
weights, patches and sampled cells on both sides. Z-filling in train mode (BN batch statistics, in chunks of
max_patches, as the reference code), then the inner step: f with gradient on the sampled patches, their Z
cells overwritten, g on Z, mean cross-entropy, backward into g and through the fresh cells into f; then one
Adam update. Compared: Z after filling, the loss, every gradient of f and g, and the Adam update.

PyTorch runs in fp32 with TF32 off (cuDNN and matmul) on the GPU when there is one.

Tolerances (max-norm relative: the largest |ours - torch| of a tensor over the largest |torch| of it):
  LOGIT_TOL 1e-3  logits, loss, Z, BN running statistics: fp32 through ~50 layers in different orders.
  GRAD_TOL  5e-3  parameter gradients: the backward adds another ~50 layers of rounding, and BN in train mode
                  feeds every activation's error into every gradient of its channel.
  Adam updates: the first update is about lr * sign(grad), so an element whose gradient is ~0 may flip;
  at most UPDATE_FLIP_FRAC 1e-3 of a tensor's elements may differ by more than lr / 10.

Then the same two models in bf16 and fp16 (gpu_compare --precision): our CUDA backend against our CPU backend in
the same precision, whose rounding is the reference (trainer/cpu_half.c; PyTorch's autocast rounds elsewhere).
  HALF_TOL  bf16: 3e-2 logits / loss / statistics, 6e-2 gradients; fp16: 4e-3 and 1e-2. A conv's 16-bit output
            may round to the neighbouring value where the two backends' fp32 sums differ in the last bits (one
            unit: 2^-8 in bf16, 2^-11 in fp16), and ~50 layers carry that on. First estimates: the first GPU
            run prints the errors found.

--smoke runs only our side, on the CPU backend, without PyTorch or NumPy (weights from `gpu_compare init`,
inputs from Python's random), and checks that every output exists with the right shape and finite values:
it checks the plumbing on a machine without a GPU.

Usage: python3 tests/gpu/torch_compare.py --tool BUILD/tests/gpu/gpu_compare --work DIR [--backends cuda,cpu]
       python3 tests/gpu/torch_compare.py --tool BUILD/tests/gpu/gpu_compare --work DIR --smoke
Exit status 0 when every comparison is within its tolerance, 1 otherwise.
"""
import argparse
import array
import ast
import json
import math
import os
import random
import struct
import subprocess
import sys

LOGIT_TOL = 1e-3
GRAD_TOL = 5e-3
UPDATE_FLIP_FRAC = 1e-3
HALF_TOL = {"bf16": (3e-2, 6e-2), "fp16": (4e-3, 1e-2)}  # (logits, loss, statistics), gradients

NET_SIZE, NET_BATCH, NET_CLASSES = 64, 4, 10
PG = dict(arch="resnet50", patch=32, s=16, m=4, n=4, images=3, width=32, classes=3, max_patches=12, per_image=3,
          lr=1e-3)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# --- files without NumPy -------------------------------------------------------------------------------------

def write_npy(path, descr, shape, data):
    """A version 1.0 .npy file of raw little-endian bytes `data` (descr '<f4' or '|u1'), C order."""
    shape = tuple(int(d) for d in shape)
    dims = "(%d,)" % shape[0] if len(shape) == 1 else "(" + ", ".join("%d" % d for d in shape) + ")"
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, dims)
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    with open(path, "wb") as fh:
        fh.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + data)


def read_npy(path):
    """(shape, array('f')) of a float32 .npy file."""
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:6] != b"\x93NUMPY":
        raise ValueError("%s: not a .npy file" % path)
    major = raw[6]
    if major == 1:
        hlen, start = struct.unpack("<H", raw[8:10])[0], 10
    else:
        hlen, start = struct.unpack("<I", raw[8:12])[0], 12
    header = ast.literal_eval(raw[start:start + hlen].decode("latin1"))
    if header["descr"] != "<f4" or header["fortran_order"]:
        raise ValueError("%s: want little-endian float32 in C order, found %s" % (path, header))
    values = array.array("f")
    values.frombytes(raw[start + hlen:])
    return tuple(header["shape"]), values


def write_safetensors(path, tensors):
    """tensors: list of (name, dtype 'F32' or 'I64', shape, raw little-endian bytes)."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)) + text)
        for _, _, _, data in tensors:
            fh.write(data)


def read_safetensors(path):
    """The tensors of a safetensors file as write_safetensors takes them (the smoke run rewrites a file)."""
    with open(path, "rb") as fh:
        raw = fh.read()
    hlen = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + hlen])
    base, out = 8 + hlen, []
    for name, info in header.items():
        if name != "__metadata__":
            a, b = info["data_offsets"]
            out.append((name, info["dtype"], info["shape"], raw[base + a:base + b]))
    return out


def run_tool(tool, args):
    cmd = [tool] + [str(a) for a in args]
    print("  $ " + " ".join(cmd), flush=True)
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in res.stdout.splitlines():
        print("    " + line)
    if res.returncode != 0:
        raise RuntimeError("gpu_compare failed (exit %d)" % res.returncode)


def rand_f32(rng, count, scale=1.0):
    return array.array("f", (rng.uniform(-scale, scale) for _ in range(count))).tobytes()


# --- the comparisons (PyTorch) ---------------------------------------------------------------------------------

class Report:
    def __init__(self):
        self.failures = []
        self.rows = 0

    def check(self, what, ours, ref, tol):
        """Max-norm relative error of two float tensors (any shapes with the same element count)."""
        import torch
        o = torch.as_tensor(ours, dtype=torch.float64).flatten()
        r = torch.as_tensor(ref, dtype=torch.float64).flatten().to(o.device)
        if o.numel() != r.numel():
            self.fail(what, "element count %d, torch %d" % (o.numel(), r.numel()))
            return
        finite = bool(torch.isfinite(o).all())
        err = float((o - r).abs().max()) if o.numel() else 0.0
        ref_max = float(r.abs().max()) if r.numel() else 0.0
        rel = err / ref_max if ref_max > 0 else err
        ok = finite and rel <= tol
        self.rows += 1
        print("    %-52s max err %.3g rel %.3g (tol %.0e)%s" % (what, err, rel, tol, "" if ok else "  <-- FAIL"))
        if not ok:
            self.failures.append(what)

    def check_update(self, what, ours_delta, ref_delta, lr):
        import torch
        o = torch.as_tensor(ours_delta, dtype=torch.float64).flatten()
        r = torch.as_tensor(ref_delta, dtype=torch.float64).flatten().to(o.device)
        off = int(((o - r).abs() > lr / 10).sum())
        frac = off / max(1, o.numel())
        ok = frac <= UPDATE_FLIP_FRAC and bool(torch.isfinite(o).all())
        self.rows += 1
        if not ok or self.rows % 25 == 0:
            print("    %-52s %d of %d elements off by > lr/10%s" % (what, off, o.numel(), "" if ok else "  <-- FAIL"))
        if not ok:
            self.failures.append(what)

    def fail(self, what, why):
        print("    %-52s %s  <-- FAIL" % (what, why))
        self.failures.append(what)


def torch_setup():
    import torch
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.manual_seed(1234)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def randomise_bn(model, gen):
    import torch
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=gen) + 0.5)
                mod.bias.copy_(torch.rand(mod.bias.shape, generator=gen) * 0.4 - 0.2)
                mod.running_mean.copy_(torch.rand(mod.running_mean.shape, generator=gen) * 0.2 - 0.1)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=gen) + 0.5)


def export(state_dict, path):
    import torch
    tensors = []
    for name, t in state_dict.items():
        t = t.detach().cpu().contiguous()
        if t.dtype == torch.int64:
            tensors.append((name, "I64", list(t.shape), t.numpy().astype("<i8").tobytes()))
        else:
            tensors.append((name, "F32", list(t.shape), t.float().numpy().astype("<f4").tobytes()))
    write_safetensors(path, tensors)


def load(path):
    import numpy
    return numpy.load(path)


def mask_dropout(mask):
    """A module standing in for nn.Dropout: multiplies by a fixed mask (0 or 1/(1-p)), the one our forward drew."""
    import torch

    class MaskDropout(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mask", mask)

        def forward(self, x):
            return x * self.mask

    return MaskDropout()


def check_net(arch, tool, work, backends, device, rep):
    import torch
    import torch.nn.functional as F
    import torchvision
    print("\n== %s: train-mode forward + backward, %d x 3 x %d x %d, %d classes" % (arch, NET_BATCH, NET_SIZE, NET_SIZE,
                                                                                  NET_CLASSES))
    gen = torch.Generator().manual_seed(42)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=NET_CLASSES)
    randomise_bn(model, gen)
    d = os.path.join(work, arch)
    os.makedirs(d, exist_ok=True)
    export(model.state_dict(), os.path.join(d, "weights.safetensors"))
    x = torch.randn(NET_BATCH, 3, NET_SIZE, NET_SIZE, generator=gen)
    labels = torch.randint(0, NET_CLASSES, (NET_BATCH,), generator=gen)
    write_npy(os.path.join(d, "x.npy"), "<f4", x.shape, x.numpy().astype("<f4").tobytes())
    write_npy(os.path.join(d, "labels.npy"), "<f4", labels.shape, labels.float().numpy().astype("<f4").tobytes())
    for be in backends:
        out = os.path.join(d, be)
        os.makedirs(out, exist_ok=True)
        run_tool(tool, ["net", "--arch", arch, "--size", NET_SIZE, "--classes", NET_CLASSES, "--weights",
                        os.path.join(d, "weights.safetensors"), "--input", os.path.join(d, "x.npy"), "--labels",
                        os.path.join(d, "labels.npy"), "--backend", be, "--out", out])
    if arch == "mobilenet_v2":
        masks = [torch.from_numpy(load(os.path.join(d, be, "dropout_mask.npy"))) for be in backends]
        for be, m in zip(backends[1:], masks[1:]):
            if not torch.equal(m, masks[0]):
                rep.fail("%s dropout mask %s vs %s" % (arch, be, backends[0]), "the backends drew different masks")
        model.classifier[0] = mask_dropout(masks[0])
    model = model.to(device).train()
    logits = model(x.to(device))
    loss = F.cross_entropy(logits, labels.to(device))
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    bufs = {n: b for n, b in model.named_buffers() if n.endswith("running_mean") or n.endswith("running_var")}
    for be in backends:
        out = os.path.join(d, be)
        rep.check("%s %s logits" % (arch, be), load(os.path.join(out, "logits.npy")), logits.detach(), LOGIT_TOL)
        rep.check("%s %s loss" % (arch, be), load(os.path.join(out, "loss.npy")), loss.detach().reshape(1), LOGIT_TOL)
        for name, g in grads.items():
            rep.check("%s %s grad %s" % (arch, be, name), load(os.path.join(out, "grad.%s.npy" % name)), g, GRAD_TOL)
        for name, b in bufs.items():
            rep.check("%s %s %s" % (arch, be, name), load(os.path.join(out, "buffer.%s.npy" % name)), b, LOGIT_TOL)


def check_half(arch, tool, work, rep):
    """CUDA against CPU on check_net's weights and input, both in bf16 and in fp16."""
    d = os.path.join(work, arch)
    for prec, (tol, grad_tol) in HALF_TOL.items():
        print("\n== %s in %s: cuda against cpu" % (arch, prec))
        outs = {}
        for be in ("cuda", "cpu"):
            out = outs[be] = os.path.join(d, "%s-%s" % (be, prec))
            os.makedirs(out, exist_ok=True)
            run_tool(tool, ["net", "--arch", arch, "--size", NET_SIZE, "--classes", NET_CLASSES, "--weights",
                            os.path.join(d, "weights.safetensors"), "--input", os.path.join(d, "x.npy"), "--labels",
                            os.path.join(d, "labels.npy"), "--backend", be, "--precision", prec, "--out", out])
        for name in sorted(os.listdir(outs["cpu"])):
            if not name.endswith(".npy"):
                continue
            what = "%s %s %s" % (arch, prec, name[:-4])
            if not os.path.exists(os.path.join(outs["cuda"], name)):
                rep.fail(what, "missing on cuda")
                continue
            rep.check(what, load(os.path.join(outs["cuda"], name)), load(os.path.join(outs["cpu"], name)),
                      grad_tol if name.startswith("grad.") else tol)


def build_head(s, m, n, width, classes):
    import torch.nn as nn
    layers, h, w = [], m, n
    for i in range(4):
        stride = 1 if i == 0 else 2
        layers += [nn.Conv2d(s if i == 0 else width, width, 3, stride, 1), nn.ReLU(), nn.BatchNorm2d(width),
                   nn.Dropout2d(0.0)]
        h, w = (h + 2 - 3) // stride + 1, (w + 2 - 3) // stride + 1
    layers += [nn.Flatten(), nn.Linear(width * h * w, classes)]

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Sequential(*layers)

        def forward(self, z):
            return self.head(z)

    return Head()


def check_patchgd(tool, work, backends, device, rep):
    import torch
    import torch.nn.functional as F
    import torchvision
    c = PG
    mn, total = c["m"] * c["n"], c["images"] * c["m"] * c["n"]
    print("\n== PatchGD step: %s backbone, %d images of %dx%d patches of %d px, s %d, %d sampled per image" %
          (c["arch"], c["images"], c["m"], c["n"], c["patch"], c["s"], c["per_image"]))
    gen = torch.Generator().manual_seed(7)
    f = getattr(torchvision.models, c["arch"])(weights=None, num_classes=c["s"])
    g = build_head(c["s"], c["m"], c["n"], c["width"], c["classes"])
    randomise_bn(f, gen)
    randomise_bn(g, gen)
    d = os.path.join(work, "patchgd")
    os.makedirs(d, exist_ok=True)
    state = dict(f.state_dict())
    state.update(g.state_dict())
    export(state, os.path.join(d, "weights.safetensors"))
    pixels = torch.randint(0, 256, (total, c["patch"], c["patch"], 3), generator=gen, dtype=torch.uint8)
    cells = []
    for img in range(c["images"]):
        picks = torch.randperm(mn, generator=gen)[:c["per_image"]]
        cells += [img * mn + int(p) for p in picks]
    labels = torch.randint(0, c["classes"], (c["images"],), generator=gen)
    write_npy(os.path.join(d, "pixels.npy"), "|u1", pixels.shape, pixels.numpy().tobytes())
    write_npy(os.path.join(d, "cells.npy"), "<f4", (len(cells),), array.array("f", cells).tobytes())
    write_npy(os.path.join(d, "labels.npy"), "<f4", labels.shape, labels.float().numpy().astype("<f4").tobytes())
    for be in backends:
        out = os.path.join(d, be)
        os.makedirs(out, exist_ok=True)
        run_tool(tool, ["patchgd", "--arch", c["arch"], "--patch", c["patch"], "--s", c["s"], "--grid", c["m"], c["n"],
                        "--images", c["images"], "--width", c["width"], "--classes", c["classes"], "--max-patches",
                        c["max_patches"], "--lr", c["lr"], "--weights", os.path.join(d, "weights.safetensors"),
                        "--pixels", os.path.join(d, "pixels.npy"), "--cells", os.path.join(d, "cells.npy"),
                        "--labels", os.path.join(d, "labels.npy"), "--backend", be, "--out", out])

    f, g = f.to(device).train(), g.to(device).train()
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    x = ((pixels.to(device).float() / 255.0).permute(0, 3, 1, 2) - mean) / std  # the CPU's formula, in fp32
    z = torch.zeros(c["images"], c["s"], mn, device=device)
    with torch.no_grad():  # Algorithm 2, BN in train mode, chunks of max_patches in cell order
        for start in range(0, total, c["max_patches"]):
            idx = torch.arange(start, min(total, start + c["max_patches"]), device=device)
            z[idx // mn, :, idx % mn] = f(x[idx])
    z_filled = z.clone()
    params_before = {("f", n): p.detach().clone() for n, p in f.named_parameters()}
    params_before.update({("g", n): p.detach().clone() for n, p in g.named_parameters()})
    # Algorithm 1, one inner step: fresh features of the sampled patches replace their Z cells.
    idx = torch.tensor(cells, device=device)
    feats = f(x[idx])
    zs = z.clone()
    zs[idx // mn, :, idx % mn] = feats
    logits = g(zs.view(c["images"], c["s"], c["m"], c["n"]))
    loss = F.cross_entropy(logits, labels.to(device))
    loss.backward()
    grads = {("f", n): p.grad.detach().clone() for n, p in f.named_parameters()}
    grads.update({("g", n): p.grad.detach().clone() for n, p in g.named_parameters()})
    opt = torch.optim.Adam(list(f.parameters()) + list(g.parameters()), lr=c["lr"])
    opt.step()
    updates = {("f", n): p.detach() - params_before[("f", n)] for n, p in f.named_parameters()}
    updates.update({("g", n): p.detach() - params_before[("g", n)] for n, p in g.named_parameters()})

    for be in backends:
        out = os.path.join(d, be)
        rep.check("patchgd %s Z after filling" % be, load(os.path.join(out, "z.npy")),
                  z_filled.view(c["images"], c["s"], c["m"], c["n"]), LOGIT_TOL)
        rep.check("patchgd %s loss" % be, load(os.path.join(out, "loss.npy")), loss.detach().reshape(1), LOGIT_TOL)
        for (net, name), gr in grads.items():
            rep.check("patchgd %s grad %s" % (be, name), load(os.path.join(out, "grad.%s.npy" % name)), gr, GRAD_TOL)
        for (net, name), up in updates.items():
            after = torch.from_numpy(load(os.path.join(out, "param.%s.npy" % name))).to(device)
            rep.check_update("patchgd %s Adam update %s" % (be, name), after - params_before[(net, name)], up,
                             c["lr"])


# --- the smoke run: our side only, no PyTorch --------------------------------------------------------------------

def expect(path, shape, what):
    got, values = read_npy(path)
    if tuple(shape) != tuple(got):
        raise RuntimeError("%s: shape %s, want %s" % (path, got, shape))
    if not all(math.isfinite(v) for v in values):
        raise RuntimeError("%s: non-finite values" % path)
    print("    ok  %-40s %s" % (what, list(got)))
    return values


def smoke(tool, work):
    rng = random.Random(5)
    print("== smoke: gpu_compare on the cpu backend (no PyTorch): plumbing only")
    for arch in ("resnet18", "mobilenet_v2"):
        d = os.path.join(work, "smoke_" + arch)
        os.makedirs(d, exist_ok=True)
        w = os.path.join(d, "weights.safetensors")
        run_tool(tool, ["init", "--arch", arch, "--size", 32, "--classes", 5, "--out", w, "--backend", "cpu"])
        tensors = read_safetensors(w)  # rewritten by the writer the PyTorch export uses, in another order
        write_safetensors(w, sorted(tensors, reverse=True))
        print("    rewrote %d tensors (%s) with write_safetensors" % (len(tensors), ", ".join(
            sorted(set(t[1] for t in tensors)))))
        write_npy(os.path.join(d, "x.npy"), "<f4", (2, 3, 32, 32), rand_f32(rng, 2 * 3 * 32 * 32))
        write_npy(os.path.join(d, "labels.npy"), "<f4", (2,), array.array("f", [1, 4]).tobytes())
        run_tool(tool, ["net", "--arch", arch, "--size", 32, "--classes", 5, "--weights", w, "--input",
                        os.path.join(d, "x.npy"), "--labels", os.path.join(d, "labels.npy"), "--backend", "cpu",
                        "--out", d])
        expect(os.path.join(d, "logits.npy"), (2, 5), arch + " logits")
        loss = expect(os.path.join(d, "loss.npy"), (1,), arch + " loss")[0]
        if not 0 < loss < 20:
            raise RuntimeError("%s: implausible loss %g" % (arch, loss))
        if arch == "resnet18":  # bf16 on the CPU: the precision reaches the backend and rounds (train-mode BN over
            # 2 images x 1 x 1 cells in the last stage turns small differences into large ones: no bound on size)
            h = os.path.join(d, "bf16")
            os.makedirs(h, exist_ok=True)
            run_tool(tool, ["net", "--arch", arch, "--size", 32, "--classes", 5, "--weights", w, "--input",
                            os.path.join(d, "x.npy"), "--labels", os.path.join(d, "labels.npy"), "--backend", "cpu",
                            "--precision", "bf16", "--out", h])
            full = read_npy(os.path.join(d, "logits.npy"))[1]
            half = expect(os.path.join(h, "logits.npy"), (2, 5), arch + " bf16 logits")
            diff = max(abs(a - b) for a, b in zip(full, half)) / max(abs(a) for a in full)
            print("    bf16 logits against fp32: max-norm relative difference %.3g" % diff)
            if not diff > 0:
                raise RuntimeError("bf16 logits equal the fp32 ones: the precision did not reach the backend")
        fc = "fc" if arch.startswith("resnet") else "classifier.1"
        expect(os.path.join(d, "grad.%s.weight.npy" % fc), (5, 512 if arch == "resnet18" else 1280), arch + " fc grad")
        expect(os.path.join(d, "grad.conv1.weight.npy" if arch == "resnet18" else "grad.features.0.0.weight.npy"),
               (64, 3, 7, 7) if arch == "resnet18" else (32, 3, 3, 3), arch + " first conv grad")
        if arch == "mobilenet_v2":
            mask = expect(os.path.join(d, "dropout_mask.npy"), (2, 1280), arch + " dropout mask")
            kept = sum(1 for v in mask if v != 0) / len(mask)
            if not 0.7 < kept < 0.9 or any(v not in (0.0, array.array("f", [1 / 0.8])[0]) for v in mask):
                raise RuntimeError("dropout mask: kept fraction %.3f or values not in {0, 1/(1-p)}" % kept)
    d = os.path.join(work, "smoke_patchgd")
    os.makedirs(d, exist_ok=True)
    w = os.path.join(d, "weights.safetensors")
    m = n = 3
    run_tool(tool, ["init", "--arch", "resnet18", "--patch", 32, "--s", 8, "--grid", m, n, "--width", 16,
                    "--classes", 3, "--out", w, "--backend", "cpu"])
    total = 2 * m * n
    write_npy(os.path.join(d, "pixels.npy"), "|u1", (total, 32, 32, 3),
              bytes(rng.randrange(256) for _ in range(total * 32 * 32 * 3)))
    write_npy(os.path.join(d, "cells.npy"), "<f4", (4,), array.array("f", [0, 5, 9, 16]).tobytes())
    write_npy(os.path.join(d, "labels.npy"), "<f4", (2,), array.array("f", [2, 0]).tobytes())
    run_tool(tool, ["patchgd", "--arch", "resnet18", "--patch", 32, "--s", 8, "--grid", m, n, "--images", 2,
                    "--width", 16, "--classes", 3, "--max-patches", 6, "--weights", w, "--pixels",
                    os.path.join(d, "pixels.npy"), "--cells", os.path.join(d, "cells.npy"), "--labels",
                    os.path.join(d, "labels.npy"), "--backend", "cpu", "--out", d])
    expect(os.path.join(d, "z.npy"), (2, 8, m, n), "patchgd Z")
    expect(os.path.join(d, "loss.npy"), (1,), "patchgd loss")
    expect(os.path.join(d, "grad.head.17.weight.npy"), (3, 16), "patchgd head classifier grad")
    expect(os.path.join(d, "grad.layer1.0.conv1.weight.npy"), (64, 64, 3, 3), "patchgd backbone grad")
    expect(os.path.join(d, "param.fc.weight.npy"), (8, 512), "patchgd updated backbone fc")
    print("smoke: all outputs present, shaped and finite")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tool", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--backends", default="cuda,cpu")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    if args.smoke:
        return smoke(args.tool, args.work)
    backends = [b for b in args.backends.split(",") if b]
    device = torch_setup()
    import torch
    print("torch %s on %s%s" % (torch.__version__, device,
                                " (%s)" % torch.cuda.get_device_name(0) if device.type == "cuda" else ""))
    rep = Report()
    for arch in ("resnet50", "mobilenet_v2"):
        check_net(arch, args.tool, args.work, backends, device, rep)
    check_patchgd(args.tool, args.work, backends, device, rep)
    if "cuda" in backends and "cpu" in backends:
        for arch in ("resnet50", "mobilenet_v2"):
            check_half(arch, args.tool, args.work, rep)
    else:
        print("\n(bf16 / fp16: needs both the cuda and the cpu backend; skipped)")
    print("\ntorch_compare: %d comparisons, %d failed%s" % (rep.rows, len(rep.failures),
                                                         (": " + ", ".join(rep.failures[:20])) if rep.failures else ""))
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
