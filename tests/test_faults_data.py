"""Bad data that used to give silently wrong results: NaN pixels, page stacks read as RGB,
class masks read as instance masks."""
import numpy as np
import pytest
import tifffile
from PIL import Image

from unetlib.data import DatasetError, load_folder, read_image, read_mask, read_tiff_stack


def make_folder(root, masks, images=None, ext=".png"):
    """root/images/NAME.png + root/masks/NAME{ext} from dicts of arrays; returns root."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for name, mask in masks.items():
        image = images[name] if images else rng.integers(0, 256, mask.shape, dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        if ext == ".png":
            Image.fromarray(mask).save(root / "masks" / f"{name}.png")
        else:
            tifffile.imwrite(root / "masks" / f"{name}{ext}", mask)
    return root


# ------------------------------------------------------------------------------ task 4: NaN / inf
def test_nan_and_inf_pixels_are_refused_with_the_file_and_count(tmp_path):
    image = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    image[0, :2] = np.nan
    image[3, 3] = -np.inf
    tifffile.imwrite(tmp_path / "bad.tif", image)
    with pytest.raises(DatasetError, match=r"bad\.tif: 3 of 64 pixels are not finite \(2 NaN, 1 \+/-inf\)"):
        read_image(tmp_path / "bad.tif")


def test_nan_pixels_in_an_rgb_image_count_once_per_pixel(tmp_path):
    image = np.ones((6, 5, 3), dtype=np.float32)
    image[1, 1, :] = np.nan  # one pixel, three bad channels
    tifffile.imwrite(tmp_path / "rgb.tif", image, photometric="rgb")
    with pytest.raises(DatasetError, match=r"rgb\.tif: 1 of 30 pixels are not finite"):
        read_image(tmp_path / "rgb.tif")


def test_nan_image_in_a_training_folder_is_named(tmp_path):
    root = make_folder(tmp_path / "d", {"a": np.zeros((8, 8), np.uint8)})
    (root / "images" / "a.png").unlink()
    image = np.zeros((8, 8), np.float32)
    image[2, 2] = np.inf
    tifffile.imwrite(root / "images" / "a.tif", image)
    with pytest.raises(DatasetError, match=r"images/a\.tif: 1 of 64 pixels are not finite"):
        load_folder(root)


# ------------------------------------------------------------------------------ task 5: page stacks
@pytest.mark.parametrize("pages", [3, 4, 5])
def test_multi_page_grey_tiff_is_refused_the_same_way_for_any_page_count(tmp_path, pages):
    stack = np.random.default_rng(0).integers(0, 255, (pages, 8, 9), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    with pytest.raises(DatasetError, match=rf"stack\.tif: image is a stack of {pages} pages"):
        read_image(tmp_path / "stack.tif")
    with pytest.raises(DatasetError, match=rf"stack\.tif: mask is a stack of {pages} pages"):
        read_mask(tmp_path / "stack.tif")
    assert read_tiff_stack(tmp_path / "stack.tif").shape == (pages, 8, 9)  # as a stack it is fine


def test_three_page_tiff_mask_in_a_folder_is_refused(tmp_path):
    root = make_folder(tmp_path / "d", {"a": np.zeros((8, 9), np.uint8)})
    (root / "masks" / "a.png").unlink()
    tifffile.imwrite(root / "masks" / "a.tif", np.zeros((3, 8, 9), np.uint8), photometric="minisblack")
    with pytest.raises(DatasetError, match=r"masks/a\.tif: mask is a stack of 3 pages"):
        load_folder(root)


def test_real_rgb_tiffs_are_still_colour(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (8, 9, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "contig.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    tifffile.imwrite(tmp_path / "rgba.tif", np.dstack([rgb, np.full((8, 9), 255, np.uint8)]), photometric="rgb")
    for name in ("contig.tif", "planar.tif", "rgba.tif"):
        image = read_image(tmp_path / name)
        assert image.shape == (3, 8, 9), name
    np.testing.assert_allclose(read_image(tmp_path / "planar.tif"), read_image(tmp_path / "contig.tif"))


def test_grey_tiff_with_alpha_is_grey_and_non_rgb_samples_are_refused(tmp_path):
    grey_alpha = np.zeros((8, 9, 2), np.uint8)
    grey_alpha[..., 0] = np.arange(9)
    tifffile.imwrite(tmp_path / "ga.tif", grey_alpha, photometric="minisblack", planarconfig="contig",
                     extrasamples=["unassalpha"])
    assert read_image(tmp_path / "ga.tif").shape == (1, 8, 9)
    tifffile.imwrite(tmp_path / "three.tif", np.zeros((8, 9, 3), np.uint8), photometric="minisblack",
                     planarconfig="contig")
    with pytest.raises(DatasetError, match=r"three\.tif: image has 3 samples per pixel that are not RGB"):
        read_image(tmp_path / "three.tif")


# ------------------------------------------------------------------------------ task 6: class masks
def three_class_mask():
    mask = np.zeros((16, 16), np.uint8)
    mask[2:6, 2:6] = 1
    mask[10:14, 2:6] = 1  # class 1 twice: not one cell
    mask[2:6, 10:14] = 2
    return mask


def test_small_id_sets_are_refused_as_ambiguous_naming_the_flag(tmp_path):
    two_ids = np.zeros((16, 16), np.uint8)
    two_ids[2:6, 2:6], two_ids[10:14, 10:14] = 1, 2  # 2 cells or 2 classes?
    root = make_folder(tmp_path / "d", {"a": two_ids, "b": two_ids.copy()})
    with pytest.raises(DatasetError, match=r"a\.png: mask values \{0, 1, 2\} could be class ids or instance "
                                           r"ids \(no mask in .* uses an id above 2\).*--masks classes.*"
                                           r"--masks instances"):
        load_folder(root)


def test_an_id_with_several_regions_is_refused_as_ambiguous(tmp_path):
    mask = three_class_mask()
    mask[14, 14] = 3  # ids up to 3, but id 1 covers two regions
    root = make_folder(tmp_path / "d", {"a": mask})
    with pytest.raises(DatasetError, match=r"id 1 covers 2 separate regions.*--masks classes"):
        load_folder(root)


def test_chosen_interpretations_and_the_log_line(tmp_path):
    root = make_folder(tmp_path / "d", {"a": three_class_mask(), "b": three_class_mask()})
    lines = []
    items = load_folder(root, mask_type="classes", log=lines.append)
    assert lines == [f"masks: {root / 'masks'} read as 2 class masks (classes {{0, 1, 2}})"]
    assert items[0].num_classes == 3
    np.testing.assert_array_equal(items[0].mask, three_class_mask())
    assert items[0].instances.max() == 3  # each region its own instance (for the weight map)
    lines.clear()
    items = load_folder(root, mask_type="instances", log=lines.append)
    assert lines == [f"masks: {root / 'masks'} read as 2 instance labels (2 ids each)"]
    assert items[0].num_classes == 2 and items[0].mask.max() == 1


def test_unambiguous_folders_keep_their_old_reading_and_say_so(tmp_path):
    inst = np.zeros((16, 16), np.uint16)
    inst[1:4, 1:4], inst[6:9, 6:9], inst[12:15, 1:4] = 1, 2, 3
    root = make_folder(tmp_path / "d", {"a": ((inst > 0) * 255).astype(np.uint8), "b": inst,
                                       "c": (inst > 0).astype(np.uint8)}, ext=".tif")
    lines = []
    items = load_folder(root, log=lines.append)
    assert lines == [f"masks: {root / 'masks'} read as 1 binary 0/255, 1 instance labels (3 ids each), "
                     "1 binary 0/1"]
    for item in items:
        np.testing.assert_array_equal(item.instances, inst)


def test_tile_dataset_serves_class_ids(tmp_path):
    from unetlib.data import TileDataset, WholeImageDataset

    root = make_folder(tmp_path / "d", {"a": three_class_mask()})
    items = load_folder(root, mask_type="classes")
    tiles = TileDataset(items, input_size=16, output_size=16, samples_per_epoch=4)
    assert set(np.unique(tiles[0]["mask"].numpy())) <= {0, 1, 2} and tiles[0]["mask"].max() == 2
    whole = WholeImageDataset(items)[0]
    np.testing.assert_array_equal(whole["mask"].numpy(), three_class_mask())
