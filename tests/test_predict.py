"""predict never writes over a file it did not write, gives inputs that share a name distinct outputs, and decodes
no image above --max_pixels whole: a tiled TIFF is predicted window by window, anything else is one line."""

import json
import os
import struct
import zlib

import numpy as np
import pytest

from segprep import codec
from segprep.palette import VOC
from trainer import predict
from trainer.prediction_output import MANIFEST


def files(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, name))}


def photo(seed, h=90, w=130):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_a_users_file_under_a_prediction_name_stops_the_run_before_anything_is_written(run_dir, tmp_path, capsys):
    pics = tmp_path / "pics"
    pics.mkdir()
    (pics / "beach.jpg").write_bytes(codec.encode_image(photo(0), "jpeg"))
    (pics / "holiday.jpg").write_bytes(codec.encode_image(photo(1), "jpeg"))
    (pics / "holiday.png").write_bytes(b"the user's own picture, not an image predict can read")
    before = files(pics)
    assert predict.main(["--model_dir", run_dir, "--input", str(pics / "holiday.jpg"), "--output_dir",
                         str(pics)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"predict: error: {pics}/holiday.png exists and is not segprep's prediction of "
                   f"{pics}/holiday.jpg; predict never replaces a file it did not write: move it away, or choose "
                   "another --output_dir."]
    assert files(pics) == before  # not even beach's prediction: the check comes before any write


def test_inputs_that_share_a_name_get_distinct_predictable_outputs(run_dir, tmp_path):
    pics = tmp_path / "pics"
    pics.mkdir()
    (pics / "a.jpg").write_bytes(codec.encode_image(photo(2), "jpeg"))
    (pics / "a.png").write_bytes(codec.encode_image(photo(3), "png"))
    (pics / "b.jpg").write_bytes(codec.encode_image(photo(4), "jpeg"))
    before = files(pics)
    out = tmp_path / "preds"
    assert predict.main(["--model_dir", run_dir, "--input", str(pics), "--output_dir", str(out)]) == 0
    assert sorted(os.listdir(out)) == [MANIFEST, "a.jpg.png", "a.jpg_overlay.jpg", "a.png.png", "a.png_overlay.jpg",
                                       "b.png", "b_overlay.jpg"]
    p = predict.Predictor(run_dir)
    for name, source in (("a.jpg.png", "a.jpg"), ("a.png.png", "a.png")):
        mask, _ = codec.decode_mask((out / name).read_bytes())
        classes = p.predict(codec.decode_image((pics / source).read_bytes()))
        np.testing.assert_array_equal(mask, VOC.colorize(classes))  # each is its own input's prediction
    # Into the input folder itself: these names collide with nothing there, so it is allowed; the predictions are
    # recorded, never read as inputs by the next run, and replaced by it (they are predict's own).
    for _ in range(2):
        assert predict.main(["--model_dir", run_dir, "--input", str(pics), "--output_dir", str(pics)]) == 0
        written = files(pics)
        assert {k: written[k] for k in before} == before  # every file that was there, byte for byte
        assert sorted(set(written) - set(before)) == sorted(os.listdir(out))
        records = [json.loads(line) for line in (pics / MANIFEST).read_text().splitlines()]
        assert {r["file"] for r in records} == set(os.listdir(out)) - {MANIFEST}
        assert {r["input"] for r in records} == {str(pics / n) for n in ("a.jpg", "a.png", "b.jpg")}
    # A prediction the user edited is theirs now: the next run stops before writing.
    (pics / "b.png").write_bytes(b"edited")
    with pytest.raises(predict.UsageError, match="b.png exists and is not segprep's prediction of"):
        predict.run(["--model_dir", run_dir, "--input", str(pics), "--output_dir", str(pics)])
    assert (pics / "b.png").read_bytes() == b"edited"


def test_a_folder_of_pngs_into_itself_is_refused_as_each_prediction_would_replace_its_input(run_dir, tmp_path):
    pics = tmp_path / "pics"
    pics.mkdir()
    (pics / "x.png").write_bytes(codec.encode_image(photo(5), "png"))
    before = files(pics)
    with pytest.raises(predict.UsageError, match=f"{pics}/x.png exists and is not segprep's prediction"):
        predict.run(["--model_dir", run_dir, "--input", str(pics), "--output_dir", str(pics)])
    assert files(pics) == before


def test_a_tiled_tiff_above_max_pixels_is_predicted_window_by_window(run_dir, tmp_path):
    import tifffile

    image = photo(6, 150, 230)
    tifffile.imwrite(tmp_path / "tile.tif", image, tile=(32, 32), photometric="rgb")
    out = tmp_path / "preds"
    assert predict.main(["--model_dir", run_dir, "--input", str(tmp_path / "tile.tif"), "--output_dir", str(out),
                         "--max_pixels", "5000"]) == 0
    assert sorted(os.listdir(out)) == [MANIFEST, "tile.tif"]
    with tifffile.TiffFile(out / "tile.tif") as tif:
        page = tif.pages[0]
        assert page.is_tiled and page.photometric == 3 and page.shape == (150, 230)
        classes = page.asarray()
        assert (page.colormap[:, :21].T >> 8).tolist() == [list(c) for c in VOC.colors]
    np.testing.assert_array_equal(classes, predict.Predictor(run_dir).predict(image))  # as if decoded whole
    assert predict.main(["--model_dir", run_dir, "--input", str(tmp_path / "tile.tif"), "--output_dir", str(out),
                         "--max_pixels", "5000", "--format", "index"]) == 0  # its own: replaced
    with tifffile.TiffFile(out / "tile.tif") as tif:
        assert tif.pages[0].photometric == 1
        np.testing.assert_array_equal(tif.pages[0].asarray(), classes)


def png_header(width, height):
    """A small PNG whose header declares `width` × `height` (its data is a few bytes): a decompression bomb's
    first bytes."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_an_image_above_max_pixels_that_cannot_be_read_by_window_is_one_line(run_dir, tmp_path, capsys):
    pics = tmp_path / "pics"
    pics.mkdir()
    (pics / "bomb.png").write_bytes(png_header(50_000, 50_000))
    (pics / "fine.jpg").write_bytes(codec.encode_image(photo(7), "jpeg"))
    out = tmp_path / "preds"
    assert predict.main(["--model_dir", run_dir, "--input", str(pics), "--output_dir", str(out)]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "bomb.png" in line]
    assert lines == [f"predict: {pics}/bomb.png: its header says 50000×50000 (w×h) = 2,500,000,000 px, above "
                     "--max_pixels 178,956,970 (about 11 bytes a pixel to decode whole); raise --max_pixels if "
                     "there is the memory, or convert it to a tiled TIFF, which predict reads window by "
                     "window"]
    assert "Traceback" not in err and "cv2" not in err and "OpenCV" not in err
    assert sorted(os.listdir(out)) == [MANIFEST, "fine.png", "fine_overlay.jpg"]  # the good one is written
