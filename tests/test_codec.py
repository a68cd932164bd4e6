import io

import cv2
import numpy as np
import pytest

from conftest import grey_png, pil_png
from segprep import codec, headers
from segprep.palette import VOC

AERO, BOAT = (128, 0, 0), (0, 0, 128)


def halves(a, b, h=32, w=32):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = a
    img[:, w // 2:] = b
    return img


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_images_stay_rgb_through_encode_and_decode(fmt):
    img = halves(AERO, BOAT)
    back = codec.decode_image(codec.encode_image(img, fmt))
    interior = np.r_[0:10, 22:32]  # JPEG's chroma subsampling blurs the sharp edge between the halves
    assert np.abs(back[:, interior].astype(int) - img[:, interior]).max() <= 8
    assert back[5, 2, 0] > 100 and back[5, 2, 2] < 30  # left half still red
    assert back[5, 30, 2] > 100 and back[5, 30, 0] < 30  # right half still blue


def test_a_file_written_by_opencv_in_bgr_decodes_to_rgb():
    bgr = halves(AERO[::-1], BOAT[::-1])  # what cv2.imwrite expects for red | blue
    ok, data = cv2.imencode(".png", bgr)
    assert ok
    assert codec.decode_image(data.tobytes())[0, 0].tolist() == list(AERO)


def test_mask_kinds_are_detected():
    idx = np.array([[1, 4], [255, 0]], np.uint8)
    color = VOC.color_array()
    color[255] = (224, 224, 192)
    m, kind = codec.decode_mask(codec.encode_image(color[idx], "png"))
    assert kind == "color" and m[0].tolist() == [list(AERO), list(BOAT)]
    m, kind = codec.decode_mask(codec.encode_palette_png(idx, color))
    assert kind == "palette"  # expanded to colours, not read as grey levels
    assert m[0].tolist() == [list(AERO), list(BOAT)] and m[1, 0].tolist() == [224, 224, 192]
    m, kind = codec.decode_mask(codec.encode_index_png(idx))
    assert kind == "index" and m.tolist() == idx.tolist()


def test_rgba_mask_drops_alpha():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = BOAT[::-1]  # BGR order for OpenCV
    rgba[..., 3] = 255
    ok, data = cv2.imencode(".png", rgba)
    m, kind = codec.decode_mask(data.tobytes())
    assert kind == "color" and m[0, 0].tolist() == list(BOAT)


def test_index_mask_is_written_as_8bit_grey_png():
    data = codec.encode_index_png(np.array([[3, 255]], np.uint8))
    assert headers.png_color_type(data) == (0, 8)


def test_truncated_jpeg_is_detected():
    rng = np.random.default_rng(0)
    data = codec.encode_image(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), "jpeg")
    # OpenCV 4.x decodes these with only a warning, filling the missing part with grey; 5.x refuses some.
    for cut in (len(data) * 6 // 10, len(data) - 1, 300, 3):
        with pytest.raises(codec.DecodeError, match="truncated JPEG"):
            codec.decode_image(data[:cut])


def _random_jpeg(h=96, w=128, **params):
    rng = np.random.default_rng(1)
    flags = [cv2.IMWRITE_JPEG_QUALITY, 90] + [v for k, x in params.items() for v in (getattr(cv2, k), x)]
    ok, data = cv2.imencode(".jpg", rng.integers(0, 255, (h, w, 3), dtype=np.uint8), flags)
    return data.tobytes()


@pytest.mark.parametrize("trailer", ["motion_photo", "maker", "zeros"])
def test_jpeg_with_a_trailer_after_its_end_marker_is_accepted(trailer):
    data = _random_jpeg()
    rng = np.random.default_rng(2)
    extra = {  # a Motion Photo appends an MP4 (megabytes, FF D9 pairs and all); makers append their own blocks
        "motion_photo": b"\x00\x00\x00\x18ftypmp42" + rng.integers(0, 256, 2 << 20, dtype=np.uint8).tobytes(),
        "maker": b"\xff\xd9" * 3 + b"SAMSUNG-TRAILER" * 200,
        "zeros": b"\x00" * 4096,
    }[trailer]
    assert len(extra) > 1024
    np.testing.assert_array_equal(codec.decode_image(data + extra), codec.decode_image(data))


def test_truncation_is_caught_in_progressive_jpegs_with_restart_markers_and_thumbnails():
    progressive = _random_jpeg(IMWRITE_JPEG_PROGRESSIVE=1)
    restarts = _random_jpeg(IMWRITE_JPEG_RST_INTERVAL=2)
    thumb = _random_jpeg(16, 16)
    app1 = b"Exif\x00\x00" + thumb  # an EXIF block carrying a whole thumbnail JPEG, end marker included
    base = _random_jpeg()
    with_thumb = base[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + base[2:]
    for data in (progressive, restarts, with_thumb):
        assert codec.decode_image(data).shape == (96, 128, 3)
        for cut in range(4, len(data), 97):
            with pytest.raises(codec.DecodeError, match="truncated JPEG"):
                codec.decode_image(data[:cut])
    # Cut just after the thumbnail's own end marker: the file ends in FF D9, but not the image's.
    cut = with_thumb[:2 + 4 + len(app1)]  # SOI, APP1 marker and length, the EXIF block
    assert cut.endswith(b"\xff\xd9")
    with pytest.raises(codec.DecodeError, match="truncated JPEG"):
        codec.decode_image(cut)


def test_png_with_bytes_after_iend_is_accepted_and_a_cut_one_is_not():
    img = np.random.default_rng(3).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    data = codec.encode_image(img, "png")
    np.testing.assert_array_equal(codec.decode_image(data + b"trailer" * 300), img)
    for cut in range(10, len(data), max(1, len(data) // 25)):
        with pytest.raises(codec.DecodeError, match="truncated PNG"):
            codec.decode_mask(data[:cut])


def test_truncated_png_empty_and_garbage_are_detected():
    data = codec.encode_image(np.full((64, 64, 3), 90, np.uint8), "png")
    with pytest.raises(codec.DecodeError, match="truncated PNG"):
        codec.decode_mask(data[:-20])
    with pytest.raises(codec.DecodeError, match="empty file"):
        codec.decode_image(b"")
    with pytest.raises(codec.DecodeError, match="not a JPEG, PNG or TIFF"):
        codec.decode_image(b"GIF89a....")


def test_corrupt_jpeg_body_is_an_error_not_an_exception():
    data = bytearray(codec.encode_image(np.full((64, 64, 3), 90, np.uint8), "jpeg"))
    data[2:40] = b"\x00" * 38  # wreck the headers but keep SOI and EOI
    with pytest.raises(codec.DecodeError, match="corrupt JPEG"):
        codec.decode_image(bytes(data))


def test_exif_orientation_is_ignored():
    img = np.zeros((8, 16, 3), np.uint8)
    img[:, :8] = 255
    data = codec.encode_image(img, "jpeg")
    # An APP1 Exif segment saying "rotate 90°" (orientation 6), inserted after SOI.
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01" + b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00" \
        + b"\x00\x00\x00\x00"
    app1 = b"Exif\x00\x00" + tiff
    rotated = data[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + data[2:]
    assert cv2.imdecode(np.frombuffer(rotated, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (16, 8)  # OpenCV rotates
    assert codec.decode_image(rotated).shape[:2] == (8, 16)  # we keep the pixel grid the mask was drawn on


@pytest.mark.parametrize("depth", [1, 2, 4, 8, 16])
def test_grey_index_masks_keep_their_values_at_every_bit_depth(depth):
    # libpng widens 1/2/4-bit grey by bit replication (1 → 255, 85 or 17); the values are class ids, kept as stored.
    top = min(255, (1 << depth) - 1)
    values = (np.arange(7 * 9).reshape(7, 9) % (top + 1)).astype(np.uint16)
    m, kind = codec.decode_mask(grey_png(values, depth))
    assert kind == "index" and m.dtype == np.uint8
    np.testing.assert_array_equal(m, values)


def test_pillow_written_1bit_and_16bit_masks():
    idx = np.array([[0, 1, 1], [1, 0, 0]], np.uint8)
    m, kind = codec.decode_mask(pil_png(idx, "1"))
    assert headers.png_color_type(pil_png(idx, "1")) == (0, 1)
    assert kind == "index" and m.tolist() == idx.tolist()  # class 1 stays 1, never 255 ("ignore")
    m, _ = codec.decode_mask(pil_png(np.array([[0, 7, 255]]), "I;16"))
    assert m.tolist() == [[0, 7, 255]]


def test_16bit_index_values_above_255_are_an_error_naming_them():
    with pytest.raises(codec.DecodeError, match=r"3 pixels with values above 255 \(2 values: 300×2, 4464×1\)"):
        codec.decode_mask(pil_png(np.array([[0, 300, 1, 300, 4464]]), "I;16"))


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_low_bit_palette_masks_expand_to_their_colours(bits):
    colors = VOC.color_array()[: 1 << bits]
    idx = (np.arange(24).reshape(4, 6) % (1 << bits)).astype(np.uint8)
    data = pil_png(idx, "P", bits, colors)
    assert headers.png_color_type(data) == (3, bits)
    m, kind = codec.decode_mask(data)
    assert kind == "palette"
    np.testing.assert_array_equal(m, colors[idx])


# TIFF (tifffile + imagecodecs), multi-band and wide images


def _tiff(array, **kwargs) -> bytes:
    import io

    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, array, **kwargs)
    return buf.getvalue()


def _rgb(h=70, w=90):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([yy * 3 % 256, xx * 2 % 256, (yy + xx) % 256], -1).astype(np.uint8)


@pytest.mark.parametrize("compression", [None, "deflate", "lzw", "zstd"])
@pytest.mark.parametrize("tile", [None, (32, 32)])
@pytest.mark.parametrize("planar", ["contig", "separate"])
def test_tiff_images_decode_exactly_in_every_storage(compression, tile, planar):
    rgb = _rgb()
    data = _tiff(rgb if planar == "contig" else np.moveaxis(rgb, -1, 0), photometric="rgb", compression=compression,
                 tile=tile, planarconfig=planar)
    assert headers.sniff(data) == "tiff"
    np.testing.assert_array_equal(codec.decode_image(data), rgb)


def test_jpeg_compressed_tiff_decodes_to_rgb_not_bgr():
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0] = 200  # red
    out = codec.decode_image(_tiff(rgb, photometric="rgb", compression="jpeg", tile=(32, 32)))
    assert np.abs(out.astype(int) - rgb).max() <= 3


def test_tiff_bands_alpha_grey_and_the_errors_that_name_them():
    rgb = _rgb()
    ir = np.full(rgb.shape[:2], 77, np.uint8)
    rgbir = np.dstack([rgb, ir])
    four = _tiff(rgbir, photometric="rgb", extrasamples=["unspecified"])
    with pytest.raises(codec.DecodeError, match="image has 4 bands .*--bands") as e:
        codec.decode_image(four)
    assert e.value.reason == "needs_bands"
    np.testing.assert_array_equal(codec.decode_image(four, bands=(4, 1, 2)), rgbir[..., [3, 0, 1]])
    with pytest.raises(codec.DecodeError, match="image has 4 bands; --bands asks for band 5"):
        codec.decode_image(four, bands=(5, 1, 2))
    rgba = _tiff(rgbir, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(codec.decode_image(rgba), rgb)  # an alpha band is dropped, never a colour
    grey = _tiff(ir, photometric="minisblack")
    np.testing.assert_array_equal(codec.decode_image(grey), np.dstack([ir] * 3))
    np.testing.assert_array_equal(codec.decode_image(four, bands=(4,)), np.dstack([ir] * 3))


def test_16_bit_and_float_images_need_a_range_and_map_linearly():
    values = (np.arange(60 * 80).reshape(60, 80, 1) % 4096).astype(np.uint16) * np.ones(3, np.uint16)
    data = _tiff(values, photometric="rgb", compression="deflate")
    with pytest.raises(codec.DecodeError, match=r"16-bit image with values 0\.\.4095: .*--image_range 0,4095") as e:
        codec.decode_image(data)
    assert e.value.reason == "needs_image_range"
    out = codec.decode_image(data, value_range=(0, 4095))
    np.testing.assert_array_equal(out, np.rint(values / 4095 * 255).astype(np.uint8))
    clipped = codec.decode_image(data, value_range=(1000, 2000))
    assert clipped[values == 0].max() == 0 and clipped[values == 4095].min() == 255
    floats = _tiff(np.linspace(-1, 1, 50 * 40, dtype=np.float32).reshape(50, 40), photometric="minisblack")
    with pytest.raises(codec.DecodeError, match="32-bit floating-point image with values -1..1"):
        codec.decode_image(floats)
    assert codec.decode_image(floats, value_range=(-1, 1))[-1, -1, 0] == 255
    png16 = cv2.imencode(".png", values[..., ::-1].copy())[1].tobytes()  # a 16-bit PNG photo: the same rules
    with pytest.raises(codec.DecodeError, match="16-bit image"):
        codec.decode_image(png16)
    np.testing.assert_array_equal(codec.decode_image(png16, value_range=(0, 4095)), out)


def test_truncated_and_garbage_tiffs_are_errors():
    data = _tiff(_rgb(), photometric="rgb", compression="deflate", tile=(32, 32))
    with pytest.raises(codec.DecodeError, match="truncated TIFF"):
        codec.decode_image(data[:-200])
    with pytest.raises(codec.DecodeError, match="corrupt TIFF"):
        codec.decode_image(b"II*\x00" + b"\xff" * 40)


def test_tiff_masks_colour_index_palette_bilevel_and_wide():
    classes = (np.arange(40 * 30).reshape(30, 40) % 5).astype(np.uint8)
    m, kind = codec.decode_mask(_tiff(classes, photometric="minisblack", compression="lzw"))
    assert kind == "index" and m.dtype == np.uint8
    np.testing.assert_array_equal(m, classes)
    colors = VOC.color_array()
    m, kind = codec.decode_mask(_tiff(colors[classes], photometric="rgb", compression="deflate"))
    assert kind == "color"
    np.testing.assert_array_equal(m, colors[classes])
    cmap = np.zeros((3, 256), np.uint16)
    cmap[:, :21] = VOC.color_array()[:21].T.astype(np.uint16) * 257
    m, kind = codec.decode_mask(_tiff(classes, photometric="palette", colormap=cmap))
    assert kind == "palette"  # a palette TIFF expands to its colours, never read as grey values
    np.testing.assert_array_equal(m, colors[classes])
    m, kind = codec.decode_mask(_tiff(classes.astype(bool), photometric="minisblack"))
    assert kind == "index" and set(np.unique(m)) == {0, 1}
    wide = classes.astype(np.uint16) * 1000
    with pytest.raises(codec.DecodeError, match="values above 255"):
        codec.decode_mask(_tiff(wide, photometric="minisblack"))
    m, _ = codec.decode_mask(_tiff(wide, photometric="minisblack"), max_value=65535)
    assert m.dtype == np.uint16 and m.max() == 4000
    with pytest.raises(codec.DecodeError, match="floating-point mask"):
        codec.decode_mask(_tiff(classes.astype(np.float32), photometric="minisblack"))


def test_probe_reads_headers_only():
    import io

    tif = _tiff(np.zeros((4, 50, 60), np.uint16), photometric="minisblack", planarconfig="separate", tile=(16, 16),
                compression="lzw")
    info = headers.probe(io.BytesIO(tif))
    assert (info.width, info.height, info.bands, info.bits) == (60, 50, 4, "16-bit")
    assert info.label == "TIFF 4-band 16-bit tiled lzw"
    jpeg = codec.encode_image(_rgb(33, 44), "jpeg")
    assert headers.probe(io.BytesIO(jpeg)).label == "JPEG 3-band 8-bit"
    info = headers.probe(io.BytesIO(codec.encode_palette_png(np.zeros((5, 7), np.uint8), VOC.color_array()[:2])))
    assert (info.width, info.height, info.label) == (7, 5, "PNG palette 8-bit")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_read_and_applied_as_opencv_applies_it(orientation):
    from conftest import EXIF_UNDO, with_exif

    rng = np.random.default_rng(orientation)
    shown = cv2.resize(rng.integers(0, 255, (4, 6, 3), dtype=np.uint8), (60, 40), interpolation=cv2.INTER_NEAREST)
    stored = codec.orient(shown, EXIF_UNDO[orientation])
    data = with_exif(codec.encode_image(stored, "jpeg", 100), orientation)
    assert headers.exif_orientation(data) == orientation
    assert headers.probe(io.BytesIO(data)).orientation == orientation
    as_stored = codec.decode_image(data)  # decoders give the stored pixels; the caller decides
    assert as_stored.shape == stored.shape
    turned = codec.orient(as_stored, orientation)
    by_opencv = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(turned, by_opencv)  # OpenCV's own reading of the tag
    assert turned.shape == shown.shape and np.abs(turned.astype(int) - shown).mean() < 12  # JPEG: colour edges
