"""Saving a trained model: model.keras (an inference model any Keras loads), best.keras (with its optimizer), and
the serving export (a SavedModel for TF Serving / Vertex AI: uint8 RGB and any extra inputs in, probabilities
and classes out)."""

from __future__ import annotations

import json
import os
import re
import tempfile

import numpy as np

from segprep import storage
from trainer.common import files
from trainer.lazy import keras, tf


def save_keras(model: keras.Model, path: str) -> None:
    """model.save that also writes to gs:// (Keras writes a local file; TF's filesystem copies it up)."""
    if not storage.is_remote(path):
        files.makedirs(os.path.dirname(path) or ".")
        model.save(path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(path))
        model.save(local)
        files.copy(local, path)


def inference_model(model: keras.Model) -> keras.Model:
    """The trained weights in an uncompiled float32 copy with standard layers only, so plain
    `keras.models.load_model` reads it in any Python with Keras, without importing segprep. Synchronised
    BatchNorm and mixed precision only matter while training."""
    text = json.dumps(model.get_config()).replace('"synchronized": true', '"synchronized": false')
    text = re.sub(r'"name": "mixed_(b?float16)"', '"name": "float32"', text)
    clone = model.__class__.from_config(json.loads(text))
    clone.set_weights(model.get_weights())
    return clone


def save_inference_model(model: keras.Model, path: str) -> None:
    """model.keras: see `inference_model`. best.keras keeps the optimizer for fine-tuning."""
    save_keras(inference_model(model), path)


def export_serving(model: keras.Model, path: str, output: str = "main") -> None:
    """RUN/serving/: a SavedModel for TF Serving and Vertex AI. Its `serving_default` signature takes `images`, a
    uint8 RGB batch [N, H, W, 3] of any size, and, for a model with extra inputs, each of them under its own name
    as float32 [N, H, W, C] (values as stored: metres of a DSM, raw band values; the model normalises them; NaN
    marks a pixel without data, which the model sees as the band's mean, as in training); it
    returns `probabilities` [N, H, W, C] (float32 softmax of the `output`) and `classes` [N, H, W] (uint8). The
    inputs are cut into windows of the training crop (padded at the far edges), predicted in one batch and put
    back: trainer.predict's windows without overlap."""
    model = inference_model(model)
    size = max(int(t.shape[1]) for t in model.inputs)
    channels = {t.name: int(t.shape[-1]) for t in model.inputs}
    # The signature's names: `images` for the RGB input (as before extra inputs existed), the others their own.
    names = {("images" if name == "image" else name): name for name in sorted(channels, key=lambda n: n != "image")}
    means = {name: _normalization_mean(model, name) for name in channels if name != "image"}
    means = {name: mean for name, mean in means.items() if mean is not None}

    def tiles_of(x, c):
        n, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
        x = tf.pad(x, [[0, 0], [0, (-h) % size], [0, (-w) % size], [0, 0]])
        rows, cols = tf.shape(x)[1] // size, tf.shape(x)[2] // size
        return tf.reshape(tf.transpose(tf.reshape(x, [n, rows, size, cols, size, c]), [0, 1, 3, 2, 4, 5]),
                          [-1, size, size, c]), (n, h, w, rows, cols)

    def serve(*tensors):
        feeds, shape = {}, None
        for (arg, name), x in zip(names.items(), tensors):
            x = tf.cast(x, tf.float32)
            if name in means:  # NaN marks no data: the band's mean, which the model normalises to 0
                x = tf.where(tf.math.is_nan(x), tf.constant(means[name], tf.float32), x)
            feeds[name], shape = tiles_of(x, channels[name])
        n, h, w, rows, cols = shape
        logits = tf.cast(model(feeds, training=False)[output], tf.float32)
        if logits.shape[1] != size:  # a low-resolution output: logits upsampled as predict does
            logits = tf.image.resize(logits, [size, size], method="bilinear")
        probs = tf.nn.softmax(logits, axis=-1)
        classes = probs.shape[-1]
        probs = tf.reshape(tf.transpose(tf.reshape(probs, [n, rows, cols, size, size, classes]), [0, 1, 3, 2, 4, 5]),
                           [n, rows * size, cols * size, classes])[:, :h, :w]
        return {"probabilities": probs, "classes": tf.cast(tf.argmax(probs, -1), tf.uint8)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=[
        tf.TensorSpec([None, None, None, channels[name]], tf.uint8 if name == "image" else tf.float32, name=arg)
        for arg, name in names.items()])
    with tempfile.TemporaryDirectory() as tmp:  # written whole, then copied: gs:// gets no half-written export
        archive.write_out(f"{tmp}/serving", verbose=False)
        if files.exists(path):
            files.rmtree(path)
        _copy_tree(f"{tmp}/serving", path)


def _normalization_mean(model: keras.Model, name: str):
    """The per-band mean an extra input's first layer (`normalize_NAME`) subtracts, or None."""
    try:
        layer = model.get_layer(f"normalize_{name}")
    except ValueError:
        return None
    return [float(v) for v in np.ravel(keras.ops.convert_to_numpy(layer.mean))]


def _copy_tree(src: str, dst: str) -> None:
    for folder, _, names in files.walk(src):
        target = dst + folder[len(src):]
        files.makedirs(target)
        for name in names:
            files.copy(f"{folder}/{name}", f"{target}/{name}")
