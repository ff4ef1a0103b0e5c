"""Benchmark: unetlib's batched elastic deformation vs the classic scipy recipe and torchvision.

The paper's augmentation on a batch of 8 images of 512 x 512 (one channel) with integer masks:
coarse 3 x 3 displacements ~ N(0, 10 px), bicubic upsampling to a per-pixel field, bicubic image
resampling, nearest-neighbour mask resampling, mirrored borders. Each item gets its own field.

* unetlib:      ``elastic_deform(images, masks, generator=g)`` -- one call for the whole batch.
* scipy:        per item ``ndimage.zoom(order=3)`` for the field, ``map_coordinates(order=3)`` for
                the image and ``order=0`` for the mask, ``mode="mirror"`` (single-threaded).
* torchvision:  ``v2.ElasticTransform`` (Simard-style field, alpha=50, sigma=5, bicubic image,
                tv_tensors.Mask with nearest), called per item so every item gets its own field;
                a second row calls it once on the whole batch (one field shared by all items).

Before timing, the script checks that unetlib and scipy agree when given the *same* field, so
the comparison is apples to apples (their image kernels differ slightly: Keys cubic convolution
in grid_sample, cubic B-spline in scipy).

Usage: .venv/bin/python benchmarks/bench_elastic.py [--device cpu|cuda] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import scipy
import torch
import torchvision
from scipy import ndimage
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2

from unetlib.augment import elastic_deform, interpolate_coarse_field, random_displacement_fields

BATCH, SIZE, CHANNELS = 8, 512, 1
GRID_SIZE, STD = 3, 10.0


def make_batch(seed: int = 0):
    """Smooth grey images (N, 1, H, W) float32 in [0, 1] and integer masks (N, H, W) int64."""
    rng = np.random.default_rng(seed)
    noise = rng.random((BATCH, CHANNELS, SIZE, SIZE))
    # Blur so the images have structure at several pixels' scale, like micrographs, rather than
    # white noise (on white noise any two cubic kernels disagree wildly).
    images = ndimage.gaussian_filter(noise, sigma=(0, 0, 3, 3))
    images = (images - images.min()) / (images.max() - images.min())
    masks = np.digitize(images[:, 0], [0.4, 0.5, 0.6]).astype(np.int64)  # 4 classes, blobby
    return images.astype(np.float32), masks


# ---------------------------------------------------------------------------------------------
# the classic scipy implementation of the same recipe
# ---------------------------------------------------------------------------------------------
def scipy_field(coarse: np.ndarray, height: int, width: int) -> np.ndarray:
    """(2, g, g) coarse displacements -> (2, H, W) with a cubic spline (scipy.ndimage.zoom).

    zoom's default grid_mode=False maps corner to corner, like align_corners=True. mode="nearest"
    extends the coarse grid by repetition, the closest match to F.interpolate's clamped border.
    """
    g = coarse.shape[-1]
    return np.stack([
        ndimage.zoom(c, (height / g, width / g), order=3, mode="nearest")
        for c in coarse
    ])


def scipy_warp(image: np.ndarray, mask: np.ndarray, field: np.ndarray):
    """image (C, H, W) float, mask (H, W) int, field (2, H, W) -> warped (image, mask)."""
    height, width = mask.shape
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    coords = np.stack([rows + field[0], cols + field[1]])
    out_image = np.stack([
        ndimage.map_coordinates(channel, coords, order=3, mode="mirror") for channel in image
    ])
    out_mask = ndimage.map_coordinates(mask, coords, order=0, mode="mirror")
    return out_image, out_mask


def scipy_elastic(images: np.ndarray, masks: np.ndarray, rng: np.random.Generator):
    """The full recipe for a batch, item by item (a new field per item), as in classic code."""
    out_images, out_masks = np.empty_like(images), np.empty_like(masks)
    height, width = masks.shape[-2:]
    for i in range(images.shape[0]):
        coarse = rng.normal(0.0, STD, size=(2, GRID_SIZE, GRID_SIZE))
        field = scipy_field(coarse, height, width)
        out_images[i], out_masks[i] = scipy_warp(images[i], masks[i], field)
    return out_images, out_masks


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def time_interleaved(rows, repeats: int, sync) -> dict[str, tuple[float, float, int]]:
    """Median (wall, CPU) seconds and number of runs per method; the methods take turns so they share the same load.

    On a shared machine the background load drifts; timing method A five times and then method
    B five times would hand them different conditions. Round-robin keeps the ratios fair. CPU
    time (time.process_time, all threads of this process) shows how much of the wall time was
    spent waiting for a core.
    """
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in rows}

    def timed(fn) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        sync()
        return time.perf_counter() - wall, time.process_time() - cpu

    warmup = {name: timed(fn)[0] for name, fn in rows}  # first calls: allocations, kernel choice
    # Keep the whole script near a minute on a 2-core machine: a slow method gets only as many
    # repeats as fit in about 8 s (at least one).
    budget = {name: max(1, min(repeats, int(8.0 / warmup[name]))) for name, _ in rows}
    for round_ in range(repeats):
        for name, fn in rows:
            if round_ < budget[name]:
                samples[name].append(timed(fn))
    return {
        name: (statistics.median(w for w, _ in s), statistics.median(c for _, c in s), len(s))
        for name, s in samples.items()
    }


def info_line(device: torch.device) -> str:
    if device.type == "cuda":
        where = f"GPU {torch.cuda.get_device_name(device)}"
    else:
        where = f"CPU {platform.processor() or platform.machine()}"
    # Other processes on a small shared machine slow everything down: print the load with the
    # numbers so that they can be judged.
    load = f"load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    return (
        f"{where} | {load} | torch {torch.__version__} ({torch.get_num_threads()} threads) | "
        f"torchvision {torchvision.__version__} | scipy {scipy.__version__} (1 thread) | "
        f"numpy {np.__version__} | Python {platform.python_version()}"
    )


def check_agreement(images: np.ndarray, masks: np.ndarray) -> None:
    """Same field -> unetlib and scipy give (nearly) the same image and mask."""
    border = 16
    generator = torch.Generator().manual_seed(1)
    fields = random_displacement_fields(2, SIZE, SIZE, GRID_SIZE, STD, generator=generator)
    ours_img, ours_mask = elastic_deform(torch.from_numpy(images[:2]), torch.from_numpy(masks[:2]),
                                         field=fields)
    img_diffs, mask_equal = [], []
    for i in range(2):
        ref_img, ref_mask = scipy_warp(images[i], masks[i], fields[i].double().numpy())
        diff = np.abs(ours_img[i].numpy() - ref_img)[..., border:-border, border:-border]
        img_diffs.append(diff)
        mask_equal.append(np.mean(ours_mask[i].numpy() == ref_mask))
    max_diff = max(d.max() for d in img_diffs)
    mean_diff = float(np.mean([d.mean() for d in img_diffs]))
    equal = float(np.mean(mask_equal))
    # Keys cubic vs cubic B-spline on a smooth image: differences of a few 1e-3 of the range.
    assert max_diff < 0.02 and mean_diff < 2e-3, (max_diff, mean_diff)
    assert equal > 0.999, equal  # only exact half-pixel ties may round differently

    # The field interpolation itself: same coarse grid, Keys bicubic (torch) vs B-spline (scipy).
    rng = np.random.default_rng(2)
    coarse = rng.normal(0.0, STD, size=(2, GRID_SIZE, GRID_SIZE))
    ours_field = interpolate_coarse_field(torch.from_numpy(coarse), SIZE, SIZE).numpy()
    field_diff = np.abs(ours_field - scipy_field(coarse, SIZE, SIZE))
    print(
        f"agreement (same field, {border}px border excluded): image max |diff| {max_diff:.4f}, "
        f"mean {mean_diff:.5f} (image range [0, 1]); masks equal {100 * equal:.3f} % of pixels"
    )
    print(
        f"field interpolation (same coarse grid, std {STD:g}px): torch bicubic vs scipy zoom "
        f"order=3 differ by max {field_diff.max():.2f}px, mean {field_diff.mean():.2f}px"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU, and torch.cuda.is_available() is False")
    device = torch.device(args.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    print(info_line(device))
    print(f"batch {BATCH} x {CHANNELS} x {SIZE} x {SIZE}, grid {GRID_SIZE}x{GRID_SIZE}, "
          f"std {STD:g}px, bicubic image + nearest mask, mirrored borders, "
          f"median of up to {args.repeats} timed runs after a warm-up")
    images_np, masks_np = make_batch()
    check_agreement(images_np, masks_np)

    images = torch.from_numpy(images_np).to(device)
    masks = torch.from_numpy(masks_np).to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    rng = np.random.default_rng(0)

    elastic_tv = v2.ElasticTransform(alpha=50.0, sigma=5.0, interpolation=InterpolationMode.BICUBIC)
    tv_masks = [tv_tensors.Mask(m) for m in masks]
    tv_batch_mask = tv_tensors.Mask(masks)

    def run_unetlib():
        return elastic_deform(images, masks, generator=generator)

    def run_unetlib_one_thread():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return elastic_deform(images, masks, generator=generator)
        finally:
            torch.set_num_threads(threads)

    def run_scipy():
        return scipy_elastic(images_np, masks_np, rng)

    def run_torchvision_per_item():
        return [elastic_tv(images[i], tv_masks[i]) for i in range(BATCH)]

    def run_torchvision_shared():
        return elastic_tv(images, tv_batch_mask)

    rows = [("unetlib elastic_deform (batched)", run_unetlib)]
    if device.type == "cpu" and torch.get_num_threads() > 1:
        rows.append(("unetlib, 1 thread", run_unetlib_one_thread))
    rows += [
        ("scipy map_coordinates (per item, CPU)", run_scipy),
        ("torchvision v2.ElasticTransform (per item)", run_torchvision_per_item),
        ("torchvision v2.ElasticTransform (1 call, shared field)", run_torchvision_shared),
    ]
    seconds = time_interleaved(rows, args.repeats, sync)

    ours = seconds[rows[0][0]][0]
    print()
    print(f"{'method':<56} {'batch ms':>9} {'ms/image':>9} {'x unetlib':>10} {'CPU ms':>8} "
          f"{'runs':>5}")
    for name, _ in rows:
        wall, cpu, runs = seconds[name]
        print(f"{name:<56} {1e3 * wall:>9.1f} {1e3 * wall / BATCH:>9.2f} {wall / ours:>10.1f} "
              f"{1e3 * cpu:>8.1f} {runs:>5}")
    scipy_ratio = seconds["scipy map_coordinates (per item, CPU)"][0] / ours
    tv_ratio = seconds["torchvision v2.ElasticTransform (per item)"][0] / ours
    print()
    print(f"scipy / unetlib = {scipy_ratio:.1f}x   "
          f"torchvision (per item) / unetlib = {tv_ratio:.1f}x   (device {device.type}, "
          f"median wall-clock times)")

if __name__ == "__main__":
    main()
