"""dataset_info.json and features.json: what TensorFlow Datasets needs beside prepare's shards to load them as a
dataset, `tfds.builder_from_directory(OUT)`, with every split, slicing (`train[:10%]`) and the image and the mask
decoded as features: `as_dataset` over TFRecord shards, `as_data_source` (random access) over ArrayRecord ones.

They are written by the schema `tfds.folder_dataset.write_metadata` writes (TFDS 4.9), without TFDS: a nested
FeaturesDict that mirrors the record's key paths, so TFDS's parser reads the records as they are:

    {"image": {"encoded": Image(S, S, 3, jpeg or png),
               "segmentation": {"class": {"encoded": Image(S, S, 1, png)}},
               "source_id": Text, "crop": {"offset": Tensor([2], int64)},
               "extra": {NAME: {"encoded": Image(S, S, C, png, uint8/uint16)        an extra input stored as PNG
                                         | Tensor([S, S, C], float32, zlib)}},       or as zlib raw float32
               "geo": {"crs": Text, "transform": Tensor([6], float64, bytes)}}}     when every crop has them

and the splits' shard lengths with the file name template {SPLIT}-{SHARD_X_OF_Y}.{FILEFORMAT}, which names
today's shards (train-00000-of-00004.tfrecord, .array_record). The suite loads both outputs with TFDS itself.
"""

from __future__ import annotations

import json

DATASET_INFO = "dataset_info.json"
FEATURES = "features.json"
FILES = (DATASET_INFO, FEATURES)
TEMPLATE = "{SPLIT}-{SHARD_X_OF_Y}.{FILEFORMAT}"
_CLASSES = "tensorflow_datasets.core.features."
_DICT = _CLASSES + "features_dict.FeaturesDict"
_IMAGE = _CLASSES + "image_feature.Image"
_TEXT = _CLASSES + "text_feature.Text"
_TENSOR = _CLASSES + "tensor_feature.Tensor"


def _shape(dims) -> dict:
    return {"dimensions": [str(d) for d in dims]}


def _image(size: int, channels: int, encoding: str, dtype: str = "uint8") -> dict:
    return {"image": {"dtype": dtype, "encodingFormat": encoding, "shape": _shape((size, size, channels))},
            "pythonClassName": _IMAGE}


def _tensor(dims, dtype: str, encoding: str = "none") -> dict:
    return {"pythonClassName": _TENSOR, "tensor": {"dtype": dtype, "encoding": encoding, "shape": _shape(dims)}}


def _text() -> dict:
    return {"pythonClassName": _TEXT, "text": {}}


def _features(features: dict) -> dict:
    return {"featuresDict": {"features": features}, "pythonClassName": _DICT}


def _extra(size: int, entry: dict) -> dict | None:
    """An extra input's feature, as `records.ExtraCrop.of` stores it: PNG for 1-4 bands of uint8/uint16, else zlib
    raw little-endian float32 (TFDS's Tensor encoding "zlib" is exactly that). None for one that wrote no crop."""
    channels, dtype = entry.get("channels"), entry.get("dtype")
    if not channels or not dtype:
        return None
    if dtype in ("uint8", "uint16") and channels <= 4:
        return _features({"encoded": _image(size, channels, "png", dtype)})
    return _features({"encoded": _tensor((size, size, channels), dtype, "zlib")})


def all_georeferenced(meta: dict) -> bool:
    """Whether every crop of the run carries the geo keys: in each split, every source that gave crops
    (images_used) has a grid (georeferencing, counted from the same crops)."""
    splits = [e for e in meta["splits"].values() if e.get("records")]
    return bool(splits) and all(len(e.get("georeferencing") or {}) == e.get("images_used", 0) > 0 for e in splits)


def features(meta: dict) -> dict:
    """features.json of a run's records (its metadata.json as a dict)."""
    size = meta["crop_size"]
    mask = _features({"class": _features({"encoded": _image(size, 1, "png")})})
    image = {"encoded": _image(size, 3, meta["image_format"]), "segmentation": mask, "source_id": _text(),
             "crop": _features({"offset": _tensor([2], "int64")})}
    extras = {name: f for name, entry in (meta.get("extra_inputs") or {}).items()
              if (f := _extra(size, entry)) is not None}
    if extras:
        image["extra"] = _features(extras)
    if all_georeferenced(meta):
        image["geo"] = _features({"crs": _text(), "transform": _tensor([6], "float64", "bytes")})
    return _features({"image": _features(image)})


def dataset_info(meta: dict) -> dict:
    """dataset_info.json of a run (its metadata.json as a dict): the file format, each split's shard lengths and
    bytes."""
    splits = [{"filepathTemplate": TEMPLATE, "name": name, "numBytes": str(entry["bytes"]),
               "shardLengths": [str(n) for n in entry["shard_records"]]}
              for name, entry in meta["splits"].items() if entry["shards"]]
    return {"fileFormat": meta.get("file_format", "tfrecord"), "splits": splits, "version": "1.0.0",
            "description": "Crops written by segprep's pipelines.prepare; see its metadata.json."}


def texts(meta: dict) -> dict[str, str]:
    """{file name: its text} of both files for a run's metadata (a dict). Compressed shards (--compress) are
    gzip-framed TFRecords, which TFDS does not read: then none."""
    if meta.get("compression", "none") != "none":
        return {}
    return {DATASET_INFO: json.dumps(dataset_info(meta), indent=2) + "\n",
            FEATURES: json.dumps(features(meta), indent=4) + "\n"}
