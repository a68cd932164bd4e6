"""The record schema: the one place that knows the feature keys of a crop record.

One `tf.train.Example` per crop, readable unchanged by DeepLab's and TF Model Garden's segmentation decoders
(`image/encoded`, `image/segmentation/class/encoded`, ...). Writing needs no TensorFlow: the Example protobuf is
small and fixed, so it is serialised here directly (`encode_example`), which keeps TensorFlow off Beam workers.
Readers get the key → type table in `FEATURES` and build their parser from it (see `trainer/data.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import struct
import zlib

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
CLASS_PRESENT = "image/segmentation/class/present"
GEO_CRS = "image/geo/crs"  # a georeferenced source's CRS: "EPSG:n", else WKT
GEO_TRANSFORM = "image/geo/transform"  # the crop's own GDAL-order transform: 6 little-endian float64 (48 bytes)

# key → (kind, length): kind is "bytes" or "int64"; length is the number of values, None for a list of any length.
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
    CLASS_PRESENT: ("int64", None),  # the class ids in the crop's mask, ascending, 255 excluded
    GEO_CRS: ("bytes", 1),
    GEO_TRANSFORM: ("bytes", 1),
}

# Keys that records of earlier versions lack: readers take their absence as "unknown" (shards written before
# segprep recorded class presence still read and verify).
OPTIONAL = frozenset({CLASS_PRESENT, GEO_CRS, GEO_TRANSFORM})  # (geo keys: only crops of georeferenced sources)

# An extra input NAME's crop (segprep/extras.py), the crop's height and width as the image's:
#   image/extra/NAME/encoded   bytes   "png": a PNG of its own depth (8 or 16 bits; 1, 2, 3 or 4 channels: grey,
#                                      grey + alpha, RGB, RGBA); "raw": little-endian values, row-major (H, W, C),
#                                      zlib-compressed (RFC 1950)
#   image/extra/NAME/format    bytes   png or raw
#   image/extra/NAME/dtype     bytes   uint8, uint16 or float32
#   image/extra/NAME/channels  int64   its bands
EXTRA_PREFIX = "image/extra/"
EXTRA_FIELDS = {"encoded": ("bytes", 1), "format": ("bytes", 1), "dtype": ("bytes", 1), "channels": ("int64", 1)}


def extra_key(name: str, field: str) -> str:
    """The record key of an extra input's `field` ("encoded", "format", "dtype", "channels")."""
    return f"{EXTRA_PREFIX}{name}/{field}"


def _spec(key: str) -> tuple[str, int | None]:
    """(kind, length) of a record key: the table's, or an extra input's field."""
    if key in FEATURES:
        return FEATURES[key]
    if key.startswith(EXTRA_PREFIX):
        name, _, field = key[len(EXTRA_PREFIX):].rpartition("/")
        if name and "/" not in name and field in EXTRA_FIELDS:
            return EXTRA_FIELDS[field]
    raise KeyError(f"{key!r} is not a record key; the schema has: {', '.join(sorted(FEATURES))} and "
                   f"{EXTRA_PREFIX}NAME/{{{','.join(EXTRA_FIELDS)}}}")


@dataclasses.dataclass(frozen=True)
class ExtraCrop:
    """One extra input's crop as it is stored."""

    encoded: bytes
    format: str  # "png" or "raw"
    dtype: str  # "uint8", "uint16" or "float32"
    channels: int

    @classmethod
    def of(cls, array) -> ExtraCrop:
        """(H, W, C) uint8, uint16 or float32 → its lossless encoding: PNG for 1 to 4 integer channels, else raw."""
        import numpy as np

        dtype = str(array.dtype)
        channels = int(array.shape[2])
        if dtype in ("uint8", "uint16") and channels <= 4:
            return cls(_png(array), "png", dtype, channels)
        raw = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
        # Level 1: on float32 DSM crops as small as level 6 (within 3%) at 1.6-2.8x the speed; floats' low mantissa
        # bits are noise to any level.
        return cls(zlib.compress(raw, 1), "raw", dtype, channels)

    def array(self, height: int, width: int):
        """The stored crop back, (height, width, channels) in its dtype."""
        import numpy as np

        dtype = np.dtype(self.dtype)
        if self.format == "raw":
            flat = np.frombuffer(zlib.decompress(self.encoded), dtype.newbyteorder("<"))
            return flat.reshape(height, width, self.channels).astype(dtype)
        import cv2

        out = cv2.imdecode(np.frombuffer(self.encoded, np.uint8), cv2.IMREAD_UNCHANGED)
        if out is None:
            raise ValueError("an extra input's PNG does not decode")
        out = out.reshape(out.shape[0], out.shape[1], -1)
        if self.channels == 2:  # grey + alpha comes back as BGRA
            out = out[..., [0, 3]]
        elif self.channels >= 3:
            out = out[..., [2, 1, 0, 3][:self.channels]]
        return np.ascontiguousarray(out.astype(dtype))


def extras_of(features: dict[str, list]) -> dict[str, ExtraCrop]:
    """{name: ExtraCrop} of a decoded record's extra inputs ({key: values}, as `check_example` gives them); a
    ValueError for an extra input whose fields are incomplete."""
    names = sorted({key[len(EXTRA_PREFIX):].rpartition("/")[0] for key in features if key.startswith(EXTRA_PREFIX)})
    out = {}
    for name in names:
        try:
            values = {field: features[extra_key(name, field)][0] for field in EXTRA_FIELDS}
        except (KeyError, IndexError):
            raise ValueError(f"extra input {name}: the record lacks some of its fields "
                             f"({', '.join(EXTRA_FIELDS)})") from None
        out[name] = ExtraCrop(values["encoded"], values["format"].decode(), values["dtype"].decode(),
                              int(values["channels"]))
    return out


def _png(array) -> bytes:
    """A PNG of an (H, W, C) uint8 or uint16 array, C 1 to 4, at its own depth (filter 0, zlib level 6): the same
    bytes for the same array on every machine."""
    import numpy as np

    height, width, channels = array.shape
    depth = 16 if array.dtype == np.uint16 else 8
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    values = np.ascontiguousarray(array, ">u2" if depth == 16 else np.uint8).view(np.uint8).reshape(height, -1)
    rows = np.concatenate([np.zeros((height, 1), np.uint8), values], 1)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + chunk(b"IEND", b""))


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
    present: tuple[int, ...] = ()  # class ids in the mask, ascending, the ignore label excluded
    extras: tuple[tuple[str, ExtraCrop], ...] = ()  # (name, crop) of each extra input
    geo: tuple[str, bytes] | None = None  # (CRS, packed transform) of a georeferenced source's crop

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
            CLASS_PRESENT: list(self.present),
            **{key: value for name, crop in self.extras for key, value in (
                (extra_key(name, "encoded"), [crop.encoded]), (extra_key(name, "format"), [crop.format.encode()]),
                (extra_key(name, "dtype"), [crop.dtype.encode()]), (extra_key(name, "channels"), [crop.channels]))},
            **({GEO_CRS: [self.geo[0].encode()], GEO_TRANSFORM: [self.geo[1]]} if self.geo else {}),
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


_ONE_BYTE = [bytes([i]) for i in range(128)]


def _varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int, or of an int64 (negatives as 10-byte two's complement)."""
    if 0 <= n < 128:  # most of a record's tags, lengths and values: no loop
        return _ONE_BYTE[n]
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
    if kind == "int64":  # packed, as TensorFlow writes it; an empty list is an empty Int64List
        return _field(3, _field(1, b"".join(_varint(_int64(v)) for v in values)) if values else b"")
    raise ValueError(f"unsupported feature kind {kind!r}")


@functools.lru_cache(maxsize=None)
def _key_field(key: str) -> bytes:
    return _field(1, key.encode())


def encode_example(features: dict[str, list]) -> bytes:
    """A serialised `tf.train.Example`; keys are written in sorted order so equal records are equal bytes.

    Values are checked as TensorFlow checks them (types, int64 range) and against `FEATURES` (known keys, the
    number of values), so a record this writes always parses with the schema."""
    entries = []
    for key in sorted(features):
        kind, length = _spec(key)
        values = list(features[key])
        if length is not None and len(values) != length:
            raise ValueError(f"{key} holds {length} value{'s' if length > 1 else ''}. Received: {len(values)}")
        entry = _key_field(key) + _field(2, _feature(key, kind, values))
        entries.append(_field(1, entry))
    return _field(1, b"".join(entries))


# --- reading ----------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _example_class():
    """The `tf.train.Example` message class, built from its schema (tensorflow/core/example/{example,feature}.proto)
    in a private descriptor pool: protobuf's C parser (upb) without TensorFlow, and no clash with TensorFlow's own
    registration of the same messages in a process that imports both."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    proto = descriptor_pb2.FileDescriptorProto(name="segprep/example.proto", package="segprep.tf", syntax="proto3")
    F = descriptor_pb2.FieldDescriptorProto
    repeated, optional = F.LABEL_REPEATED, F.LABEL_OPTIONAL

    def message(name, *fields, oneof=None):
        m = proto.message_type.add(name=name)
        if oneof:
            m.oneof_decl.add(name=oneof)
        for field_name, number, kind, label, type_name in fields:
            f = m.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                f.type_name = type_name
            if oneof:
                f.oneof_index = 0
        return m

    message("BytesList", ("value", 1, F.TYPE_BYTES, repeated, None))
    message("FloatList", ("value", 1, F.TYPE_FLOAT, repeated, None))
    message("Int64List", ("value", 1, F.TYPE_INT64, repeated, None))
    message("Feature", ("bytes_list", 1, F.TYPE_MESSAGE, optional, ".segprep.tf.BytesList"),
            ("float_list", 2, F.TYPE_MESSAGE, optional, ".segprep.tf.FloatList"),
            ("int64_list", 3, F.TYPE_MESSAGE, optional, ".segprep.tf.Int64List"), oneof="kind")
    features = message("Features", ("feature", 1, F.TYPE_MESSAGE, repeated, ".segprep.tf.Features.FeatureEntry"))
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=optional)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=optional, type_name=".segprep.tf.Feature")
    message("Example", ("features", 1, F.TYPE_MESSAGE, optional, ".segprep.tf.Features"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("segprep.tf.Example"))


_KINDS = {"bytes_list": "bytes", "int64_list": "int64", "float_list": "float", None: "bytes"}


def decode_example(data: bytes) -> dict[str, tuple[str, list]]:
    """A serialised `tf.train.Example` → {key: (kind, values)}, kind "bytes", "int64" or "float"; raises
    ValueError for bytes that are not one. The inverse of `encode_example`, parsed by protobuf, without TensorFlow."""
    try:
        features = _example_class().FromString(data).features.feature
    except Exception as e:  # protobuf's DecodeError, whichever implementation raised it
        raise ValueError(str(e) or "not a protobuf message") from None
    out = {}
    for key in features:
        feature = features[key]
        kind = feature.WhichOneof("kind")
        out[key] = (_KINDS[kind], list(getattr(feature, kind).value) if kind else [])
    return out


def check_example(data: bytes) -> tuple[dict, list[str]]:
    """Parses a crop record and checks it against `FEATURES`; → (features as {key: values}, problems)."""
    try:
        parsed = decode_example(data)
    except ValueError as e:
        return {}, [f"not a tf.train.Example ({e})"]
    problems = []
    for key, (kind, length) in FEATURES.items():
        if key not in parsed:
            if key not in OPTIONAL:
                problems.append(f"no {key}")
        elif parsed[key][0] != kind and parsed[key][1]:
            problems.append(f"{key} holds {parsed[key][0]} values, not {kind}")
        elif length is not None and len(parsed[key][1]) != length:
            got_kind, values = parsed[key]
            problems.append(f"{key} holds {len(values)} {got_kind} value(s), not {length} {kind}")
    return {k: v for k, (_, v) in parsed.items()}, problems
