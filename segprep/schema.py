"""The record schema: the one place that knows the feature keys of a crop record.

One `tf.train.Example` per crop, readable unchanged by DeepLab's and TF Model Garden's segmentation decoders
(`image/encoded`, `image/segmentation/class/encoded`, ...). Writing needs no TensorFlow: the Example protobuf is
small and fixed, so it is serialised here directly (`encode_example`), which keeps TensorFlow off Beam workers.
Readers get the key → type table in `FEATURES` and build their parser from it (see `trainer/data.py`).
"""

from __future__ import annotations

import dataclasses
import operator

IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_CHANNELS = "image/channels"
IMAGE_FILENAME = "image/filename"
IMAGE_SOURCE_ID = "image/source_id"
MASK_ENCODED = "image/segmentation/class/encoded"
MASK_FORMAT = "image/segmentation/class/format"
CROP_OFFSET = "image/crop/offset"
SOURCE_HEIGHT = "image/source/height"
SOURCE_WIDTH = "image/source/width"

# key → (kind, length): kind is "bytes" or "int64"; length is the number of values (all fixed).
FEATURES: dict[str, tuple[str, int]] = {
    IMAGE_ENCODED: ("bytes", 1),
    IMAGE_FORMAT: ("bytes", 1),
    IMAGE_HEIGHT: ("int64", 1),
    IMAGE_WIDTH: ("int64", 1),
    IMAGE_CHANNELS: ("int64", 1),
    IMAGE_FILENAME: ("bytes", 1),
    IMAGE_SOURCE_ID: ("bytes", 1),
    MASK_ENCODED: ("bytes", 1),
    MASK_FORMAT: ("bytes", 1),
    CROP_OFFSET: ("int64", 2),
    SOURCE_HEIGHT: ("int64", 1),
    SOURCE_WIDTH: ("int64", 1),
}


@dataclasses.dataclass(frozen=True)
class CropRecord:
    """One crop as it is stored: encoded image and mask plus where it came from."""

    source_id: str
    image: bytes
    image_format: str
    mask_png: bytes
    height: int
    width: int
    offset: tuple[int, int]  # (y, x) of the crop's top-left pixel in the source
    source_height: int
    source_width: int

    def features(self) -> dict[str, list]:
        sid = self.source_id.encode()
        return {
            IMAGE_ENCODED: [self.image],
            IMAGE_FORMAT: [self.image_format.encode()],
            IMAGE_HEIGHT: [self.height],
            IMAGE_WIDTH: [self.width],
            IMAGE_CHANNELS: [3],
            IMAGE_FILENAME: [sid],
            IMAGE_SOURCE_ID: [sid],
            MASK_ENCODED: [self.mask_png],
            MASK_FORMAT: [b"png"],
            CROP_OFFSET: list(self.offset),
            SOURCE_HEIGHT: [self.source_height],
            SOURCE_WIDTH: [self.source_width],
        }

    def serialize(self) -> bytes:
        return encode_example(self.features())


# --- protobuf wire format -------------------------------------------------------------------------------------
# Example{ Features features = 1 }; Features{ map<string, Feature> feature = 1 };
# Feature{ oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3 } };
# BytesList{ repeated bytes value = 1 }; Int64List{ repeated int64 value = 1 [packed] }.

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _int64(value) -> int:
    """`value` as an int64, accepted and rejected as TensorFlow's `Int64List` does: Python and NumPy integers
    (and bools) only, within int64's range."""
    n = operator.index(value)  # TypeError for floats and strings, as TF raises
    if not _INT64_MIN <= n <= _INT64_MAX:
        raise ValueError(f"Value out of range: {n} (an int64 feature holds -2**63 .. 2**63 - 1)")
    return n


def _varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int, or of an int64 (negatives as 10-byte two's complement)."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _feature(key: str, kind: str, values: list) -> bytes:
    if kind == "bytes":
        for v in values:
            if not isinstance(v, bytes):
                raise TypeError(f"{key}: expected bytes, {type(v).__name__} found")
        return _field(1, b"".join(_field(1, v) for v in values))
    if kind == "int64":
        return _field(3, _field(1, b"".join(_varint(_int64(v)) for v in values)))
    raise ValueError(f"unsupported feature kind {kind!r}")


def encode_example(features: dict[str, list]) -> bytes:
    """A serialised `tf.train.Example`; keys are written in sorted order so equal records are equal bytes.

    Values are checked as TensorFlow checks them (types, int64 range) and against `FEATURES` (known keys, the
    number of values), so a record this writes always parses with the schema."""
    entries = []
    for key in sorted(features):
        if key not in FEATURES:
            raise KeyError(f"{key!r} is not a record key; the schema has: {', '.join(sorted(FEATURES))}")
        kind, length = FEATURES[key]
        values = list(features[key])
        if len(values) != length:
            raise ValueError(f"{key} holds {length} value{'s' if length > 1 else ''}. Received: {len(values)}")
        entry = _field(1, key.encode()) + _field(2, _feature(key, kind, values))
        entries.append(_field(1, entry))
    return _field(1, b"".join(entries))
