"""ImageNet backbones from `keras.applications` for `--arch deeplabv3plus`: their weights, their preprocessing and
the features the decoder taps.

    mobilenetv2       MobileNetV2 (alpha 1.0): x / 127.5 - 1
    resnet50          ResNet50 (v1), up to conv4 (stride 16): caffe, i.e. BGR minus the ImageNet mean
    efficientnetv2b0  EfficientNetV2-B0: its own first layers rescale, so raw RGB goes in

Weights (`--backbone_weights`): "imagenet" is the file Keras's own `keras.applications` loads, read from Keras's
cache (`$KERAS_HOME/models`, else `~/.keras/models`) under the name Keras gives it. A connected machine fetches it
there (with Keras's file hash checked) on first use; an offline one needs it copied there, and a missing file is
one line naming it and the cache path. "none" starts from random weights; a path loads that file (a Keras
`.weights.h5`, or an `.h5` in the legacy layout of Keras's own files).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tempfile

import keras
import numpy as np
from keras import layers

from segprep import storage
from segprep.cli import UsageError
from trainer.common import files

_KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet statistics, on the 0..1 scale
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclasses.dataclass(frozen=True)
class Backbone:
    name: str
    application: str  # the keras.applications function
    file: str  # the file name of its ImageNet weights without the classifier, as Keras caches it
    origin: str
    file_hash: str | None  # as keras.applications passes it to get_file (None where Keras checks none)
    preprocessing: str  # what the model's first layers do to raw RGB 0..255, for segprep.json and the README
    mean: tuple[float, float, float]  # the same as a per-channel (x - mean) / std on the 0..255 scale, RGB order
    std: tuple[float, float, float]


SPECS = {
    "mobilenetv2": Backbone(
        "mobilenetv2", "MobileNetV2", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        _KERAS_URL + "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5", None,
        "x / 127.5 - 1 (keras.applications.mobilenet_v2.preprocess_input)", (127.5,) * 3, (127.5,) * 3),
    "resnet50": Backbone(
        "resnet50", "ResNet50", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        _KERAS_URL + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "4d473c1dd8becc155b73f8504c6f6626",
        "caffe: RGB to BGR, minus the ImageNet mean (103.939, 116.779, 123.68) "
        "(keras.applications.resnet50.preprocess_input)", CAFFE_MEAN_BGR[::-1], (1.0,) * 3),
    "efficientnetv2b0": Backbone(
        "efficientnetv2b0", "EfficientNetV2B0", "efficientnetv2-b0_notop.h5",
        _KERAS_URL + "efficientnet_v2/efficientnetv2-b0_notop.h5", "893217f2bb855e2983157299931e43ff",
        "inside the backbone (include_preprocessing): x / 255, minus the ImageNet mean, over its std",
        tuple(255 * m for m in IMAGENET_MEAN), tuple(255 * s for s in IMAGENET_STD)),
}


def cache_dir() -> str:
    """Where keras.utils.get_file keeps `keras.applications` weights, as it computes it: Keras's home
    ($KERAS_HOME when Keras was imported, else ~/.keras) or /tmp/.keras where that is not writable, then models/."""
    from keras.src.backend import config as keras_config  # keras_home: not in the public API

    base = os.path.expanduser(keras_config.keras_home())
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return os.path.join(base, "models")


def imagenet_file(spec: Backbone, download_timeout: float = 60.0) -> str:
    """The local path of `spec`'s ImageNet weights: Keras's cached file, fetched by Keras when it is not there
    yet. Raises UsageError (one line: the file, the cache path, what to do) when it is missing and cannot be
    fetched."""
    path = os.path.join(cache_dir(), spec.file)
    if os.path.exists(path):
        return path
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(download_timeout)  # an unreachable host fails instead of hanging
    try:
        return keras.utils.get_file(spec.file, spec.origin, cache_subdir="models", file_hash=spec.file_hash)
    except Exception as e:  # noqa: BLE001 - urllib, socket, hash and OS errors alike: one line for the user
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"--backbone_weights imagenet needs {spec.file} in {cache_dir()}, and it could not be "
                         f"downloaded from {spec.origin} ({reason}): copy it there from a machine with network "
                         "access (Keras saves it there on first use), or pass --backbone_weights PATH or "
                         "none.") from None
    finally:
        socket.setdefaulttimeout(previous)


def build(name: str, crop_size: int, weights: str = "imagenet") -> tuple[keras.Model, keras.Model]:
    """(`keras.applications` model with `weights` loaded, features model: image → [stride-4 features, stride-16
    features]), the second sharing the first's layers."""
    spec = SPECS[name]
    if name == "efficientnetv2b0":
        net = keras.applications.EfficientNetV2B0(include_top=False, weights=None,
                                                  input_shape=(crop_size, crop_size, 3), include_preprocessing=True)
    else:
        import warnings

        with warnings.catch_warnings():  # MobileNetV2 says 256 px is not one of its ImageNet sizes: it is convolutional
            warnings.simplefilter("ignore")
            net = getattr(keras.applications, spec.application)(include_top=False, weights=None,
                                                                input_shape=(crop_size, crop_size, 3))
    if weights != "none":
        path = imagenet_file(spec) if weights == "imagenet" else local_copy(weights)
        try:
            net.load_weights(path)
        except Exception as e:  # noqa: BLE001 - h5py, value and key errors: a file that is not this backbone's
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(f"--backbone_weights: {path} is not {spec.application}'s weights ({first[:300]}).") \
                from None
    return net, features(net, crop_size)


def local_copy(path: str) -> str:
    """A weights file Keras can open: `path` itself, or a local copy of a gs:// one."""
    if not files.exists(path):
        raise UsageError(f"--backbone_weights {path}: no such file (imagenet, none or a weights file).")
    if not storage.is_remote(path):
        return path
    local = os.path.join(tempfile.mkdtemp(prefix="segprep-backbone-"), os.path.basename(path))
    files.copy(path, local)
    return local


def features(net: keras.Model, crop_size: int) -> keras.Model:
    """The decoder's two taps: the last layer at stride 4 (low-level detail) and the last at stride 16 (context).
    ResNet50 and MobileNetV2 are cut there, so their stride-32 stage is not computed; EfficientNetV2's stride-16
    stage ends in its last blocks."""
    taps = {}
    for layer in net.layers:
        shape = layer.output.shape
        if len(shape) == 4 and shape[1] in (crop_size // 4, crop_size // 16):
            taps[crop_size // shape[1]] = layer.output
    return keras.Model(net.inputs, [taps[4], taps[16]], name="backbone")


def preprocess(name: str) -> layers.Layer | None:
    """The layer that turns raw RGB 0..255 into what `name` was trained on (None: the backbone does it itself)."""
    if name == "mobilenetv2":
        return layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess", dtype="float32")
    if name == "resnet50":
        # RGB → BGR minus the mean, as one fixed 1×1 convolution: a standard layer, so plain load_model reads it.
        swap = layers.Conv2D(3, 1, name="preprocess", trainable=False, dtype="float32")
        swap.build((None, None, None, 3))
        swap.set_weights([np.eye(3, dtype=np.float32)[::-1].reshape(1, 1, 3, 3),
                          -np.asarray(CAFFE_MEAN_BGR, np.float32)])
        return swap
    return None
