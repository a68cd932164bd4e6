"""--arch deeplabv3plus on keras.applications backbones: ImageNet weights read from Keras's own cache (placed there
by the tests, as a connected machine's Keras would have), random weights, freezing, and every command on the run."""

import json
import os
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, prepared_tree
from segprep import codec, layout
from trainer import backbones, evaluate, predict, train

BACKBONES = tuple(backbones.SPECS)
OFFLINE = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}  # refused at once: no network


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return prepared_tree(str(tmp_path_factory.mktemp("backbones")), crops_per_image=4)


def place_weights(keras_home, name: str, seed: int) -> list[np.ndarray]:
    """A weights file in the layout of Keras's own ImageNet files (legacy HDF5, the whole backbone without its
    classifier), under the exact name keras.applications caches it by, with weights of `seed`: → those weights."""
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(seed)
    spec = backbones.SPECS[name]
    net, _ = backbones.build(name, 64, "none")
    rng = np.random.default_rng(seed)  # one stream: no two variables alike, so a load out of order shows
    for v in net.weights:  # BatchNorm statistics too, so a frozen backbone's are seen to be the file's
        v.assign(rng.normal(0, 0.05, v.shape).astype(np.float32) + (1.0 if "variance" in v.path else 0.0))
    os.makedirs(os.path.join(keras_home, "models"), exist_ok=True)
    with h5py.File(os.path.join(keras_home, "models", spec.file), "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, net)
    return [w.numpy() for w in net.weights]


def backbone_weights(model) -> list[np.ndarray]:
    return [w.numpy() for w in model.get_layer("backbone").weights]


def same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_imagenet_weights_are_the_file_in_kerass_cache_and_a_missing_one_is_one_line(tmp_path, monkeypatch):
    from keras.src.backend import config as keras_config

    home = tmp_path / "keras"
    home.mkdir()
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(home))  # what KERAS_HOME sets when Keras is imported
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)
    assert backbones.cache_dir() == str(home / "models")
    for name in BACKBONES:
        spec = backbones.SPECS[name]
        with pytest.raises(train.UsageError) as e:
            backbones.build(name, 64, "imagenet")
        message = str(e.value)
        assert "\n" not in message and spec.file in message and str(home / "models") in message
        assert "--backbone_weights PATH or none" in message
        placed = place_weights(str(home), name, seed=7)
        net, features = backbones.build(name, 64, "imagenet")
        assert same([w.numpy() for w in net.weights], placed)  # the cached file, layer by layer
        model = train.model_lib.build_model(21, 64, arch="deeplabv3plus", backbone=name, backbone_weights="imagenet")
        loaded = {w.path: w.numpy() for w in net.weights}
        inside = model.get_layer("backbone").weights
        assert inside and all(np.array_equal(w.numpy(), loaded[w.path]) for w in inside)
        assert not same(backbone_weights(train.model_lib.build_model(21, 64, arch="deeplabv3plus", backbone=name,
                                                                     backbone_weights="none")),
                        backbone_weights(model))
    # A file of another backbone is named as not this one's, in one line.
    with pytest.raises(train.UsageError, match="is not ResNet50's weights"):
        backbones.build("resnet50", 64, str(home / "models" / backbones.SPECS["mobilenetv2"].file))


def test_preprocessing_is_the_backbones_own_inside_the_model():
    rgb = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype(np.float32)
    caffe = backbones.preprocess("resnet50")(rgb).numpy()
    np.testing.assert_allclose(caffe, keras.applications.resnet50.preprocess_input(rgb.copy()), atol=1e-4)
    mobile = backbones.preprocess("mobilenetv2")(rgb).numpy()
    np.testing.assert_allclose(mobile, keras.applications.mobilenet_v2.preprocess_input(rgb.copy()), atol=1e-6)
    assert backbones.preprocess("efficientnetv2b0") is None  # its own Rescaling and Normalization layers


PLAIN_LOAD = """
import sys, json, keras
m = keras.models.load_model(sys.argv[1])
print(json.dumps({"name": m.name, "outputs": sorted(m.output_names)}))
"""


def test_the_command_trains_from_the_cached_file_frozen_first_then_every_command_runs_on_it(records, tmp_path):
    """The CLI with KERAS_HOME pointing at a cache: one line when the file is missing; with it, the run loads it,
    keeps it frozen for the first epoch, and the run goes through plain load_model, predict, serving, evaluate."""
    data_dir, _ = records
    home = tmp_path / "keras"
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "trainer.train", "--data_dir", data_dir, "--model_dir", str(run), "--epochs", "2",
           "--batch_size", "4", "--arch", "deeplabv3plus", "--freeze_backbone_epochs", "1"]
    env = dict(os.environ, PYTHONPATH=REPO, KERAS_HOME=str(home), **OFFLINE)
    missing = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    err = missing.stderr.strip().splitlines()
    assert missing.returncode == 2 and len(err) == 1, missing.stderr[-2000:]
    assert backbones.SPECS["mobilenetv2"].file in err[0] and str(home / "models") in err[0]
    placed = place_weights(str(home), "mobilenetv2", seed=3)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(mobilenetv2 backbone, imagenet weights, frozen for 1 epochs)" in done.stdout
    # best.keras is epoch 1's (the first is always the best so far): the backbone then was the file's, untouched,
    # BatchNorm statistics included; model.keras's has trained on.
    net, _ = backbones.build("mobilenetv2", 64, "none")
    by_path = dict(zip([w.path for w in net.weights], placed))
    best = keras.models.load_model(run / "best.keras", compile=False).get_layer("backbone").weights
    assert all(np.array_equal(w.numpy(), by_path[w.path]) for w in best)
    final = keras.models.load_model(run / "model.keras").get_layer("backbone").weights
    assert not all(np.array_equal(w.numpy(), by_path[w.path]) for w in final)
    info = json.load(open(run / "segprep.json"))
    assert info["model"] == "segprep_deeplabv3plus_mobilenetv2" and info["normalization"]["in_model"]
    assert info["normalization"]["stats"] == "backbone mobilenetv2"
    assert "127.5" in info["normalization"]["preprocessing"]
    # Plain Keras, in an interpreter that never imported segprep.
    plain = subprocess.run([sys.executable, "-c", PLAIN_LOAD, str(run / "model.keras")], capture_output=True,
                           text=True, cwd=str(tmp_path), env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert json.loads(plain.stdout.strip().splitlines()[-1]) == {"name": "segprep_deeplabv3plus_mobilenetv2",
                                                                 "outputs": ["aux", "main", "upsample"]}
    check_commands(str(run), records[1], data_dir, tmp_path)


def check_commands(run: str, tree, data_dir: str, tmp_path) -> None:
    """A deeplabv3plus run through every command: plain load_model, predict (raw uint8 RGB in: the backbone's
    preprocessing is inside the model), the SavedModel (the same classes as predict), evaluate."""
    model = keras.models.load_model(f"{run}/model.keras")
    assert {n: tuple(o.shape[1:3]) for n, o in zip(model.output_names, model.outputs)} == {
        "aux": (4, 4), "main": (64, 64), "upsample": (64, 64)}
    image = tree.images["t1"][:128, :192]  # whole windows: the SavedModel pads, predict shifts its last window
    classes = predict.Predictor(run).predict(image, overlap=0.0)
    assert classes.shape == image.shape[:2]
    serve = tf.saved_model.load(f"{run}/serving").signatures["serving_default"]
    np.testing.assert_array_equal(serve(images=tf.constant(image[None]))["classes"].numpy()[0], classes)
    assert predict.main(["--model_dir", run, "--input", layout.image_path(tree.root, "v1"), "--output_dir",
                         str(tmp_path / "preds")]) == 0
    written, _ = codec.decode_mask((tmp_path / "preds" / "v1.png").read_bytes())
    assert written.shape == tree.images["v1"].shape
    result = evaluate.run(["--model_dir", run, "--data_dir", data_dir])
    assert 0.0 <= result["miou"] <= 1.0 and result["pixels"] > 0


# mobilenetv2 goes through every command in the test above, from a cached ImageNet file.
@pytest.mark.parametrize("name", ["resnet50", "efficientnetv2b0"])
def test_each_backbone_trains_saves_reloads_serves_predicts_and_evaluates(records, tmp_path, name, capsys):
    data_dir, tree = records
    run = str(tmp_path / "run")
    history = train.run(["--data_dir", data_dir, "--model_dir", run, "--epochs", "1", "--batch_size", "4",
                         "--arch", "deeplabv3plus", "--backbone", name, "--backbone_weights", "none",
                         "--loss_weights", "main=1,upsample=0.5,aux=0.1"])
    assert np.isfinite(history.history["loss"][0])
    first = capsys.readouterr().out.splitlines()[0]
    assert f"segprep_deeplabv3plus_{name}" in first and "outputs aux, main, upsample" in first
    check_commands(run, tree, data_dir, tmp_path)


def test_backbone_flags_are_checked_before_tensorflow_loads(records, tmp_path, capsys):
    data_dir, _ = records
    base = ["--data_dir", data_dir, "--model_dir", str(tmp_path / "r")]
    for args, needle in ((["--backbone", "resnet50"], "--backbone is for --arch deeplabv3plus"),
                         (["--arch", "deeplabv3plus", "--normalization", "simple"], "backbone's own preprocessing"),
                         (["--arch", "deeplabv3plus", "--backbone_weights", str(tmp_path / "nope.h5")],
                          "nope.h5: no such file"),
                         (["--arch", "deeplabv3plus", "--epochs", "2", "--freeze_backbone_epochs", "2"],
                          "leaves no epoch"),
                         (["--arch", "deeplabv3plus", "--train_crop_size", "32"], "built for whole 64×64 crops")):
        assert train.main(base + args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
