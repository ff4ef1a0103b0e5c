"""Tests for unetlib.data: synthetic generator, file loading/validation, tile datasets."""
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from scipy import ndimage

from unetlib.data import (
    DatasetError,
    GridTileDataset,
    LabeledImage,
    TileDataset,
    WholeImageDataset,
    load_folder,
    load_isbi_stacks,
    load_sources,
    make_synthetic_dataset,
    mask_to_instances,
    normalize_percentile,
    read_image,
    read_mask,
    split_holdout,
    synthetic_cells,
)
from unetlib.shapes import unet_output_size
from unetlib.weights import weight_map


# ------------------------------------------------------------------------------------------------
# Synthetic data
# ------------------------------------------------------------------------------------------------
def test_synthetic_is_deterministic_and_well_formed():
    a = synthetic_cells(96, 80, seed=5)
    b = synthetic_cells(96, 80, seed=np.random.default_rng(5))
    c = synthetic_cells(96, 80, seed=6)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.instances, b.instances)
    assert not np.array_equal(a.instances, c.instances)
    assert a.image.shape == a.instances.shape == a.mask.shape == (96, 80)
    assert a.image.dtype == np.float32 and a.instances.dtype == np.int32
    assert 0.0 <= a.image.min() and a.image.max() <= 1.0
    np.testing.assert_array_equal(a.mask, a.instances > 0)
    ids = np.unique(a.instances)
    np.testing.assert_array_equal(ids, np.arange(len(ids)))  # consecutive ids
    assert a.n_cells == len(ids) - 1 >= 5


def test_synthetic_cells_are_separate_4_connected_objects():
    s = synthetic_cells(128, seed=1)
    # every instance is one 4-connected component ...
    _, n = ndimage.label(s.mask)
    assert n == s.n_cells
    # ... and no two instances touch, not even diagonally
    padded = np.pad(s.instances, 1)
    h, w = s.instances.shape
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            nb = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            assert not np.any((nb > 0) & (s.instances > 0) & (nb != s.instances))


def test_synthetic_cells_touch_so_borders_matter():
    s = synthetic_cells(256, seed=2)
    # Close the 1-px gaps: cells that only touch through a gap merge. Most of them should.
    closed = ndimage.binary_closing(s.mask > 0, structure=np.ones((3, 3)), border_value=1)
    _, n_closed = ndimage.label(closed)
    assert n_closed < 0.3 * s.n_cells
    # and the gap pixels carry the weight map's border term (d1 + d2 = 2 -> about 9.2 + w_c)
    assert (weight_map(s.instances, class_weights=None) > 9).sum() > 300


def test_synthetic_options():
    assert synthetic_cells(40, seed=0, n_cells=0).n_cells == 0
    assert 1 <= synthetic_cells(128, seed=0, n_cells=10).n_cells <= 10
    tiny = synthetic_cells(7, 5, seed=0)
    assert tiny.image.shape == (7, 5)
    easy = synthetic_cells(64, seed=3, border_contrast=0.4, noise_std=0, illumination=0)
    hard = synthetic_cells(64, seed=3)
    np.testing.assert_array_equal(easy.instances, hard.instances)  # rendering options do not move cells
    with pytest.raises(ValueError, match="n_cells"):
        synthetic_cells(32, n_cells=-1)


def test_make_synthetic_dataset_prefix_stable():
    few = make_synthetic_dataset(2, 48, seed=3)
    more = make_synthetic_dataset(4, (48, 56), seed=3)
    assert [x.name for x in few] == ["synthetic_000", "synthetic_001"]
    assert few[0].image.shape == (1, 48, 48) and more[0].image.shape == (1, 48, 56)
    again = make_synthetic_dataset(3, 48, seed=3)
    np.testing.assert_array_equal(few[1].instances, again[1].instances)
    assert few[0].mask.dtype == np.int64


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------
def save_png(path, array):
    Image.fromarray(array).save(path)


@pytest.fixture
def folder(tmp_path):
    """A valid dataset with an 8-bit PNG, a 16-bit PNG and a 16-bit TIFF image; binary and instance masks."""
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    inst = np.zeros((20, 24), dtype=np.uint16)
    inst[2:8, 2:10], inst[2:8, 11:20], inst[12:18, 4:14] = 1, 2, 3
    save_png(tmp_path / "images" / "a.png", rng.integers(0, 256, (20, 24), dtype=np.uint8))
    save_png(tmp_path / "masks" / "a.png", ((inst > 0) * 255).astype(np.uint8))  # 0/255
    save_png(tmp_path / "images" / "b.png", rng.integers(0, 4000, (20, 24)).astype(np.uint16))
    tifffile.imwrite(tmp_path / "masks" / "b.tif", inst)  # instance ids
    tifffile.imwrite(tmp_path / "images" / "c.tiff", rng.integers(100, 3000, (20, 24)).astype(np.uint16))
    save_png(tmp_path / "masks" / "c.png", (inst > 0).astype(np.uint8))  # 0/1
    return tmp_path, inst


def test_load_folder_reads_all_formats(folder):
    root, inst = folder
    items = load_folder(root)
    assert [x.name for x in items] == ["a", "b", "c"]
    for item in items:
        assert item.image.shape == (1, 20, 24) and item.image.dtype == np.float32
        assert 0.0 <= item.image.min() and item.image.max() <= 1.0
        assert item.instances.dtype == np.int32 and item.instances.max() == 3
        np.testing.assert_array_equal(item.mask, inst > 0)
    np.testing.assert_array_equal(items[1].instances, inst)  # instance ids kept
    # 16-bit data using only 0..4000 is still spread over [0, 1] (percentiles, not dtype range)
    assert items[1].image.max() == 1.0 and np.percentile(items[1].image, 50) > 0.3


def test_percentile_normalisation_ignores_hot_pixels():
    img = np.full((20, 20), 100.0)
    img[:, 10:] = 200.0
    img[0, 0] = 65535  # one hot pixel (0.25 %) must not squash the rest
    out = normalize_percentile(img)
    assert out[5, 1] == 0.0 and out[5, 17] == 1.0
    np.testing.assert_array_equal(normalize_percentile(np.full((3, 3), 7)), 0.0)


def test_rgb_images_keep_or_convert_channels(tmp_path):
    rgb = np.zeros((8, 9, 3), dtype=np.uint8)
    rgb[..., 0] = np.arange(9) * 20
    rgb[..., 2] = 255 - np.arange(9)[:, None].T * 20
    save_png(tmp_path / "rgb.png", rgb)
    kept = read_image(tmp_path / "rgb.png")
    gray = read_image(tmp_path / "rgb.png", color="gray")
    assert kept.shape == (3, 8, 9) and gray.shape == (1, 8, 9)
    save_png(tmp_path / "rgba.png", np.dstack([rgb, np.full((8, 9), 255, np.uint8)]))
    assert read_image(tmp_path / "rgba.png").shape == (3, 8, 9)  # alpha dropped


def test_palette_png_mask_gives_indices_and_palette_image_gives_colours(tmp_path):
    indices = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    img = Image.fromarray(indices, mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    img.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png"), indices)
    colours = read_image(tmp_path / "p.png")
    assert colours.shape == (3, 2, 3)
    np.testing.assert_array_equal(colours[0] > 0.5, indices == 1)  # red channel


def test_load_sources_dispatches(folder, tmp_path):
    root, _ = folder
    assert [x.name for x in load_sources(root)] == ["a", "b", "c"]
    synthetic = load_sources("synthetic", n_synthetic=2, synthetic_size=32, seed=4)
    np.testing.assert_array_equal(synthetic[1].instances, make_synthetic_dataset(2, 32, seed=4)[1].instances)
    with pytest.raises(DatasetError, match="not found or not a dataset"):
        load_sources(tmp_path / "nope")


def test_colour_mask_is_refused_with_conversion_hint(folder):
    root, inst = folder
    colour = np.zeros((20, 24, 3), dtype=np.uint8)
    colour[inst == 1] = (255, 0, 0)
    colour[inst == 2] = (0, 255, 0)
    save_png(root / "masks" / "a.png", colour)
    with pytest.raises(DatasetError, match=r"a\.png: mask is a colour \(RGB\) image.*single-channel.*np\.unique"):
        load_folder(root)
    grey_as_rgb = np.repeat(((inst > 0) * 255).astype(np.uint8)[..., None], 3, axis=2)
    save_png(root / "masks" / "a.png", grey_as_rgb)  # identical channels: accepted
    assert load_folder(root)[0].instances.max() == 3


def test_size_mismatch_names_file_and_sizes(folder):
    root, _ = folder
    save_png(root / "masks" / "a.png", np.zeros((20, 20), dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"masks/a\.png: mask is 20x20 \(HxW\) but image a\.png is 20x24"):
        load_folder(root)


def test_missing_pairs_are_listed(folder):
    root, _ = folder
    (root / "masks" / "c.png").unlink()
    save_png(root / "masks" / "zz.png", np.zeros((20, 24), dtype=np.uint8))
    with pytest.raises(DatasetError, match="images without a mask: c; masks without an image: zz"):
        load_folder(root)


def test_duplicate_stems_are_refused(folder):
    root, _ = folder
    save_png(root / "images" / "a.tif", np.zeros((20, 24), dtype=np.uint8))
    with pytest.raises(DatasetError, match="two files share the stem 'a' \\(a.png and a.tif\\)"):
        load_folder(root)


def test_labeled_image_checks_shapes():
    with pytest.raises(DatasetError, match=r"x: image is 4x5 but instances are 4x4"):
        LabeledImage(image=np.zeros((4, 5)), instances=np.zeros((4, 4)), name="x")


def test_mask_suffix_pairs_files(folder):
    root, _ = folder
    for p in list((root / "masks").iterdir()):
        p.rename(p.with_name(p.stem + "_mask" + p.suffix))
    assert len(load_folder(root, mask_suffix="_mask")) == 3


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(DatasetError, match="folder not found"):
        load_folder(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match=r"images: no images found \(looked for \*\.png, \*\.tif, \*\.tiff"):
        load_folder(tmp_path)


def test_unreadable_file_is_named(folder):
    root, _ = folder
    (root / "images" / "b.png").write_bytes(b"\x89PNG definitely not a png")
    with pytest.raises(DatasetError, match=r"images/b\.png: cannot read this file"):
        load_folder(root)


def test_unexpected_mask_values_are_explained(folder):
    root, inst = folder
    anti_aliased = ((inst > 0) * 255).astype(np.uint8)
    anti_aliased[2, 2:10] = 128
    save_png(root / "masks" / "a.png", anti_aliased)
    with pytest.raises(DatasetError, match=r"a\.png: ambiguous mask values \{0, 128, 255\}.*mask > 127"):
        load_folder(root)
    with pytest.raises(DatasetError, match=r"expected a binary mask.*found \{0, 128, 255\}"):
        load_folder(root, mask_type="binary")
    assert load_folder(root, mask_type="instance")[0].instances.max() == 255


def test_mask_to_instances_rules():
    binary = np.array([[1, 1, 0, 1], [0, 0, 0, 1], [1, 0, 0, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(mask_to_instances(binary), ndimage.label(binary)[0])
    diagonal = np.array([[1, 0], [0, 1]], dtype=np.uint8)
    assert mask_to_instances(diagonal).max() == 2  # 4-connectivity
    with pytest.raises(DatasetError, match="non-integer"):
        mask_to_instances(np.array([[0.0, 0.5]]))
    with pytest.raises(DatasetError, match="negative"):
        mask_to_instances(np.array([[0, -1]]))


def test_mixed_channels_are_refused(folder):
    root, _ = folder
    save_png(root / "images" / "a.png", np.zeros((20, 24, 3), dtype=np.uint8) + 9)
    with pytest.raises(DatasetError, match="color='gray'"):
        load_folder(root)
    assert load_folder(root, color="gray")[0].image.shape == (1, 20, 24)


def test_isbi_stacks(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 16, 18), dtype=np.uint8)
    labels = np.full((3, 16, 18), 255, dtype=np.uint8)
    labels[:, 7, :] = 0  # a membrane splits each slice into two cells
    tifffile.imwrite(tmp_path / "train-volume.tif", images, photometric="minisblack")
    tifffile.imwrite(tmp_path / "train-labels.tif", labels, photometric="minisblack")
    items = load_isbi_stacks(tmp_path / "train-volume.tif", tmp_path / "train-labels.tif")
    assert len(items) == 3 and items[0].image.shape == (1, 16, 18)
    assert items[2].instances.max() == 2 and items[2].mask[7].sum() == 0 and items[2].mask[0].all()
    tifffile.imwrite(tmp_path / "short.tif", labels[:2], photometric="minisblack")
    with pytest.raises(DatasetError, match="has 2 pages but.*has 3"):
        load_isbi_stacks(tmp_path / "train-volume.tif", tmp_path / "short.tif")
    grey = labels.copy()
    grey[0, 0, 0] = 17
    tifffile.imwrite(tmp_path / "grey.tif", grey, photometric="minisblack")
    with pytest.raises(DatasetError, match=r"page 0.*found \{0, 17, 255\}"):
        load_isbi_stacks(tmp_path / "train-volume.tif", tmp_path / "grey.tif")


# ------------------------------------------------------------------------------------------------
# Tile datasets
# ------------------------------------------------------------------------------------------------
def coordinate_source(h=40, w=48, seed=0):
    """An image whose channels encode (y, x): any misalignment between tiles is detectable."""
    s = synthetic_cells(h, w, seed=seed, cell_size=12)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return LabeledImage(image=np.stack([yy, xx]), instances=s.instances, name="coords")


def check_alignment(item, source, context):
    """The centre of the input tile tells where each label pixel came from; compare."""
    cy, cx = context
    oh, ow = item["mask"].shape
    centre = item["image"][:, cy : cy + oh, cx : cx + ow].numpy().round().astype(int)
    ys, xs = centre
    np.testing.assert_array_equal(item["instances"].numpy(), source.instances[ys, xs])
    np.testing.assert_array_equal(item["mask"].numpy(), source.mask[ys, xs])
    full_weight = weight_map(source.instances)
    np.testing.assert_allclose(item["weight"].numpy(), full_weight[ys, xs], rtol=1e-5, atol=1e-5)


def test_valid_padding_items_follow_the_contract():
    sources = make_synthetic_dataset(2, 64, seed=0)
    ds = TileDataset(sources, 188, depth=4)  # output size from unetlib.shapes
    assert ds.output_size == (unet_output_size(188), unet_output_size(188)) == (4, 4)
    item = ds[0]
    assert item["image"].shape == (1, 188, 188) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (4, 4) and item["mask"].dtype == torch.int64
    assert item["weight"].shape == (4, 4) and item["weight"].dtype == torch.float32
    assert item["instances"].shape == (4, 4) and item["instances"].dtype == torch.int32
    same = TileDataset(sources, 32, padding="same")
    assert same[0]["image"].shape == (1, 32, 32) and same[0]["mask"].shape == (32, 32)
    explicit = TileDataset(sources, (30, 34), output_size=(10, 14))
    assert explicit[1]["image"].shape == (1, 30, 34) and explicit[1]["weight"].shape == (10, 14)


def test_tiles_align_with_labels_under_flips_rotations_and_mirroring():
    source = coordinate_source()
    ds = TileDataset([source], 30, output_size=10, samples_per_epoch=40, seed=1)
    for i in range(len(ds)):
        check_alignment(ds[i], source, ds.context)


def test_grid_tiles_cover_the_image_and_mirror_the_border():
    source = coordinate_source()
    ds = GridTileDataset([source], 30, output_size=16)
    covered = np.zeros(source.shape, dtype=bool)
    for i in range(len(ds)):
        item = ds[i]
        check_alignment(item, source, ds.context)
        y0, x0 = item["position"].tolist()
        covered[y0 : y0 + 16, x0 : x0 + 16] = True
    assert covered.all()
    first = ds[0]  # label tile at (0, 0): its context is the mirror image of the first rows/columns
    expected = np.pad(source.image, ((0, 0), (7, 7), (7, 7)), mode="reflect")[:, :30, :30]
    np.testing.assert_array_equal(first["image"].numpy(), expected)


def test_sampling_is_reproducible_per_seed_epoch_and_index():
    sources = make_synthetic_dataset(2, 48, seed=1)
    a = TileDataset(sources, 28, output_size=12, seed=7)
    b = TileDataset(sources, 28, output_size=12, seed=7)
    order = [b[i] for i in reversed(range(len(b)))][::-1]  # access order does not matter
    for i in range(len(a)):
        for key in ("image", "mask", "weight", "instances"):
            assert torch.equal(a[i][key], order[i][key]), (i, key)
    first = a[0]["image"]
    a.set_epoch(1)
    assert not torch.equal(a[0]["image"], first)
    a.set_epoch(0)
    assert torch.equal(a[0]["image"], first)
    assert not torch.equal(TileDataset(sources, 28, output_size=12, seed=8)[0]["image"], first)
    loader = torch.utils.data.DataLoader(a, batch_size=4)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 1, 28, 28) and batch["weight"].shape == (4, 12, 12)


def test_augment_hook_recomputes_weights_consistently():
    source = coordinate_source(seed=3)
    calls = []

    def identity(image, instances):
        calls.append((image.shape, instances.dtype))
        return image, instances

    plain = TileDataset([source], 30, output_size=10, samples_per_epoch=6, seed=2)
    hooked = TileDataset([source], 30, output_size=10, samples_per_epoch=6, seed=2, augment=identity,
                         augment_margin=5)
    for i in range(6):
        a, b = plain[i], hooked[i]
        for key in ("image", "mask", "instances"):
            torch.testing.assert_close(a[key], b[key])
        torch.testing.assert_close(a["weight"], b["weight"], rtol=1e-5, atol=1e-5)
    assert calls[0] == ((2, 40, 40), torch.int64)  # input tile + 2 * margin

    def shift(image, instances, generator):
        assert isinstance(generator, torch.Generator)
        return torch.roll(image, 3, dims=-1), torch.roll(instances, 3, dims=-1)

    shifted = TileDataset([source], 30, output_size=10, samples_per_epoch=8, seed=2, augment=shift)
    for i in range(8):
        check_alignment(shifted[i], source, shifted.context)  # image and labels moved together


def test_elastic_deformation_hook_runs():
    elastic = pytest.importorskip("unetlib.augment").elastic_deform
    sources = make_synthetic_dataset(1, 64, seed=0)
    ds = TileDataset(sources, 44, output_size=20, augment=elastic, seed=0)
    a, b = ds[0], ds[0]
    assert a["image"].shape == (1, 44, 44) and a["weight"].shape == (20, 20)
    torch.testing.assert_close(a["image"], b["image"])  # seeded
    torch.testing.assert_close(a["mask"], (a["instances"] > 0).long())
    assert torch.isfinite(a["weight"]).all() and (a["weight"] > 0).all()


def test_whole_image_dataset_and_errors():
    sources = make_synthetic_dataset(2, (40, 52), seed=0)
    ds = WholeImageDataset(sources)
    item = ds[1]
    assert item["image"].shape == (1, 40, 52) and item["mask"].shape == (40, 52)
    assert item["name"] == "synthetic_001"
    np.testing.assert_allclose(item["weight"].numpy(), weight_map(sources[1].instances))
    with pytest.raises(DatasetError, match="label tile is 388x388"):
        TileDataset(sources, 572)
    with pytest.raises(ValueError, match="Nearest valid sizes: 188 and 204"):
        TileDataset(sources, 190)
    with pytest.raises(DatasetError, match="no images"):
        TileDataset([], 188)
    with pytest.raises(TypeError, match="LabeledImage"):
        TileDataset([np.zeros((4, 4))], 188)


def test_split_holdout():
    items = list(range(10))
    train, val = split_holdout(items, 0.2, seed=0)
    assert len(val) == 2 and len(train) == 8 and sorted(train + val) == items
    assert split_holdout(items, 0.2, seed=0) == (train, val)
    assert split_holdout(items, 0.2, seed=1) != (train, val)
    assert len(split_holdout(items[:2], 0.01)[1]) == 1  # never empty
    with pytest.raises(ValueError, match="at least 2"):
        split_holdout([1], 0.5)
    with pytest.raises(ValueError, match="fraction"):
        split_holdout(items, 1.0)
