"""A crop record as NumPy arrays, for any framework: `segprep.torch` builds its tensors from it, and a JAX/Grain or
plain NumPy reader maps it over ArrayRecord's data source (docs/readers.md). No TensorFlow.

    decode(serialized) → {"image": uint8 [H, W, 3] RGB, "mask": uint8 [H, W] (class ids, 255 = ignore),
                          "id": str, "offset": (y, x),
                          NAME: float32 [H, W, C] for each extra input asked for (values as stored),
                          "crs": str and "transform": float64 [6] (GDAL order, the crop's own) with `geo`:
                          "" and NaN for a crop of a source without georeferencing}

The shards' bytes are checked by their container as they are read (TFRecord's CRC-32C, Riegeli's hashes), and the
images and masks were written by segprep's own codecs, so they are decoded by OpenCV directly: straight to RGB
(OpenCV 4.10+), JPEGs with libjpeg's accurate DCT, the pixels the trainer's tf.data decoding gives too.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from segprep import codec, geo
from segprep.formats import records

_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)
NO_TRANSFORM = (math.nan,) * 6


def _decode(encoded: bytes, flag: int | None) -> np.ndarray:
    if flag is None:  # an OpenCV without IMREAD_COLOR_RGB
        return codec.decode_image(encoded)
    out = cv2.imdecode(np.frombuffer(encoded, np.uint8), flag | cv2.IMREAD_IGNORE_ORIENTATION)
    if out is None:
        raise ValueError("a record's image or mask does not decode (`python -m segprep.verify` checks shards)")
    return out


def decode(data: bytes, extras: tuple[str, ...] | list[str] = (), geo_keys: bool = False) -> dict:
    """One serialized crop record → its arrays (see the module docstring); a ValueError for one that is damaged."""
    f = {key: values for key, (_, values) in records.decode_example(data).items()}
    height, width = f[records.IMAGE_HEIGHT][0], f[records.IMAGE_WIDTH][0]
    image = _decode(f[records.IMAGE_ENCODED][0], _RGB)
    mask = _decode(f[records.MASK_ENCODED][0], cv2.IMREAD_UNCHANGED)
    if image.shape != (height, width, 3) or mask.shape != (height, width):
        raise ValueError(f"a record of {f[records.IMAGE_SOURCE_ID][0].decode()}: image {image.shape} and mask "
                         f"{mask.shape} are not its {height}×{width} (`python -m segprep.verify` checks shards)")
    y, x = f[records.CROP_OFFSET]
    item = {"image": image, "mask": mask, "id": f[records.IMAGE_SOURCE_ID][0].decode(), "offset": (int(y), int(x))}
    if extras:
        crops = records.extras_of(f)
        for name in extras:
            if name not in crops:
                raise ValueError(f"a record of {item['id']} holds no extra input {name!r}")
            item[name] = crops[name].array(height, width).astype(np.float32, copy=False)
    if geo_keys:
        packed = f.get(records.GEO_TRANSFORM, [b""])[0]
        item["crs"] = f.get(records.GEO_CRS, [b""])[0].decode()
        item["transform"] = np.array(geo.unpack(packed) if packed else NO_TRANSFORM, np.float64)
    return item
