"""Rare classes on purpose (--oversample_fraction, --oversample_classes) and per-crop class presence, end to end on
real files: scenes where "car" covers ~0.2% of the pixels in a few small rectangles."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from benchmarks.bench_oversample import RARE, make_rare_tree
from conftest import read_records, shard_files
from pipelines import prepare
from segprep import crops
from segprep.formats.records import CLASS_PRESENT
from trainer import data

BEAM = ["--runner=DirectRunner"]
SIDE, CROP, PER_IMAGE = 512, 64, 16
FLAGS = ["--crop_size", str(CROP), "--crops_per_image", str(PER_IMAGE), "--oversample_classes", "car"]

# TF Model Garden's segmentation decoder (official/vision/dataloaders/segmentation_input.py) parses these keys only.
MODEL_GARDEN_SPEC = {
    "image/encoded": tf.io.FixedLenFeature((), tf.string, default_value=""),
    "image/height": tf.io.FixedLenFeature((), tf.int64, default_value=0),
    "image/width": tf.io.FixedLenFeature((), tf.int64, default_value=0),
    "image/segmentation/class/encoded": tf.io.FixedLenFeature((), tf.string, default_value=""),
}


@pytest.fixture(scope="module")
def rare_tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("rare"))
    splits = make_rare_tree(root, train=8, val=2, height=SIDE, width=SIDE, objects=4, size=12)
    return root, splits


def run(root, out, *flags):
    return prepare.run(["--input_dir", root, "--output_dir", str(out), *FLAGS, *flags, *BEAM])


def _train(out):
    """Training records as DeepLab reads them, each with its class presence as segprep's trainer parses it."""
    train = read_records(shard_files(str(out), "train"))
    for r in train:
        r["present"] = tf.io.parse_single_example(r["raw"], data.feature_spec())[CLASS_PRESENT].numpy()
    return train


def _offsets(records):
    return sorted((r["image/source_id"].decode(), *map(int, r["image/crop/offset"])) for r in records)


def test_a_third_of_the_crops_hold_the_rare_class_and_the_others_are_the_plain_crops(rare_tree, tmp_path):
    root, splits = rare_tree
    shares = {}
    for fraction in ("0", "0.33"):
        out = tmp_path / fraction
        assert run(root, out, "--oversample_fraction", fraction) == 0
        records = _train(out)
        assert len(records) == 8 * PER_IMAGE
        for r in records:  # the key is the mask's classes, ignore excluded
            held = np.flatnonzero(np.bincount(r["mask"].ravel(), minlength=256)[:255])
            assert r["present"].tolist() == held.tolist()
        with_car = sum(RARE in r["present"] for r in records)
        shares[fraction] = with_car / len(records)
        meta = json.load(open(out / "metadata.json"))
        assert meta["splits"]["train"]["class_crops"][RARE] == with_car
        assert meta["splits"]["train"]["class_crops"][0] == sum(0 in r["present"] for r in records)
        assert meta["flags"]["oversample_fraction"] == float(fraction)
        if fraction == "0":  # exactly the windows random crops had before the flag existed
            assert _offsets(records) == sorted(
                (i, b.y, b.x) for i in splits["train"] for b in crops.random_crops(SIDE, SIDE, CROP, PER_IMAGE, 0, i))
        else:  # the crops not chosen for oversampling are those same windows
            plain = sorted((i, b.y, b.x) for i in splits["train"] for k, b in enumerate(
                crops.random_crops(SIDE, SIDE, CROP, PER_IMAGE, 0, i)) if not crops.is_oversampled(0, i, k, 0.33))
            assert len(plain) <= 8 * PER_IMAGE * 0.7
            assert not set(plain) - set(_offsets(records))
    assert shares["0"] < 0.2 and shares["0.33"] >= 0.33, shares


def test_records_with_the_new_key_read_in_deeplabs_and_model_gardens_decoders(rare_tree, tmp_path):
    root, _ = rare_tree
    out = tmp_path / "out"
    assert run(root, out, "--oversample_fraction", "0.5") == 0
    deeplab = read_records(shard_files(str(out), "val"))  # DeepLab's data_generator spec: the key is not in it
    assert len(deeplab) == 2 * (SIDE // CROP) ** 2
    for raw in tf.data.TFRecordDataset(shard_files(str(out), "train")):
        parsed = tf.io.parse_single_example(raw, MODEL_GARDEN_SPEC)
        assert tf.io.decode_png(parsed["image/segmentation/class/encoded"]).shape == (CROP, CROP, 1)
        assert int(parsed["image/height"]) == CROP


def test_fraction_zero_is_the_run_without_the_flag_byte_for_byte(rare_tree, tmp_path):
    root, _ = rare_tree
    assert run(root, tmp_path / "a") == 0
    assert run(root, tmp_path / "b", "--oversample_fraction", "0") == 0
    for name in sorted(n for n in os.listdir(tmp_path / "a") if n.endswith(".tfrecord")):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_oversampled_crops_are_the_same_on_two_workers_and_through_beams_shuffle(rare_tree, tmp_path):
    root, _ = rare_tree
    flags = ["--oversample_fraction", "0.4", "--oversample_classes", "car,person", "--cat_max_ratio", "0.6",
             "--num_shards", "3"]
    assert run(root, tmp_path / "one", *flags) == 0
    assert run(root, tmp_path / "two", *flags, "--shuffle", "beam", "--direct_num_workers=2",
               "--direct_running_mode=multi_processing") == 0
    names = sorted(n for n in os.listdir(tmp_path / "one") if n.endswith(".tfrecord"))
    assert len(names) == 6
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    split = json.load(open(tmp_path / "one" / "metadata.json"))["splits"]["train"]
    assert split == json.load(open(tmp_path / "two" / "metadata.json"))["splits"]["train"]


def test_oversample_classes_takes_palette_names_and_refuses_others_in_one_line(rare_tree, tmp_path, capsys):
    root, _ = rare_tree
    assert prepare.main(["--input_dir", root, "--output_dir", str(tmp_path / "x"), "--oversample_classes", "cars",
                         *BEAM]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["prepare: error: --oversample_classes: 'cars' is not a class of the palette; its classes are "
                   "background, aeroplane, bicycle, bird, boat, bottle, bus, car, cat, chair, cow, diningtable, dog, "
                   "horse, motorbike, person, pottedplant, sheep, sofa, train, tvmonitor (or their indices 0..20)"]
    assert prepare.main(["--input_dir", root, "--output_dir", str(tmp_path / "x"), "--oversample_fraction", "1.5",
                         *BEAM]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--oversample_fraction" in err[0]
    # names and indices mix; the run's metadata records them as given
    assert prepare.run(["--input_dir", root, "--output_dir", str(tmp_path / "ok"), "--oversample_classes", "7,person",
                        "--oversample_fraction", "0.2", "--crops_per_image", "2", *BEAM]) == 0
    assert json.load(open(tmp_path / "ok" / "metadata.json"))["flags"]["oversample_classes"] == "7,person"
