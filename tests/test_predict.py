"""trainer/predict.py: windows stitched as one pass over the image, colours and indices, the serving export predicts
alike, quiet commands; and predict never writes over a file it did not write, gives inputs that share a name distinct outputs, and decodes
no image above --max_pixels whole: a tiled TIFF is predicted window by window, anything else is one line."""

import json
import os
import re
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from conftest import REPO
from segprep import codec, headers
from segprep.palette import VOC
from trainer import predict
from segprep.formats.predictions import MANIFEST


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


def test_predict_stitches_windows_and_writes_palette_pngs(run_dir, tmp_path):
    p = predict.Predictor(run_dir)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (150, 200, 3), dtype=np.uint8)
    # No overlap on a multiple of the crop: every pixel comes from exactly one window.
    exact = image[:128, :192]
    stitched = p.predict(exact, overlap=0.0)
    assert stitched.shape == (128, 192)
    for y in (0, 64):
        for x in (0, 64, 128):
            window = np.argmax(p.probabilities(exact[None, y:y + 64, x:x + 64])[0], -1)
            np.testing.assert_array_equal(stitched[y:y + 64, x:x + 64], window)
    # The last window is flush with the far edge: the bottom-right corner is that window's alone.
    full = p.predict(image, overlap=0.0)
    last = np.argmax(p.probabilities(image[None, 86:, 136:])[0], -1)
    np.testing.assert_array_equal(full[128:, 192:], last[42:, 56:])
    # With overlap, the corner only one window covers still equals that window's own prediction.
    overlapped = p.predict(image, overlap=0.5)
    first = np.argmax(p.probabilities(image[None, :64, :64])[0], -1)
    np.testing.assert_array_equal(overlapped[:32, :32], first[:32, :32])
    # Small images are padded and cut back; written colours are palette colours.
    img_path = tmp_path / "small.jpg"
    img_path.write_bytes(codec.encode_image(image[:40, :50], "jpeg"))
    out = tmp_path / "preds"
    assert predict.main(["--model_dir", run_dir, "--input", str(img_path), "--output_dir", str(out)]) == 0
    mask, _ = codec.decode_mask((out / "small.png").read_bytes())
    assert mask.shape == (40, 50, 3)
    palette = {tuple(c) for c in VOC.colors}
    assert {tuple(c) for c in mask.reshape(-1, 3)} <= palette
    assert (out / "small_overlay.jpg").exists()
    assert predict.main(["--model_dir", run_dir, "--input", str(tmp_path / "nope.jpg")]) == 2


def test_predict_equals_summing_every_window_on_a_full_canvas(run_dir):
    p = predict.Predictor(run_dir)
    image = np.random.default_rng(1).integers(0, 255, (301, 157, 3), dtype=np.uint8)  # tall: the ring wraps
    s, stride = 64, 43  # overlap 1/3
    canvas = np.zeros((301, 157, 21), np.float32)
    for y in predict._starts(301, s, stride):
        for x in predict._starts(157, s, stride):
            canvas[y:y + s, x:x + s] += p.probabilities(image[None, y:y + s, x:x + s])[0]
    np.testing.assert_array_equal(p.predict(image, overlap=1 - stride / s), np.argmax(canvas, -1))


def test_predict_outputs_and_formats(run_dir, tmp_path, capsys):
    image = np.random.default_rng(2).integers(0, 255, (90, 130, 3), dtype=np.uint8)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(codec.encode_image(image, "png"))
    aux = predict.Predictor(run_dir, "aux")  # 1/8 resolution: logits upsampled to the window
    assert aux.predict(image).shape == (90, 130)
    out = tmp_path / "idx"
    assert predict.main(["--model_dir", run_dir, "--input", str(tmp_path / "in"), "--output_dir", str(out),
                         "--format", "index", "--output", "upsample"]) == 0
    written, kind = codec.decode_mask((out / "a.png").read_bytes())
    assert kind == "index" and headers.png_color_type((out / "a.png").read_bytes()) == (0, 8)
    np.testing.assert_array_equal(written, predict.Predictor(run_dir, "upsample").predict(image))
    capsys.readouterr()
    fresh = tmp_path / "fresh"
    assert predict.main(["--model_dir", run_dir, "--input", str(tmp_path / "in"), "--output", "mian",
                         "--output_dir", str(fresh)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["predict: error: --output mian: the model's outputs are aux, main, upsample."]
    assert not fresh.exists()  # the mistake leaves no empty folder behind


SERVE = """
import json, sys
import numpy as np, tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
images = np.load(sys.argv[2])
out = serve(images=tf.constant(images))
odd = serve(images=tf.constant(images[:, :50, :77]))
print(json.dumps({"classes": out["classes"].numpy().tolist(), "dtype": str(out["classes"].dtype.name),
                  "sums": out["probabilities"].numpy().sum(-1).round(4).ravel()[:50].tolist(),
                  "odd": list(odd["classes"].shape), "odd_p": list(odd["probabilities"].shape)}))
"""


def test_serving_export_loads_in_a_fresh_process_and_predicts_as_predict_does(run_dir, tmp_path):
    images = np.random.default_rng(3).integers(0, 255, (2, 128, 192, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    proc = subprocess.run([sys.executable, "-c", SERVE, f"{run_dir}/serving", str(tmp_path / "images.npy")],
                          capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["dtype"] == "uint8" and out["odd"] == [2, 50, 77] and out["odd_p"] == [2, 50, 77, 21]
    assert np.allclose(out["sums"], 1.0, atol=1e-3)
    p = predict.Predictor(run_dir)
    for image, classes in zip(images, out["classes"]):  # windows of the crop, no overlap: predict's own result
        np.testing.assert_array_equal(np.array(classes), p.predict(image, overlap=0.0))


def test_predict_and_evaluate_commands_are_quiet_show_progress_and_summarise(run_dir, voc_tree, tmp_path):
    """Fresh processes, as a user runs them, with no TF_CPP_MIN_LOG_LEVEL: stderr holds only our progress lines
    (whatever TensorFlow's build would print), and -v lets TensorFlow's own lines through again."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "SEGPREP_VERBOSE")}
    env.update(PYTHONPATH=REPO, SEGPREP_PROGRESS_SECONDS="0")
    out = tmp_path / "preds"
    proc = subprocess.run([sys.executable, "-m", "trainer.predict", "--model_dir", run_dir, "--input", voc_tree.root,
                           "--split", "train", "--output_dir", str(out)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    progress = proc.stderr.splitlines()
    assert progress and all(line.startswith("predict: ") and " images, " in line for line in progress), progress
    assert "predict: 3/3 images" in progress[-1]
    assert re.fullmatch(r"predict: 3 of 3 images \([\d.]+ Mpx\) in [\d.]+ s \([\d.]+ Mpx/s\), 0 failed → "
                        + re.escape(str(out)) + "/\n", proc.stdout), proc.stdout
    assert sorted(os.listdir(out)) == sorted([".segprep-predictions.jsonl"] + [f"{i}{s}" for i in ("t1", "t2", "t3")
                                                                               for s in (".png", "_overlay.jpg")])
    proc = subprocess.run([sys.executable, "-m", "trainer.evaluate", "--model_dir", run_dir, "--batch_size", "2"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert all(line.startswith("evaluate: ") and " batches, " in line for line in proc.stderr.splitlines())
    assert re.search(r"^evaluate: \d+ val crops \([\d,]+ labelled pixels\) in [\d.]+ s → .*eval-val.json$",
                     proc.stdout, re.M), proc.stdout
    loud = subprocess.run([sys.executable, "-m", "trainer.evaluate", "--model_dir", run_dir, "-v"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0, loud.stderr
    assert [line for line in loud.stderr.splitlines() if not line.startswith("evaluate: ")], \
        "-v shows TensorFlow's own lines again"


def test_predict_names_from_a_split_list_stay_inside_the_output_dir(run_dir, voc_tree, tmp_path, capsys):
    import os

    root = voc_tree.root
    os.makedirs(os.path.join(root, "JPEGImages", "sub"))
    codec_bytes = open(os.path.join(root, "JPEGImages", "t1.jpg"), "rb").read()
    open(os.path.join(root, "JPEGImages", "sub", "deep.jpg"), "wb").write(codec_bytes)
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(codec_bytes)
    with open(os.path.join(root, "ImageSets", "Segmentation", "odd.txt"), "w") as f:
        f.write(f"../../{outside.stem}\nsub/deep\nt1\n/etc/x\n")
    out = tmp_path / "preds"
    capsys.readouterr()
    assert predict.main(["--model_dir", run_dir, "--input", root, "--split", "odd", "--output_dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "'../../outside' holds a '.' or '..' path segment" in err and "'/etc/x' holds an absolute path" in err
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == [".segprep-predictions.jsonl", "sub/deep.png", "sub/deep_overlay.jpg", "t1.png",
                       "t1_overlay.jpg"]  # the others went on
    assert not (tmp_path / "outside.png").exists()
