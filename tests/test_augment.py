"""Tests for unetlib.augment: elastic deformation, flips/rotations, grey-value jitter.

Where possible the results are compared with an independent computation: F.interpolate,
scipy.ndimage (map_coordinates, gaussian_filter) and a brute-force Keys-cubic resampler.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from unetlib.augment import (
    ElasticAugment,
    elastic_deform,
    gaussian_blur,
    intensity_jitter,
    interpolate_coarse_field,
    random_displacement_field,
    random_displacement_fields,
    random_flip_rotate,
    simard_displacement_field,
    simard_displacement_fields,
    warp,
)

FAST = settings(max_examples=20, deadline=None)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def constant_field(height: int, width: int, dy: float, dx: float) -> torch.Tensor:
    field = torch.empty(2, height, width)
    field[0], field[1] = dy, dx
    return field


def pixel_coords(field: np.ndarray) -> np.ndarray:
    """(2, H, W) displacement -> absolute sampling positions for scipy.ndimage.map_coordinates."""
    rows, cols = np.meshgrid(np.arange(field.shape[1]), np.arange(field.shape[2]), indexing="ij")
    return np.stack([rows + field[0], cols + field[1]])


# ---------------------------------------------------------------------------------------------
# displacement fields
# ---------------------------------------------------------------------------------------------
@FAST
@given(
    n=st.integers(1, 3),
    gh=st.integers(1, 5),
    gw=st.integers(1, 5),
    height=st.integers(2, 40),
    width=st.integers(2, 40),
)
def test_interpolate_coarse_field_equals_f_interpolate(n, gh, gw, height, width):
    coarse = torch.randn(n, 2, gh, gw, generator=gen(height * width))
    expected = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
    torch.testing.assert_close(interpolate_coarse_field(coarse, height, width), expected,
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("grid_size, size", [(3, 101), (3, 513), (5, 65), (4, 31)])
def test_field_passes_through_coarse_values_at_grid_points(grid_size, size):
    # (size - 1) / (grid_size - 1) is an integer, so every coarse point sits on a pixel centre.
    coarse = torch.randn(2, 2, grid_size, grid_size, generator=gen(0)) * 10
    field = interpolate_coarse_field(coarse, size, size)
    step = (size - 1) // (grid_size - 1)
    at_grid_points = field[..., ::step, ::step]
    assert at_grid_points.shape == coarse.shape
    torch.testing.assert_close(at_grid_points, coarse, atol=1e-5, rtol=0)
    # ...and is smooth in between: neighbouring pixels differ by a small fraction of the std.
    assert field.diff(dim=-1).abs().max() < 10 * 3 * grid_size / size * 4


def test_random_field_shape_dtype_and_coarse_statistics():
    std, grid_size = 7.0, 3
    # A 5 x 5 field with a 3 x 3 grid puts the coarse points on pixels 0, 2 and 4.
    fields = random_displacement_fields(4000, 5, 5, grid_size, std, generator=gen(0))
    assert fields.shape == (4000, 2, 5, 5) and fields.dtype == torch.float32
    coarse = fields[:, :, ::2, ::2]
    # 72,000 independent N(0, 7) values: the std estimate is within ~0.02 of 7.
    assert abs(coarse.std().item() - std) < 0.15
    assert abs(coarse.mean().item()) < 0.1
    # dy and dx, and different grid points, are independent draws.
    flat = coarse.reshape(4000, -1)
    correlation = torch.corrcoef(flat.T)
    off_diagonal = correlation - torch.diag(torch.diag(correlation))
    assert off_diagonal.abs().max() < 0.1

    single = random_displacement_field(30, 20, generator=gen(1))
    assert single.shape == (2, 30, 20) and single.dtype == torch.float32
    torch.testing.assert_close(single, random_displacement_fields(1, 30, 20, generator=gen(1))[0])
    assert torch.count_nonzero(random_displacement_field(9, 9, std=0.0)) == 0


def test_random_fields_are_reproducible_and_differ_between_items_and_seeds():
    a = random_displacement_fields(3, 32, 32, generator=gen(5))
    b = random_displacement_fields(3, 32, 32, generator=gen(5))
    c = random_displacement_fields(3, 32, 32, generator=gen(6))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1]) and not torch.allclose(a[1], a[2])


@FAST
@given(
    height=st.integers(2, 30),
    width=st.integers(2, 30),
    sigma=st.floats(0.3, 12.0),
)
def test_gaussian_blur_matches_scipy(height, width, sigma):
    # Large sigma makes the kernel wider than the image: the reflection must repeat, like scipy.
    x = torch.rand(2, 3, height, width, generator=gen(height), dtype=torch.float64)
    expected = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="reflect")
    np.testing.assert_allclose(gaussian_blur(x, sigma).numpy(), expected, atol=1e-12)


def test_simard_field_matches_scipy_recipe_and_statistics():
    field = simard_displacement_field(64, 48, alpha=34.0, sigma=4.0, generator=gen(3))
    assert field.shape == (2, 64, 48) and field.dtype == torch.float32
    # Same uniform noise through scipy's Gaussian filter gives the same field.
    noise = torch.rand((1, 2, 64, 48), generator=gen(3)) * 2 - 1
    expected = ndimage.gaussian_filter(noise[0].double().numpy(), sigma=(0, 4, 4), mode="reflect")
    np.testing.assert_allclose(field.numpy(), 34.0 * expected, atol=1e-4)
    # Smoothing uniform(-1, 1) noise (variance 1/3) with a normalised 2-D Gaussian divides the
    # variance by about 4 pi sigma^2: std ~ alpha * sqrt(1/3) / (2 sqrt(pi) sigma) = 1.38 px.
    many = simard_displacement_fields(40, 64, 64, 34.0, 4.0, generator=gen(4))
    assert 1.1 < many.std().item() < 1.7
    assert torch.equal(many, simard_displacement_fields(40, 64, 64, 34.0, 4.0, generator=gen(4)))


# ---------------------------------------------------------------------------------------------
# warping: exactness and agreement with independent resamplers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("image_mode", ["bicubic", "bilinear", "nearest"])
def test_zero_field_is_identity(image_mode):
    image = torch.rand(2, 3, 48, 40, generator=gen(0))
    mask = torch.randint(0, 7, (2, 48, 40), generator=gen(1))
    out_image, out_mask = elastic_deform(image, mask, field=torch.zeros(2, 48, 40),
                                         image_mode=image_mode)
    torch.testing.assert_close(out_image, image, atol=1e-5, rtol=0)
    assert torch.equal(out_mask, mask)


@pytest.mark.parametrize("dy, dx", [(0, 1), (1, 0), (-2, 3)])
def test_integer_shift_moves_the_image_by_whole_pixels(dy, dx):
    # output(y, x) = input(y + dy, x + dx): with dx = +1 the content moves one pixel left.
    image = torch.rand(1, 24, 20, generator=gen(0))
    mask = torch.randint(0, 5, (24, 20), generator=gen(1), dtype=torch.int32)
    field = constant_field(24, 20, dy, dx)
    out_image, out_mask = elastic_deform(image, mask, field=field)
    rows_out = slice(max(0, -dy), 24 - max(0, dy))
    rows_in = slice(max(0, dy), 24 - max(0, -dy))
    cols_out = slice(max(0, -dx), 20 - max(0, dx))
    cols_in = slice(max(0, dx), 20 - max(0, -dx))
    torch.testing.assert_close(out_image[:, rows_out, cols_out], image[:, rows_in, cols_in],
                               atol=1e-5, rtol=0)
    assert torch.equal(out_mask[rows_out, cols_out], mask[rows_in, cols_in])


def test_borders_are_mirrored_about_the_edge_pixel():
    image = torch.arange(10.0).reshape(1, 1, 10).expand(1, 4, 10).contiguous()
    out, _ = elastic_deform(image, field=constant_field(4, 10, 0, 2))
    # Columns 8 and 9 read positions 10 and 11, mirrored to 8 and 7 (scipy's mode="mirror").
    torch.testing.assert_close(out[0, 0], torch.tensor([2, 3, 4, 5, 6, 7, 8, 9, 8, 7.0]),
                               atol=1e-5, rtol=0)


def keys_cubic_reference(image: np.ndarray, field: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Brute-force bicubic convolution (Keys kernel) with mirrored taps, pixel by pixel."""

    def kernel(t):
        t = abs(t)
        if t <= 1:
            return (a + 2) * t**3 - (a + 3) * t**2 + 1
        if t < 2:
            return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
        return 0.0

    def mirror(i, size):
        period = 2 * (size - 1)
        i = abs(i) % period
        return period - i if i >= size else i

    height, width = image.shape
    out = np.zeros_like(image)
    for y in range(height):
        for x in range(width):
            sy, sx = y + field[0, y, x], x + field[1, y, x]
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            total = 0.0
            for i in range(y0 - 1, y0 + 3):
                for j in range(x0 - 1, x0 + 3):
                    weight = kernel(sy - i) * kernel(sx - j)
                    total += weight * image[mirror(i, height), mirror(j, width)]
            out[y, x] = total
    return out


def test_bicubic_warp_matches_brute_force_keys_cubic():
    image = torch.rand(1, 12, 10, generator=gen(0), dtype=torch.float64)
    field = random_displacement_field(12, 10, std=4.0, generator=gen(1)).double()
    ours = warp(image, field, mode="bicubic")[0].numpy()
    np.testing.assert_allclose(ours, keys_cubic_reference(image[0].numpy(), field.numpy()),
                               atol=1e-8)


def test_bilinear_and_nearest_match_scipy_map_coordinates():
    image = torch.rand(1, 40, 36, generator=gen(0), dtype=torch.float64)
    labels = torch.randint(0, 9, (40, 36), generator=gen(1))
    field = random_displacement_field(40, 36, std=6.0, generator=gen(2)).double()
    coords = pixel_coords(field.numpy())
    bilinear = warp(image, field, mode="bilinear")[0].numpy()
    expected = ndimage.map_coordinates(image[0].numpy(), coords, order=1, mode="mirror")
    np.testing.assert_allclose(bilinear, expected, atol=1e-9)
    nearest = warp(labels[None], field, mode="nearest")[0].numpy()
    expected_labels = ndimage.map_coordinates(labels.numpy(), coords, order=0, mode="mirror")
    # Only positions within float rounding of a half-pixel tie could round differently.
    assert np.mean(nearest == expected_labels) > 0.999


def test_image_mask_and_weight_get_the_same_deformation():
    mask = torch.randint(0, 4, (2, 32, 32), generator=gen(0), dtype=torch.int32)
    image = mask.float()[:, None]  # an image that *is* the mask
    weight = mask.float() * 2.5
    out_image, out_mask, out_weight = elastic_deform(image, mask, weight=weight, generator=gen(1),
                                                     image_mode="nearest")
    assert torch.equal(out_image[:, 0], out_mask.float())
    assert not torch.equal(out_mask, mask)  # it did deform
    # The weight map is resampled bilinearly on the same grid: compare with warp() and scipy.
    fields = random_displacement_fields(2, 32, 32, generator=gen(1))
    torch.testing.assert_close(out_weight, warp(weight[:, None], fields, "bilinear")[:, 0])
    expected = ndimage.map_coordinates(weight[0].double().numpy(),
                                       pixel_coords(fields[0].double().numpy()), order=1,
                                       mode="mirror")
    np.testing.assert_allclose(out_weight[0].numpy(), expected, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# elastic_deform: properties
# ---------------------------------------------------------------------------------------------
@FAST
@given(
    batch=st.sampled_from([None, 1, 3]),
    channels=st.integers(1, 3),
    height=st.integers(2, 33),
    width=st.integers(2, 33),
    mask_dtype=st.sampled_from([torch.int64, torch.int32, torch.uint8, torch.int16, torch.bool]),
    image_dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
    seed=st.integers(0, 2**31 - 1),
)
def test_shapes_dtypes_and_label_set(batch, channels, height, width, mask_dtype, image_dtype, seed):
    lead = () if batch is None else (batch,)
    image = torch.rand(*lead, channels, height, width, generator=gen(seed)).to(image_dtype)
    high = 2 if mask_dtype == torch.bool else 6
    mask = torch.randint(0, high, (*lead, height, width), generator=gen(seed + 1)).to(mask_dtype)
    out_image, out_mask = elastic_deform(image, mask, generator=gen(seed), std=5.0)
    assert out_image.shape == image.shape and out_image.dtype == image.dtype
    assert out_mask.shape == mask.shape and out_mask.dtype == mask.dtype
    assert set(out_mask.unique().tolist()) <= set(mask.unique().tolist())
    assert torch.isfinite(out_image.float()).all()


def test_large_instance_ids_survive_exactly():
    # 2**24 + 1 is not representable in float32; the implementation must notice and use float64.
    ids = torch.tensor([0, 2**24 + 1, 2**30 + 7, 123456789], dtype=torch.int64)
    mask = ids[torch.randint(0, 4, (40, 40), generator=gen(0))]
    _, out = elastic_deform(torch.rand(1, 40, 40), mask, generator=gen(1))
    assert set(out.unique().tolist()) <= set(ids.tolist())
    assert len(out.unique()) == 4


def test_same_seed_same_result_different_seed_different_result():
    image = torch.rand(2, 1, 40, 40, generator=gen(0))
    mask = torch.randint(0, 3, (2, 40, 40), generator=gen(1))
    first = elastic_deform(image, mask, generator=gen(7))
    again = elastic_deform(image, mask, generator=gen(7))
    other = elastic_deform(image, mask, generator=gen(8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.allclose(first[0], other[0])


def test_each_batch_item_gets_its_own_field_unless_one_is_shared():
    image = torch.rand(1, 1, 40, 40, generator=gen(0)).expand(4, 1, 40, 40).contiguous()
    out, _ = elastic_deform(image, generator=gen(1))
    for i in range(1, 4):
        assert not torch.allclose(out[0], out[i])
    # Item 0 of a batch is what a single call with the same generator state gives.
    single, _ = elastic_deform(image[0], generator=gen(1))
    torch.testing.assert_close(out[0], single)
    shared, _ = elastic_deform(image, field=random_displacement_field(40, 40, generator=gen(2)))
    for i in range(1, 4):
        torch.testing.assert_close(shared[0], shared[i])


def test_accepts_a_per_item_field_and_a_simard_field():
    image = torch.rand(2, 1, 30, 30, generator=gen(0))
    fields = simard_displacement_fields(2, 30, 30, alpha=34.0, sigma=4.0, generator=gen(1))
    out, _ = elastic_deform(image, field=fields)
    for i in range(2):
        torch.testing.assert_close(out[i], warp(image[i], fields[i], "bicubic"))
    assert not torch.allclose(out, image)


def test_channels_last_gives_the_same_result_and_layout():
    image = torch.rand(2, 3, 32, 32, generator=gen(0))
    fields = random_displacement_fields(2, 32, 32, generator=gen(1))
    expected, _ = elastic_deform(image, field=fields)
    out, _ = elastic_deform(image.contiguous(memory_format=torch.channels_last), field=fields)
    torch.testing.assert_close(out, expected)
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    image = torch.rand(3, 2, 64, 64, generator=gen(0))
    mask = torch.randint(0, 5, (3, 64, 64), generator=gen(1))
    cpu_image, cpu_mask = elastic_deform(image, mask, generator=gen(2))
    # A CPU generator draws the coarse grid on the CPU: same seed -> same field on the GPU.
    gpu_image, gpu_mask = elastic_deform(image.cuda(), mask.cuda(), generator=gen(2))
    assert gpu_image.device.type == "cuda" and gpu_mask.dtype == mask.dtype
    torch.testing.assert_close(gpu_image.cpu(), cpu_image, atol=1e-4, rtol=0)
    assert (gpu_mask.cpu() == cpu_mask).float().mean() > 0.999
    simard = simard_displacement_field(64, 64, generator=gen(3), device="cuda")
    torch.testing.assert_close(simard.cpu(), simard_displacement_field(64, 64, generator=gen(3)),
                               atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_clear_errors_for_bad_input():
    image = torch.rand(1, 16, 16)
    mask = torch.zeros(16, 16, dtype=torch.int64)
    with pytest.raises(TypeError, match="mask must be an integer tensor"):
        elastic_deform(image, mask.float())
    with pytest.raises(ValueError, match=r"mask must have shape \(H, W\)"):
        elastic_deform(image, torch.zeros(16, 15, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"mask must have shape \(N, H, W\)"):
        elastic_deform(image[None], mask)
    with pytest.raises(ValueError, match=r"field must have shape \(2, 16, 16\)"):
        elastic_deform(image, mask, field=torch.zeros(16, 16, 2))
    with pytest.raises(ValueError, match=r"or \(2, 2, 16, 16\)"):
        elastic_deform(image.expand(2, 1, 16, 16), field=torch.zeros(3, 2, 16, 16))
    with pytest.raises(TypeError, match="field must be a floating-point"):
        elastic_deform(image, field=torch.zeros(2, 16, 16, dtype=torch.int64))
    with pytest.raises(TypeError, match="image must be a floating-point"):
        elastic_deform(mask[None], mask)
    with pytest.raises(ValueError, match=r"image must have shape \(C, H, W\)"):
        elastic_deform(torch.rand(16, 16))
    with pytest.raises(ValueError, match="image_mode must be one of"):
        elastic_deform(image, image_mode="cubic")
    with pytest.raises(TypeError, match="weight must be a floating-point"):
        elastic_deform(image, weight=mask)
    with pytest.raises(TypeError, match="image must be a torch.Tensor"):
        elastic_deform(np.zeros((1, 16, 16)))
    with pytest.raises(ValueError, match="std must be a finite number >= 0"):
        elastic_deform(image, std=-1.0)
    with pytest.raises(ValueError, match="grid_size must be >= 2"):
        random_displacement_field(16, 16, grid_size=1)
    with pytest.raises(ValueError, match="height must be >= 2"):
        random_displacement_field(1, 16)
    with pytest.raises(TypeError, match="mode='nearest'"):
        warp(mask[None], torch.zeros(2, 16, 16), mode="bilinear")
    with pytest.raises(ValueError, match="sigma must be > 0"):
        gaussian_blur(image, 0.0)


# ---------------------------------------------------------------------------------------------
# flips, rotations, grey values, the dataset hook
# ---------------------------------------------------------------------------------------------
def dihedral_variants(t: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for flipped in (t, t.flip(-1)):
        for k in range(4):
            out.append(torch.rot90(flipped, k, dims=(-2, -1)))
    return out


@pytest.mark.parametrize("height, width, expected_count", [(6, 6, 8), (6, 5, 4)])
def test_random_flip_rotate_covers_the_symmetries_and_keeps_pairs_aligned(height, width,
                                                                          expected_count):
    mask = torch.arange(height * width).reshape(height, width)
    image = mask.float()[None]
    seen = set()
    for seed in range(60):
        out_image, out_mask = random_flip_rotate(image, mask, gen(seed))
        assert out_image.shape == image.shape and out_mask.dtype == mask.dtype
        assert torch.equal(out_image[0], out_mask.float())  # image and mask moved together
        matches = [i for i, v in enumerate(dihedral_variants(mask)) if v.shape == out_mask.shape
                   and torch.equal(v, out_mask)]
        assert len(matches) == 1
        seen.add(tuple(out_mask.flatten().tolist()))
    assert len(seen) == expected_count


def test_intensity_jitter_changes_grey_values_within_bounds():
    image = torch.rand(4, 2, 16, 16, generator=gen(0))
    out = intensity_jitter(image, gen(1), brightness=0.1, contrast=0.2)
    assert out.shape == image.shape and out.dtype == image.dtype
    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    out_mean = out.mean(dim=(1, 2, 3), keepdim=True)
    assert ((out_mean - mean).abs() <= 0.1 + 1e-6).all()
    # Contrast about the mean: the centred image is only rescaled, by a factor in [0.8, 1.2].
    ratio = (out - out_mean).flatten(1).norm(dim=1) / (image - mean).flatten(1).norm(dim=1)
    assert ((ratio >= 0.8 - 1e-5) & (ratio <= 1.2 + 1e-5)).all()
    assert len(set(ratio.tolist())) == 4  # every item its own factors
    torch.testing.assert_close(intensity_jitter(image, gen(1), 0.0, 0.0), image)
    assert torch.equal(out, intensity_jitter(image, gen(1), brightness=0.1, contrast=0.2))
    single = intensity_jitter(image[0], gen(1), brightness=0.1, contrast=0.2)
    torch.testing.assert_close(single, out[0])
    with pytest.raises(ValueError, match="contrast must be < 1"):
        intensity_jitter(image, contrast=1.5)


def test_elastic_augment_matches_the_dataset_hook_contract():
    augment = ElasticAugment(grid_size=3, std=10.0, p=1.0)
    image = torch.rand(1, 64, 64, generator=gen(0))
    instances = torch.randint(0, 6, (64, 64), generator=gen(1), dtype=torch.int32)
    out_image, out_instances = augment(image, instances, gen(2))
    assert out_image.shape == image.shape and out_image.dtype == torch.float32
    assert out_instances.shape == instances.shape and out_instances.dtype == torch.int32
    assert set(out_instances.unique().tolist()) <= set(instances.unique().tolist())
    again = augment(image, instances, gen(2))
    assert torch.equal(out_image, again[0]) and torch.equal(out_instances, again[1])
    assert not torch.equal(out_instances, augment(image, instances, gen(3))[1])
    assert augment(image, instances)[0].shape == image.shape  # generator is optional
    assert "grid_size=3" in repr(augment)

    # With the grey-value jitter off, image and labels still move together.
    paired = ElasticAugment(brightness=0.0, contrast=0.0, image_mode="nearest")
    img, inst = paired(instances.float()[None], instances, gen(4))
    assert torch.equal(img[0], inst.float())

    # Everything switched off is the identity.
    off = ElasticAugment(p=0.0, flip_rotate=False, brightness=0.0, contrast=0.0)
    img, inst = off(image, instances, gen(5))
    assert torch.equal(img, image) and torch.equal(inst, instances)

    # p is a probability: about half the samples are deformed at p = 0.5.
    half = ElasticAugment(p=0.5, flip_rotate=False, brightness=0.0, contrast=0.0)
    deformed = sum(not torch.equal(half(image, instances, gen(s))[1], instances)
                   for s in range(40))
    assert 8 <= deformed <= 32

    with pytest.raises(ValueError, match=r"one sample with image shape \(C, H, W\)"):
        augment(image[None], instances)
    with pytest.raises(ValueError, match=r"p is a probability"):
        ElasticAugment(p=1.5)
