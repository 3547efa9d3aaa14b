#!/usr/bin/env python3
"""torch_compare.py: our backends against PyTorch on whole models and on PatchGD's inner steps.

For resnet50 and mobilenet_v2 (torchvision, random init, BN affine and running statistics randomised too) it
exports the weights as safetensors with torchvision's names (our checkpoint format), writes a fixed input and
labels, runs tests/gpu/gpu_compare on each of our backends (forward, mean cross-entropy, backward), once with BN
in train mode (batch statistics) and once frozen (running statistics, as PyTorch's eval() on the BN modules),
and compares logits, loss, every parameter gradient and (train mode) the updated BN running statistics with
PyTorch's. mobilenet_v2's classifier dropout is given the mask our forward drew (gpu_compare writes it), so both
sides drop the same features.

Then PatchGD's Z-filling and 3 inner steps (Algorithm 1 of the paper, as trainer/patchgd.c runs it): backbone
f = torchvision ResNet with its fc mapping to s, head g = the PatchGD head (dropout 0, so no mask is involved),
the same weights, patches and sampled cells on both sides. Z-filling in train mode (BN batch statistics, in
chunks of max_patches, as the reference code), then each inner step: f with gradient on its sampled patches
(distinct within an image over the steps), their Z cells overwritten (the next step sees them), g on Z, mean
cross-entropy, backward into g and through the fresh cells into f, the gradients adding up; then one Adam update
with their mean. Compared: Z after filling, each step's loss, every gradient of f and g, and the Adam update.

The reference is PyTorch in fp64 (TF32 off), on the GPU when there is one; PyTorch in fp32 runs beside it, and
its own distance from fp64 is printed next to ours. Random deep nets with train-mode BN over few values are badly
conditioned: fp32 rounding alone moves gradients by ~0.5% (L2) and single elements by several percent, and a
pre-activation within ~1e-5 of a ReLU kink flips with the summation order, changing every gradient upstream of
it by ~0.5%. With frozen BN the same nets are well conditioned (our gradients within ~4e-6 of fp64). So:
  LOGIT_TOL 1e-3  logits, loss, Z, BN running statistics (forward values): max-norm relative error (the
                  largest |ours - ref| over the largest |ref|) against fp64, within max(LOGIT_TOL, 3 x PyTorch
                  fp32's own) (the later inner steps' losses go through Z cells from train-mode BN).
  GRAD_TOL  5e-2  BN in train mode, and the PatchGD steps: each parameter gradient's L2 relative error
                  ||ours - ref|| / ||ref|| against fp64, within max(GRAD_TOL, 3 x PyTorch fp32's own). A wrong
                  formula or wiring is off by O(1).
  FROZEN_GRAD_TOL 1e-3  the same with frozen BN: here even BN's eps taken as 2e-5 instead of 1e-5 is caught.
  A gradient that is 0 in exact arithmetic (a bias feeding a train-mode BN through a linear map: ||ref|| <=
  ZERO_REF of all gradients' norm) must be as small in ours (<= ZERO_OURS of that norm).
  ADAM_TOL  1e-3  PatchGD's Adam update against PyTorch's Adam applied, in fp64, to our own gradients
                  from the same weights: every element within ADAM_TOL x lr (the update rule alone, apart from
                  the gradients' rounding, which GRAD_TOL judges).

Last, both models in bf16 and fp16 (gpu_compare --precision), BN frozen (in train mode a 16-bit whole-model
comparison means nothing: moving the input by one unit in its last place changes the gradients by 50-100%): our
CUDA backend against our CPU backend in the same precision, whose rounding (trainer/cpu_half.c) is the
reference; PyTorch's autocast rounds at other places. fp16 scales the loss (FP16_LOSS_SCALE) as training does, or
MobileNetV2's gradients underflow. Even frozen, the 16-bit nets magnify a difference in the last bits of one
fp32 sum (a conv output rounds to the neighbouring 16-bit value) through ~50 layers, so the CPU runs a second
time on the input moved by one unit in the last place; the tolerances are max(HALF_TOL, 3 x that
sensitivity), printed, for forward values (max-norm) and gradients (L2). Measured on the CPU: resnet50 bf16
5.0e-3 / 0.25, fp16 8.8e-4 / 7.0e-2; mobilenet_v2 bf16 1.8e-3 / 4.8e-2, fp16 3.0e-4 / 2.1e-2. The op suite
(tests/test_gpu_ops.c) checks each 16-bit op to one unit; this checks that whole models agree.

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
import copy
import json
import math
import os
import random
import struct
import subprocess
import sys

LOGIT_TOL = 1e-3
GRAD_TOL = 5e-2
FROZEN_GRAD_TOL = 1e-3
ZERO_REF, ZERO_OURS = 1e-13, 1e-5
ADAM_TOL = 1e-3
HALF_TOL = {"bf16": (1e-2, 6e-2), "fp16": (2e-3, 1e-2)}  # floors: forward values (max-norm), gradients (L2)
FP16_LOSS_SCALE = {"resnet50": 1024, "mobilenet_v2": 65536}  # no gradient overflows, few underflow

NET_SIZE, NET_BATCH, NET_CLASSES = 64, 4, 10
PG = dict(arch="resnet50", patch=32, s=16, m=4, n=4, images=3, width=32, classes=3, max_patches=12, per_image=3,
          steps=3, lr=1e-3)
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

def as64(t):
    import torch
    return torch.as_tensor(t, dtype=torch.float64).flatten()


def l2_rel(ours, ref):
    """||ours - ref|| / ||ref|| of two float64 vectors on one device (ref not all zero)."""
    return float((ours - ref).norm() / ref.norm())


def max_rel(ours, ref):
    """Max-norm relative error of two float64 vectors."""
    m = float(ref.abs().max())
    err = float((ours - ref).abs().max())
    return err / m if m > 0 else err


class Report:
    def __init__(self):
        self.failures = []
        self.rows = 0

    def row(self, what, ok, text):
        self.rows += 1
        print("    %-52s %s%s" % (what, text, "" if ok else "  <-- FAIL"))
        if not ok:
            self.failures.append(what)

    def same_size(self, what, o, r):
        if o.numel() == r.numel():
            return True
        self.row(what, False, "element count %d, reference %d" % (o.numel(), r.numel()))
        return False

    def check(self, what, ours, ref, tol, ref32=None):
        """A forward value: max-norm relative error (any shapes with the same element count); with ref32 (PyTorch
        fp32's, when ref is fp64) within max(tol, 3 x its own)."""
        r = as64(ref)
        o = as64(ours).to(r.device)
        if not self.same_size(what, o, r):
            return
        err = float((o - r).abs().max()) if o.numel() else 0.0
        ref_max = float(r.abs().max()) if r.numel() else 0.0
        rel = err / ref_max if ref_max > 0 else err
        own = ""
        if ref32 is not None:
            rel32 = max_rel(as64(ref32).to(r.device), r)
            tol = max(tol, 3 * rel32)
            own = ", PyTorch fp32 %.3g" % rel32
        ok = bool(torch_isfinite(o)) and rel <= tol
        self.row(what, ok, "max err %.3g rel %.3g%s (tol %.1e)" % (err, rel, own, tol))

    def check_grad(self, what, ours, ref, ref32, scale, tol):
        """A gradient against fp64 (ref), PyTorch fp32's (ref32) for its own error; scale: all gradients' norm."""
        r = as64(ref)
        o = as64(ours).to(r.device)
        if not self.same_size(what, o, r):
            return
        finite = bool(torch_isfinite(o))
        if float(r.norm()) <= ZERO_REF * scale:
            size = float(o.norm()) / scale
            self.row(what, finite and size <= ZERO_OURS, "0 in exact arithmetic: ours %.2g of the gradients' norm "
                     "(tol %.0e)" % (size, ZERO_OURS))
            return
        rel, rel32 = l2_rel(o, r), l2_rel(as64(ref32).to(r.device), r)
        tol = max(tol, 3 * rel32)
        self.row(what, finite and rel <= tol, "L2 rel %.3g, PyTorch fp32 %.3g (tol %.1e)" % (rel, rel32, tol))

    def check_l2(self, what, ours, ref, tol):
        """A gradient against another run of ours (cuda against cpu): L2 relative error."""
        r = as64(ref)
        o = as64(ours).to(r.device)
        if not self.same_size(what, o, r):
            return
        if float(r.norm()) == 0.0:
            self.row(what, bool(torch_isfinite(o)) and float(o.norm()) == 0.0, "reference all 0, ours norm %.3g"
                     % float(o.norm()))
            return
        rel = l2_rel(o, r)
        self.row(what, bool(torch_isfinite(o)) and rel <= tol, "L2 rel %.3g (tol %.0e)" % (rel, tol))

    def fail(self, what, why):
        self.row(what, False, why)


def torch_isfinite(t):
    import torch
    return torch.isfinite(t).all()


def grad_scale(grads):
    """The norm of all gradients together (fp64)."""
    return math.sqrt(sum(float(as64(g).norm()) ** 2 for g in grads))


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


def net_args(arch, d, be, out, bn, precision="fp32", x="x.npy"):
    return ["net", "--arch", arch, "--size", NET_SIZE, "--classes", NET_CLASSES, "--weights",
            os.path.join(d, "weights.safetensors"), "--input", os.path.join(d, x), "--labels",
            os.path.join(d, "labels.npy"), "--bn", bn, "--backend", be, "--precision", precision, "--out", out]


def check_net(arch, tool, work, backends, device, rep):
    """The model with random weights, on each backend and in PyTorch, with BN in train mode and frozen."""
    import torch
    import torchvision
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
    for bn in ("train", "frozen"):
        print("\n== %s: forward (BN %s) + backward, %d x 3 x %d x %d, %d classes" % (
            arch, "batch statistics" if bn == "train" else "frozen: running statistics", NET_BATCH, NET_SIZE,
            NET_SIZE, NET_CLASSES))
        outs = {}
        for be in backends:
            out = outs[be] = os.path.join(d, be if bn == "train" else be + "-frozen")
            os.makedirs(out, exist_ok=True)
            run_tool(tool, net_args(arch, d, be, out, bn))
        compare_net(arch, model, x, labels, bn, outs, device, rep)


def compare_net(arch, model, x, labels, bn, outs, device, rep):
    """PyTorch's forward + backward of model (fp64 the reference, fp32 for scale) against our runs in outs."""
    import torch
    import torch.nn.functional as F
    model = copy.deepcopy(model)
    if arch == "mobilenet_v2":  # the mask our forward drew, the same on every backend
        masks = {be: torch.from_numpy(load(os.path.join(out, "dropout_mask.npy"))) for be, out in outs.items()}
        first = next(iter(masks.values()))
        for be, m in masks.items():
            if not torch.equal(m, first):
                rep.fail("%s dropout mask %s" % (arch, be), "the backends drew different masks")
        model.classifier[0] = mask_dropout(first)
    ref = {}
    for dtype in (torch.float64, torch.float32):  # fp64: the reference; fp32: PyTorch's own rounding, for scale
        m = copy.deepcopy(model).to(device=device, dtype=dtype).train()
        if bn == "frozen":
            for mod in m.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.eval()
        logits = m(x.to(device=device, dtype=dtype))
        loss = F.cross_entropy(logits, labels.to(device))
        loss.backward()
        ref[dtype] = dict(logits=logits.detach(), loss=loss.detach().reshape(1),
                          grads={n: p.grad for n, p in m.named_parameters()},
                          bufs={n: b for n, b in m.named_buffers() if n.endswith(("running_mean", "running_var"))})
    r64, r32 = ref[torch.float64], ref[torch.float32]
    scale = grad_scale(r64["grads"].values())
    tol = GRAD_TOL if bn == "train" else FROZEN_GRAD_TOL
    for be, out in outs.items():
        what = "%s %s%s" % (arch, be, "" if bn == "train" else " frozen")
        rep.check(what + " logits", load(os.path.join(out, "logits.npy")), r64["logits"], LOGIT_TOL, r32["logits"])
        rep.check(what + " loss", load(os.path.join(out, "loss.npy")), r64["loss"], LOGIT_TOL, r32["loss"])
        for name, g in r64["grads"].items():
            rep.check_grad("%s grad %s" % (what, name), load(os.path.join(out, "grad.%s.npy" % name)), g,
                           r32["grads"][name], scale, tol)
        for name, b in r64["bufs"].items():
            rep.check("%s %s" % (what, name), load(os.path.join(out, "buffer.%s.npy" % name)), b, LOGIT_TOL,
                      r32["bufs"][name])


def check_half(arch, tool, work, backends, rep):
    """Both models in bf16 and fp16 with frozen BN: each backend once, and the CPU once more on the input moved by
    one unit in the last place, whose distance from the CPU's first run (the sensitivity) sets the tolerances."""
    import numpy
    d = os.path.join(work, arch)
    x = load(os.path.join(d, "x.npy"))
    away = numpy.where(numpy.arange(x.size).reshape(x.shape) % 2 == 0, numpy.float32(numpy.inf),
                       numpy.float32(-numpy.inf)).astype(numpy.float32)
    xn = numpy.nextafter(x, away).astype("<f4")
    write_npy(os.path.join(d, "x-ulp.npy"), "<f4", xn.shape, xn.tobytes())
    for prec, floors in HALF_TOL.items():
        scale = FP16_LOSS_SCALE[arch] if prec == "fp16" else 1
        print("\n== %s in %s, BN frozen%s: cuda against cpu" % (arch, prec, ", loss x %d" % scale if scale > 1 else ""))
        outs = {}
        for be, xf in [(b, "x.npy") for b in backends] + [("cpu-ulp", "x-ulp.npy")]:
            out = outs[be] = os.path.join(d, "%s-%s" % (be, prec))
            os.makedirs(out, exist_ok=True)
            run_tool(tool, net_args(arch, d, be.split("-")[0], out, "frozen", prec, xf) + ["--loss-scale", scale])
        names = sorted(n for n in os.listdir(outs["cpu"]) if n.endswith(".npy") and n.startswith(("grad.", "logits",
                                                                                                    "loss")))
        files = {be: {n: as64(load(os.path.join(out, n))) if os.path.exists(os.path.join(out, n)) else None
                      for n in names} for be, out in outs.items()}
        ref, near = files["cpu"], files["cpu-ulp"]
        sens = [max((max_rel(near[n], ref[n]) for n in names if not n.startswith("grad.")), default=0.0),
                max((l2_rel(near[n], ref[n]) for n in names if n.startswith("grad.") and float(ref[n].norm()) > 0),
                    default=0.0)]
        tols = [max(floors[k], 3 * sens[k]) for k in (0, 1)]
        print("    sensitivity (the cpu on the input one unit away): forward %.3g (max-norm), gradients %.3g (L2): "
              "tolerances %.2g and %.2g" % (sens[0], sens[1], tols[0], tols[1]))
        for be in [b for b in outs if b not in ("cpu", "cpu-ulp")]:
            for n in names:
                what = "%s %s %s %s" % (arch, prec, be, n[:-4])
                if files[be][n] is None:
                    rep.fail(what, "missing")
                elif n.startswith("grad."):
                    rep.check_l2(what, files[be][n], ref[n], tols[1])
                else:
                    rep.check(what, files[be][n], ref[n], tols[0])


def build_head(s, m, n, width, classes):
    """The PatchGD head with dropout 0: bench/gpu/torch_patchgd.py's (one definition for both)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "gpu"))
    import torch_patchgd
    return torch_patchgd.build_head(s, m, n, width, classes)


def check_patchgd(tool, work, backends, device, rep):
    import torch
    import torch.nn.functional as F
    import torchvision
    c = PG
    mn, total = c["m"] * c["n"], c["images"] * c["m"] * c["n"]
    print("\n== PatchGD: %s backbone, %d images of %dx%d patches of %d px, s %d; %d inner steps of %d cells per "
          "image" % (c["arch"], c["images"], c["m"], c["n"], c["patch"], c["s"], c["steps"], c["per_image"]))
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
    cells = [[] for _ in range(c["steps"])]  # per step; an image's cells all distinct, as the schedule draws them
    for img in range(c["images"]):
        picks = torch.randperm(mn, generator=gen)[:c["steps"] * c["per_image"]].view(c["steps"], c["per_image"])
        for j in range(c["steps"]):
            cells[j] += [img * mn + int(p) for p in picks[j]]
    labels = torch.randint(0, c["classes"], (c["images"],), generator=gen)
    write_npy(os.path.join(d, "pixels.npy"), "|u1", pixels.shape, pixels.numpy().tobytes())
    write_npy(os.path.join(d, "cells.npy"), "<f4", (c["steps"], len(cells[0])),
              array.array("f", [v for row in cells for v in row]).tobytes())
    write_npy(os.path.join(d, "labels.npy"), "<f4", labels.shape, labels.float().numpy().astype("<f4").tobytes())
    for be in backends:
        out = os.path.join(d, be)
        os.makedirs(out, exist_ok=True)
        run_tool(tool, ["patchgd", "--arch", c["arch"], "--patch", c["patch"], "--s", c["s"], "--grid", c["m"], c["n"],
                        "--images", c["images"], "--width", c["width"], "--classes", c["classes"], "--max-patches",
                        c["max_patches"], "--lr", c["lr"], "--weights", os.path.join(d, "weights.safetensors"),
                        "--pixels", os.path.join(d, "pixels.npy"), "--cells", os.path.join(d, "cells.npy"),
                        "--labels", os.path.join(d, "labels.npy"), "--backend", be, "--out", out])

    ref = {dtype: patchgd_reference(f, g, pixels, cells, labels, device, dtype)
           for dtype in (torch.float64, torch.float32)}
    r64, r32 = ref[torch.float64], ref[torch.float32]
    scale = grad_scale(r64["grads"].values())
    before = {name: t.detach().to(device=device, dtype=torch.float64) for name, t in state.items()}
    for be in backends:
        out = os.path.join(d, be)
        rep.check("patchgd %s Z after filling" % be, load(os.path.join(out, "z.npy")), r64["z"], LOGIT_TOL, r32["z"])
        rep.check("patchgd %s loss of each step" % be, load(os.path.join(out, "loss.npy")), r64["loss"], LOGIT_TOL,
                  r32["loss"])
        ours = {}
        for name, gr in r64["grads"].items():
            ours[name] = torch.from_numpy(load(os.path.join(out, "grad.%s.npy" % name))).to(device, torch.float64)
            rep.check_grad("patchgd %s grad %s" % (be, name), ours[name], gr, r32["grads"][name], scale, GRAD_TOL)
        # the update rule: PyTorch's Adam on our gradients (their mean over the steps), from the same weights
        params = {n: torch.nn.Parameter(before[n].clone()) for n in ours}
        for n, p in params.items():
            p.grad = ours[n].view_as(p) / c["steps"]
        torch.optim.Adam(list(params.values()), lr=c["lr"]).step()
        worst, worst_name = 0.0, ""
        for n, p in params.items():
            after = torch.from_numpy(load(os.path.join(out, "param.%s.npy" % n))).to(device, torch.float64)
            err = float((after.view_as(p) - p.detach()).abs().max()) / c["lr"]
            if not math.isfinite(err) or err > worst:
                worst, worst_name = err if math.isfinite(err) else math.inf, n
        rep.row("patchgd %s Adam update, %d tensors" % (be, len(params)), worst <= ADAM_TOL,
                "worst %s: %.3g x lr (tol %.0e)" % (worst_name, worst, ADAM_TOL))


def patchgd_reference(f, g, pixels, cells, labels, device, dtype):
    """PatchGD's Z-filling and inner steps (one per row of cells) in PyTorch in dtype, on copies of f and g: Z after
    filling, each step's loss, the gradients summed over the steps (named as our files: the backbone's own names,
    the head's "head.*")."""
    import torch
    import torch.nn.functional as F
    c = PG
    mn, total = c["m"] * c["n"], c["images"] * c["m"] * c["n"]
    f = copy.deepcopy(f).to(device=device, dtype=dtype).train()
    g = copy.deepcopy(g).to(device=device, dtype=dtype).train()
    mean = torch.tensor(MEAN, device=device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device, dtype=dtype).view(1, 3, 1, 1)
    x = ((pixels.to(device).to(dtype) / 255.0).permute(0, 3, 1, 2) - mean) / std
    z = torch.zeros(c["images"], c["s"], mn, device=device, dtype=dtype)
    with torch.no_grad():  # Algorithm 2, BN in train mode, chunks of max_patches in cell order
        for start in range(0, total, c["max_patches"]):
            idx = torch.arange(start, min(total, start + c["max_patches"]), device=device)
            z[idx // mn, :, idx % mn] = f(x[idx])
    z_filled = z.clone().view(c["images"], c["s"], c["m"], c["n"])
    # Algorithm 1, inner steps: fresh features of the sampled patches replace their Z cells (in the Z the next
    # step sees too); the gradients add up over the steps
    losses = []
    for row in cells:
        idx = torch.tensor(row, device=device)
        feats = f(x[idx])
        zs = z.clone()
        zs[idx // mn, :, idx % mn] = feats
        logits = g(zs.view(c["images"], c["s"], c["m"], c["n"]))
        loss = F.cross_entropy(logits, labels.to(device))
        loss.backward()
        losses.append(loss.detach())
        z[idx // mn, :, idx % mn] = feats.detach()
    grads = {n: p.grad.detach() for n, p in f.named_parameters()}
    grads.update({n: p.grad.detach() for n, p in g.named_parameters()})
    return dict(z=z_filled, loss=torch.stack(losses), grads=grads)


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
            # --bn frozen reaches the net (other logits); --loss-scale 1024 scales and unscales exactly (a power of 2)
            fz = os.path.join(d, "frozen")
            os.makedirs(fz, exist_ok=True)
            run_tool(tool, ["net", "--arch", arch, "--size", 32, "--classes", 5, "--weights", w, "--input",
                            os.path.join(d, "x.npy"), "--labels", os.path.join(d, "labels.npy"), "--backend", "cpu",
                            "--bn", "frozen", "--out", fz])
            if expect(os.path.join(fz, "logits.npy"), (2, 5), arch + " frozen-BN logits") == full:
                raise RuntimeError("--bn frozen gave the train-mode logits: the BN mode did not reach the net")
            sc = os.path.join(d, "scaled")
            os.makedirs(sc, exist_ok=True)
            run_tool(tool, ["net", "--arch", arch, "--size", 32, "--classes", 5, "--weights", w, "--input",
                            os.path.join(d, "x.npy"), "--labels", os.path.join(d, "labels.npy"), "--backend", "cpu",
                            "--loss-scale", 1024, "--out", sc])
            for name in sorted(n for n in os.listdir(d) if n.startswith("grad.")):
                if read_npy(os.path.join(sc, name)) != read_npy(os.path.join(d, name)):
                    raise RuntimeError("--loss-scale 1024: %s differs from the unscaled gradient" % name)
            print("    ok  frozen BN changes the logits; loss scale 1024 gives the same gradients, bit for bit")
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
    if "cpu" in backends:
        for arch in ("resnet50", "mobilenet_v2"):
            check_half(arch, args.tool, args.work, backends, rep)
    else:
        print("\n(bf16 / fp16: needs the cpu backend, the reference; skipped)")
    print("\ntorch_compare: %d comparisons, %d failed%s" % (rep.rows, len(rep.failures),
                                                         (": " + ", ".join(rep.failures[:20])) if rep.failures else ""))
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
