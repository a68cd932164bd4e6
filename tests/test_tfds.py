"""TensorFlow Datasets loads prepare's output as a dataset (dataset_info.json and features.json beside the shards,
written without TFDS): every split, slicing, and the image and mask decoded as features, equal to the records.
(Both file formats, extra inputs, geo keys and the files TFDS itself writes: tests/test_readers.py.)"""

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


def test_gzip_shards_get_no_tfds_files(voc_tree, tmp_path):
    out = tmp_path / "out"
    assert prepare.run(["--input_dir", voc_tree.root, "--output_dir", str(out), "--crop_size", "64",
                        "--crops_per_image", "2", "--compress", "--runner=DirectRunner"]) == 0
    assert not any((out / name).exists() for name in tfds_info.FILES)
    assert json.load(open(out / "metadata.json"))["tfds_files"] == []
