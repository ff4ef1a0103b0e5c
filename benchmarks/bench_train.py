"""Training-step benchmark: unetlib's engine vs. a plain PyTorch U-Net loop, side by side.

    .venv/bin/python benchmarks/bench_train.py                  # CPU, about 1-2 minutes
    .venv/bin/python benchmarks/bench_train.py --device cuda    # + paper network at 572x572

What is compared (same process, same synthetic tiles, same seed, same number of steps):

* **plain**: the loop most re-implementations use - a U-Net written the usual way
  (``nn.Sequential`` double convs with BatchNorm, padding 1, max-pool, transposed-conv up,
  concatenation), NCHW float32, Adam, ``nn.CrossEntropyLoss``.
* **engine**: :func:`unetlib.train.train_step` (the step ``python -m unetlib train`` runs) on
  :class:`unetlib.models.UNet` of the same size (same padding, BatchNorm, base/depth and
  parameter count), channels_last memory format and bf16 autocast where the hardware
  supports it. Its loss is plain CE here too (``--engine-loss wce+dice`` for the trainer's
  default), and both nets start from the same weights, so accuracy compares like with like.

Steps alternate plain/engine so that a busy machine slows both alike; the reported step
time is the median after warm-up (wall clock, and CPU time of this process, which is the
steadier number when other programs share the CPU). After the steps both nets segment held-out synthetic
images (overlap-tile inference) and the speed-up only counts if the engine's foreground IoU
is not worse than the plain loop's by more than ``--iou-tolerance``.

With ``--device cuda`` (or ``--paper``) it also measures training images/s of the paper's
network (UNet(1, 2), 572x572 tiles, batch 8, bf16 autocast, channels_last), counts the FLOPs
of one training step with ``torch.utils.flop_counter.FlopCounterMode`` and reports the
fraction of the GPU's bf16 peak (``--peak-tflops``; known for H100/H200/A100).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from unetlib.data import TileDataset  # noqa: E402
from unetlib.device import resolve_device, set_cpu_threads, speed_settings  # noqa: E402
from unetlib.losses import make_loss  # noqa: E402
from unetlib.models import UNet, count_parameters  # noqa: E402
from unetlib.train import _normalised_synthetic, evaluate, train_step  # noqa: E402
from unetlib.utils import environment_banner  # noqa: E402

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets.
KNOWN_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0, "V100": 125.0}


# ==================================================================================== plain U-Net
class PlainUp(nn.Module):
    """Upsample x2 with a transposed convolution, concatenate the skip, double conv."""

    def __init__(self, cin, cout, double):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv = double(2 * cout, cout)

    def forward(self, x, skip):
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class PlainUNet(nn.Module):
    """The U-Net as most repositories write it: NCHW, padding 1, BatchNorm, no extras."""

    def __init__(self, in_channels=1, num_classes=2, base=32, depth=4):
        super().__init__()

        def double(cin, cout):
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        widths = [base * 2**i for i in range(depth + 1)]
        self.inc = double(in_channels, widths[0])
        self.downs = nn.ModuleList(double(widths[i], widths[i + 1]) for i in range(depth))
        self.ups = nn.ModuleList(PlainUp(widths[i + 1], widths[i], double) for i in reversed(range(depth)))
        self.outc = nn.Conv2d(widths[0], num_classes, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(self.pool(skips[-1])))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.outc(x)

    def output_size(self, size):
        return size


def copy_weights(source: nn.Module, target: nn.Module) -> None:
    """Copy parameters and buffers in registration order (same architecture, other names),
    so both loops start from the very same network."""
    pairs = list(zip(source.state_dict().values(), target.state_dict().values()))
    if len(pairs) != len(target.state_dict()) or any(a.shape != b.shape for a, b in pairs):
        raise ValueError("plain and engine U-Nets do not line up; cannot copy the weights")
    with torch.no_grad():
        for a, b in pairs:
            b.copy_(a)


def plain_step(model, batch, optimizer, criterion, device):
    images = batch["image"].to(device)
    masks = batch["mask"].to(device)
    loss = criterion(model(images), masks)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# ==================================================================================== engine vs plain
def compare(args, device) -> dict:
    settings = speed_settings(device, amp=args.amp, channels_last=True)
    images = _normalised_synthetic(args.images, args.image_size, seed=args.seed)
    val_images = _normalised_synthetic(args.val_images, args.image_size, seed=args.seed + 1_000_003)
    tiles = TileDataset(images, input_size=args.size, output_size=args.size,
                        samples_per_epoch=args.steps * args.batch, seed=args.seed)
    batches = [torch.utils.data.default_collate([tiles[i * args.batch + j] for j in range(args.batch)])
               for i in range(args.steps)]

    engine = UNet(1, 2, args.base, args.depth, padding="same", batch_norm=True,
                  generator=torch.Generator().manual_seed(args.seed))
    plain = PlainUNet(1, 2, args.base, args.depth)
    copy_weights(engine, plain)  # identical start (the paper's initialisation)
    plain, engine = plain.to(device), engine.to(device)
    if settings.channels_last:
        engine = engine.to(memory_format=torch.channels_last)
    plain_opt = torch.optim.Adam(plain.parameters(), lr=args.lr)
    engine_opt = torch.optim.Adam(engine.parameters(), lr=args.lr)
    criterion = nn.CrossEntropyLoss()
    engine_loss = make_loss(args.engine_loss)
    scaler = torch.amp.GradScaler(device.type) if settings.use_grad_scaler else None

    times = {"plain": [], "engine": []}
    cpu_times = {"plain": [], "engine": []}
    steps = {"plain": lambda b: plain_step(plain, b, plain_opt, criterion, device),
             "engine": lambda b: train_step(engine, b, engine_loss, engine_opt, settings, scaler=scaler)}
    for index, batch in enumerate(batches):  # alternate, so load changes on a shared machine hit both
        if index % 10 == 0:
            print(f"  step {index}/{len(batches)}", file=sys.stderr, flush=True)
        for name, step in steps.items():
            _sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            step(batch)
            _sync(device)
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - cpu_start)

    warm = min(3, args.steps - 1)
    median = {k: statistics.median(v[warm:]) for k, v in times.items()}
    median_cpu = {k: statistics.median(v[warm:]) for k, v in cpu_times.items()}
    plain_metrics = evaluate(plain, val_images, tile_size=args.eval_tile)
    engine_metrics = evaluate(engine, val_images, tile_size=args.eval_tile, amp=settings.amp,
                              channels_last=settings.channels_last)
    speedup = median["plain"] / median["engine"]
    iou_plain, iou_engine = plain_metrics["foreground_iou"], engine_metrics["foreground_iou"]
    counts = iou_engine >= iou_plain - args.iou_tolerance
    return {
        "device": str(device),
        "engine_settings": settings.describe(),
        "shape": f"batch {args.batch} x 1 x {args.size} x {args.size}, base {args.base}, depth {args.depth}",
        "parameters": {"plain": count_parameters(plain), "engine": count_parameters(engine)},
        "steps": args.steps,
        "median_step_s": {k: round(v, 4) for k, v in median.items()},
        "median_step_cpu_s": {k: round(v, 4) for k, v in median_cpu.items()},
        "speedup": round(speedup, 2),
        "speedup_cpu_time": round(median_cpu["plain"] / median_cpu["engine"], 2),
        "engine_loss": args.engine_loss,
        "val_foreground_iou": {"plain": round(iou_plain, 4), "engine": round(iou_engine, 4)},
        "speedup_counts": counts,
    }


# ==================================================================================== paper network
def paper_throughput(args, device) -> dict:
    """Training images/s of UNet(1, 2) at the paper's 572 tile, and the fraction of peak."""
    from torch.utils.flop_counter import FlopCounterMode

    settings = speed_settings(device, amp=True, channels_last=True)
    size, batch = args.paper_size, args.paper_batch
    model = UNet(1, 2).to(device).to(memory_format=torch.channels_last)
    out = model.output_size(size)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = make_loss("wce")
    scaler = torch.amp.GradScaler(device.type) if settings.use_grad_scaler else None
    generator = torch.Generator().manual_seed(0)
    data = {"image": torch.rand(batch, 1, size, size, generator=generator),
            "mask": torch.randint(0, 2, (batch, out, out), generator=generator),
            "weight": torch.ones(batch, out, out)}
    data = {k: v.to(device) for k, v in data.items()}

    with FlopCounterMode(display=False) as counter:  # one step: forward + backward
        train_step(model, data, loss_fn, optimizer, settings, scaler=scaler)
    flops_per_image = counter.get_total_flops() / batch
    for _ in range(args.paper_warmup):
        train_step(model, data, loss_fn, optimizer, settings, scaler=scaler)
    _sync(device)
    start = time.perf_counter()
    for _ in range(args.paper_steps):
        train_step(model, data, loss_fn, optimizer, settings, scaler=scaler)
    _sync(device)
    seconds = time.perf_counter() - start
    images_per_s = args.paper_steps * batch / seconds
    achieved = flops_per_image * images_per_s / 1e12
    peak = args.peak_tflops
    if peak is None and device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in KNOWN_PEAK_TFLOPS.items() if k in name), None)
    result = {
        "network": f"UNet(1, 2) paper, {size}x{size} -> {out}x{out}, batch {batch}, {settings.describe()}",
        "tflop_per_training_image": round(flops_per_image / 1e12, 3),
        "images_per_s": round(images_per_s, 1),
        "achieved_tflops": round(achieved, 1),
    }
    if peak:
        result["peak_bf16_tflops"] = peak
        result["fraction_of_peak"] = round(achieved / peak, 3)
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--steps", type=int, default=40, help="training steps for each loop")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=128, help="tile size (same padding)")
    p.add_argument("--base", type=int, default=32)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--images", type=int, default=12, help="synthetic training images")
    p.add_argument("--val-images", type=int, default=3)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--eval-tile", type=int, default=None, help="inference tile (default: plan_tiles)")
    p.add_argument("--iou-tolerance", type=float, default=0.02)
    p.add_argument("--engine-loss", default="ce",
                   help="engine loss (default ce = the plain loop's, so accuracy compares like with like; "
                        "the trainer's default is wce+dice)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="engine autocast (default: where the hardware has bf16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--paper", action=argparse.BooleanOptionalAction, default=None,
                   help="also time the paper network at 572 (default: on for CUDA)")
    p.add_argument("--paper-size", type=int, default=572)
    p.add_argument("--paper-batch", type=int, default=8)
    p.add_argument("--paper-steps", type=int, default=20)
    p.add_argument("--paper-warmup", type=int, default=5)
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak of the accelerator")
    p.add_argument("--skip-compare", action="store_true", help="only the paper-network measurement")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = resolve_device(args.device)
    if device.type == "cpu":
        set_cpu_threads()
    print(environment_banner())
    results = {}
    start = time.perf_counter()
    if not args.skip_compare:
        results["compare"] = compare(args, device)
        r = results["compare"]
        print(f"\n{r['shape']}, {r['steps']} steps each from the same initial weights")
        print(f"  plain  (NCHW fp32, Adam, CE)       : {r['median_step_s']['plain']:.3f} s/step "
              f"({r['median_step_cpu_s']['plain']:.3f} CPU s)   val IoU {r['val_foreground_iou']['plain']:.3f}")
        print(f"  engine ({r['engine_settings']}, {r['engine_loss']}) : {r['median_step_s']['engine']:.3f} s/step "
              f"({r['median_step_cpu_s']['engine']:.3f} CPU s)   val IoU {r['val_foreground_iou']['engine']:.3f}")
        verdict = "counts" if r["speedup_counts"] else f"does NOT count (IoU worse by > {args.iou_tolerance})"
        print(f"  speed-up engine vs plain: {r['speedup']:.2f}x wall, {r['speedup_cpu_time']:.2f}x CPU time ({verdict})")
    if args.paper or (args.paper is None and device.type == "cuda"):
        results["paper"] = paper_throughput(args, device)
        r = results["paper"]
        line = (f"\npaper network: {r['network']}\n  {r['images_per_s']} training images/s, "
                f"{r['tflop_per_training_image']} TFLOP per image, {r['achieved_tflops']} TFLOP/s achieved")
        if "fraction_of_peak" in r:
            line += f" = {r['fraction_of_peak']:.1%} of the {r['peak_bf16_tflops']:.0f} TFLOP/s bf16 peak"
        print(line)
    print(f"\ntotal benchmark time {time.perf_counter() - start:.0f} s")
    print("JSON " + json.dumps(results))
    return results


if __name__ == "__main__":
    main()
