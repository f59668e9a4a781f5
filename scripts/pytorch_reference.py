"""PyTorch eager reference for `make bench`: the same networks as the worker's presets
(C, g, s, D, q), the same alternating C+S / D step, timed the same way, so that the Rust
worker's throughput can be compared with PyTorch on the same machine. Images (--dims 2:
SegAN's segmentor, squared error, one lesion class) and volumes (--dims 3: 3D C, g, D and q,
nnU-Net's 3D U-Net as s, cross-entropy plus soft Dice over 3 classes, --patch z,y,x).

Mirrors worker/src/nets (layer for layer) and worker/src/train/trainer.rs (losses, updates,
critic clipping). Prints a Markdown table row; --jsonl appends the measurement as JSON.
"""

import argparse
import json
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def leaky(x):
    return torch.maximum(x, 0.2 * x)


class ConvBlock(nn.Module):
    """conv -> (batchnorm) -> activation; bias only without batchnorm, as in the worker."""

    def __init__(self, cin, cout, k, stride, norm, act, dims=2):
        super().__init__()
        pad = k // 2 if k % 2 == 1 else (k - stride) // 2
        conv, bn = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
        self.conv = conv(cin, cout, k, stride, pad, bias=not norm)
        self.bn = bn(cout) if norm else None
        self.act = act

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.act == "leaky":
            return leaky(x)
        if self.act == "relu":
            return F.relu(x)
        return x


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a = ConvBlock(c, c, 3, 1, True, "leaky")
        self.b = ConvBlock(c, c, 3, 1, True, None)

    def forward(self, x):
        return leaky(x + self.b(self.a(x)))


class Compressor(nn.Module):
    def __init__(self, cin, width=8, cmax=32, f=16, k=3, dims=2):
        super().__init__()
        self.stem = ConvBlock(cin, width, 3, 1, False, "leaky", dims)
        downs, w = [], width
        for _ in range(int(math.log2(f))):
            n = min(2 * w, cmax)
            downs.append(ConvBlock(w, n, 4, 2, True, "leaky", dims))
            w = n
        self.downs = nn.ModuleList(downs)
        self.head = (nn.Conv2d if dims == 2 else nn.Conv3d)(w, k, 1)

    def forward(self, x):
        x = self.stem(x)
        for d in self.downs:
            x = d(x)
        return torch.tanh(self.head(x))


class Reconstructor(nn.Module):
    def __init__(self, k=3, width=8, gmax=32, f=16, out=1, dims=2):
        super().__init__()
        stages = int(math.log2(f))
        w = lambda s: min(width << (stages - s), gmax)  # noqa: E731
        self.entry = ConvBlock(k, w(0), 3, 1, True, "leaky", dims)
        self.ups = nn.ModuleList([ConvBlock(w(i), w(i + 1), 3, 1, True, "leaky", dims) for i in range(stages)])
        self.out = (nn.Conv2d if dims == 2 else nn.Conv3d)(w(stages), out, 3, 1, 1)

    def forward(self, b):
        x = self.entry(b)
        for u in self.ups:
            x = u(F.interpolate(x, scale_factor=2, mode="nearest"))
        return self.out(x)


class Segmentor(nn.Module):
    def __init__(self, cin, width=8, depth=3, res=1, out=1):
        super().__init__()
        w = lambda level: width << min(level, 3)  # noqa: E731
        self.downs, self.res = nn.ModuleList(), nn.ModuleList()
        ch = cin
        for level in range(depth):
            self.downs.append(ConvBlock(ch, w(level), 4, 2, level > 0, "leaky"))
            self.res.append(nn.ModuleList([Residual(w(level)) for _ in range(res)]))
            ch = w(level)
        self.ups = nn.ModuleList()
        for level in reversed(range(depth - 1)):
            self.ups.append(ConvBlock(ch, w(level), 3, 1, True, "relu"))
            ch = 2 * w(level)
        self.last = ConvBlock(ch, width, 3, 1, True, "relu")
        self.out = nn.Conv2d(width, out, 3, 1, 1)

    def forward(self, x):
        skips = []
        for d, rs in zip(self.downs, self.res):
            x = d(x)
            for r in rs:
                x = r(x)
            skips.append(x)
        skips.pop()
        for u in self.ups:
            x = torch.cat([u(F.interpolate(x, scale_factor=2, mode="nearest")), skips.pop()], 1)
        x = self.last(F.interpolate(x, scale_factor=2, mode="nearest"))
        return torch.sigmoid(self.out(x))


class UNet(nn.Module):
    """nnU-Net's 3D U-Net as the worker's nets/unet.rs: per level two conv 3^3 - instance norm -
    LeakyReLU(0.01) blocks, the first strided by the pooling plan; decoder upsamples to the
    skip's size, concatenates, two blocks; 1^3 conv; softmax (sigmoid for one class)."""

    def __init__(self, cin, sides, width=8, depth=3, out=1):
        super().__init__()
        plan, current = [[1, 1, 1]], list(sides)
        for _ in range(depth):
            strides = [2 if s % 2 == 0 and s // 2 >= 4 else 1 for s in current]
            current = [s // k for s, k in zip(current, strides)]
            plan.append(strides)
        w = lambda level: min(width << level, width * 10)  # noqa: E731

        def block(i, o, stride):
            return nn.ModuleList([nn.Conv3d(i, o, 3, stride, 1, bias=False), nn.InstanceNorm3d(o, affine=True)])

        self.encoder, ch = nn.ModuleList(), cin
        for level, strides in enumerate(plan):
            self.encoder.append(nn.ModuleList([block(ch, w(level), strides), block(w(level), w(level), 1)]))
            ch = w(level)
        self.decoder = nn.ModuleList()
        for level in reversed(range(len(plan) - 1)):
            self.decoder.append(nn.ModuleList([block(ch + w(level), w(level), 1), block(w(level), w(level), 1)]))
            ch = w(level)
        self.out = nn.Conv3d(ch, out, 1)
        self.binary = out == 1

    @staticmethod
    def level(blocks, x):
        for conv, norm in blocks:
            x = F.leaky_relu(norm(conv(x)), 0.01)
        return x

    def forward(self, x):
        skips = []
        for blocks in self.encoder:
            x = self.level(blocks, x)
            skips.append(x)
        skips.pop()
        for blocks in self.decoder:
            skip = skips.pop()
            x = self.level(blocks, torch.cat([F.interpolate(x, size=skip.shape[2:], mode="nearest"), skip], 1))
        logits = self.out(x)
        return torch.sigmoid(logits) if self.binary else torch.softmax(logits, 1)


def dice_ce(probs, target, eps=1e-6, smooth=1e-5):
    """nnU-Net's loss as the worker's train/seg_loss.rs: cross-entropy plus one minus the mean
    soft Dice of the foreground classes, each sample's Dice over its own voxels."""
    ce = -(target * (probs + eps).log()).sum(1).mean()
    fp, ft = probs[:, 1:], target[:, 1:]
    dims = tuple(range(2, probs.dim()))
    dice = (2 * (fp * ft).sum(dims) + smooth) / (fp.sum(dims) + ft.sum(dims) + smooth)
    return ce + (1 - dice.mean())


class Critic(nn.Module):
    def __init__(self, cin=1, width=8, depth=3, dims=2):
        super().__init__()
        blocks, ch = [], cin
        for level in range(depth):
            w = width << min(level, 3)
            blocks.append(ConvBlock(ch, w, 4, 2, level > 0, "leaky", dims))
            ch = w
        self.blocks = nn.ModuleList(blocks)

    def l1(self, pred, truth):
        fp, ft = [pred], [truth]
        for b in self.blocks:
            fp.append(b(fp[-1]))
            ft.append(b(ft[-1]))
        return torch.stack([(a - b).abs().mean() for a, b in zip(fp, ft)]).mean()


class BitModel(nn.Module):
    def __init__(self, k=3, dims=2):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(k, 81))
        self.dims = dims

    def contexts(self, bits):
        b = bits.detach()

        def shift(t, dims):
            for d in dims:
                pad = [0] * (2 * (t.dim() - d))
                pad[2 * (t.dim() - 1 - d)] = 1
                t = F.pad(t, pad).narrow(d, 0, b.shape[d])
            return t + 1

        last = b.dim() - 1
        # The third neighbour: the diagonal in 2D, the previous slice in 3D.
        third = shift(b, [last, last - 1]) if self.dims == 2 else shift(b, [last - 2])
        return (shift(b, [last]) + 3 * shift(b, [last - 1]) + 9 * third + 27 * shift(b, [1])).long()

    def expected_bits(self, x, bits, detach_model):
        k = bits.shape[1]
        offsets = torch.arange(k, device=bits.device).view(1, k, *([1] * (bits.dim() - 2))) * 81
        idx = self.contexts(bits) + offsets
        logits = self.logits.view(-1)[idx.flatten()].view(bits.shape)
        if detach_model:
            logits = logits.detach()
        ln2 = math.log(2)
        return (1 + x) / 2 * (-F.logsigmoid(logits) / ln2) + (1 - x) / 2 * (-F.logsigmoid(-logits) / ln2)


def binarize(x):
    b = (torch.rand_like(x) < (1 + x) / 2).float() * 2 - 1
    return b + (x - x.detach())


# The worker's presets (worker/src/nets/config.rs).
PRESETS = {
    "small": dict(c=dict(width=8, cmax=32), g=dict(width=8, gmax=32), s=dict(width=8, depth=3, res=1), d=dict(width=8, depth=3)),
    "paper": dict(c=dict(width=32, cmax=224), g=dict(width=32, gmax=256), s=dict(width=64, depth=4, res=2), d=dict(width=64, depth=4)),
}


def measure(variant, size, batch, steps, preset="small", device="cpu", patch=None, precision="fp32"):
    torch.manual_seed(1)
    p = PRESETS[preset]
    has_c, has_d, has_rate = variant != "D1", variant != "D2", variant == "D4"
    dims = 3 if patch else 2
    # Volumes: one scan channel, 3 classes (background, myocardium, blood pool); images: RGB,
    # one lesion map.
    cin, out = (1, 3) if patch else (3, 1)
    c = Compressor(cin, **p["c"], dims=dims) if has_c else None
    g = Reconstructor(**p["g"], dims=dims) if has_c else None
    q = BitModel(dims=dims) if has_c else None
    if patch:
        s_width = 32 if preset == "paper" else p["s"]["width"]
        s = UNet(1 if has_c else cin, patch, width=s_width, depth=p["s"]["depth"], out=out)
    else:
        s = Segmentor(1 if has_c else cin, **p["s"])
    d = Critic(out, **p["d"], dims=dims) if has_d else None
    for m in (c, g, q, s, d):
        if m is not None:
            m.to(device)
    main_params = [p for m in (c, g, s) if m is not None for p in m.parameters()]
    opt = torch.optim.Adam(main_params, lr=2e-3, betas=(0.5, 0.999))
    opt_q = torch.optim.Adam(q.parameters(), lr=5e-2) if q else None
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-3, betas=(0.5, 0.999)) if d else None
    if patch:
        images = torch.rand(16, 1, *patch, device=device)
        masks = F.one_hot(torch.randint(0, out, (16, *patch), device=device), out).movedim(-1, 1).float()
    else:
        images = torch.rand(64, 3, size, size, device=device)
        masks = (torch.rand(64, 1, size, size, device=device) > 0.7).float()
    pool = images.shape[0]
    seg_loss = dice_ce if patch else F.mse_loss
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    # bf16 as the worker does it: the networks' forward passes under autocast, the losses on
    # fp32 copies of their outputs, q and the rate loss in fp32.
    dev_type = "cuda" if device.startswith("cuda") else "cpu"

    def cast():
        return torch.autocast(dev_type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step(i):
        j = (i * batch) % (pool - batch + 1)
        x, y = images[j : j + batch], masks[j : j + batch]
        if d is not None:
            for p in d.parameters():
                p.requires_grad_(False)
        opt.zero_grad()
        if opt_q:
            opt_q.zero_grad()
        with cast():
            if has_c:
                a = c(x)
                bits = binarize(a)
                probs = s(g(bits))
            else:
                probs = s(x)
        probs = probs.float()
        terms = [seg_loss(probs, y)]
        if d is not None:
            with cast():
                terms.append(0.5 * d.l1(probs, y).float())
        if has_c:
            a, bits = a.float(), bits.float()
            terms.append(q.expected_bits(a.detach(), bits.detach(), False).mean())
            if has_rate:
                terms.append(0.05 * q.expected_bits(a, bits.detach(), True).mean())
        torch.stack(terms).sum().backward()
        opt.step()
        if opt_q:
            opt_q.step()
        if d is not None:
            for p in d.parameters():
                p.requires_grad_(True)
            opt_d.zero_grad()
            with cast():
                critic = d.l1(probs.detach(), y).float()
            (-critic).backward()
            opt_d.step()
            with torch.no_grad():
                for p in d.parameters():
                    p.clamp_(-0.05, 0.05)

    for i in range(3):
        step(i)
    sync()
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    sync()
    secs = time.perf_counter() - start
    return {
        "variant": variant,
        "framework": f"pytorch {torch.__version__} eager",
        "preset": preset,
        "device": device,
        "precision": precision,
        "size": "x".join(map(str, patch)) if patch else str(size),
        "batch": batch,
        "threads": torch.get_num_threads(),
        "steps": steps,
        "images_per_second": steps * batch / secs,
        "ms_per_step": 1000 * secs / steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", required=True, choices=["D1", "D2", "D3", "D4"])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--patch", help="volumes: the training patch z,y,x (3D networks)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--jsonl", help="append the measurement as a JSON line to this file")
    args = ap.parse_args()
    patch = [int(v) for v in args.patch.split(",")] if args.patch else None
    m = measure(args.variant, args.size, args.batch, args.steps, args.preset, args.device, patch, args.precision)
    if args.jsonl:
        with open(args.jsonl, "a") as f:
            f.write(json.dumps(m) + "\n")
    print(f"| {m['variant']} | {m['images_per_second']:.1f} | {m['ms_per_step']:.1f} | {m['peak_rss_mb']:.0f} |")
