"""prepare with --extra_inputs: every crop of every extra input equals its source window exactly, at its own depth
(random crops, val tiles, a tiled TIFF cut window by window), the image's keys unchanged, and bad extras are error
records naming the input."""

import json
import os

import cv2
import numpy as np
import pytest
import tifffile

from conftest import grey_png, shard_files
from pipelines import prepare
from segprep import verify
from segprep.formats import records, tfrecord
from segprep.formats.records import ExtraCrop

BEAM = ["--runner=DirectRunner"]


def aerial(root, ids=("1_2", "1_3", "2_10", "3_4"), side=(150, 170), tile=None):
    """RGBIR uint16 tiles (4 bands), index masks, and float32 DSMs named with zero-padded ids, as Potsdam's are:
    → {id: (rgbir, classes, dsm)}."""
    rng = np.random.default_rng(5)
    os.makedirs(f"{root}/img"), os.makedirs(f"{root}/lbl"), os.makedirs(f"{root}/dsm")
    out = {}
    for i in ids:
        h, w = side
        rgbir = rng.integers(0, 65535, (h, w, 4), dtype=np.uint16)
        classes = np.kron(rng.integers(0, 3, (h // 10 + 1, w // 10 + 1)), np.ones((10, 10), np.uint8))[:h, :w]
        dsm = (rng.normal(120, 15, (h, w)) + classes * 8).astype(np.float32)
        kw = {"tile": tile} if tile else {}
        tifffile.imwrite(f"{root}/img/top_{i}.tif", rgbir, photometric="rgb", extrasamples=["unspecified"], **kw)
        if tile:
            tifffile.imwrite(f"{root}/lbl/top_{i}.tif", classes.astype(np.uint8), photometric="minisblack", **kw)
        else:
            (open(f"{root}/lbl/top_{i}.png", "wb")).write(grey_png(classes.astype(np.uint8), 8))
        padded = "_".join(f"{int(n):02d}" for n in i.split("_"))
        tifffile.imwrite(f"{root}/dsm/dsm_{padded}.tif", dsm, **kw)
        out[i] = (rgbir, classes, dsm)
    return out


def flags(root, out, mask_ext="png", *more):
    return ["--input_dir", root, "--output_dir", str(out), "--images", "img/top_{id}.tif",
            "--masks", f"lbl/top_{{id}}.{mask_ext}", "--val_fraction", "0.5", "--bands", "1,2,3",
            "--image_range", "0,65535", "--crop_size", "64", "--crops_per_image", "5",
            "--extra_inputs", "dsm=dsm/dsm_{id:pad=2}.tif", "--extra_inputs", "ir=@4", *more, *BEAM]


def crops_of(out):
    """{(split, id, y, x): {name: array}} of every record, decoded with segprep's own reader."""
    found = {}
    for split in ("train", "val"):
        for path in shard_files(str(out), split):
            for _, data in tfrecord.read(path):
                f = {k: v for k, (_, v) in records.decode_example(data).items()}
                y, x = f[records.CROP_OFFSET]
                h, w = f[records.IMAGE_HEIGHT][0], f[records.IMAGE_WIDTH][0]
                crops = {}
                for name in ("dsm", "ir"):
                    key = lambda field: f[records.extra_key(name, field)][0]  # noqa: E731
                    crops[name] = ExtraCrop(key("encoded"), key("format").decode(), key("dtype").decode(),
                                            key("channels")).array(h, w)
                found[(split, f[records.IMAGE_SOURCE_ID][0].decode(), y, x)] = crops
    return found


def window(array, y, x, size=64):
    """The source window at (y, x), padded with 0 past the edge, (size, size, C)."""
    part = array[y:y + size, x:x + size]
    part = part.reshape(part.shape[0], part.shape[1], -1)
    out = np.zeros((size, size, part.shape[2]), array.dtype)
    out[:part.shape[0], :part.shape[1]] = part
    return out


@pytest.mark.parametrize("layout", ["whole", "windows"])
def test_every_crop_of_every_extra_input_equals_its_source_window(tmp_path, layout):
    root, out = str(tmp_path / "tiles"), tmp_path / "out"
    if layout == "whole":
        sources = aerial(root)
        argv = flags(root, out)
    else:  # tiled TIFFs larger than --window_size: cut window by window, extras read by region
        sources = aerial(root, side=(300, 260), tile=(32, 32))
        argv = flags(root, out, "tif", "--window_size", "100", "--palette", "loveda", "--unknown_colors", "ignore")
    if layout == "whole":
        argv += ["--palette", "loveda", "--unknown_colors", "ignore"]
    assert prepare.run(argv) == 0
    found = crops_of(out)
    assert {split for split, *_ in found} == {"train", "val"} and len(found) > 8
    for (split, image_id, y, x), crops in found.items():
        rgbir, _, dsm = sources[image_id]
        assert crops["dsm"].dtype == np.float32 and np.array_equal(crops["dsm"], window(dsm, y, x))
        assert crops["ir"].dtype == np.uint16 and np.array_equal(crops["ir"], window(rgbir[..., 3], y, x))
    meta = json.load(open(out / "metadata.json"))
    assert meta["extra_inputs"]["dsm"]["source"] == "dsm/dsm_{id:pad=2}.tif"
    assert (meta["extra_inputs"]["dsm"]["channels"], meta["extra_inputs"]["dsm"]["dtype"]) == (1, "float32")
    assert (meta["extra_inputs"]["ir"]["source"], meta["extra_inputs"]["ir"]["dtype"]) == ("@4", "uint16")
    train = [sources[i] for i in {i for s, i, *_ in found if s == "train"}]
    low = min(float(d.min()) for _, _, d in train)
    assert meta["extra_inputs"]["dsm"]["min"][0] >= low - 1e-3  # over the training crops' pixels
    assert 100 < meta["extra_inputs"]["dsm"]["mean"][0] < 160 and meta["extra_inputs"]["dsm"]["std"][0] > 5
    assert verify.main([str(out)]) == 0
    if layout == "whole":  # the trainer's tf.data reader: the IR band's 16 bits and the DSM's float32, exactly
        from trainer import data

        ds = data.make_dataset(str(out), "val", 1, training=False, inputs={"image": 1, "dsm": 1, "ir": 1})
        val = [(key, crops) for key, crops in found.items() if key[0] == "val"]  # in record order
        for (key, crops), (x, _) in zip(val, ds.take(len(val))):
            np.testing.assert_array_equal(x["ir"][0].numpy(), crops["ir"].astype(np.float32))
            np.testing.assert_array_equal(x["dsm"][0].numpy(), crops["dsm"])
        assert max(int(crops["ir"].max()) for _, crops in val) > 255


def test_records_without_extras_keep_their_bytes_and_the_image_keys_stay(tmp_path):
    """The image keys DeepLab and Model Garden read are the same with or without extra inputs."""
    root = str(tmp_path / "tiles")
    aerial(root)
    plain, extra = tmp_path / "plain", tmp_path / "extra"
    base = flags(root, plain)
    no_extras = [a for i, a in enumerate(base) if a != "--extra_inputs" and (i == 0 or base[i - 1] != "--extra_inputs")]
    assert prepare.run(no_extras + ["--palette", "loveda", "--unknown_colors", "ignore"]) == 0
    assert prepare.run(flags(root, extra) + ["--palette", "loveda", "--unknown_colors", "ignore"]) == 0
    for split in ("train", "val"):
        a = [d for p in shard_files(str(plain), split) for _, d in tfrecord.read(p)]
        b = [d for p in shard_files(str(extra), split) for _, d in tfrecord.read(p)]
        strip = lambda data: {k: v for k, v in records.decode_example(data).items()  # noqa: E731
                              if not k.startswith(records.EXTRA_PREFIX)}
        assert sorted(map(lambda d: sorted(strip(d).items()), a)) == sorted(map(lambda d: sorted(strip(d).items()), b))


def test_a_missing_or_bad_extra_raster_is_an_error_record_naming_the_input(tmp_path):
    root, out = str(tmp_path / "tiles"), tmp_path / "out"
    aerial(root)
    os.remove(f"{root}/dsm/dsm_01_02.tif")
    tifffile.imwrite(f"{root}/dsm/dsm_01_03.tif", np.zeros((10, 10), np.float32))  # another size
    nan = np.full((150, 170), 3.0, np.float32)
    nan[5, 5] = np.nan
    tifffile.imwrite(f"{root}/dsm/dsm_02_10.tif", nan)
    assert prepare.run(flags(root, out) + ["--palette", "loveda", "--unknown_colors", "ignore"]) == 1
    errors = {}
    for name in os.listdir(out / "errors"):
        for line in open(out / "errors" / name):
            e = json.loads(line)
            errors[e["id"]] = (e["reason"], e["error"])
    assert errors["1_2"][0] == "missing_extra" and "no extra input dsm file at" in errors["1_2"][1]
    assert errors["1_3"] == ("size_mismatch", "extra input dsm is 10×10 (w×h) but its image is 170×150; they must "
                                              "be the same size")
    assert errors["2_10"][0] == "bad_extra" and "extra input dsm: 1 values are NaN or infinite" in errors["2_10"][1]
    assert set(errors) == {"1_2", "1_3", "2_10"}  # 3_4 is written


def test_flag_mistakes_are_one_line(tmp_path, capsys):
    for value, says in (("Dsm=x/{id}.tif", "lower-case letters"), ("ir=@x", "1-based band numbers")):
        assert prepare.main(["--output_dir", str(tmp_path / "o"), "--extra_inputs", value, *BEAM]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
    assert not (tmp_path / "o").exists()


def test_cv2_is_not_needed_for_png_extras_elsewhere():
    """A 16-bit single-band PNG crop decodes with OpenCV to the same values (what other readers use)."""
    values = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64, 1) * 13
    crop = ExtraCrop.of(values)
    assert np.array_equal(cv2.imdecode(np.frombuffer(crop.encoded, np.uint8), cv2.IMREAD_UNCHANGED)[..., None],
                          values)


def test_verify_names_a_damaged_extra_crop(tmp_path, capsys):
    root, out = str(tmp_path / "tiles"), tmp_path / "out"
    aerial(root, ids=("1_2", "1_3"))
    assert prepare.run(flags(root, out) + ["--palette", "loveda", "--unknown_colors", "ignore"]) == 0
    shard = shard_files(str(out), "train")[0]
    entries = [data for _, data in tfrecord.read(shard)]
    features = {k: v for k, (_, v) in records.decode_example(entries[0]).items()}
    features[records.extra_key("dsm", "encoded")] = [features[records.extra_key("dsm", "encoded")][0][:20]]
    entries[0] = records.encode_example(features)
    with open(shard, "wb") as f:
        for data in entries:
            tfrecord.write(f, data)
    capsys.readouterr()
    assert verify.main([str(out)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(f"{shard}: record 0: extra input dsm: does not decode as raw float32" in line for line in lines), lines


def test_scan_shows_each_extra_inputs_kind_and_range_and_the_pairs_prepare_would_refuse(tmp_path, capsys):
    from segprep import scan

    root = str(tmp_path / "tiles")
    sources = aerial(root)
    dsm = sources["3_4"][2].copy()
    dsm[0, :3] = np.nan
    tifffile.imwrite(f"{root}/dsm/dsm_03_04.tif", dsm)
    os.remove(f"{root}/dsm/dsm_01_02.tif")
    assert scan.main(["--input_dir", root, "--images", "img/top_{id}.tif", "--masks", "lbl/top_{id}.png",
                      "--val_fraction", "0.5", "--palette", "loveda", "--no_leakage",
                      "--extra_inputs", "dsm=dsm/dsm_{id:pad=2}.tif", "--extra_inputs", "ir=@4"]) == 0
    out = capsys.readouterr().out
    finite = [d for i, (_, _, d) in sources.items() if i in ("1_3", "2_10")] + [dsm[np.isfinite(dsm)]]
    low, high = min(float(d.min()) for d in finite), max(float(d.max()) for d in finite)
    assert f"extra input dsm (dsm/dsm_{{id:pad=2}}.tif): 3 of 4 read; float32 1-band TIFF ×3; values {low:.6g} … " \
           f"{high:.6g}" in out
    assert "1_2: no " in out and "3_4: 3 NaN or infinite" in out
    ir_high = max(int(r[..., 3].max()) for r, _, _ in sources.values())
    assert f"extra input ir (@4): 4 of 4 read; uint16 1-band @4 ×4; values " in out and f"… {ir_high}" in out
    assert "--extra_inputs 'dsm=dsm/dsm_{id:pad=2}.tif' --extra_inputs ir=@4" in out  # in the prepare command


@pytest.mark.parametrize("nodata", ["-9999", "nan"])
def test_a_declared_nodata_value_is_kept_padded_with_recorded_and_left_out_of_the_statistics(tmp_path, nodata):
    from trainer import data

    root, out = tmp_path / "src", tmp_path / "out"
    rng = np.random.default_rng(1)
    for sub in ("img", "lbl", "dsm"):
        os.makedirs(root / sub)
    dsms = {}
    for i in range(4):
        cv2.imwrite(str(root / "img" / f"t{i}.png"), rng.integers(0, 256, (100, 90, 3), dtype=np.uint8))
        cv2.imwrite(str(root / "lbl" / f"t{i}.png"), (rng.integers(0, 2, (100, 90)) * 255).astype(np.uint8))
        dsm = rng.normal(50, 2, (100, 90)).astype(np.float32)
        dsm[:10] = float(nodata)  # a GDAL_NODATA collar
        tifffile.imwrite(root / "dsm" / f"t{i}.tif", dsm, extratags=[(42113, "s", 0, nodata, True)])
        dsms[f"t{i}"] = dsm
    assert prepare.run(["--input_dir", str(root), "--output_dir", str(out), "--images", "img/{id}.png",
                        "--masks", "lbl/{id}.png", "--palette", "inria", "--val_fraction", "0.5", "--crop_size", "64",
                        "--crops_per_image", "4", "--extra_inputs", "dsm=dsm/{id}.tif", *BEAM]) == 0
    meta = json.load(open(out / "metadata.json"))["extra_inputs"]["dsm"]
    assert meta["nodata"] == (["nan"] if nodata == "nan" else [-9999.0])
    assert 30 < meta["min"][0] and meta["max"][0] < 70 and abs(meta["mean"][0] - 50) < 0.5  # the collar left out
    for split in ("train", "val"):
        for path in shard_files(str(out), split):
            for _, raw in tfrecord.read(path):
                f = {k: v for k, (_, v) in records.decode_example(raw).items()}
                y, x = f[records.CROP_OFFSET]
                key = lambda field: f[records.extra_key("dsm", field)][0]  # noqa: E731
                crop = ExtraCrop(key("encoded"), "raw", "float32", 1).array(64, 64)[..., 0]
                part = dsms[f[records.IMAGE_SOURCE_ID][0].decode()][y:y + 64, x:x + 64]
                expected = np.full((64, 64), float(nodata), np.float32)  # padded with the nodata value
                expected[:part.shape[0], :part.shape[1]] = part
                np.testing.assert_array_equal(crop, expected)  # kept exactly, NaN where NaN
    assert verify.main([str(out)]) == 0
    # The trainer's input: no-data pixels become the band's mean (0 once the model normalises).
    batch = next(iter(data.make_dataset(str(out), "val", 16, training=False, inputs={"image": 1, "dsm": 1})))[0]
    values = batch["dsm"].numpy()
    assert np.isfinite(values).all() and values.min() > 40 and np.isclose(values, meta["mean"][0]).any()
