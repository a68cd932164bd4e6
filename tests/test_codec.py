import cv2
import numpy as np
import pytest

from segprep import codec
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
    assert codec.png_color_type(data) == (0, 8)


def test_truncated_jpeg_is_detected():
    rng = np.random.default_rng(0)
    data = codec.encode_image(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), "jpeg")
    cut = data[: len(data) * 6 // 10]
    # OpenCV 4.x decodes this with only a warning, filling the missing part with grey; 5.x refuses it.
    with pytest.raises(codec.DecodeError, match="truncated JPEG"):
        codec.decode_image(cut)


def test_truncated_png_empty_and_garbage_are_detected():
    data = codec.encode_image(np.full((64, 64, 3), 90, np.uint8), "png")
    with pytest.raises(codec.DecodeError, match="truncated PNG"):
        codec.decode_mask(data[:-20])
    with pytest.raises(codec.DecodeError, match="empty file"):
        codec.decode_image(b"")
    with pytest.raises(codec.DecodeError, match="not a JPEG or PNG"):
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
