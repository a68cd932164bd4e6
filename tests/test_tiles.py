"""Giant tiles window by window: TIFF regions read segment by segment, and prepare cutting tiled pairs one window at a
time with the crops of the whole-image path, on small tiles with small windows (the 40,000² figures are in
`./dev bench giant`)."""

import io
import json
import os

import numpy as np
import pytest
import tifffile

from conftest import read_records, shard_files
from pipelines import prepare
from segprep import codec, crops
from segprep.regions import TiffRegions
from test_prepare import _png_bomb
from tiffs import pattern_classes, pattern_image, region, write_tiff

BEAM = ["--runner=DirectRunner"]
PATTERNS = ["--images", "images/{split}/{id}.tif", "--masks", "masks/{split}/{id}.tif"]


class CountingFile(io.BytesIO):
    """A file that counts the bytes read from it."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.bytes_read = 0

    def read(self, n=-1):
        out = super().read(n)
        self.bytes_read += len(out)
        return out


_RNG = np.random.default_rng(0)
_RGB = _RNG.integers(0, 255, (300, 500, 3), dtype=np.uint8)
_GREY = _RNG.integers(0, 20, (300, 500), dtype=np.uint8)
LAYOUTS = {
    "rgb tiled": (_RGB, dict(photometric="rgb", tile=(64, 64))),
    "rgb tiled jpeg": (_RGB, dict(photometric="rgb", tile=(64, 64), compression="jpeg")),
    "rgb stripped deflate": (_RGB, dict(photometric="rgb", rowsperstrip=37, compression="deflate")),
    "planar tiled lzw": (np.moveaxis(_RGB, -1, 0), dict(photometric="rgb", planarconfig="separate", tile=(32, 48),
                                                        compression="lzw")),
    "planar stripped": (np.moveaxis(_RGB, -1, 0), dict(photometric="rgb", planarconfig="separate",
                                                       rowsperstrip=37)),
    "rgba tiled": (np.dstack([_RGB, _GREY]), dict(photometric="rgb", extrasamples=["unassalpha"], tile=(64, 64))),
    "grey 16-bit tiled": (_GREY.astype(np.uint16) * 300, dict(photometric="minisblack", tile=(64, 64))),
    "grey one strip": (_GREY, dict(photometric="minisblack")),
}


@pytest.mark.parametrize("name", LAYOUTS)
def test_a_region_read_equals_that_region_of_the_whole_decode_and_reads_only_its_segments(name):
    array, flags = LAYOUTS[name]
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **flags)
    data = buffer.getvalue()
    whole = tifffile.imread(io.BytesIO(data))
    if whole.ndim == 3 and whole.shape[0] == 3 and flags.get("planarconfig"):
        whole = np.moveaxis(whole, 0, -1)
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        counts = tif.pages[0].databytecounts
    for y0, y1, x0, x1 in [(0, 300, 0, 500), (10, 100, 20, 300), (63, 65, 63, 65), (290, 400, 490, 600),
                           (0, 1, 0, 1), (128, 384, 100, 356)]:
        f = CountingFile(data)
        regions = TiffRegions(f)
        header = f.bytes_read
        got = regions.read(y0, y1, x0, x1)
        assert got.dtype == whole.dtype and np.array_equal(got, whole[y0:y1, x0:x1]), (y0, y1, x0, x1)
        if (y1 - y0) * (x1 - x0) <= 4:  # a 2×2 region touches at most 4 segments of each plane
            planes = 3 if flags.get("planarconfig") else 1
            assert f.bytes_read - header <= planes * 4 * max(counts)
            assert len(counts) <= 4 * planes or f.bytes_read < len(data) / 2
        regions.close()


def test_a_tiff_whose_tags_declare_more_data_than_it_holds_is_refused_before_any_segment_is_read():
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, _RGB, photometric="rgb", tile=(64, 64))
    data = buffer.getvalue()
    with pytest.raises(codec.DecodeError, match=r"truncated TIFF: its tags declare image data up to byte .* but the "
                                                r"file has 100,000 bytes"):
        TiffRegions(io.BytesIO(data[:100_000]))


H, W = 700, 950  # 3 × 4 windows of 256², the last ones partial


def _tile_tree(root, pairs):
    """Tiled TIFF pairs images/{split}/{id}.tif + masks/{split}/{id}.tif, each from functions of (y, x)."""
    for (split, image_id), (image_fn, mask_fn, size, tile) in pairs.items():
        for folder, fn in (("images", image_fn), ("masks", mask_fn)):
            os.makedirs(os.path.join(root, folder, split), exist_ok=True)
            write_tiff(os.path.join(root, folder, split, f"{image_id}.tif"), fn, *size, tile=tile)


def _shifted(fn, dy, dx):
    return lambda y, x: fn(y + dy, x + dx)


def _binary(y, x):
    return np.where((y // 90 + x // 70) % 3 == 0, 255, 0).astype(np.uint8)


@pytest.fixture(scope="module")
def tile_tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tiles"))
    _tile_tree(root, {
        ("train", "a"): (pattern_image, pattern_classes, (H, W), 64),
        ("train", "b"): (_shifted(pattern_image, 11, 29), _shifted(pattern_classes, 11, 29), (W, H), None),
        ("train", "small"): (pattern_image, pattern_classes, (200, 180), 64),  # below a window: decoded whole
        ("val", "a"): (_shifted(pattern_image, 3, 5), _shifted(pattern_classes, 3, 5), (H, W), 128),
        ("val", "binary"): (pattern_image, _binary, (600, 520), 64),  # 0/255 labels: reported as such
    })
    return root


def run(root, out, *flags):
    return prepare.run(["--input_dir", root, "--output_dir", str(out), *PATTERNS, *flags, *BEAM])


def _padded(fn, y, x, size, height, width, pad):
    out = np.full((size, size) + fn(np.zeros((1, 1), int), np.zeros((1, 1), int)).shape[2:], pad, np.uint8)
    out[:min(size, height - y), :min(size, width - x)] = region(fn, y, min(height, y + size), x, min(width, x + size))
    return out


def test_every_crop_of_a_tile_cut_window_by_window_is_its_source_region(tile_tree, tmp_path):
    """Random crops anywhere in the tile, across window edges too, equal the source's pixels (PNG crops: lossless);
    val tiles cover every pixel exactly once. --max_pixels below the tiles' size: decoded whole, they would be
    refused, so this run read them by window."""
    out = tmp_path / "out"
    assert run(tile_tree, out, "--window_size", "256", "--max_pixels", "100000", "--crop_size", "96",
               "--crops_per_image", "40", "--image_format", "png") == 0
    sources = {("train", "a"): (pattern_image, pattern_classes, H, W),
               ("train", "b"): (_shifted(pattern_image, 11, 29), _shifted(pattern_classes, 11, 29), W, H),
               ("train", "small"): (pattern_image, pattern_classes, 200, 180),
               ("val", "a"): (_shifted(pattern_image, 3, 5), _shifted(pattern_classes, 3, 5), H, W),
               ("val", "binary"): (pattern_image, _binary, 600, 520)}
    across = 0
    covered = {key: np.zeros(size[2:], np.int64) for key, size in sources.items() if key[0] == "val"}
    for split in ("train", "val"):
        records = read_records(shard_files(str(out), split))
        assert len(records) == (3 * 40 if split == "train" else 8 * 10 + 7 * 6)
        for r in records:
            image_fn, mask_fn, height, width = sources[split, r["image/source_id"].decode()]
            y, x = (int(v) for v in r["image/crop/offset"])
            assert (r["image/source/height"], r["image/source/width"]) == (height, width)
            np.testing.assert_array_equal(r["image"], _padded(image_fn, y, x, 96, height, width, 0))
            np.testing.assert_array_equal(r["mask"], _padded(mask_fn, y, x, 96, height, width, 255))
            across += y // 256 != min(height - 1, y + 95) // 256 or x // 256 != min(width - 1, x + 95) // 256
            if split == "val":
                covered[split, r["image/source_id"].decode()][y:y + 96, x:x + 96] += 1
    assert across > 20  # many crops straddle window edges
    for key, count in covered.items():
        assert count.min() == count.max() == 1, key
    meta = json.load(open(out / "metadata.json"))
    assert meta["splits"]["train"]["source_pixels"] == 2 * H * W + 200 * 180
    assert meta["splits"]["val"]["binary_masks"] == 1


def _shards(out):
    return {name: open(os.path.join(out, name), "rb").read() for name in sorted(os.listdir(out))
            if name.endswith(".tfrecord")}


def _splits(out):
    return json.load(open(os.path.join(out, "metadata.json")))["splits"]


def test_window_size_workers_and_shuffle_path_do_not_change_a_byte(tile_tree, tmp_path):
    """The whole-image path (windows larger than the tiles) is the reference; --cat_max_ratio re-draws crops, some
    into other windows, and --oversample_fraction centres crops on classes 3 and 4, found window by window and cut
    by a second round of windows. Shards and metadata are the same for every window size, on 2 workers and through
    Beam's shuffle."""
    flags = ["--crop_size", "64", "--crops_per_image", "30", "--cat_max_ratio", "0.5", "--num_shards", "3",
             "--oversample_fraction", "0.4", "--oversample_classes", "3,4"]
    classes = region(pattern_classes, 0, H, 0, W)
    elsewhere = oversampled = 0  # crops of tile "a": moved out of their first window's cell; centred on a class
    for k in range(30):
        if crops.is_oversampled(0, "a", k, 0.4):
            oversampled += 1
            continue
        first = crops.random_crop(H, W, 64, 0, "a", k)
        final = crops.random_crop(H, W, 64, 0, "a", k,
                                  lambda box: crops.is_dominated(crops.cut(classes, box, 255), 0.5))
        elsewhere += (first.y // 256, first.x // 256) != (final.y // 256, final.x // 256)
    assert elsewhere >= 3 and oversampled >= 10
    assert run(tile_tree, tmp_path / "whole", *flags, "--window_size", "100000") == 0
    want, splits = _shards(tmp_path / "whole"), _splits(tmp_path / "whole")
    assert len(want) == 6
    two = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    for name, extra in (("w256", ["--window_size", "256"]), ("w100", ["--window_size", "100", *two]),
                        ("w300beam", ["--window_size", "300", "--shuffle", "beam"])):
        assert run(tile_tree, tmp_path / name, *flags, *extra) == 0
        assert _shards(tmp_path / name) == want, name
        assert _splits(tmp_path / name) == splits, name


@pytest.mark.parametrize("shuffle", ["spill", "beam"])
def test_a_tile_failing_in_one_window_is_one_error_record_and_none_of_its_crops_are_written(tmp_path, shuffle):
    root = str(tmp_path / "in")

    def off_palette(y, x):  # VOC has classes 0..20 and 255: 77 is off it, in one window's cell only
        out = pattern_classes(y, x)
        out[(y >= 300) & (y < 310) & (x >= 520) & (x < 530)] = 77
        return out

    _tile_tree(root, {("train", "good"): (pattern_image, pattern_classes, (H, W), 64),
                      ("train", "bad"): (pattern_image, off_palette, (H, W), 64),
                      ("train", "cut"): (pattern_image, pattern_classes, (H, W), 64),
                      ("train", "wide"): (pattern_image, pattern_classes, (H, W), 64),
                      ("train", "garbled"): (pattern_image, pattern_classes, (H, W), 64)})
    path = os.path.join(root, "images", "train", "garbled.tif")
    with tifffile.TiffFile(path) as tif:  # one image tile's deflate stream overwritten, in a window of its own
        offset = tif.pages[0].dataoffsets[5 * 15 + 9]  # tile row 5, column 9: rows 320–383, columns 576–639
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * 16)
    path = os.path.join(root, "images", "train", "cut.tif")
    data = open(path, "rb").read()
    with open(path, "wb") as f:  # its tags still declare every tile
        f.write(data[:len(data) // 2])
    write_tiff(os.path.join(root, "masks", "train", "wide.tif"), pattern_classes, H, W + 1, tile=64)
    for folder in ("images", "masks"):
        with open(os.path.join(root, folder, "train", "bomb.tif"), "wb") as f:  # a PNG named .tif
            f.write(_png_bomb(50_000, 50_000))
    write_tiff(os.path.join(root, "images", "train", "pngmask.tif"), pattern_image, H, W, tile=64)
    with open(os.path.join(root, "masks", "train", "pngmask.tif"), "wb") as f:  # a PNG: not readable by window
        f.write(codec.encode_index_png(region(pattern_classes, 0, H, 0, W)))
    out = tmp_path / "out"
    flags = ["--window_size", "256", "--crop_size", "64", "--crops_per_image", "25", "--shuffle", shuffle,
             "--max_pixels", "500000"]  # below the tiles' 665,000 px: only what is read by window gets through
    assert run(root, out, *flags) == 1
    errors = {e["id"]: e for e in map(json.loads, open(out / "errors" / "train.jsonl"))}
    assert {k: e["reason"] for k, e in errors.items()} == {
        "bad": "unknown_colors", "cut": "bad_image", "wide": "size_mismatch", "bomb": "too_large",
        "garbled": "bad_image", "pngmask": "too_large"}
    assert errors["bad"]["error"].startswith("mask: 100 mask pixels have 1 values off the palette: (77,)×100.")
    assert errors["bad"]["error"].endswith("(in rows 256–511, columns 512–767 of the 950×700 (w×h) tile)")
    assert errors["cut"]["error"].startswith("image: truncated TIFF: its tags declare image data up to byte")
    assert errors["garbled"]["error"].startswith("image: corrupt TIFF: segment 84: ")
    assert errors["garbled"]["error"].endswith("(in rows 256–511, columns 512–767 of the 950×700 (w×h) tile)")
    assert errors["pngmask"]["error"] == (
        "image: 950×700 (w×h) = 665,000 px, above --max_pixels 500,000; it is a tiled TIFF, but its mask is not: "
        "convert the mask to a tiled TIFF too, and both are read window by window")
    assert errors["wide"]["error"] == "mask is 951×700 (w×h) but its image is 950×700; they must be the same size"
    records = read_records(shard_files(str(out), "train"))
    assert {r["image/source_id"].decode() for r in records} == {"good"} and len(records) == 25
    meta = _splits(out)["train"]
    assert meta["images_used"] == 1 and meta["records"] == 25 and meta["source_pixels"] == H * W
    # Under --unknown_colors=ignore the off-palette pixels become 255, counted once each across the windows.
    assert run(root, tmp_path / "ignore", *flags, "--unknown_colors", "ignore") == 1
    meta = _splits(tmp_path / "ignore")["train"]
    assert meta["images_used"] == 2 and meta["unknown_pixels_ignored"] == 100 and meta["records"] == 50
