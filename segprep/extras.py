"""Extra inputs: rasters beside the RGB image that a model can use (a DSM, an nDSM, an infrared band), cut at
exactly the image's crop windows and stored losslessly in each record (segprep/formats/records.py).

    --extra_inputs 'dsm=1_DSM/dsm_potsdam_{id:pad=2}.tif'     a raster by pattern, as --images: {id}, {split}, *
    --extra_inputs 'ir=@4'                                     bands of the image file itself (1-based)

An extra raster keeps its own depth: 8- and 16-bit integers as they are, floating-point (and wider integers that
float32 holds exactly) as float32. It must have the image's size; a missing or unreadable one, or one holding NaN
or infinity, makes its pair an error record naming the input.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from segprep import codec
from segprep.headers import DecodeError
from segprep.patterns import LayoutError, Pattern

NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
RESERVED = ("image", "mask")  # names the record and the model already use
DTYPES = ("uint8", "uint16", "float32")  # what an extra raster is stored as


@dataclasses.dataclass(frozen=True)
class ExtraInput:
    """One --extra_inputs: a raster found by `pattern` (relative to --input_dir), or `bands` of the image file."""

    name: str
    pattern: str | None = None
    bands: tuple[int, ...] = ()

    @property
    def source(self) -> str:
        """As the flag gave it, for metadata.json and messages."""
        return self.pattern if self.pattern is not None else "@" + ",".join(map(str, self.bands))

    def path(self, images: Pattern, image_path: str, split: str | None) -> str | None:
        """The raster's path (relative to the root) for the image at `image_path`: the pattern's fields take the
        values the image's path gave; None for bands of the image itself."""
        if self.pattern is None:
            return None
        m = images.match(image_path)
        if m is None:  # listed by id (split lists): the id is the path's {id}
            raise LayoutError(f"--images {images.text!r} does not match {image_path!r}")
        return Pattern.parse("--extra_inputs", self.pattern, need_id=False, pad=True).format(
            m.image_id, m.split if m.split is not None else split, m.stars)


def parse_flag(text: str) -> ExtraInput:
    """`NAME=PATTERN` or `NAME=@B[,B...]` → ExtraInput; a LayoutError saying what is wrong."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not value:
        raise LayoutError(f"--extra_inputs {text!r}: give NAME=PATTERN (e.g. dsm=1_DSM/dsm_{{id}}.tif) or NAME=@B "
                          "(bands of the image file, e.g. ir=@4).")
    if not NAME.match(name) or name in RESERVED:
        raise LayoutError(f"--extra_inputs {text!r}: the name must be lower-case letters, digits and _, starting with "
                          f"a letter, and not {' or '.join(RESERVED)}.")
    if value.startswith("@"):
        try:
            bands = tuple(int(b) for b in value[1:].split(","))
        except ValueError:
            bands = ()
        if not bands or min(bands) < 1 or len(set(bands)) != len(bands):
            raise LayoutError(f"--extra_inputs {text!r}: @ takes distinct 1-based band numbers of the image file, "
                              "e.g. @4 or @4,5.")
        return ExtraInput(name, bands=bands)
    Pattern.parse(f"--extra_inputs {name}=", value, need_id=False, pad=True)
    return ExtraInput(name, pattern=value)


_ID = re.compile(r"\{id(?::pad=([1-9]))?\}")


def parse_path_flag(text: str) -> ExtraInput:
    """predict's `NAME=PATH` (a local or gs:// path where `{id}` or `{id:pad=N}` is the input's id) or `NAME=@B`
    → ExtraInput; a LayoutError saying what is wrong."""
    name, sep, value = text.partition("=")
    if value.startswith("@") or not sep or not value:
        return parse_flag(text)
    parse_flag(f"{name}=@1")  # the name's rules
    if re.search(r"[{}]", _ID.sub("", value)):
        raise LayoutError(f"--extra_inputs {text!r}: the path knows only the field {{id}} (or {{id:pad=N}}), the "
                          "input image's id.")
    return ExtraInput(name.strip(), pattern=value)


def path_for(extra: ExtraInput, image_id: str) -> str:
    """predict's path of `extra` for the input whose id is `image_id`."""
    return _ID.sub(lambda m: (re.sub(r"\d+", lambda d: d.group(0).zfill(int(m.group(1))), image_id) if m.group(1)
                              else image_id), extra.pattern)


def parse_flags(texts: list[str] | None) -> tuple[ExtraInput, ...]:
    extras = tuple(parse_flag(t) for t in texts or ())
    names = [e.name for e in extras]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise LayoutError(f"--extra_inputs: the name {twice[0]!r} is given twice.")
    return extras


def as_stored(array: np.ndarray, what: str) -> np.ndarray:
    """A decoded raster (H, W) or (H, W, C) of any numeric type → (H, W, C) of uint8, uint16 or float32, with no
    value changed; a DecodeError for values float32 cannot hold exactly."""
    if array.ndim == 2:
        array = array[..., None]
    kind = array.dtype
    if kind == np.bool_:
        return array.astype(np.uint8)
    if kind in (np.uint8, np.uint16, np.float32):
        return np.ascontiguousarray(array)
    if kind.kind == "f" or kind in (np.int8, np.int16):
        return array.astype(np.float32)
    if kind.kind in "iu":
        big = int(np.abs(array).max(initial=0))
        if big > 1 << 24:
            raise DecodeError(f"{what}: {codec.describe_dtype(kind)} values up to {big} that float32 cannot hold "
                              "exactly", "bad_extra")
        return array.astype(np.float32)
    raise DecodeError(f"{what}: {kind} values are not a raster segprep stores", "bad_extra")


def decode(data: bytes, what: str) -> np.ndarray:
    """A raster file (TIFF, PNG, JPEG) → (H, W, C) as `as_stored`, every band, RGB order for 3 or 4 bands."""
    return as_stored(codec.decode_raster(data), what)


def bands_of(image: np.ndarray, extra: ExtraInput) -> np.ndarray:
    """An ExtraInput's bands of the image file's raster (H, W, C)."""
    count = image.shape[2]
    over = [b for b in extra.bands if b > count]
    if over:
        raise DecodeError(f"extra input {extra.name}: the image has {count} band{'s' if count != 1 else ''}; @ asks "
                          f"for band {over[0]}", "bad_extra")
    return np.ascontiguousarray(image[..., [b - 1 for b in extra.bands]])


def no_data(array: np.ndarray, nodata: float | None) -> np.ndarray | None:
    """Where `array` holds no data: its values equal to the declared `nodata` value (NaN when that is NaN), per
    band; None when it declares none."""
    if nodata is None:
        return None
    if np.isnan(nodata):
        return np.isnan(array) if array.dtype.kind == "f" else np.zeros(array.shape, bool)
    return array == np.asarray(nodata).astype(array.dtype) if _holds(array.dtype, nodata) else \
        np.zeros(array.shape, bool)


def _holds(dtype: np.dtype, value: float) -> bool:
    """Whether `dtype` can hold `value` exactly (a uint16 raster cannot hold -9999)."""
    if dtype.kind == "f":
        return bool(np.isnan(value) or np.float32(value) == value)
    info = np.iinfo(dtype)
    return bool(np.isfinite(value) and value == int(value) and info.min <= value <= info.max)


def pad_value(array: np.ndarray, nodata: float | None) -> float:
    """What an extra input's crop is padded with past an edge: its nodata value where it declares one the raster's
    type holds, else 0 (as images are padded)."""
    return nodata if nodata is not None and _holds(array.dtype, nodata) else 0


def check_finite(array: np.ndarray, name: str, nodata: float | None = None) -> None:
    """A DecodeError naming the input when a float raster holds NaN (unless NaN is its declared nodata value) or
    infinity."""
    if array.dtype.kind == "f":
        nan_ok = nodata is not None and np.isnan(nodata)
        bad = int(np.count_nonzero(np.isinf(array) if nan_ok else ~np.isfinite(array)))
        if bad:
            what = "infinite" if nan_ok else "NaN or infinite"
            raise DecodeError(f"extra input {name}: {bad:,} values are {what}; give the raster a nodata value "
                              "(GDAL_NODATA) or fill them", "bad_extra")
