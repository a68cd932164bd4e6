"""segprep/extras.py and the extra inputs' record encoding: flags, path patterns with padded ids, rasters read at
their own depth, and crops stored losslessly."""

import io

import numpy as np
import pytest
import tifffile

from segprep import codec, extras
from segprep.formats.records import ExtraCrop
from segprep.patterns import LayoutError, Pattern


def test_flags_name_a_pattern_or_bands_of_the_image_and_refuse_mistakes():
    assert extras.parse_flag("dsm=1_DSM/dsm_potsdam_{id:pad=2}.tif") == extras.ExtraInput(
        "dsm", pattern="1_DSM/dsm_potsdam_{id:pad=2}.tif")
    assert extras.parse_flag("ir=@4") == extras.ExtraInput("ir", bands=(4,))
    assert extras.parse_flag("nir_re=@4,5").source == "@4,5"
    for bad, says in (("dsm", "give NAME=PATTERN"), ("Dsm=a/{id}.tif", "lower-case letters"),
                      ("image=a/{id}.tif", "not image or mask"), ("ir=@0", "1-based band numbers"),
                      ("ir=@4,4", "distinct"), ("dsm=../x/{id}.tif", "'..' path segments"),
                      ("dsm=a/{idd}.tif", "{id:pad=N}")):
        with pytest.raises(LayoutError, match=says):
            extras.parse_flag(bad)
    with pytest.raises(LayoutError, match="'dsm' is given twice"):
        extras.parse_flags(["dsm=a/{id}.tif", "dsm=@4"])


def test_an_extra_path_takes_the_values_of_the_image_path_and_pads_numbers_where_asked():
    images = Pattern.parse("--images", "2_Ortho_RGB/top_potsdam_{id}_RGB.tif")
    dsm = extras.ExtraInput("dsm", pattern="1_DSM/dsm_potsdam_{id:pad=2}.tif")
    assert dsm.path(images, "2_Ortho_RGB/top_potsdam_2_10_RGB.tif", None) == "1_DSM/dsm_potsdam_02_10.tif"
    assert dsm.path(images, "2_Ortho_RGB/top_potsdam_12_7_RGB.tif", None) == "1_DSM/dsm_potsdam_12_07.tif"
    cityscapes = Pattern.parse("--images", "leftImg8bit/{split}/*/{id}_leftImg8bit.png")
    depth = extras.ExtraInput("depth", pattern="disparity/{split}/*/{id}_disparity.png")
    assert depth.path(cityscapes, "leftImg8bit/train/aachen/a_1_leftImg8bit.png", "train") == \
        "disparity/train/aachen/a_1_disparity.png"
    assert extras.ExtraInput("ir", bands=(4,)).path(images, "x", None) is None
    with pytest.raises(LayoutError, match="knows only the fields"):
        Pattern.parse("--images", "a/{id:pad=2}.tif")  # padding formats a path; it never matches one


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("channels", [1, 2, 3, 4, 6])
def test_crops_are_stored_losslessly_at_their_own_depth(dtype, channels):
    rng = np.random.default_rng(channels)
    top = {"uint8": 255, "uint16": 65535, "float32": 1e6}[dtype]
    array = (rng.random((13, 9, channels)) * top).astype(dtype)
    crop = ExtraCrop.of(array)
    assert (crop.format, crop.dtype, crop.channels) == (
        "png" if dtype != "float32" and channels <= 4 else "raw", dtype, channels)
    back = crop.array(13, 9)
    assert back.dtype == array.dtype and np.array_equal(back, array)  # every value, bit for bit
    if crop.format == "png":  # a PNG of its own depth that other decoders read alike
        assert np.array_equal(codec.decode_raster(crop.encoded).reshape(array.shape), array)
    assert ExtraCrop.of(array).encoded == crop.encoded  # the same bytes every time


def test_rasters_are_read_at_their_own_depth_and_band_count():
    rng = np.random.default_rng(0)
    rgbir = rng.integers(0, 65535, (20, 30, 4), dtype=np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, rgbir, photometric="rgb", extrasamples=["unspecified"], tile=(16, 16))
    raster = extras.decode(buf.getvalue(), "image")
    assert raster.dtype == np.uint16 and np.array_equal(raster, rgbir)
    ir = extras.bands_of(raster, extras.ExtraInput("ir", bands=(4,)))
    assert ir.shape == (20, 30, 1) and np.array_equal(ir[..., 0], rgbir[..., 3])  # 16 bits, exactly
    with pytest.raises(codec.DecodeError, match="the image has 4 bands; @ asks for band 5"):
        extras.bands_of(raster, extras.ExtraInput("x", bands=(5,)))
    dsm = rng.normal(300, 20, (20, 30)).astype(np.float64)
    buf = io.BytesIO()
    tifffile.imwrite(buf, dsm)
    assert extras.decode(buf.getvalue(), "dsm").dtype == np.float32
    dsm[3, 4] = np.nan
    with pytest.raises(codec.DecodeError, match="extra input dsm: 1 values are NaN or infinite"):
        extras.check_finite(dsm.astype(np.float32), "dsm")
    with pytest.raises(codec.DecodeError, match="float32 cannot hold exactly"):
        extras.as_stored(np.array([[1 << 30]], np.int64), "dsm")
