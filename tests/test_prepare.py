"""End to end: real Beam pipelines on the DirectRunner, real codecs, records read back as DeepLab reads them."""

import itertools
import json
import os

import cv2
import numpy as np
import pytest

from conftest import (grey_png, jpeg_damaged, mask_colors, pil_png, read_records, shard_files, voc_like_mask,
                      write_lists, write_pair)
from pipelines import prepare
from segprep import codec, crops, layout
from segprep.formats.shards import TEMP_PREFIX, is_shard, shard_name
from segprep.palette import IGNORE_LABEL

BEAM = ["--runner=DirectRunner"]


def run(tree_root, out, *flags):
    return prepare.run(["--input_dir", tree_root, "--output_dir", str(out), *flags, *BEAM])


def metadata(out):
    with open(os.path.join(out, "metadata.json")) as f:
        return json.load(f)


def test_records_match_their_sources(voc_tree, tmp_path):
    out = tmp_path / "out"
    assert run(voc_tree.root, out, "--crop_size", "64", "--crops_per_image", "4") == 0
    meta = metadata(out)
    for split, expected in (("train", 3 * 4), ("val", 2 * 2 + 1)):
        files = shard_files(str(out), split)
        assert [os.path.basename(f) for f in files] == meta["splits"][split]["shards"]
        records = read_records(files)
        assert len(records) == expected == meta["splits"][split]["records"]
        counts = np.zeros(256, np.int64)
        for r in records:
            sid = r["image/source_id"].decode()
            assert sid in voc_tree.splits[split] and r["image/filename"].decode() == sid
            y, x = r["image/crop/offset"]
            box = crops.CropBox(int(y), int(x), 64, 64)
            truth = voc_tree.classes[sid]
            assert (r["image/source/height"], r["image/source/width"]) == truth.shape
            assert r["image/height"] == r["image/width"] == 64 and r["image/channels"] == 3
            assert r["image/format"] == b"jpeg" and r["image/segmentation/class/format"] == b"png"
            np.testing.assert_array_equal(r["mask"], crops.cut(truth, box, IGNORE_LABEL))  # exact, padding 255
            want = crops.cut(voc_tree.images[sid], box, 0).astype(int)
            assert np.abs(r["image"].astype(int) - want).mean() < 2.5  # JPEG error only: no shift, no BGR swap
            counts += np.bincount(r["mask"].ravel(), minlength=256)
        assert meta["splits"][split]["class_pixels"] == counts[:21].tolist()
        assert meta["splits"][split]["ignore_pixels"] == counts[255]
        assert meta["splits"][split]["images_used"] == len(voc_tree.splits[split])
    assert meta["splits"]["train"]["crop_mode"] == "random" and meta["splits"]["val"]["crop_mode"] == "tiles"
    assert meta["crop_size"] == 64 and meta["seed"] == 0 and meta["flags"]["crops_per_image"] == 4
    assert meta["class_names"][1] == "aeroplane" and meta["class_colors"][4] == [0, 0, 128]
    assert meta["ignore_label"] == 255


def test_train_rgb_mean_and_std_are_those_of_the_crops(voc_tree, tmp_path):
    out = tmp_path / "out"
    assert run(voc_tree.root, out, "--crop_size", "64", "--crops_per_image", "3", "--image_format", "png") == 0
    pixels = []
    for r in read_records(shard_files(str(out), "train")):
        sid = r["image/source_id"].decode()
        y, x = r["image/crop/offset"]
        pixels.append(voc_tree.images[sid][y:y + 64, x:x + 64].reshape(-1, 3))  # inside the source only
    pixels = np.concatenate(pixels).astype(np.float64)
    meta = metadata(out)
    np.testing.assert_allclose(meta["rgb_mean"], pixels.mean(0), atol=1e-3)
    np.testing.assert_allclose(meta["rgb_std"], pixels.std(0), atol=1e-3)


def test_val_tiles_stitch_back_to_the_whole_mask(voc_tree, tmp_path):
    out = tmp_path / "out"
    assert run(voc_tree.root, out, "--crop_size", "64", "--splits", "val") == 0
    truth = voc_tree.classes["v1"]
    canvas = np.full((128, 128), 77, np.uint8)
    for r in read_records(shard_files(str(out), "val")):
        if r["image/source_id"] == b"v1":
            y, x = r["image/crop/offset"]
            canvas[y:y + 64, x:x + 64] = r["mask"]
    np.testing.assert_array_equal(canvas[:100, :90], truth)
    assert (canvas[100:] == 255).all() and (canvas[:, 90:] == 255).all()


def test_crops_of_one_image_are_spread_across_and_within_shards(voc_tree, tmp_path):
    out = tmp_path / "out"
    assert run(voc_tree.root, out, "--crop_size", "32", "--crops_per_image", "40", "--num_shards", "4",
               "--splits", "train") == 0
    files = shard_files(str(out), "train")
    assert len(files) == 4
    for f in files:
        ids = [r["image/source_id"] for r in read_records([f])]
        assert set(ids) == {b"t1", b"t2", b"t3"}  # every image in every shard
        longest = max(len(list(g)) for _, g in itertools.groupby(ids))
        assert longest < 8, f"crops of one image sit side by side in {f}: run of {longest} in {len(ids)}"


def test_same_seed_same_bytes_across_worker_counts_and_a_new_seed_differs(voc_tree, tmp_path):
    flags = ["--crop_size", "48", "--crops_per_image", "5", "--num_shards", "2"]
    assert run(voc_tree.root, tmp_path / "a", *flags) == 0
    assert prepare.run(["--input_dir", voc_tree.root, "--output_dir", str(tmp_path / "b"), *flags,
                        "--runner=DirectRunner", "--direct_num_workers=2",
                        "--direct_running_mode=multi_processing"]) == 0
    assert run(voc_tree.root, tmp_path / "c", *flags, "--seed", "1") == 0
    for split in ("train", "val"):
        a = [open(f, "rb").read() for f in shard_files(str(tmp_path / "a"), split)]
        b = [open(f, "rb").read() for f in shard_files(str(tmp_path / "b"), split)]
        assert a == b
    assert [open(f, "rb").read() for f in shard_files(str(tmp_path / "a"), "train")] != \
        [open(f, "rb").read() for f in shard_files(str(tmp_path / "c"), "train")]


def test_refuses_an_output_dir_holding_a_run_and_overwrite_removes_stale_shards(voc_tree, tmp_path):
    out = tmp_path / "out"
    assert run(voc_tree.root, out, "--crop_size", "64", "--num_shards", "3") == 0
    before = sorted(os.listdir(out))
    with pytest.raises(prepare.UsageError, match="--overwrite"):
        run(voc_tree.root, out, "--crop_size", "64", "--num_shards", "2")
    assert sorted(os.listdir(out)) == before
    assert run(voc_tree.root, out, "--crop_size", "64", "--num_shards", "2", "--overwrite") == 0
    names = sorted(n for n in os.listdir(out) if is_shard(n))
    assert names == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord",
                     "val-00000-of-00002.tfrecord", "val-00001-of-00002.tfrecord"]
    assert not [n for n in os.listdir(out) if n.startswith(TEMP_PREFIX)]


def test_gzip_shards(voc_tree, tmp_path):
    out = tmp_path / "out"
    assert run(voc_tree.root, out, "--crop_size", "64", "--crops_per_image", "2", "--compress") == 0
    files = shard_files(str(out), "train")
    assert files and all(f.endswith(".tfrecord.gz") for f in files)
    assert len(read_records(files)) == 6 == metadata(out)["splits"]["train"]["records"]


def _broken_tree(tree):
    """Adds one input of every broken kind to the train list of `tree`."""
    root = tree.root
    good_image, good_classes = tree.images["t1"], tree.classes["t1"]
    jpeg = codec.encode_image(good_image, "jpeg")
    write_pair(root, "b_no_mask", good_image, good_classes)
    os.remove(layout.mask_path(root, "b_no_mask"))
    write_pair(root, "b_empty", good_image, good_classes)
    open(layout.image_path(root, "b_empty"), "wb").close()
    write_pair(root, "b_truncated", good_image, good_classes)
    with open(layout.image_path(root, "b_truncated"), "wb") as f:
        f.write(jpeg[: len(jpeg) // 2])
    write_pair(root, "b_corrupt", good_image, good_classes)
    with open(layout.image_path(root, "b_corrupt"), "wb") as f:
        f.write(b"\xff\xd8" + b"\x00" * 500 + b"\xff\xd9")
    write_pair(root, "b_size", good_image, good_classes[:-10])
    write_pair(root, "b_colors", good_image, good_classes)
    colored = codec.decode_mask(open(layout.mask_path(root, "b_colors"), "rb").read())[0]
    colored[:3, :3] = (10, 200, 30)
    with open(layout.mask_path(root, "b_colors"), "wb") as f:
        f.write(codec.encode_image(colored, "png"))
    bad = ["b_no_image", "b_no_mask", "b_empty", "b_truncated", "b_corrupt", "b_size", "b_colors"]
    write_lists(root, {"train": tree.splits["train"] + bad, "val": tree.splits["val"]})
    return {"b_no_image": "missing_image", "b_no_mask": "missing_mask", "b_empty": "bad_image",
            "b_truncated": "bad_image", "b_corrupt": "bad_image", "b_size": "size_mismatch",
            "b_colors": "unknown_colors"}


def test_every_bad_input_becomes_an_error_record_and_good_ones_are_written(voc_tree, tmp_path, capsys):
    expected = _broken_tree(voc_tree)
    out = tmp_path / "out"
    assert run(voc_tree.root, out, "--crop_size", "64", "--crops_per_image", "2") == 1
    with open(os.path.join(out, "errors", "train.jsonl")) as f:
        errors = {e["id"]: e for e in map(json.loads, f)}
    assert {k: e["reason"] for k, e in errors.items()} == expected
    assert "truncated JPEG" in errors["b_truncated"]["error"]
    assert "empty file" in errors["b_empty"]["error"]
    assert "9 mask pixels have 1 colours off the palette: (10, 200, 30)×9" in errors["b_colors"]["error"]
    assert "220×140" in errors["b_size"]["error"] and "220×150" in errors["b_size"]["error"]
    assert errors["b_no_image"]["error"].startswith("no image file at ")
    meta = metadata(out)
    assert meta["splits"]["train"]["records"] == 6 and meta["splits"]["train"]["inputs_failed"] == 7
    assert meta["splits"]["train"]["errors_file"] == "errors/train.jsonl"
    assert {r["image/source_id"] for r in read_records(shard_files(str(out), "train"))} == {b"t1", b"t2", b"t3"}
    assert not os.path.exists(os.path.join(out, "errors", "val.jsonl"))
    assert "7 failed" in capsys.readouterr().out
    # A tolerated count exits 0.
    assert run(voc_tree.root, tmp_path / "out2", "--crop_size", "64", "--max_failed_inputs", "7") == 0


def _png_bomb(width: int, height: int) -> bytes:
    """A grey PNG whose header declares width × height but whose few KB of data hold a handful of rows: a decoder
    that trusts the header allocates the whole image first."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"\x00" * (width + 1) * 8, 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def test_sizes_come_from_headers_and_a_png_bomb_is_an_error_record_not_a_decode(voc_tree, tmp_path):
    """An image declaring 50,000² px in a few KB, an image above --max_pixels and a pair whose header sizes differ
    are error records naming the size, the limit and the way out; nothing of them is decoded (a decoder that
    trusted the 50,000² header would ask for 2.5 GB first), and every other pair is written."""
    root = voc_tree.root
    bomb = _png_bomb(50_000, 50_000)
    assert len(bomb) < 10_000
    with open(layout.image_path(root, "bomb"), "wb") as f:  # found by its bytes: a PNG named .jpg
        f.write(bomb)
    with open(layout.mask_path(root, "bomb"), "wb") as f:
        f.write(_png_bomb(50_000, 50_000))
    with open(layout.image_path(root, "wide"), "wb") as f:
        f.write(codec.encode_image(np.zeros((20, 30, 3), np.uint8), "png"))
    with open(layout.mask_path(root, "wide"), "wb") as f:
        f.write(_png_bomb(31, 20))  # the mask's header says 31 wide: refused before either is decoded
    write_lists(root, {"train": voc_tree.splits["train"] + ["bomb", "wide"], "val": voc_tree.splits["val"]})
    out = tmp_path / "out"
    assert run(root, out, "--crop_size", "64", "--crops_per_image", "2") == 1
    errors = {e["id"]: e for e in map(json.loads, open(out / "errors" / "train.jsonl"))}
    assert {k: e["reason"] for k, e in errors.items()} == {"bomb": "too_large", "wide": "size_mismatch"}
    assert errors["bomb"]["error"] == (
        "image: its header says 50000×50000 (w×h) = 2,500,000,000 px, above --max_pixels 178,956,970 (about 11 "
        "bytes a pixel to decode whole); raise --max_pixels if there is the memory, or convert image and "
        "mask to tiled TIFFs, which are read window by window")
    assert errors["wide"]["error"] == "mask is 31×20 (w×h) but its image is 30×20; they must be the same size"
    meta = metadata(out)
    assert meta["splits"]["train"]["images_used"] == 3 and meta["splits"]["val"]["images_used"] == 2
    # The limit is a flag: below the fixture's largest image (220×150 = 33,000 px), that one is refused too.
    assert run(root, tmp_path / "out2", "--crop_size", "64", "--max_pixels", "30000") == 1
    errors = {e["id"]: e["reason"] for e in map(json.loads, open(tmp_path / "out2" / "errors" / "train.jsonl"))}
    assert errors == {"t1": "too_large", "bomb": "too_large", "wide": "size_mismatch"}


def stitch(records, image_id, shape, crop):
    """The class map of `image_id` put back together from its tiles."""
    canvas = np.full((shape[0] + crop, shape[1] + crop), 77, np.uint8)
    for r in records:
        if r["image/source_id"].decode() == image_id:
            y, x = r["image/crop/offset"]
            canvas[y:y + crop, x:x + crop] = r["mask"]
    return canvas[:shape[0], :shape[1]]


def _tree(root, masks: dict, kinds: dict | None = None):
    """A val-only VOC tree: id → class map, written with mask bytes from `kinds[id]` (default: colour PNG)."""
    rng = np.random.default_rng(11)
    for image_id, classes in masks.items():
        image = rng.integers(0, 255, classes.shape + (3,), dtype=np.uint8)
        write_pair(root, image_id, image, classes)
        if kinds and image_id in kinds:
            with open(layout.mask_path(root, image_id), "wb") as f:
                f.write(kinds[image_id])
    write_lists(root, {"val": list(masks)})


def test_jpeg_damaged_colour_masks_error_by_default_and_nearest_restores_them(tmp_path):
    root = str(tmp_path / "voc")
    truth = {f"m{i}": voc_like_mask(i, 200, 260) for i in range(6)}
    damaged = {k: codec.encode_image(jpeg_damaged(mask_colors()[m], q), "png")
               for (k, m), q in zip(truth.items(), (75, 80, 85, 90, 95, 75))}
    _tree(root, truth, damaged)
    assert run(root, tmp_path / "err", "--crop_size", "64") == 1
    errors = [json.loads(line) for line in open(tmp_path / "err" / "errors" / "val.jsonl")]
    assert len(errors) == 6 and all("try --unknown_colors=nearest" in e["error"] for e in errors)

    assert run(root, tmp_path / "near", "--crop_size", "64", "--unknown_colors", "nearest") == 0
    records = read_records(shard_files(str(tmp_path / "near"), "val"))
    agree = total = 0
    for image_id, classes in truth.items():  # every image written, ≥ 99.9 % of pixels as drawn, no new class
        got = stitch(records, image_id, classes.shape, 64)
        agree += int((got == classes).sum())
        total += classes.size
        assert set(np.unique(got).tolist()) <= set(np.unique(classes).tolist())
    assert agree / total >= 0.999
    meta = metadata(tmp_path / "near")["splits"]["val"]
    assert meta["images_used"] == 6 and meta["unknown_pixels_snapped"] > 0 and meta["unknown_pixels_ignored"] == 0

    assert run(root, tmp_path / "ign", "--crop_size", "64", "--unknown_colors", "ignore") == 0
    assert metadata(tmp_path / "ign")["splits"]["val"]["unknown_pixels_ignored"] > 0


def test_low_bit_and_16bit_masks_keep_their_class_ids(tmp_path):
    root = str(tmp_path / "voc")
    rng = np.random.default_rng(5)
    truth, data = {}, {}
    for image_id, top, make in (
            ("grey1", 1, lambda m: pil_png(m, "1")), ("grey2", 3, lambda m: grey_png(m, 2)),
            ("grey4", 15, lambda m: grey_png(m, 4)), ("grey16", 20, lambda m: pil_png(m, "I;16")),
            ("pal1", 1, lambda m: pil_png(m, "P", 1, mask_colors()[:2])),
            ("pal4", 15, lambda m: pil_png(m, "P", 4, mask_colors()[:16]))):
        blocks = rng.integers(0, top + 1, (6, 7)).astype(np.uint8)
        truth[image_id] = np.kron(blocks, np.ones((13, 11), np.uint8))
        data[image_id] = make(truth[image_id])
    _tree(root, truth, data)
    assert run(root, tmp_path / "out", "--crop_size", "32") == 0
    records = read_records(shard_files(str(tmp_path / "out"), "val"))
    for image_id, classes in truth.items():
        np.testing.assert_array_equal(stitch(records, image_id, classes.shape, 32), classes, err_msg=image_id)


def test_a_phone_jpeg_with_a_trailer_is_written(voc_tree, tmp_path):
    with open(layout.image_path(voc_tree.root, "t1"), "ab") as f:
        f.write(b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(0).bytes(300_000))  # a Motion Photo's video
    assert run(voc_tree.root, tmp_path / "out", "--crop_size", "64", "--crops_per_image", "2") == 0
    assert metadata(tmp_path / "out")["splits"]["train"]["images_used"] == 3


def test_num_shards_n_writes_exactly_n_files_per_split_empty_ones_included(voc_tree, tmp_path):
    out = tmp_path / "out"
    assert run(voc_tree.root, out, "--crop_size", "64", "--crops_per_image", "1", "--num_shards", "7",
               "--compress") == 0
    meta = metadata(out)
    for split, crops_written in (("train", 3), ("val", 5)):
        names = [shard_name(split, i, 7, compressed=True) for i in range(7)]
        assert [os.path.basename(f) for f in shard_files(str(out), split)] == names == meta["splits"][split]["shards"]
        per_shard = [len(read_records([os.path.join(out, n)])) for n in names]
        assert per_shard == meta["splits"][split]["shard_records"] and sum(per_shard) == crops_written
        assert 0 in per_shard  # fewer crops than shards: some are empty, and still there




@pytest.mark.parametrize("flags, digest", [
    (["--crop_size", "64", "--crops_per_image", "4", "--num_shards", "2"],
     "c64af465c667f04a6c50395ed80e3634dff1826d85154a0cbd61e09b04aa3ca2"),
    (["--crop_size", "64", "--compress", "--num_shards", "3", "--seed", "5", "--image_format", "png"],
     "92c2e329dafffa0642c0f536bf1a036e3f5d6ac4893040aa09a4d010de66f547"),
])
def test_voc_runs_write_the_same_bytes_as_the_release_before_layouts_by_pattern(voc_tree, tmp_path, flags, digest):
    """The digests were taken from commit 3a9d978 (before --images/--masks, TIFF and index maps) with the pinned
    codecs of constraints.txt: a VOC tree, the same flags and seed, the same shard names and bytes. A change of
    OpenCV/libjpeg or zlib would change them too; then re-take them from the older commit, never from this one.
    Records have since gained one key, image/segmentation/class/present: the shards are rewritten without it, by
    the pipeline's own writer, so every other byte is still the release's (crop windows, order, encodings)."""
    import hashlib

    from segprep import storage
    from segprep.formats import tfrecord, records

    out = tmp_path / "out"
    assert run(voc_tree.root, out, *flags) == 0
    h = hashlib.sha256()
    for name in sorted(os.listdir(out)):
        if is_shard(name):
            h.update(name.encode())
            old = str(tmp_path / name)
            with storage.create(old, gzip=name.endswith(".gz")) as f:
                for _, data in tfrecord.read(str(out / name)):
                    features = {k: v for k, (_, v) in records.decode_example(data).items()}
                    assert features.pop(records.CLASS_PRESENT) is not None
                    tfrecord.write(f, records.encode_example(features))
            h.update(open(old, "rb").read())
    assert h.hexdigest() == digest


def test_exif_orientation_is_applied_when_the_mask_fits_the_photo_as_shown(tmp_path):
    """Phones store photos sideways with an EXIF orientation; annotation tools draw masks on the photo as shown.
    "six" (90°) with a mask on the shown photo is turned; "six_stored" with a mask on the stored pixels is not;
    "three" (180°: the mask fits both ways) is an error record naming the orientation, until --exif says which."""
    from conftest import EXIF_UNDO, with_exif

    root, rng = str(tmp_path / "voc"), np.random.default_rng(11)
    shown = {}
    for image_id, orientation, drawn_on in (("six", 6, "shown"), ("three", 3, "shown"), ("six_stored", 6, "stored")):
        photo = cv2.resize(rng.integers(0, 255, (3, 5, 3), dtype=np.uint8), (80, 48), interpolation=cv2.INTER_CUBIC)
        classes = np.kron(rng.integers(0, 21, (3, 5)), np.ones((16, 16), np.int64)).astype(np.uint8)
        stored = codec.orient(photo, EXIF_UNDO[orientation])
        mask = classes if drawn_on == "shown" else codec.orient(classes, EXIF_UNDO[orientation])
        write_pair(root, image_id, stored, mask)
        with open(layout.image_path(root, image_id), "wb") as f:
            f.write(with_exif(codec.encode_image(stored, "jpeg", 97), orientation))
        shown[image_id] = (photo, classes) if drawn_on == "shown" else (stored, mask)
    write_lists(root, {"val": list(shown)})
    for flags, ok, failed in (([], ("six", "six_stored"), {"three": "exif_ambiguous"}),
                              (["--exif", "apply"], ("six", "three"), {"six_stored": "size_mismatch"})):
        out = tmp_path / f"out{len(flags)}"
        assert run(root, out, "--crop_size", "32", *flags) == 1
        errors = {e["id"]: e for e in map(json.loads, open(out / "errors" / "val.jsonl"))}
        assert {k: e["reason"] for k, e in errors.items()} == failed
        if "three" in errors:
            assert "EXIF orientation 3 (rotated 180° for display)" in errors["three"]["error"]
            assert "pass --exif apply" in errors["three"]["error"]
        else:
            assert errors["six_stored"]["error"].endswith("; as stored it fits: pass --exif ignore")
        split = metadata(out)["splits"]["val"]
        assert (split["exif_applied"], split["exif_as_stored"]) == ((1, 1) if not flags else (2, 0))
        for image_id in ok:  # the tiles put back together are the photo and mask as the mask was drawn
            photo, classes = shown[image_id]
            image, mask = np.zeros_like(photo), np.zeros_like(classes)
            for r in read_records(shard_files(str(out), "val")):
                if r["image/source_id"].decode() == image_id:
                    y, x = r["image/crop/offset"]
                    h, w = min(32, photo.shape[0] - y), min(32, photo.shape[1] - x)
                    image[y:y + h, x:x + w], mask[y:y + h, x:x + w] = r["image"][:h, :w], r["mask"][:h, :w]
            np.testing.assert_array_equal(mask, classes)
            assert np.abs(image.astype(int) - photo).mean() < 4, image_id


def test_split_lists_that_share_ids_or_repeat_them_never_do_it_in_silence(voc_tree, tmp_path, capsys):
    """An id in train.txt and val.txt is an error record in val (unless --allow_shared_ids); a repeated line is
    named and counted; VOC's trainval (train and val together) is left out unless --splits names it."""
    write_lists(voc_tree.root, {"train": ["t1", "t2", "t2", "t3", "t1"], "val": ["v1", "v2", "t3"],
                                "trainval": ["t1", "t2", "t3", "v1", "v2"]})
    out = tmp_path / "out"
    assert run(voc_tree.root, out, "--crop_size", "64") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "prepare: split trainval left out: it lists every id of train and val (their union); pass --splits to " \
           "read it" in err
    assert "prepare: split train: its list repeats 2 ids (t2, t1); each is used once" in err
    errors = [json.loads(line) for line in open(out / "errors" / "val.jsonl")]
    assert [(e["id"], e["reason"]) for e in errors] == [("t3", "shared_id")]
    assert "id 't3' is in split 'train' too" in errors[0]["error"] and "--allow_shared_ids" in errors[0]["error"]
    meta = metadata(out)
    assert sorted(meta["splits"]) == ["train", "val"]
    assert meta["splits"]["train"]["repeated_ids"] == 2 and meta["splits"]["val"]["images_used"] == 2
    assert {r["image/source_id"] for r in read_records(shard_files(str(out), "val"))} == {b"v1", b"v2"}
    out = tmp_path / "shared"
    assert run(voc_tree.root, out, "--crop_size", "64", "--allow_shared_ids", "--splits", "train,val") == 0
    assert {r["image/source_id"] for r in read_records(shard_files(str(out), "val"))} == {b"v1", b"v2", b"t3"}


def test_a_link_inside_the_input_root_that_leads_outside_is_an_error_record(voc_tree, tmp_path):
    """An id with '..' is refused; a symbolic link that goes out of the root is refused the same way."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.replace(layout.image_path(voc_tree.root, "t2"), elsewhere / "t2.jpg")
    os.symlink(elsewhere / "t2.jpg", layout.image_path(voc_tree.root, "t2"))
    os.symlink(layout.image_path(voc_tree.root, "t1"), layout.image_path(voc_tree.root, "t1b"))  # stays inside
    os.symlink(layout.mask_path(voc_tree.root, "t1"), layout.mask_path(voc_tree.root, "t1b"))
    write_lists(voc_tree.root, {"train": ["t1", "t1b", "t2"], "val": ["v1"]})
    out = tmp_path / "out"
    assert run(voc_tree.root, out, "--crop_size", "64") == 1
    errors = [json.loads(line) for line in open(out / "errors" / "train.jsonl")]
    assert [(e["id"], e["reason"]) for e in errors] == [("t2", "outside_root")]
    assert errors[0]["error"] == (f"image: {layout.image_path(voc_tree.root, 't2')} leads to {elsewhere}/t2.jpg, "
                                  f"outside --input_dir {voc_tree.root} (a symbolic link); files are read from "
                                  "inside it only")
    assert metadata(out)["splits"]["train"]["images_used"] == 2
