"""segprep.scan on datasets as they come: a non-VOC palette, JPEG-damaged masks, index masks, gs:// (in
test_gcs.py); and the palette it writes, fed to prepare."""

import json
import os
import re

import numpy as np
import pytest

from conftest import jpeg_damaged, write_lists, write_pair
from pipelines import prepare
from segprep import codec, layout, pairs
from segprep import scan
from segprep.tools import mask_scan

POTSDAM = {"impervious": (255, 255, 255), "building": (0, 0, 255), "low_vegetation": (0, 255, 255),
           "tree": (0, 255, 0), "car": (255, 255, 0), "clutter": (255, 0, 0)}


def aerial_tree(root, lossy_quality=None, n=6, side=120):
    """Tiles in the ISPRS Potsdam palette: 20 px blocks of the six classes and a few 6×12 cars."""
    colors = np.array(list(POTSDAM.values()), np.uint8)
    rng = np.random.default_rng(3)
    ids = []
    for i in range(n):
        classes = np.kron(rng.integers(0, 6, (side // 20, side // 20)), np.ones((20, 20), np.int64))
        for _ in range(4):
            y, x = rng.integers(0, side - 12, 2)
            classes[y:y + 6, x:x + 12] = 4
        image = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
        write_pair(root, f"tile{i}", image, np.zeros((side, side), np.uint8))
        rgb = colors[classes]
        if lossy_quality:
            rgb = jpeg_damaged(rgb, lossy_quality)
        with open(layout.mask_path(root, f"tile{i}"), "wb") as f:
            f.write(codec.encode_image(rgb, "png"))
        ids.append(f"tile{i}")
    write_lists(root, {"train": ids[:-2], "val": ids[-2:]})


def test_scan_finds_a_non_voc_palette_and_prepare_then_writes_every_image(tmp_path, capsys):
    root = str(tmp_path / "aerial")
    aerial_tree(root)
    assert prepare.run(["--input_dir", root, "--output_dir", str(tmp_path / "before"), "--crop_size", "64",
                        "--runner=DirectRunner"]) == 1  # with VOC's palette every image fails
    palette_file = str(tmp_path / "palette.json")
    assert scan.main(["--input_dir", root, "--write_palette", palette_file, "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "mask colours: 6 distinct, 6 look like classes" in out
    assert out.count("NOT IN PALETTE") == 6 and "6 class colours are not in the Pascal VOC palette" in out
    assert "train: 4 masks, sizes 120×120 / 120×120 / 120×120" in out and "color 8-bit ×4" in out
    written = json.load(open(palette_file))
    assert sorted(map(tuple, written["colors"])) == sorted(POTSDAM.values()) and written["ignore_colors"] == []
    assert written["names"] == [f"class_{i}" for i in range(6)]  # none of these colours is VOC's
    assert prepare.run(["--input_dir", root, "--output_dir", str(tmp_path / "after"), "--crop_size", "64",
                        "--palette", palette_file, "--runner=DirectRunner"]) == 0
    meta = json.load(open(tmp_path / "after" / "metadata.json"))
    assert meta["splits"]["train"]["images_used"] == 4 and meta["num_classes"] == 6
    assert all(n > 0 for n in meta["splits"]["train"]["class_pixels"])  # one class per colour, all used


def test_scan_tells_compression_noise_from_classes(tmp_path, capsys):
    root = str(tmp_path / "aerial")
    aerial_tree(root, lossy_quality=85)
    palette_file = str(tmp_path / "palette.json")
    assert scan.main(["--input_dir", root, "--write_palette", palette_file]) == 0
    out = capsys.readouterr().out
    assert "6 look like classes" in out and "compression noise" in out
    assert sorted(map(tuple, json.load(open(palette_file))["colors"])) == sorted(POTSDAM.values())
    assert prepare.run(["--input_dir", root, "--output_dir", str(tmp_path / "out"), "--crop_size", "64",
                        "--palette", palette_file, "--unknown_colors", "nearest", "--runner=DirectRunner"]) == 0


def test_scan_of_voc_colours_keeps_voc_ids_and_reads_index_masks(voc_tree, tmp_path, capsys):
    palette_file = str(tmp_path / "palette.json")
    assert scan.main(["--input_dir", voc_tree.root, "--splits", "train", "--write_palette", palette_file]) == 0
    out = capsys.readouterr().out
    assert "aeroplane" in out and "boat" in out and "person" in out and "NOT IN PALETTE" not in out
    assert "color 8-bit ×2, palette 8-bit ×1" in out
    assert json.load(open(palette_file))["names"][15] == "person"  # VOC's palette, VOC's ids
    assert scan.main(["--input_dir", voc_tree.root, "--splits", "val", "--all"]) == 0  # v1 has an index mask
    out = capsys.readouterr().out
    assert "index 8-bit ×1" in out and "mask index values" in out


def test_scan_reports_unreadable_masks_and_usage_mistakes(voc_tree, capsys):
    os.remove(layout.mask_path(voc_tree.root, "t2"))
    with open(layout.mask_path(voc_tree.root, "t3"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    assert scan.main(["--input_dir", voc_tree.root]) == 0
    out = capsys.readouterr().out
    assert "2 unreadable" in out and "t2: no mask at" in out and "t3: " in out
    assert scan.main(["--input_dir", voc_tree.root, "--splits", "nope"]) == 2
    assert "Unknown split nope" in capsys.readouterr().err


@pytest.mark.parametrize("depth", [1, 4])
def test_scan_of_low_bit_index_masks_writes_class_n_names(tmp_path, capsys, depth):
    from conftest import grey_png

    root = str(tmp_path / "voc")
    values = (np.arange(40 * 40).reshape(40, 40) // 200 % (1 << depth)).astype(np.uint8)
    write_pair(root, "a", np.zeros((40, 40, 3), np.uint8), values)
    with open(layout.mask_path(root, "a"), "wb") as f:
        f.write(grey_png(values, depth))
    write_lists(root, {"train": ["a"]})
    palette_file = str(tmp_path / "p.json")
    assert scan.main(["--input_dir", root, "--write_palette", palette_file]) == 0
    assert f"index {depth}-bit ×1" in capsys.readouterr().out
    top = int(values.max())
    assert json.load(open(palette_file))["names"] == [f"class_{i}" for i in range(top + 1)]


def _leaky_tree(root, distinct=500, width=200, height=150):
    """`distinct` different scenes, half train and half val, then three leaks into val: a train id listed again,
    a byte-identical copy of a train image under a new id, and a train image re-encoded at quality 75 and resized
    to 90%."""
    from segprep import sample

    ids = [f"s{i:04d}" for i in range(distinct)]
    for i, image_id in enumerate(ids):
        image, classes = sample.make_pair(i, width, height)
        write_pair(root, image_id, image, np.where(classes == 255, 0, classes).astype(np.uint8), kind="index")
    train, val = ids[:distinct // 2], ids[distinct // 2:]
    with open(layout.image_path(root, train[1]), "rb") as f:
        data = f.read()
    with open(layout.image_path(root, "copy"), "wb") as f:
        f.write(data)
    with open(layout.image_path(root, train[2]), "rb") as f:
        small = codec.decode_image(f.read())
    small = codec.encode_image(np.ascontiguousarray(
        __import__("cv2").resize(small, (width * 9 // 10, height * 9 // 10))), "jpeg", 75)
    with open(layout.image_path(root, "resized"), "wb") as f:
        f.write(small)
    for leak, source in (("copy", train[1]), ("resized", train[2])):
        with open(layout.mask_path(root, source), "rb") as f, open(layout.mask_path(root, leak), "wb") as g:
            g.write(f.read())
    write_lists(root, {"train": train, "val": val + [train[0], "copy", "resized"]})
    return train


def test_scan_finds_leaks_between_splits_and_none_among_distinct_images(tmp_path, capsys):
    root = str(tmp_path / "voc")
    train = _leaky_tree(root)
    assert scan.main(["--input_dir", root, "--jobs", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(out) if line.startswith("leakage:"))
    assert out[start] == ("leakage: 3 pairs of images in two splits (503 images across 2 splits checked for the same "
                          "id, identical files and near-duplicates within 56 of 256 bits):")
    found = out[start + 1:start + 4]
    assert found[0] == f"  train/{train[0]} and val/{train[0]}: same id, identical image files"
    assert found[1] == f"  train/{train[1]} and val/copy: identical image files"
    match = re.fullmatch(rf"  train/{train[2]} and val/resized: near-duplicate \(perceptual hashes (\d+) of 256 bits "
                         r"apart\)", found[2])
    assert match and int(match[1]) <= 40, found[2]
    # Without the leaks: 500 distinct scenes, 62,500 pairs across the splits, none reported.
    write_lists(root, {"train": train, "val": [f"s{i:04d}" for i in range(250, 500)]})
    assert scan.main(["--input_dir", root, "--jobs", "2"]) == 0
    assert ("leakage: none found (500 images across 2 splits checked for the same id, identical files and "
            "near-duplicates within 56 of 256 bits)") in capsys.readouterr().out.splitlines()
    # A wider threshold is the user's to choose; -1 leaves only ids and identical files; one split has no pairs.
    assert scan.main(["--input_dir", root, "--jobs", "2", "--duplicate_distance", "-1", "--splits", "train"]) == 0
    assert "leakage: one split (train): nothing to compare" in capsys.readouterr().out.splitlines()


def test_a_mask_whose_header_declares_more_than_max_pixels_is_named_not_decoded(voc_tree, tmp_path):
    """A 1-bit PNG of a few KB declaring 8000² (64 Mpx, a real one): refused from its header under --max_pixels 10,000,000, as
    prepare refuses it, within a small peak; a 50,000² header at the default limit too, in one line and without
    OpenCV's words."""
    import subprocess
    import sys

    from conftest import REPO, grey_png
    from test_predict import png_header

    side = 8000
    values = np.zeros((side, side), np.uint8)
    values[::97, ::89] = 1  # a sparse pattern: the file stays small (9 KB), the pixels are 64 M
    data = grey_png(values, 1)
    del values
    assert len(data) < 100_000, len(data)
    (tmp_path / "voc" / layout.MASK_DIR / "t1.png").write_bytes(data)
    (tmp_path / "voc" / layout.MASK_DIR / "t2.png").write_bytes(png_header(50_000, 50_000))
    env = dict(os.environ, PYTHONPATH=REPO)
    # The peak of the scan's own process (VmHWM, which exec resets; a forked child's getrusage would count this
    # test's memory too).
    wrapper = ("import atexit, runpy, sys\n"
               "atexit.register(lambda: sys.stderr.write(open('/proc/self/status').read().split('VmHWM:')[1]"
               ".split()[0] + ' kB peak\\n'))\n"
               "sys.argv = sys.argv[1:]\nrunpy.run_module('segprep.scan', run_name='__main__', alter_sys=True)\n")
    for flags, shown in ((["--max_pixels", "10000000"], ("t1", "t2")), ([], ("t2",))):
        proc = subprocess.run([sys.executable, "-c", wrapper, "scan", "--input_dir", voc_tree.root, "--jobs", "1",
                               "--no_leakage", *flags], env=env, capture_output=True, text=True, timeout=300)
        *said, peak = proc.stderr.strip().splitlines()
        assert proc.returncode == 0 and said == [], proc.stderr
        for image_id, (w, h) in (("t1", (side, side)), ("t2", (50_000, 50_000))):
            line = f"    {image_id}: its header says {w}×{h} (w×h) = {w * h:,} px, above --max_pixels"
            assert (line in proc.stdout) == (image_id in shown), proc.stdout
        assert "cv2" not in proc.stdout and "OpenCV" not in proc.stdout
        if flags:
            assert int(peak.split()[0]) < 300 * 1024, peak


def test_a_tiled_tiff_mask_above_max_pixels_is_counted_a_band_at_a_time_as_it_would_be_whole(tmp_path, monkeypatch):
    import tifffile

    root = tmp_path / "aerial"
    colors = np.array(list(POTSDAM.values()), np.uint8)
    classes = np.kron(np.random.default_rng(4).integers(0, 6, (30, 20)), np.ones((11, 13), np.int64))
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "images" / "a.png").write_bytes(codec.encode_image(np.zeros((330, 260, 3), np.uint8), "png"))
    tifffile.imwrite(root / "masks" / "a.tif", colors[classes], tile=(32, 32), photometric="rgb")
    pair = pairs.Pair("train", "a", "images/a.png", "masks/a.tif")
    whole = mask_scan.scan_pair(str(root), pair)
    monkeypatch.setattr(mask_scan, "_BAND", 260 * 40)  # bands of 40 rows, across the 32-row tiles
    banded = mask_scan.scan_pair(str(root), pair, max_pixels=10_000)
    assert whole.error is None and banded.error is None
    assert (banded.kind, banded.width, banded.height) == (whole.kind, whole.width, whole.height) == ("color", 260, 330)
    for key in ("keys", "counts", "solid"):
        np.testing.assert_array_equal(getattr(banded, key), getattr(whole, key))


def test_a_tree_of_masks_only_is_said_so_and_exits_1(voc_tree, tmp_path, capsys):
    import shutil

    shutil.rmtree(os.path.join(voc_tree.root, layout.IMAGE_DIR))
    assert scan.main(["--input_dir", voc_tree.root, "--no_leakage"]) == 1
    captured = capsys.readouterr()
    assert "prepare this tree with" not in captured.out
    assert captured.err.strip().splitlines() == [
        "scan: none of the 5 masks has an image (--images 'JPEGImages/{id}.jpg'): this tree holds masks only, and "
        "prepare needs each mask's image; pass the dataset's root as --input_dir, or the images' place as --images"]


def test_a_link_out_of_the_root_is_named_not_read(voc_tree, tmp_path, capsys):
    outside = tmp_path / "outside.png"
    os.replace(layout.mask_path(voc_tree.root, "t1"), outside)
    os.symlink(outside, layout.mask_path(voc_tree.root, "t1"))
    assert scan.main(["--input_dir", voc_tree.root, "--no_leakage"]) == 0
    out = capsys.readouterr().out
    assert f"    t1: mask: {layout.mask_path(voc_tree.root, 't1')} leads to {outside}, outside --input_dir " in out
