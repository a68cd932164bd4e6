"""Georeferenced sources: every crop carries its own map position (CRS and float64 transform, the source's shifted by
the crop's offset), on the whole-image and the window-by-window paths alike; metadata.json lists each source's
grid; an image, mask or extra input on another grid is an error record naming both grids."""

import json
import os

import cv2
import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from conftest import shard_files
from pipelines import prepare
from segprep import geo, verify
from segprep.formats import records, tfrecord

BEAM = ["--runner=DirectRunner"]
ORIGIN = (412345.678901, 5823456.789012)  # UTM 32N, far from 0 and not round
PIXEL = 0.3
CRS = "EPSG:32632"


def geotiff(path, array, transform=None, crs=CRS, **kw):
    """A tiled GeoTIFF of (H, W) or (H, W, C) `array` on the grid (`transform`, `crs`)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    bands = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    transform = transform or Affine(PIXEL, 0, ORIGIN[0], 0, -PIXEL, ORIGIN[1])
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[1], height=array.shape[0], count=len(bands),
                       dtype=array.dtype, crs=crs, transform=transform, tiled=True, blockxsize=128, blockysize=128,
                       **kw) as out:
        out.write(bands)


def scene(root, ids=("a", "b", "c", "d"), size=(700, 900)):
    """Georeferenced RGB tiles and 0/255 masks, each tile shifted east by its number of widths: → {id: offset}."""
    rng = np.random.default_rng(3)
    east = {}
    for n, i in enumerate(ids):
        h, w = size
        transform = Affine(PIXEL, 0, ORIGIN[0] + n * w * PIXEL, 0, -PIXEL, ORIGIN[1])
        geotiff(f"{root}/img/{i}.tif", rng.integers(0, 256, (h, w, 3), dtype=np.uint8), transform)
        geotiff(f"{root}/lbl/{i}.tif", (rng.integers(0, 2, (h, w)) * 255).astype(np.uint8), transform)
        east[i] = transform.to_gdal()
    return east


def flags(root, out, *more):
    return ["--input_dir", str(root), "--output_dir", str(out), "--images", "img/{id}.tif", "--masks", "lbl/{id}.tif",
            "--palette", "inria", "--val_fraction", "0.5", "--crop_size", "128", "--crops_per_image", "6", *more,
            *BEAM]


def crop_grids(out):
    """[(split, id, (y, x), crs, transform)] of every record."""
    found = []
    for split in ("train", "val"):
        for path in shard_files(str(out), split):
            for _, data in tfrecord.read(path):
                f = {k: v for k, (_, v) in records.decode_example(data).items()}
                found.append((split, f[records.IMAGE_SOURCE_ID][0].decode(), tuple(f[records.CROP_OFFSET]),
                              f[records.GEO_CRS][0].decode(), geo.unpack(f[records.GEO_TRANSFORM][0])))
    return found


@pytest.mark.parametrize("path", ["whole", "windows"])
def test_every_crop_carries_its_sources_grid_shifted_by_its_offset(tmp_path, path):
    root, out = tmp_path / "scene", tmp_path / "out"
    transforms = scene(root)
    more = ("--window_size", "300") if path == "windows" else ()
    assert prepare.run(flags(root, out, *more)) == 0
    found = crop_grids(out)
    assert {s for s, *_ in found} == {"train", "val"} and len(found) > 20
    for split, image_id, (y, x), crs, transform in found:
        x0, w, _, y0, _, h = transforms[image_id]
        assert crs == CRS
        expected = (x0 + x * w, w, 0.0, y0 + y * h, 0.0, h)
        assert max(abs(a - b) for a, b in zip(transform, expected)) < 1e-6, (image_id, y, x)
    meta = json.load(open(out / "metadata.json"))
    listed = {**meta["splits"]["train"]["georeferencing"], **meta["splits"]["val"]["georeferencing"]}
    assert listed == {i: {"crs": CRS, "transform": list(t), "height": 700, "width": 900} for i, t in transforms.items()}
    assert verify.main([str(out)]) == 0


def test_the_crops_are_the_same_records_on_both_paths(tmp_path):
    root = tmp_path / "scene"
    scene(root)
    assert prepare.run(flags(root, tmp_path / "whole")) == 0
    assert prepare.run(flags(root, tmp_path / "windows", "--window_size", "300")) == 0
    for split in ("train", "val"):
        a = sorted(d for p in shard_files(str(tmp_path / "whole"), split) for _, d in tfrecord.read(p))
        b = sorted(d for p in shard_files(str(tmp_path / "windows"), split) for _, d in tfrecord.read(p))
        assert a == b


@pytest.mark.parametrize("path", ["whole", "windows"])
def test_a_mask_or_extra_input_on_another_grid_is_an_error_record_naming_both_grids(tmp_path, path):
    root, out = tmp_path / "scene", tmp_path / "out"
    transforms = scene(root)
    mask = rasterio.open(root / "lbl" / "b.tif").read(1)
    x0, w, _, y0, _, h = transforms["b"]
    geotiff(root / "lbl" / "b.tif", mask, Affine(w, 0, x0 + w, 0, h, y0))  # one pixel east
    geotiff(root / "lbl" / "c.tif", rasterio.open(root / "lbl" / "c.tif").read(1), crs="EPSG:32633",
            transform=Affine(*[transforms["c"][i] for i in (1, 2, 0, 4, 5, 3)]))  # another zone
    for i, (x0, w, _, y0, _, h) in transforms.items():  # a DSM per tile; d's at 0.5 m
        size = 0.5 if i == "d" else w
        geotiff(root / "dsm" / f"{i}.tif", np.full((700, 900), 31.5, np.float32), Affine(size, 0, x0, 0, -size, y0))
    more = ("--window_size", "300") if path == "windows" else ()
    assert prepare.run(flags(root, out, "--extra_inputs", "dsm=dsm/{id}.tif", *more)) == 1
    errors = {e["id"]: e for split in ("train", "val") if (out / "errors" / f"{split}.jsonl").exists()
              for e in map(json.loads, open(out / "errors" / f"{split}.jsonl"))}
    assert set(errors) == {"b", "c", "d"} and {e["reason"] for e in errors.values()} == {"grid_mismatch"}
    b0 = transforms["b"][0]
    assert f"image and mask lie on different grids: {CRS}, origin ({b0:.10g}" in errors["b"]["error"]
    assert f"against {CRS}, origin ({b0 + PIXEL:.10g}" in errors["b"]["error"]
    assert "EPSG:32633" in errors["c"]["error"] and "pixel 0.5 × -0.5" in errors["d"]["error"]
    assert "image and extra input dsm" in errors["d"]["error"]
    assert {i for _, i, *_ in crop_grids(out)} == {"a"}  # the good pair is still written


def test_a_plain_mask_beside_a_geotiff_takes_the_images_grid_and_plain_pairs_have_no_geo_keys(tmp_path):
    root, out = tmp_path / "scene", tmp_path / "out"
    transforms = scene(root, ids=("a", "b"))
    for i in ("a", "b"):  # the masks as PNG: no georeferencing of their own
        cv2.imwrite(str(root / "lbl" / f"{i}.png"), rasterio.open(root / "lbl" / f"{i}.tif").read(1))
        os.remove(root / "lbl" / f"{i}.tif")
    argv = flags(root, out)
    argv[argv.index("lbl/{id}.tif")] = "lbl/{id}.png"
    assert prepare.run(argv) == 0
    assert {(i, t[0]) for _, i, (y, x), _, t in crop_grids(out) if (y, x) == (0, 0)} <= {
        (i, transforms[i][0]) for i in transforms}
    assert crop_grids(out)
    # PNG images: no grid, no geo keys, no georeferencing in metadata.json
    plain, plain_out = tmp_path / "plain", tmp_path / "plain_out"
    for sub in ("img", "lbl"):
        os.makedirs(plain / sub)
    for i in ("a", "b"):
        cv2.imwrite(str(plain / "img" / f"{i}.png"), np.zeros((200, 200, 3), np.uint8))
        cv2.imwrite(str(plain / "lbl" / f"{i}.png"), np.zeros((200, 200), np.uint8))
    argv = flags(plain, plain_out)
    argv[argv.index("img/{id}.tif")], argv[argv.index("lbl/{id}.tif")] = "img/{id}.png", "lbl/{id}.png"
    assert prepare.run(argv) == 0
    for split in ("train", "val"):
        for path in shard_files(str(plain_out), split):
            for _, data in tfrecord.read(path):
                assert records.GEO_CRS not in records.decode_example(data)
    meta = json.load(open(plain_out / "metadata.json"))
    assert all("georeferencing" not in s for s in meta["splits"].values())


def test_the_grid_is_read_from_the_header_alone_and_a_float32_list_would_lose_it():
    import io

    buffer = io.BytesIO()
    with rasterio.MemoryFile() as memory:
        with memory.open(driver="GTiff", width=4000, height=4000, count=1, dtype="uint8", crs=CRS,
                         transform=Affine(PIXEL, 0, *ORIGIN[:1], 0, -PIXEL, ORIGIN[1]), tiled=True) as out:
            out.write(np.zeros((1, 4000, 4000), np.uint8))
        data = memory.read()
    buffer.write(data)

    class Counting(io.BytesIO):
        read_bytes = 0

        def read(self, n=-1):
            chunk = super().read(n)
            Counting.read_bytes += len(chunk)
            return chunk

    grid = geo.read_file(Counting(data))
    assert grid == geo.Grid(CRS, (ORIGIN[0], PIXEL, 0.0, ORIGIN[1], 0.0, -PIXEL))
    assert Counting.read_bytes < 100_000 < len(data) // 10  # the header, not the pixels
    assert abs(float(np.float32(ORIGIN[1])) - ORIGIN[1]) > 0.1  # why the transform is float64 bytes
