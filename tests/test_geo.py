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
from segprep.crops import CropBox
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


def collar_scene(root, size=(1200, 1100)):
    """One georeferenced scene per split whose image is 0 in every band over a diagonal collar (~40% of it),
    declared as GDAL_NODATA 0, with 0/255 masks that hold classes under the collar too: → {split: collar}."""
    return collared({split: (f"{root}/{split}/img/s.tif", f"{root}/{split}/lbl/s.tif") for split in ("train", "val")},
                    size, seed=8)


def collared(paths: dict, size, seed: int) -> dict:
    """For each key, a georeferenced scene at its (image, mask) paths: image 0 in every band over a diagonal collar
    (~40%), declared as GDAL_NODATA 0, elsewhere 1..255; a 0/255 mask over all of it. → {key: collar}."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    collars = {}
    for key, (image_path, mask_path) in paths.items():
        image = rng.integers(1, 256, (h, w, 3), dtype=np.uint8)  # no 0 in the data: only the collar is empty
        collar = xx + yy < 0.9 * (h + w) / 2
        image[collar] = 0
        geotiff(image_path, image, nodata=0)
        geotiff(mask_path, (rng.integers(0, 2, (h, w)) * 255).astype(np.uint8))
        collars[key] = collar
    return collars


@pytest.mark.parametrize("path", ["whole", "windows"])
def test_a_nodata_collar_is_ignored_and_crops_avoid_it(tmp_path, path):
    root, out = tmp_path / "scene", tmp_path / "out"
    collars = collar_scene(root)
    assert 0.35 < collars["train"].mean() < 0.45
    more = ("--window_size", "512") if path == "windows" else ()
    assert prepare.run(["--input_dir", str(root), "--output_dir", str(out), "--images", "{split}/img/{id}.tif",
                        "--masks", "{split}/lbl/{id}.tif", "--palette", "inria", "--crops_per_image", "40", *more,
                        *BEAM]) == 0
    shares = []
    for split in ("train", "val"):
        collar = collars[split]
        for path_ in shard_files(str(out), split):
            for _, data in tfrecord.read(path_):
                f = {k: v for k, (_, v) in records.decode_example(data).items()}
                y, x = f[records.CROP_OFFSET]
                mask = cv2.imdecode(np.frombuffer(f[records.MASK_ENCODED][0], np.uint8), cv2.IMREAD_UNCHANGED)
                part = collar[y:y + 256, x:x + 256]
                assert (mask[:part.shape[0], :part.shape[1]][part] == 255).all()  # no class under no data
                share = (part.sum() + 256 * 256 - part.size) / 256 ** 2
                if split == "train":
                    shares.append(share)
                else:
                    assert share < 1.0  # a tile without data is not written
    assert shares and max(shares) <= 0.5
    meta = json.load(open(out / "metadata.json"))["splits"]
    assert meta["train"]["nodata_pixels"] == int(collars["train"].sum())
    assert meta["train"]["nodata_redraws"] > 0 and meta["val"]["nodata_tiles_skipped"] > 0
    assert meta["val"]["records"] + meta["val"]["nodata_tiles_skipped"] == 5 * 5  # 1200 × 1100 in 256² tiles


def test_nodata_flag_for_files_that_do_not_declare_one(tmp_path):
    root, out = tmp_path / "scene", tmp_path / "out"
    rng = np.random.default_rng(2)
    for split in ("train", "val"):
        os.makedirs(root / split / "img"), os.makedirs(root / split / "lbl")
        image = rng.integers(1, 256, (300, 300, 3), dtype=np.uint8)
        image[:, :150] = 0  # a black collar in a PNG: no nodata of its own
        cv2.imwrite(str(root / split / "img" / "s.png"), image)
        cv2.imwrite(str(root / split / "lbl" / "s.png"), np.full((300, 300), 255, np.uint8))
    argv = ["--input_dir", str(root), "--images", "{split}/img/{id}.png", "--masks", "{split}/lbl/{id}.png",
            "--palette", "inria", "--crops_per_image", "8", "--crop_size", "100", *BEAM]
    assert prepare.run(argv + ["--output_dir", str(tmp_path / "plain")]) == 0
    assert json.load(open(tmp_path / "plain" / "metadata.json"))["splits"]["train"]["nodata_pixels"] == 0
    assert prepare.run(argv + ["--output_dir", str(out), "--nodata", "0"]) == 0
    meta = json.load(open(out / "metadata.json"))["splits"]
    assert meta["train"]["nodata_pixels"] == 300 * 150
    assert meta["train"]["class_pixels"][1] >= 8 * 100 * 100 * 0.5  # every crop at least half in the data
    assert meta["val"]["nodata_tiles_skipped"] == 3  # the left column of 100² tiles


def test_scan_shows_the_grids_the_nodata_values_and_the_pairs_on_different_grids(tmp_path, capsys):
    from segprep import scan

    root = tmp_path / "scene"
    transforms = scene(root, ids=("a", "b"))
    x0, w, _, y0, _, h = transforms["b"]
    geotiff(root / "lbl" / "b.tif", rasterio.open(root / "lbl" / "b.tif").read(1), Affine(w, 0, x0 + w, 0, h, y0))
    collar_scene(tmp_path / "collar")
    assert scan.main(["--input_dir", str(root), "--images", "img/{id}.tif", "--masks", "lbl/{id}.tif",
                      "--val_fraction", "0.5", "--palette", "inria", "--no_leakage"]) == 0
    out = capsys.readouterr().out
    assert f"georeferenced: 2 of 2 images ({CRS} ×2)" in out
    assert "1 pairs whose image and mask lie on different grids" in out and "    b: image EPSG:32632" in out
    assert scan.main(["--input_dir", str(tmp_path / "collar"), "--images", "{split}/img/{id}.tif",
                      "--masks", "{split}/lbl/{id}.tif", "--palette", "inria", "--no_leakage"]) == 0
    assert "nodata 0 ×2 (their pixels get mask 255" in capsys.readouterr().out


def test_a_prediction_of_a_geotiff_is_a_geotiff_on_the_inputs_grid(tmp_path, run_dir):
    from trainer import predict

    transform = Affine(PIXEL, 0, ORIGIN[0], 0, -PIXEL, ORIGIN[1])
    image = np.random.default_rng(0).integers(0, 256, (150, 170, 3), dtype=np.uint8)
    geotiff(tmp_path / "in" / "scene.tif", image, transform)
    geotiff(tmp_path / "big" / "scene.tif", image, transform)  # the same, predicted window by window
    out = tmp_path / "out"
    assert predict.main(["--model_dir", run_dir, "--input", str(tmp_path / "in"), "--output_dir", str(out),
                         "--probabilities"]) == 0
    assert predict.main(["--model_dir", run_dir, "--input", str(tmp_path / "big"), "--output_dir",
                         str(tmp_path / "windowed"), "--max_pixels", "5000", "--probabilities"]) == 0
    whole = None
    for path in (out / "scene.tif", tmp_path / "windowed" / "scene.tif"):
        with rasterio.open(path) as written:
            assert (written.crs.to_string(), written.transform, written.width, written.height) == \
                (CRS, transform, 170, 150)
            assert written.profile["tiled"] and written.profile["compress"] == "deflate"
            assert written.colorinterp[0].name == "palette"  # the palette as its colour map
            classes = written.read(1)
        whole = classes if whole is None else whole
        np.testing.assert_array_equal(classes, whole)
    assert not (out / "scene.png").exists() and (out / "scene_overlay.jpg").exists()
    expected = np.zeros((150, 170, 21), np.uint8)
    predict.Predictor(run_dir).predict(image, probabilities=lambda y, rows: expected.__setitem__(
        slice(y, y + len(rows)), rows))
    for path in (out / "scene_probs.tif", tmp_path / "windowed" / "scene_probs.tif"):
        with rasterio.open(path) as probs:  # a band a class, probability × 255, on the input's grid
            assert (probs.crs.to_string(), probs.transform, probs.count) == (CRS, transform, 21)
            bands = probs.read()
        assert np.abs(bands.sum(0).astype(int) - 255).max() <= 11  # rounding, 21 bands
        np.testing.assert_array_equal(bands.transpose(1, 2, 0), expected)  # the same whole or window by window
    np.testing.assert_array_equal(whole, predict.Predictor(run_dir).predict(image))
    assert predict.main(["--model_dir", run_dir, "--input", str(tmp_path / "in"), "--output_dir",
                         str(tmp_path / "png"), "--georeferenced_as", "png"]) == 0
    assert (tmp_path / "png" / "scene.png").exists() and not (tmp_path / "png" / "scene.tif").exists()


def test_a_val_scene_comes_back_whole_on_its_grid_stitched_from_its_tiles(tmp_path, run_dir, capsys):
    from trainer import predict

    root, out = tmp_path / "scene", tmp_path / "records"
    collars = collar_scene(root, size=(300, 280))
    assert prepare.run(["--input_dir", str(root), "--output_dir", str(out), "--images", "{split}/img/{id}.tif",
                        "--masks", "{split}/lbl/{id}.tif", "--palette", "inria", "--crop_size", "64",
                        "--image_format", "png", *BEAM]) == 0  # (lossless tiles: comparable with the source)
    preds = tmp_path / "preds"
    assert predict.main(["--model_dir", run_dir, "--records", str(out), "--output_dir", str(preds), "--format",
                         "index"]) == 0
    assert "1 images stitched from" in capsys.readouterr().out
    with rasterio.open(preds / "s.tif") as scene:
        assert (scene.crs.to_string(), scene.transform, scene.width, scene.height) == \
            (CRS, Affine(PIXEL, 0, ORIGIN[0], 0, -PIXEL, ORIGIN[1]), 280, 300)
        stitched = scene.read(1)
    # Each tile's prediction in its place; pixels of tiles skipped for holding no data have none (255).
    image = rasterio.open(root / "val" / "img" / "s.tif").read().transpose(1, 2, 0)
    predictor = predict.Predictor(run_dir)
    for y in range(0, 300, 64):
        for x in range(0, 280, 64):
            tile = stitched[y:y + 64, x:x + 64]
            if collars["val"][y:y + 64, x:x + 64].all():
                assert (tile == 255).all()
            else:
                part = np.zeros((64, 64, 3), np.uint8)
                part[:tile.shape[0], :tile.shape[1]] = image[y:y + 64, x:x + 64]
                np.testing.assert_array_equal(tile, predictor.predict(part)[:tile.shape[0], :tile.shape[1]])
    assert predict.main(["--model_dir", run_dir, "--records", str(out), "--split", "train", "--output_dir",
                         str(tmp_path / "p2")]) == 2
    assert "random windows" in capsys.readouterr().err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "s.tif").write_text("my own scene")  # a name the stitched scene takes: refused, before any tile is predicted
    assert predict.main(["--model_dir", run_dir, "--records", str(out), "--output_dir", str(mine)]) == 2
    assert "mine/s.tif exists and is not segprep's prediction" in capsys.readouterr().err
    assert (mine / "s.tif").read_text() == "my own scene" and sorted(os.listdir(mine)) == ["s.tif"]


def block_scene(root, size=(1400, 1700)):
    """Two georeferenced scenes with a diagonal no-data collar over ~40% (GDAL_NODATA 0): → {id: collar}."""
    return collared({i: (f"{root}/img/{i}.tif", f"{root}/lbl/{i}.tif") for i in ("north", "south")}, size, seed=11)


BLOCKS = ["--images", "img/{id}.tif", "--masks", "lbl/{id}.tif", "--palette", "inria", "--val_fraction", "0.3",
          "--split_by", "blocks:512", "--crop_size", "256", "--crops_per_image", "40"]


@pytest.mark.parametrize("path", ["whole", "windows"])
def test_blocks_split_one_scene_with_no_train_crop_on_a_val_block(tmp_path, path):
    from segprep import blocks

    root, out = tmp_path / "scene", tmp_path / "out"
    collars = block_scene(root)
    more = ("--window_size", "768") if path == "windows" else ()
    assert prepare.run(["--input_dir", str(root), "--output_dir", str(out), *BLOCKS, *more, *BEAM]) == 0
    crops_ = {(s, i): [] for s in ("train", "val") for i in collars}
    for split, image_id, offset, *_ in crop_grids(out):
        crops_[split, image_id].append(offset)
    meta = json.load(open(out / "metadata.json"))["splits"]
    val_blocks = data_blocks = 0
    for image_id, collar in collars.items():
        h, w = collar.shape
        present = blocks.present_blocks(collar, (0, 0), 512, w)
        chosen = blocks.choose(image_id, h, w, 512, 0.3, 0, present)
        assert abs(len(chosen.val) / len(present) - 0.3) <= 0.05  # within 5 points of F, of the blocks with data
        val_blocks, data_blocks = val_blocks + len(chosen.val), data_blocks + len(present)
        train = crops_["train", image_id]
        assert len(train) == 40
        for y, x in train:  # no training crop overlaps a val block, and none is more than half empty
            assert not chosen.touches_val(CropBox(y, x, 256, 256))
            part = collar[y:y + 256, x:x + 256]
            assert (part.sum() + 256 * 256 - part.size) / 256 ** 2 <= 0.5
        # the val tiles cover the val blocks: every tile of them that holds data, and nothing else
        expected = {(t.y, t.x) for t in chosen.tiles(256) if not collar[t.y:t.y + 256, t.x:t.x + 256].all()}
        assert set(crops_["val", image_id]) == expected and len(crops_["val", image_id]) == len(expected)
    assert (meta["val"]["val_blocks"], meta["val"]["data_blocks"]) == (val_blocks, data_blocks)
    assert meta["val"]["images_used"] == meta["train"]["images_used"] == 2


def test_blocks_write_the_same_records_on_both_paths_and_run_after_run(tmp_path):
    root = tmp_path / "scene"
    block_scene(root, size=(900, 1100))
    argv = ["--input_dir", str(root), *BLOCKS, *BEAM]
    for out, more in (("a", ()), ("b", ("--window_size", "600")), ("c", ())):
        assert prepare.run(argv + ["--output_dir", str(tmp_path / out), *more]) == 0
    for split in ("train", "val"):
        runs = [sorted(d for p in shard_files(str(tmp_path / out), split) for _, d in tfrecord.read(p))
                for out in "abc"]
        assert runs[0] == runs[1] == runs[2] and runs[0]


def test_blocks_flag_mistakes_are_one_line(tmp_path, capsys):
    root = tmp_path / "scene"
    scene(root, ids=("a", "b"))
    base = ["--input_dir", str(root), "--output_dir", str(tmp_path / "out"), "--images", "img/{id}.tif",
            "--masks", "lbl/{id}.tif", "--palette", "inria", *BEAM]
    for more, says in ((["--split_by", "blocks:512"], "needs --val_fraction"),
                       (["--split_by", "blocks:300", "--val_fraction", "0.2"], "a multiple of --crop_size 256"),
                       (["--split_by", "tiles", "--val_fraction", "0.2"], "give id (whole images) or blocks:SIZE"),
                       (["--split_by", "blocks:512", "--val_fraction", "0.2", "--group_by", "^(.)"],
                        "choose one")):
        assert prepare.main(base + more) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
