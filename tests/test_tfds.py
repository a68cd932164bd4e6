"""TensorFlow Datasets loads prepare's output as a dataset (dataset_info.json and features.json beside the shards,
written without TFDS): every split, slicing, and the image and mask decoded as features, equal to the records."""

import json

import numpy as np
import pytest

from conftest import read_records, shard_files
from pipelines import prepare
from segprep.formats import tfds_info

tfds = pytest.importorskip("tensorflow_datasets")


def test_tfds_loads_every_split_with_slicing_and_decoded_features(records):
    builder = tfds.builder_from_directory(records)
    meta = json.load(open(f"{records}/metadata.json"))
    assert {name: split.num_examples for name, split in builder.info.splits.items()} == \
        {name: entry["records"] for name, entry in meta["splits"].items()}
    for split in meta["splits"]:
        ours = read_records(shard_files(records, split))  # in record order, decoded by TF's own decoders
        theirs = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
        assert len(theirs) == len(ours)
        for a, b in zip(theirs, ours):
            np.testing.assert_array_equal(a["image"]["encoded"], b["image"])
            np.testing.assert_array_equal(a["image"]["segmentation"]["class"]["encoded"][..., 0], b["mask"])
    part = list(builder.as_dataset(split="train[:50%]"))
    assert len(part) == meta["splits"]["train"]["records"] // 2


def test_the_files_are_what_tfds_itself_writes(records, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(records, copy)
    for name in tfds_info.FILES:
        (copy / name).unlink()
    meta = json.load(open(f"{records}/metadata.json"))
    size = meta["crop_size"]
    features = tfds.features.FeaturesDict({"image": {
        "encoded": tfds.features.Image(shape=(size, size, 3), encoding_format=meta["image_format"]),
        "segmentation": {"class": {"encoded": tfds.features.Image(shape=(size, size, 1), encoding_format="png")}}}})
    tfds.folder_dataset.write_metadata(data_dir=str(copy), features=features, split_infos=None,
                                       filename_template=tfds_info.TEMPLATE, check_data=False)
    assert json.load(open(copy / tfds_info.FEATURES)) == json.load(open(f"{records}/{tfds_info.FEATURES}"))
    theirs, ours = json.load(open(copy / tfds_info.DATASET_INFO)), json.load(open(f"{records}/{tfds_info.DATASET_INFO}"))
    assert [{k: s[k] for k in ("name", "shardLengths", "filepathTemplate")} for s in theirs["splits"]] == \
        [{k: s[k] for k in ("name", "shardLengths", "filepathTemplate")} for s in ours["splits"]]


def test_gzip_shards_get_no_tfds_files(voc_tree, tmp_path):
    out = tmp_path / "out"
    assert prepare.run(["--input_dir", voc_tree.root, "--output_dir", str(out), "--crop_size", "64",
                        "--crops_per_image", "2", "--compress", "--runner=DirectRunner"]) == 0
    assert not any((out / name).exists() for name in tfds_info.FILES)
    assert json.load(open(out / "metadata.json"))["tfds_files"] == []
