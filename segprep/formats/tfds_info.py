"""dataset_info.json and features.json: what TensorFlow Datasets needs beside prepare's shards to load them as a
dataset, `tfds.builder_from_directory(OUT)`, with every split, slicing (`train[:10%]`) and the image and the mask
decoded as features.

They are written by the schema `tfds.folder_dataset.write_metadata` writes (TFDS 4.9), without TFDS: a nested
FeaturesDict that mirrors the record's key paths, so TFDS's parser reads the records as they are:

    {"image": {"encoded": Image(S, S, 3, jpeg or png),
               "segmentation": {"class": {"encoded": Image(S, S, 1, png)}}}}

and the splits' shard lengths with the file name template {SPLIT}-{SHARD_X_OF_Y}.{FILEFORMAT}, which names
today's shards (train-00000-of-00004.tfrecord). The suite loads an output with TFDS itself.
"""

from __future__ import annotations

import json

DATASET_INFO = "dataset_info.json"
FEATURES = "features.json"
FILES = (DATASET_INFO, FEATURES)
TEMPLATE = "{SPLIT}-{SHARD_X_OF_Y}.{FILEFORMAT}"
_DICT = "tensorflow_datasets.core.features.features_dict.FeaturesDict"
_IMAGE = "tensorflow_datasets.core.features.image_feature.Image"


def _image(size: int, channels: int, encoding: str) -> dict:
    return {"image": {"dtype": "uint8", "encodingFormat": encoding,
                      "shape": {"dimensions": [str(size), str(size), str(channels)]}},
            "pythonClassName": _IMAGE}


def _features(features: dict) -> dict:
    return {"featuresDict": {"features": features}, "pythonClassName": _DICT}


def features(crop_size: int, image_format: str) -> dict:
    """features.json of a run's records."""
    mask = _features({"class": _features({"encoded": _image(crop_size, 1, "png")})})
    return _features({"image": _features({"encoded": _image(crop_size, 3, image_format),
                                          "segmentation": mask})})


def dataset_info(meta: dict) -> dict:
    """dataset_info.json of a run (its metadata.json as a dict): each split's shard lengths and bytes."""
    splits = [{"filepathTemplate": TEMPLATE, "name": name, "numBytes": str(entry["bytes"]),
               "shardLengths": [str(n) for n in entry["shard_records"]]}
              for name, entry in meta["splits"].items() if entry["shards"]]
    return {"fileFormat": "tfrecord", "splits": splits, "version": "1.0.0",
            "description": "Crops written by segprep's pipelines.prepare; see its metadata.json."}


def texts(meta: dict) -> dict[str, str]:
    """{file name: its text} of both files for a run's metadata (a dict). Compressed shards (--compress) are
    gzip-framed TFRecords, which TFDS does not read: then none."""
    if meta.get("compression", "none") != "none":
        return {}
    return {DATASET_INFO: json.dumps(dataset_info(meta), indent=2) + "\n",
            FEATURES: json.dumps(features(meta["crop_size"], meta["image_format"]), indent=4) + "\n"}
