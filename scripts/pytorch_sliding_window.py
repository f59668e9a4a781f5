"""PyTorch eager's side of the cloud at volume scale (the paper's Table 2 for a whole scan): g
over a decoded code, then nnU-Net's sliding-window inference of s over g's features (windows of
the training patch, overlap 0.5, Gaussian importance with sigma = 1/8 of the window, batched
windows, weighted sums divided by the summed weights), with the same weights as Orchestra's
model file, so that `orchestra-worker bench-latency-volume --pytorch` times both on the same
code in one run and compares their label volumes.

The networks are pytorch_reference.py's (the worker's layer for layer); the weights are read
from the model file (safetensors) by name. Written the way a PyTorch user would: g in one pass
over the whole code, windows sliced out of the feature tensor, the scores accumulated with
tensor ops. Everything is on the CPU with --threads threads; --precision bf16 runs the networks
under autocast (as the worker's bf16 does), the accumulation in fp32.

--layout nnunet (default) runs the networks as nnU-Net does (PyTorch's default memory layout,
InstanceNorm3d); --layout channels-last runs them as Orchestra's cloud does (weights and
activations channels-last, instance norm as group norm with one channel per group, the same
arithmetic), to show what of the difference is the layout.

Reads the code as raw int8 (+1/-1, channel-major); writes the labels (uint8, z-major, the
prepared sides) and one JSON object with the timings.
"""

import argparse
import json
import math
import os
import resource
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_reference import Reconstructor, UNet  # noqa: E402

SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}


def read_safetensors(path):
    """(tensors by name, metadata) of a safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        dtype = SAFETENSORS_DTYPES[info["dtype"]]
        t = torch.frombuffer(bytearray(data[start:end]), dtype=dtype) if end > start else torch.empty(0, dtype=dtype)
        tensors[name] = t.reshape(info["shape"])
    return tensors, meta


def reference_names(config):
    """The worker's variable names (g.*, s.*) for each parameter of the reference networks."""
    names = {}
    stages = int(math.log2(config["downsample"]))
    for part, ours in (("entry", "entry"), *((f"ups.{i}", f"up{i}") for i in range(stages))):
        names[f"g.{part}.conv.weight"] = f"g.{ours}.conv.weight"
        for p in ("weight", "bias", "running_mean", "running_var"):
            names[f"g.{part}.bn.{p}"] = f"g.{ours}.bn.{p}"
    names["g.out.weight"], names["g.out.bias"] = "g.out.weight", "g.out.bias"
    levels = config["s_depth"] + 1
    for level in range(levels):
        for i, block in enumerate("ab"):
            names[f"s.encoder.{level}.{i}.0.weight"] = f"s.enc{level}.{block}.conv.weight"
            names[f"s.encoder.{level}.{i}.1.weight"] = f"s.enc{level}.{block}.norm.weight"
            names[f"s.encoder.{level}.{i}.1.bias"] = f"s.enc{level}.{block}.norm.bias"
    # The reference's decoder runs from the deepest level up; the worker names levels.
    for j, level in enumerate(reversed(range(levels - 1))):
        for i, block in enumerate("ab"):
            names[f"s.decoder.{j}.{i}.0.weight"] = f"s.dec{level}.{block}.conv.weight"
            names[f"s.decoder.{j}.{i}.1.weight"] = f"s.dec{level}.{block}.norm.weight"
            names[f"s.decoder.{j}.{i}.1.bias"] = f"s.dec{level}.{block}.norm.bias"
    names["s.out.weight"], names["s.out.bias"] = "s.out.weight", "s.out.bias"
    return names


def load_networks(path):
    """g and s of a volume model file, in eval mode, and the model's configuration."""
    tensors, meta = read_safetensors(path)
    config = json.loads(meta["orchestra.config"])
    if config["spatial"] != "Three" or config["g_out"] != 1:
        sys.exit(f"{path}: not a 3D model with one feature map (spatial {config['spatial']}, g_out {config['g_out']})")
    g = Reconstructor(config["code_channels"], config["g_width"], config["g_max_width"], config["downsample"], 1, dims=3)
    s = UNet(1, config["sides"], config["s_width"], config["s_depth"], out=1 if config["classes"] == 2 else config["classes"])
    names = reference_names(config)
    for prefix, net in (("g", g), ("s", s)):
        state = net.state_dict()
        for key in state:
            if key.endswith("num_batches_tracked"):
                continue
            ours = names.get(f"{prefix}.{key}")
            if ours is None or ours not in tensors:
                sys.exit(f"{path}: no weight for the reference's {prefix}.{key} (looked for {ours})")
            if tuple(tensors[ours].shape) != tuple(state[key].shape):
                sys.exit(f"{path}: {ours} has shape {list(tensors[ours].shape)}, the reference's {prefix}.{key} {list(state[key].shape)}")
            state[key] = tensors[ours]
        net.load_state_dict(state)
        net.eval()
    return g, s, config


class GroupInstanceNorm(nn.Module):
    """Instance norm as group norm with one channel per group: the same normalisation, and it
    keeps channels-last activations in their layout."""

    def __init__(self, norm):
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps

    def forward(self, x):
        return F.group_norm(x, x.shape[1], self.weight, self.bias, self.eps)


def channels_last(g, s):
    """g and s laid out as Orchestra's cloud runs them."""
    for blocks in list(s.encoder) + list(s.decoder):
        for pair in blocks:
            pair[1] = GroupInstanceNorm(pair[1])
    return g.to(memory_format=torch.channels_last_3d), s.to(memory_format=torch.channels_last_3d)


def positions(side, window, overlap):
    """nnU-Net's window corners along one axis (compute_steps_for_sliding_window)."""
    if side <= window:
        return [0]
    target = window * (1 - overlap)
    steps = math.ceil((side - window) / target) + 1
    actual = (side - window) / (steps - 1)
    return [int(round(actual * i)) for i in range(steps)]


def gaussian(window):
    """Importance per voxel of a window: a Gaussian with sigma = 1/8 of each side, 1 at the
    centre, floored at 1e-3 (the worker's weights; nnU-Net's up to a constant scale)."""
    axes = []
    for n in window:
        i = torch.arange(n, dtype=torch.float64)
        sigma, centre = n / 8.0, (n - 1) / 2.0
        axes.append(torch.exp(-((i - centre) ** 2) / (2 * sigma * sigma)))
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return w.float().clamp_min(1e-3)


def sliding_window(s, features, window, classes, batch, cast):
    """Class scores (classes, z, y, x) of a (1, 1, z, y, x) feature volume."""
    sides = features.shape[2:]
    corners = [(z, y, x) for z in positions(sides[0], window[0], 0.5) for y in positions(sides[1], window[1], 0.5) for x in positions(sides[2], window[2], 0.5)]
    weights = gaussian(window)
    sums = torch.zeros(classes, *sides)
    norm = torch.zeros(*sides)
    for i in range(0, len(corners), batch):
        group = corners[i : i + batch]
        x = torch.cat([features[:, :, z : z + window[0], y : y + window[1], xx : xx + window[2]] for z, y, xx in group])
        with cast():
            probs = s(x)
        probs = probs.float()
        if classes == 2 and probs.shape[1] == 1:
            probs = torch.cat([1 - probs, probs], 1)
        for p, (z, y, xx) in zip(probs, group):
            box = (slice(z, z + window[0]), slice(y, y + window[1]), slice(xx, xx + window[2]))
            sums[(slice(None), *box)] += p * weights
            norm[box] += weights
    return sums / norm, len(corners)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--code", required=True, help="raw int8 code, channel-major")
    ap.add_argument("--code-shape", required=True, help="K,z,y,x")
    ap.add_argument("--sides", required=True, help="the prepared scan's sides z,y,x (the labels are cropped to them)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--batch", type=int, default=4, help="windows per call of s")
    ap.add_argument("--layout", default="nnunet", choices=["nnunet", "channels-last"])
    ap.add_argument("--labels-out", required=True)
    ap.add_argument("--json-out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g, s, config = load_networks(args.model)
    if args.layout == "channels-last":
        g, s = channels_last(g, s)
    shape = [int(v) for v in args.code_shape.split(",")]
    sides = [int(v) for v in args.sides.split(",")]
    with open(args.code, "rb") as f:
        raw = f.read()
    if len(raw) != math.prod(shape):
        sys.exit(f"{args.code}: {len(raw)} bytes for a code of shape {shape}")
    code = torch.frombuffer(bytearray(raw), dtype=torch.int8).float().reshape(1, *shape)
    if args.layout == "channels-last":
        code = code.contiguous(memory_format=torch.channels_last_3d)

    def cast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")

    classes = config["classes"]
    with torch.inference_mode():
        start = time.perf_counter()
        with cast():
            features = g(code)
        features = features.float()
        g_s = time.perf_counter() - start
        start = time.perf_counter()
        scores, windows = sliding_window(s, features, config["sides"], classes, args.batch, cast)
        labels = scores.argmax(0)[: sides[0], : sides[1], : sides[2]].to(torch.uint8).contiguous()
        s_s = time.perf_counter() - start
    with open(args.labels_out, "wb") as f:
        f.write(labels.numpy().tobytes())
    result = {
        "framework": f"pytorch {torch.__version__} eager" + (", channels-last" if args.layout == "channels-last" else ""),
        "threads": torch.get_num_threads(),
        "precision": args.precision,
        "window_batch": args.batch,
        "layout": args.layout,
        "windows": windows,
        "g_s": g_s,
        "s_s": s_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    with open(args.json_out, "w") as f:
        json.dump(result, f)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
