"""Extra inputs in training, evaluation, prediction and serving: a class only a float32 DSM shows is learned with
the DSM (`--inputs image,dsm`) and not without it; every input goes through the same augmentation draw; predict,
evaluate and serving/ take both inputs."""

import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf
import tifffile

from pipelines import prepare
from trainer import data, evaluate, predict, train
from trainer.model import ExtraSpec, build_model

BEAM = ["--runner=DirectRunner"]
SIDE = 128


def dsm_only_dataset(root, n=16, seed=0):
    """RGB noise everywhere; class 1 ("building", Inria's 255) in rectangles that only a float32 DSM shows, 3 m
    above ground with 0.5 m noise: → {id: (rgb, mask, dsm)}."""
    rng = np.random.default_rng(seed)
    for sub in ("img", "lbl", "dsm"):
        os.makedirs(f"{root}/{sub}", exist_ok=True)
    out = {}
    for i in range(n):
        rgb = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
        mask = np.zeros((SIDE, SIDE), np.uint8)
        for _ in range(3):
            y, x = rng.integers(0, SIDE - 40, 2)
            h, w = rng.integers(16, 40, 2)
            mask[y:y + h, x:x + w] = 255
        dsm = (rng.normal(0, 0.5, (SIDE, SIDE)) + 100.0 + 3.0 * (mask > 0)).astype(np.float32)
        name = f"t{i:02d}"
        cv2.imwrite(f"{root}/img/{name}.png", rgb[..., ::-1])
        cv2.imwrite(f"{root}/lbl/{name}.png", mask)
        tifffile.imwrite(f"{root}/dsm/{name}.tif", dsm)
        out[name] = (rgb, mask, dsm)
    return out


TRAIN = ["--epochs", "6", "--batch_size", "8", "--width", "8", "--lr", "0.01", "--aug_scale", "off",
         "--aug_rotate", "0", "--arch", "deconv"]


@pytest.fixture(scope="module")
def dsm_runs(tmp_path_factory):
    """The dataset, its records, and two runs of one command apart from --inputs: (root, records, with, without,
    sources)."""
    base = tmp_path_factory.mktemp("dsm")
    root, records = str(base / "src"), str(base / "records")
    sources = dsm_only_dataset(root)
    assert prepare.main(["--input_dir", root, "--output_dir", records, "--images", "img/{id}.png",
                         "--masks", "lbl/{id}.png", "--palette", "inria", "--val_fraction", "0.25",
                         "--crop_size", "64", "--crops_per_image", "8", "--extra_inputs", "dsm=dsm/{id}.tif",
                         *BEAM]) == 0
    runs = {}
    for inputs in ("image,dsm", "image"):
        run = str(base / inputs.replace(",", "_"))
        history = train.run(["--data_dir", records, "--model_dir", run, *TRAIN, "--inputs", inputs])
        runs[inputs] = (run, history)
    return root, records, runs["image,dsm"], runs["image"], sources


def test_a_class_only_the_dsm_shows_is_learned_with_it_and_not_without(dsm_runs):
    _, records, (_, with_dsm), (_, without), _ = dsm_runs
    meta = json.load(open(f"{records}/metadata.json"))
    background = meta["splits"]["val"]["class_pixels"]
    all_background = background[0] / sum(background) / 2  # mIoU of predicting class 0 everywhere
    assert max(with_dsm.history["val_main_miou"]) >= 0.9
    assert max(without.history["val_main_miou"]) <= all_background + 0.1
    assert meta["extra_inputs"]["dsm"]["dtype"] == "float32"
    assert 100.0 < meta["extra_inputs"]["dsm"]["mean"][0] < 102.0  # the DSM's own statistics, in metres


def test_the_run_records_its_inputs_and_evaluate_reads_them_from_the_records(dsm_runs, tmp_path, capsys):
    _, records, (run, _), (rgb_run, _), _ = dsm_runs
    info = json.load(open(f"{run}/segprep.json"))
    assert info["inputs"] == ["image", "dsm"] and info["extra_inputs"]["dsm"]["channels"] == 1
    assert json.load(open(f"{rgb_run}/segprep.json"))["inputs"] == ["image"]
    import keras

    model = keras.models.load_model(f"{run}/model.keras")  # plain Keras: named inputs, normalising themselves
    assert sorted(t.name for t in model.inputs) == ["dsm", "image"]
    assert evaluate.main(["--model_dir", run, "--data_dir", records]) == 0
    assert json.load(open(f"{run}/eval-val.json"))["miou"] >= 0.9
    # Data prepared without the DSM: one line naming the input, not a shape error from inside Keras.
    root = os.path.dirname(records) + "/src"
    plain = str(tmp_path / "plain")
    assert prepare.main(["--input_dir", root, "--output_dir", plain, "--images", "img/{id}.png",
                         "--masks", "lbl/{id}.png", "--palette", "inria", "--val_fraction", "0.25",
                         "--crop_size", "64", *BEAM]) == 0
    capsys.readouterr()
    assert evaluate.main(["--model_dir", run, "--data_dir", plain]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "takes an input 'dsm'" in err and "--extra_inputs 'dsm=...'" in err


def test_predict_takes_the_extra_input_by_path_and_refuses_a_model_whose_inputs_are_missing(dsm_runs, tmp_path,
                                                                                          capsys):
    root, _, (run, _), _, sources = dsm_runs
    out = str(tmp_path / "preds")
    assert predict.main(["--model_dir", run, "--input", f"{root}/img", "--output_dir", out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--extra_inputs 'dsm=" in err and not os.path.exists(out)
    assert predict.main(["--model_dir", run, "--input", f"{root}/img", "--output_dir", out,
                         "--extra_inputs", "elevation=x/{id}.tif", "--extra_inputs", f"dsm={root}/dsm/{{id}}.tif"]) == 2
    assert "no input 'elevation'" in capsys.readouterr().err
    assert predict.main(["--model_dir", run, "--input", f"{root}/img", "--output_dir", out, "--format", "index",
                         "--extra_inputs", f"dsm={root}/dsm/{{id}}.tif"]) == 0
    agree = [np.mean((cv2.imread(f"{out}/{name}.png", cv2.IMREAD_UNCHANGED) == 1) == (mask > 0))
             for name, (_, mask, _) in sources.items()]
    assert min(agree) > 0.95
    # A DSM of another size is that input's error, named; the others are still predicted.
    bad = tmp_path / "bad"
    os.makedirs(bad)
    for name in ("t00", "t01"):
        tifffile.imwrite(bad / f"{name}.tif", sources[name][2][:100] if name == "t01" else sources[name][2])
    os.makedirs(tmp_path / "two")
    for name in ("t00", "t01"):
        cv2.imwrite(str(tmp_path / "two" / f"{name}.png"), sources[name][0][..., ::-1])
    assert predict.main(["--model_dir", run, "--input", str(tmp_path / "two"), "--output_dir", str(tmp_path / "p2"),
                         "--extra_inputs", f"dsm={bad}/{{id}}.tif"]) == 1
    err = capsys.readouterr().err
    assert "extra input dsm is 128×100 (w×h) but its image is 128×128" in err
    assert os.path.exists(tmp_path / "p2" / "t00.png") and not os.path.exists(tmp_path / "p2" / "t01.png")


def test_a_tiled_tiff_and_its_dsm_above_max_pixels_are_predicted_window_by_window_as_whole(dsm_runs, tmp_path):
    root, _, (run, _), _, sources = dsm_runs
    rgb = np.concatenate([sources["t00"][0], sources["t01"][0]], 1)  # 128 × 256
    dsm = np.concatenate([sources["t00"][2], sources["t01"][2]], 1)
    os.makedirs(tmp_path / "img"), os.makedirs(tmp_path / "dsm")
    tifffile.imwrite(tmp_path / "img" / "big.tif", rgb, photometric="rgb", tile=(64, 64))
    tifffile.imwrite(tmp_path / "dsm" / "big.tif", dsm, tile=(64, 64))
    flag = ["--extra_inputs", f"dsm={tmp_path}/dsm/{{id}}.tif", "--format", "index"]
    assert predict.main(["--model_dir", run, "--input", str(tmp_path / "img"), "--output_dir",
                         str(tmp_path / "windowed"), "--max_pixels", "5000", *flag]) == 0
    assert predict.main(["--model_dir", run, "--input", str(tmp_path / "img"), "--output_dir",
                         str(tmp_path / "whole"), *flag]) == 0
    windowed = tifffile.imread(tmp_path / "windowed" / "big.tif")
    np.testing.assert_array_equal(windowed, cv2.imread(str(tmp_path / "whole" / "big.png"), cv2.IMREAD_UNCHANGED))
    truth = np.concatenate([sources["t00"][1], sources["t01"][1]], 1) > 0
    assert np.mean((windowed == 1) == truth) > 0.95


def test_serving_takes_the_image_and_the_dsm_by_name(dsm_runs):
    root, _, (run, _), _, sources = dsm_runs
    serve = tf.saved_model.load(f"{run}/serving").signatures["serving_default"]
    rgb, mask, dsm = sources["t15"]
    assert set(serve.structured_input_signature[1]) == {"images", "dsm"}
    classes = serve(images=tf.constant(rgb[None]), dsm=tf.constant(dsm[None, ..., None]))["classes"].numpy()[0]
    assert classes.shape == mask.shape and np.mean((classes == 1) == (mask > 0)) > 0.95


def test_inputs_flag_mistakes_are_one_line(dsm_runs, tmp_path, capsys):
    _, records, *_ = dsm_runs
    for flags, says in ((["--inputs", "image,ndsm"], "holds the inputs image, dsm, not 'ndsm'"),
                        (["--inputs", "dsm", "--arch", "deeplabv3plus", "--backbone_weights", "none"],
                         "deeplabv3plus takes the image on its backbone")):
        assert train.main(["--data_dir", records, "--model_dir", str(tmp_path / "r"), *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1
    assert not os.path.exists(tmp_path / "r")


def test_every_input_goes_through_the_same_augmentation_draw():
    # The DSM is the image's first channel / 10: after any flip, scale, rotation and window it still is (a linear
    # map, and both are padded with 0).
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    classes = (image[..., :1] > 127).astype(np.uint8)
    rasters = {"image": tf.constant(image), "dsm": tf.constant(image[..., :1].astype(np.float32) / 10)}
    for aug in (data.Augment(flip=True, scale=None, rotate_degrees=0),
                data.Augment(flip=True, scale=(0.7, 1.4), rotate_degrees=30)):
        for k in range(6):
            key = tf.constant([7, k], tf.int64)
            out, mask = data.augment(rasters, tf.constant(classes), aug, 64, key, 48)
            alone, alone_mask = data.augment(rasters["image"], tf.constant(classes), aug, 64, key, 48)
            np.testing.assert_array_equal(out["image"], alone)  # the image as it is augmented on its own
            np.testing.assert_array_equal(mask, alone_mask)
            np.testing.assert_allclose(np.asarray(out["dsm"])[..., 0],
                                       np.asarray(out["image"], np.float32)[..., 0] / 10, rtol=1e-5, atol=1e-5)


def test_deeplabv3plus_takes_the_extras_through_a_parallel_stem():
    model = build_model(3, 64, arch="deeplabv3plus", backbone_weights="none",
                        extras=(ExtraSpec("dsm", 1, (100.0,), (2.0,)), ExtraSpec("ir", 1, (3000.0,), (900.0,))))
    assert sorted(t.name for t in model.inputs) == ["dsm", "image", "ir"]
    feeds = {"image": np.zeros((1, 64, 64, 3), np.float32), "dsm": np.full((1, 64, 64, 1), 100.0, np.float32),
             "ir": np.full((1, 64, 64, 1), 3000.0, np.float32)}
    out = model(feeds)
    assert out["main"].shape == (1, 64, 64, 3)
    changed = dict(feeds, dsm=feeds["dsm"] + 50.0)
    assert not np.allclose(out["main"], model(changed)["main"])  # the DSM reaches the logits
    assert model.get_layer("backbone").inputs[0].shape[-1] == 3  # the pretrained stem stays RGB
