"""Every reader reads both shard formats: prepare --file_format array_record writes the TFRecord output's records,
shard by shard and in order; TensorFlow Datasets loads both (as_dataset / as_data_source), segprep.torch loads both
without importing TensorFlow, and the trainer, verify and inspect read ArrayRecord as they read TFRecord. The
dataset has everything a record can carry: extra inputs (float32 DSM, uint16 band) and geo keys."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from conftest import read_records, shard_files
from pipelines import prepare
from segprep import geo, verify
from segprep.formats import array_record, records, shards, tfds_info
from segprep.formats.records import ExtraCrop

BEAM = ["--runner=DirectRunner"]
ORIGIN = (412345.678901, 5823456.789012)
CRS = "EPSG:32632"


def _geotiff(path, array, transform):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    bands = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[1], height=array.shape[0], count=len(bands),
                       dtype=array.dtype, crs=CRS, transform=transform) as out:
        out.write(bands)


def _scene(root):
    """Three georeferenced 200×230 tiles: RGB, a 0/255 mask, a float32 DSM and a uint16 NIR band on each grid."""
    rng = np.random.default_rng(11)
    for n, i in enumerate(("a", "b", "c")):
        h, w = 200, 230
        transform = Affine(0.3, 0, ORIGIN[0] + n * w * 0.3, 0, -0.3, ORIGIN[1])
        classes = np.kron(rng.integers(0, 2, (h // 10, w // 10 + 1)), np.ones((10, 10), np.uint8))[:h, :w]
        _geotiff(f"{root}/img/{i}.tif", rng.integers(0, 256, (h, w, 3), dtype=np.uint8), transform)
        _geotiff(f"{root}/lbl/{i}.tif", (classes * 255).astype(np.uint8), transform)
        _geotiff(f"{root}/dsm/{i}.tif", (rng.normal(100, 10, (h, w)) + classes * 5).astype(np.float32), transform)
        _geotiff(f"{root}/nir/{i}.tif", rng.integers(0, 65535, (h, w), dtype=np.uint16), transform)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """{file format: its output dir} of the same prepare run in both formats."""
    base = tmp_path_factory.mktemp("readers")
    _scene(base / "scene")
    found = {}
    for fmt in ("tfrecord", "array_record"):
        out = base / fmt
        assert prepare.run(["--input_dir", str(base / "scene"), "--output_dir", str(out), "--images", "img/{id}.tif",
                            "--masks", "lbl/{id}.tif", "--palette", "inria", "--val_fraction", "0.34",
                            "--crop_size", "64", "--crops_per_image", "7", "--num_shards", "3",
                            "--extra_inputs", "dsm=dsm/{id}.tif", "--extra_inputs", "nir=nir/{id}.tif",
                            "--file_format", fmt, *BEAM]) == 0
        found[fmt] = str(out)
    return found


def _shards(out, split):
    meta = json.load(open(f"{out}/metadata.json"))
    return [os.path.join(out, n) for n in meta["splits"][split]["shards"]]


def _expected(out, split, jpeg_default=False):
    """Every record of a split in order, decoded by TensorFlow's decoders (image: the trainer's, `decode_rgb`, or
    with `jpeg_default` TensorFlow's default JPEG decoder, as DeepLab's and TFDS's as_dataset; mask) and segprep's
    (extras, geo): [(id, offset, image, mask, dsm, nir, crs, transform)]."""
    from trainer.data import decode_rgb

    rows = []
    for rec in read_records(shard_files(out, split)):
        f = {k: v for k, (_, v) in records.decode_example(rec["raw"]).items()}
        extras = records.extras_of(f)
        image = rec["image"] if jpeg_default else decode_rgb(f[records.IMAGE_ENCODED][0]).numpy()
        rows.append((rec["image/source_id"].decode(), tuple(int(v) for v in rec["image/crop/offset"]), image,
                     rec["mask"], extras["dsm"].array(64, 64), extras["nir"].array(64, 64),
                     f[records.GEO_CRS][0].decode(), geo.unpack(f[records.GEO_TRANSFORM][0])))
    return rows


def test_array_record_shards_hold_the_tfrecord_shards_records_in_order(outputs):
    tf_out, ar_out = outputs["tfrecord"], outputs["array_record"]
    meta = json.load(open(f"{ar_out}/metadata.json"))
    assert meta["file_format"] == "array_record" and json.load(open(f"{tf_out}/metadata.json"))["file_format"] == \
        "tfrecord"
    for split in ("train", "val"):
        ours, theirs = _shards(ar_out, split), _shards(tf_out, split)
        assert len(ours) == len(theirs) == 3
        assert all(a.endswith(".array_record") and b.endswith(".tfrecord") for a, b in zip(ours, theirs))
        total = 0
        for a, b in zip(ours, theirs):
            assert os.path.basename(a).rsplit(".", 1)[0] == os.path.basename(b).rsplit(".", 1)[0]
            assert [d for _, d in shards.read(a)] == [d for _, d in shards.read(b)]
            assert "group_size:1," in array_record.options_of(a)
            total += len([d for _, d in shards.read(a)])
        assert total == meta["splits"][split]["records"] > 0
    for out in outputs.values():
        assert verify.main([out]) == 0


def test_tfds_loads_both_formats_with_extras_and_geo(outputs):
    tfds = pytest.importorskip("tensorflow_datasets")
    for fmt, out in outputs.items():
        builder = tfds.builder_from_directory(out)
        assert builder.info.file_format.value == fmt
        for split in ("train", "val"):
            # the same records in both; as_dataset decodes JPEGs with TensorFlow's default (fast) DCT, as_data_source
            # with OpenCV's accurate one, as the trainer and segprep.torch do
            want = _expected(outputs["tfrecord"], split, jpeg_default=fmt == "tfrecord")
            if fmt == "tfrecord":
                got = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
            else:
                source = builder.as_data_source(split=split)  # random access: read back to front
                got = [source[i] for i in reversed(range(len(source)))][::-1]
            assert len(got) == len(want)
            for g, (image_id, offset, image, mask, dsm, nir, crs, transform) in zip(got, want):
                g = g["image"]
                assert _text(g["source_id"]) == image_id and tuple(np.asarray(g["crop"]["offset"])) == offset
                np.testing.assert_array_equal(np.asarray(g["encoded"]), image)
                np.testing.assert_array_equal(np.asarray(g["segmentation"]["class"]["encoded"])[..., 0], mask)
                np.testing.assert_array_equal(np.asarray(g["extra"]["dsm"]["encoded"]), dsm)
                nir_got = np.asarray(g["extra"]["nir"]["encoded"])
                assert nir_got.dtype == np.uint16 and nir_got.max() > 255
                np.testing.assert_array_equal(nir_got, nir)
                assert _text(g["geo"]["crs"]) == crs == CRS
                np.testing.assert_array_equal(np.asarray(g["geo"]["transform"]), np.array(transform))
        part = builder.as_data_source("train[:50%]") if fmt == "array_record" else \
            list(builder.as_dataset(split="train[:50%]"))
        assert len(part) == json.load(open(f"{out}/metadata.json"))["splits"]["train"]["records"] // 2


def _text(value) -> str:
    value = value.numpy() if hasattr(value, "numpy") else value
    return value.decode() if isinstance(value, bytes) else str(value)


def test_the_tfds_files_are_what_tfds_itself_writes(outputs, tmp_path):
    """features.json and the splits of dataset_info.json equal those TFDS's own write_metadata writes for the
    features the records hold (TFDS computes split sizes by reading TFRecords only: the ArrayRecord output's
    features.json is checked to be the same file)."""
    import shutil

    tfds = pytest.importorskip("tensorflow_datasets")
    assert open(f"{outputs['array_record']}/{tfds_info.FEATURES}").read() == \
        open(f"{outputs['tfrecord']}/{tfds_info.FEATURES}").read()
    for fmt, out in [("tfrecord", outputs["tfrecord"])]:
        copy = tmp_path / fmt
        shutil.copytree(out, copy)
        for name in tfds_info.FILES:
            (copy / name).unlink()
        features = tfds.features.FeaturesDict({"image": {
            "encoded": tfds.features.Image(shape=(64, 64, 3), encoding_format="jpeg"),
            "segmentation": {"class": {"encoded": tfds.features.Image(shape=(64, 64, 1), encoding_format="png")}},
            "source_id": tfds.features.Text(),
            "crop": {"offset": tfds.features.Tensor(shape=(2,), dtype=np.int64)},
            "extra": {"dsm": {"encoded": tfds.features.Tensor(shape=(64, 64, 1), dtype=np.float32, encoding="zlib")},
                      "nir": {"encoded": tfds.features.Image(shape=(64, 64, 1), dtype=np.uint16,
                                                             encoding_format="png")}},
            "geo": {"crs": tfds.features.Text(),
                    "transform": tfds.features.Tensor(shape=(6,), dtype=np.float64, encoding="bytes")}}})
        tfds.folder_dataset.write_metadata(data_dir=str(copy), features=features, split_infos=None,
                                           filename_template=tfds_info.TEMPLATE, check_data=False)
        assert json.load(open(copy / tfds_info.FEATURES)) == json.load(open(f"{out}/{tfds_info.FEATURES}"))
        theirs = json.load(open(copy / tfds_info.DATASET_INFO))
        ours = json.load(open(f"{out}/{tfds_info.DATASET_INFO}"))
        keys = ("name", "shardLengths", "filepathTemplate")
        assert [{k: s[k] for k in keys} for s in theirs["splits"]] == [{k: s[k] for k in keys} for s in ours["splits"]]
        assert theirs["fileFormat"] == ours["fileFormat"] == fmt


_TORCH_SCRIPT = """
import pickle, sys
from torch.utils.data import DataLoader
import segprep.torch

out, path = sys.argv[1], sys.argv[2]
found = {}
for fmt in ("tfrecord", "array_record"):
    for split in ("train", "val"):
        data = segprep.torch.dataset(f"{out}/{fmt}", split)
        kind = type(data).__name__
        for workers in (0, 2):
            items = []
            for batch in DataLoader(data, batch_size=5, num_workers=workers):
                for k in range(len(batch["id"])):
                    items.append({"id": batch["id"][k], "offset": (int(batch["offset"][0][k]), int(batch["offset"][1][k])),
                                  **{name: batch[name][k].numpy() for name in ("image", "mask", "dsm", "nir", "transform")},
                                  "crs": batch["crs"][k], "dtypes": (str(batch["image"].dtype), str(batch["mask"].dtype))})
            found[(fmt, split, workers)] = (kind, items)
    shuffled = segprep.torch.dataset(f"{out}/{fmt}", "train", shuffle=True, seed=3)
    orders = []
    for epoch in (0, 1, 0):
        shuffled.set_epoch(epoch)
        orders.append([(b["id"], b["offset"]) for b in DataLoader(shuffled, batch_size=None, num_workers=2)])
    found[(fmt, "orders")] = orders
found["tensorflow imported"] = "tensorflow" in sys.modules
pickle.dump(found, open(path, "wb"))
"""


def test_segprep_torch_reads_both_formats_without_tensorflow(outputs, tmp_path):
    pytest.importorskip("torch")
    base = os.path.dirname(outputs["tfrecord"])
    result = tmp_path / "items.pkl"
    run = subprocess.run([sys.executable, "-c", _TORCH_SCRIPT, base, str(result)], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    found = pickle.load(open(result, "rb"))
    assert found.pop("tensorflow imported") is False
    for fmt in ("tfrecord", "array_record"):
        for split in ("train", "val"):
            want = _expected(outputs["tfrecord"], split)
            kind, items = found[(fmt, split, 0)]
            assert kind == {"tfrecord": "TFRecordCrops", "array_record": "ArrayRecordCrops"}[fmt]
            assert len(items) == len(want)
            for item, (image_id, offset, image, mask, dsm, nir, crs, transform) in zip(items, want):
                assert (item["id"], item["offset"]) == (image_id, offset)
                assert item["dtypes"] == ("torch.uint8", "torch.int64")
                np.testing.assert_array_equal(item["image"], image.transpose(2, 0, 1))  # the trainer's pixels
                np.testing.assert_array_equal(item["mask"], mask.astype(np.int64))
                np.testing.assert_array_equal(item["dsm"], dsm.transpose(2, 0, 1))
                np.testing.assert_array_equal(item["nir"], nir.transpose(2, 0, 1).astype(np.float32))
                assert item["crs"] == crs
                np.testing.assert_array_equal(item["transform"], np.array(transform))
            _, two = found[(fmt, split, 2)]  # two workers: every crop once
            assert sorted((i["id"], i["offset"]) for i in two) == sorted((i["id"], i["offset"]) for i in items)
        first, second, again = found[(fmt, "orders")]
        assert sorted(first) == sorted(second) and first != second, "a new order each epoch"
        assert first == again, "an epoch's order is a function of (seed, epoch)"


def test_the_trainer_reads_array_record_as_it_reads_tfrecord(outputs):
    from trainer import data

    batches = {}
    for fmt, out in outputs.items():
        train = data.make_dataset(out, "train", 4, training=True, seed=5, inputs={"image": 1, "dsm": 1})
        val = data.make_dataset(out, "val", 4, training=False, inputs={"image": 1, "nir": 1})
        batches[fmt] = [(x, y) for x, y in train.take(5)] + [(x, y) for x, y in val.take(3)]
    for (xa, ya), (xb, yb) in zip(batches["tfrecord"], batches["array_record"]):
        for name in xa:
            np.testing.assert_array_equal(xa[name].numpy(), xb[name].numpy())
        for name in ya:
            np.testing.assert_array_equal(ya[name].numpy(), yb[name].numpy())


def test_inspect_draws_array_record_shards(outputs, tmp_path):
    from segprep.tools import sheet

    assert sheet.main([outputs["array_record"], "--output", str(tmp_path / "sheet.png"), "--count", "4"]) == 0
    assert (tmp_path / "sheet.png").stat().st_size > 0


def test_a_damaged_array_record_shard_is_named_by_verify_and_the_trainer(outputs, tmp_path, capsys):
    import shutil

    out = tmp_path / "damaged"
    shutil.copytree(outputs["array_record"], out)
    shard = _shards(str(out), "train")[1]
    data = bytearray(open(shard, "rb").read())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)  # zeros in the middle of a record
    open(shard, "wb").write(bytes(data))
    capsys.readouterr()
    assert verify.main([str(out)]) == 1
    err = capsys.readouterr()
    assert os.path.basename(shard) in err.out + err.err
    open(shard, "wb").write(bytes(data[:len(data) // 2]))  # cut short: ArrayRecord opens it, holding nothing
    assert verify.main([str(out)]) == 1
    err = capsys.readouterr()
    assert f"{os.path.basename(shard)}: not a whole ArrayRecord file" in err.out + err.err
    assert len((err.out + err.err).strip().splitlines()) <= 3  # the problem and the summary: no traceback


def test_file_format_mistakes_are_one_line(voc_tree, tmp_path, capsys):
    out = tmp_path / "out"
    assert prepare.main(["--input_dir", voc_tree.root, "--output_dir", str(out), "--file_format", "array_record",
                        "--compress", *BEAM]) == 2
    err = capsys.readouterr().err.strip()
    assert "--compress" in err and len(err.splitlines()) == 1 and not out.exists()
    assert prepare.main(["--input_dir", voc_tree.root, "--output_dir", str(out), "--file_format", "parquet",
                        *BEAM]) == 2
    assert "--file_format" in capsys.readouterr().err


def test_segprep_torch_reads_gzipped_tfrecord_shards(voc_tree, tmp_path):
    torch_ = pytest.importorskip("segprep.torch")
    items = {}
    for name, more in (("plain", []), ("gzip", ["--compress"])):
        out = tmp_path / name
        assert prepare.run(["--input_dir", voc_tree.root, "--output_dir", str(out), "--crop_size", "64",
                            "--crops_per_image", "2", *more, *BEAM]) == 0
        items[name] = [(i["id"], i["offset"], i["image"].numpy().tobytes(), i["mask"].numpy().tobytes())
                       for i in torch_.dataset(str(out), "train")]
    assert items["gzip"] == items["plain"] and len(items["plain"]) > 0


def test_tfds_describes_geo_keys_only_when_every_crop_has_them():
    """TFDS parses every feature of features.json in every record: a run where some sources had no grid gets no
    geo features (the keys stay in the records, and segprep.torch gives "" and NaN for those crops)."""
    def meta(grids, used):
        return {"crop_size": 64, "image_format": "jpeg", "splits": {
            "train": {"records": 9, "images_used": used, "georeferencing": {i: {} for i in grids}},
            "val": {"records": 0, "images_used": 0}}}

    assert tfds_info.all_georeferenced(meta(["a", "b"], 2))
    assert "geo" in tfds_info.features(meta(["a", "b"], 2))["featuresDict"]["features"]["image"]["featuresDict"][
        "features"]
    assert not tfds_info.all_georeferenced(meta(["a"], 2))
    assert "geo" not in tfds_info.features(meta(["a"], 2))["featuresDict"]["features"]["image"]["featuresDict"][
        "features"]
