"""Segmentation models: a functional Keras model with input "image" and several named outputs.

The default ("multi") is small enough to train on 2 CPU cores from scratch:

    image ─ encoder (strided convs, separable blocks, dilated context at 1/8)
            ├─ "main":     transposed-convolution (deconvolution) decoder with skips → full resolution
            ├─ "upsample": conv + bilinear UpSampling2D decoder                      → full resolution
            └─ "aux":      1×1 conv on the 1/8 features (deep supervision)           → 1/8 resolution

"deeplabv3plus" is DeepLabV3+ (Chen et al. 2018) on an ImageNet backbone from keras.applications (trainer/backbones.py):

    image ─ the backbone's own preprocessing ─ backbone → stride-4 and stride-16 features
            ├─ "main":     ASPP (1×1, 3×3 atrous 6/12/18, image pooling) on stride 16, upsampled 4×, joined with
            │              the stride-4 features, two separable 3×3 convs, logits upsampled 4× → full resolution
            ├─ "upsample": the ASPP's logits upsampled 16× (DeepLabV3 without the decoder)  → full resolution
            └─ "aux":      1×1 conv on the backbone's stride-16 features (deep supervision) → 1/16 resolution

The model takes raw RGB (0..255, uint8 or float) and normalises it itself as its first layer — with the training
crops' mean/std from metadata.json, or the seed recipe's x/255 - 0.5 — so a saved model.keras needs no
statistics beside it, and the input pipeline ships uint8. All outputs are logits. Output names are what losses,
loss weights, metrics and targets are keyed by.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf
from keras import layers
from keras.src.models.functional import Functional  # nested models' class: not in the public API

from trainer.common import ARCHS  # noqa: E402,F401 - re-exported
from trainer.normalization import floored


# momentum 0.9: with 0.99 the statistics lag for hundreds of steps on small datasets. synchronized: replicas share
# the global batch's statistics (TF Model Garden's use_sync_bn), so N replicas train as one device would.
_BN = {"momentum": 0.9, "synchronized": True}


def _conv(x, filters, stride=1, name=None):
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(**_BN)(x)
    return layers.ReLU()(x)


def _sep(x, filters, stride=1, dilation=1):
    x = layers.SeparableConv2D(filters, 3, strides=stride, dilation_rate=dilation, padding="same",
                               use_bias=False)(x)
    x = layers.BatchNormalization(**_BN)(x)
    return layers.ReLU()(x)


@dataclasses.dataclass(frozen=True)
class ExtraSpec:
    """An extra input as a model takes it: its name, bands and the training crops' per-band mean and std, which
    the model normalises it with (metadata.json's extra_inputs)."""

    name: str
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, info) -> ExtraSpec:
        """From metadata's ExtraInfo."""
        return cls(info.name, int(info.channels), tuple(info.mean), tuple(info.std))


def _extra_input(spec: ExtraSpec, crop_size: int):
    """(the keras.Input named for an extra input, float32 [S, S, C] as stored, and it normalised)."""
    raw = keras.Input((crop_size, crop_size, spec.channels), name=spec.name, dtype="float32")
    x = layers.Normalization(mean=list(spec.mean), variance=[s ** 2 for s in floored(spec.std)],
                             name=f"normalize_{spec.name}", dtype="float32")(raw)
    return raw, x


def build_model(num_classes: int, crop_size: int = 256, width: int = 32, arch: str = "multi",
                mean: list[float] | None = None, std: list[float] | None = None, backbone: str = "mobilenetv2",
                backbone_weights: str = "imagenet", extras: tuple[ExtraSpec, ...] = (),
                image: bool = True) -> keras.Model:
    """`mean`/`std` (per RGB channel, 0..255 scale): normalise with them; None: x / 255 - 0.5. For
    "deeplabv3plus", `backbone` and `backbone_weights` ("imagenet", "none" or a path) choose the encoder, which
    brings its own normalisation (`mean`, `std` and `width` are not used).

    `extras`: extra inputs (a DSM, an infrared band), each a named input normalised by its own statistics. The
    small models fuse early: every input gets its own stem (a strided 3×3 conv, BatchNorm, ReLU to 1/2) and the
    stems are concatenated, so each input is scaled and filtered on its own terms before they mix. With `image`
    False the model takes the extra inputs only (not for deeplabv3plus, whose backbone wants RGB)."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}. Received: {arch!r}")
    if not image and not extras:
        raise ValueError("a model needs at least one input")
    if arch == "deeplabv3plus":
        if not image:
            raise ValueError("deeplabv3plus takes the image on its backbone: it cannot be left out")
        return deeplabv3plus(num_classes, crop_size, backbone, backbone_weights, extras=extras)
    if crop_size % 8:
        raise ValueError(f"crop_size must be a multiple of 8 for this model. Received: {crop_size}")
    inputs, stems = {}, []
    if image:
        rgb = inputs["image"] = keras.Input((crop_size, crop_size, 3), name="image")
        if mean is not None and std is not None:
            x = layers.Normalization(mean=list(mean), variance=[s ** 2 for s in floored(std)], name="normalize",
                                     dtype="float32")(rgb)
        else:
            x = layers.Rescaling(1 / 255, offset=-0.5, name="normalize", dtype="float32")(rgb)
        stems.append(_conv(x, width, stride=2))  # 1/2
    for spec in extras:
        inputs[spec.name], x = _extra_input(spec, crop_size)
        stems.append(_conv(x, width, stride=2, name=f"stem_{spec.name}"))
    x = stems[0] if len(stems) == 1 else layers.Concatenate(name="fuse")(stems)
    s2 = _sep(x, width)
    x = _sep(s2, 2 * width, stride=2)  # 1/4
    s4 = _sep(x, 2 * width)
    x = _sep(s4, 4 * width, stride=2)  # 1/8
    x = _sep(x, 4 * width, dilation=2)
    ctx = _sep(x, 4 * width, dilation=4)

    y = layers.Conv2DTranspose(2 * width, 4, strides=2, padding="same")(ctx)  # 1/4
    y = _sep(layers.Concatenate()([y, s4]), 2 * width)
    y = layers.Conv2DTranspose(width, 4, strides=2, padding="same")(y)  # 1/2
    y = _sep(layers.Concatenate()([y, s2]), width)
    # Outputs in float32 under a mixed-precision policy too: softmax and losses need the range. A 2×2 kernel at
    # stride 2: each full-resolution pixel comes from the one 1/2-resolution pixel above it (no checkerboard).
    main = layers.Conv2DTranspose(num_classes, 2, strides=2, padding="same", name="main", dtype="float32")(y)
    outputs = {"main": main}
    if arch == "multi":
        u = layers.UpSampling2D(2, interpolation="bilinear")(ctx)  # 1/4
        u = _sep(layers.Concatenate()([u, s4]), width)
        u = layers.Conv2D(num_classes, 1)(u)  # classify at 1/4, as DeepLab does, then upsample the logits
        outputs["upsample"] = layers.UpSampling2D(4, interpolation="bilinear", name="upsample",
                                                  dtype="float32")(u)  # 1/1
        outputs["aux"] = layers.Conv2D(num_classes, 1, name="aux", dtype="float32")(ctx)  # 1/8
    return keras.Model(inputs, outputs, name=f"segprep_{arch}")


def for_training(model: keras.Model, size: int | None = None, fuse_batch_norm: bool = True) -> keras.Model:
    """`model`'s own layers and weights as a training step calls them: on size × size inputs (`--train_crop_size`:
    a fully convolutional model trains on smaller crops than it is saved and evaluated at; an input of stride s
    gets size / s), and with every BatchNormalization's training statistics, nested models' included, computed by
    TensorFlow's fused kernel (`FusedBatchNorm`). The model itself, checkpointed and saved, keeps Keras's layers.
    A ValueError when the model's layers cannot take that size (deeplabv3plus's backbone is built for its crop)."""
    full = max(t.shape[1] for t in model.inputs)

    def spec(t):
        side = size * t.shape[1] // full
        return keras.Input((side, side, *t.shape[3:]), name=t.name, dtype=t.dtype)

    def layer(original):
        if fuse_batch_norm and type(original) is layers.BatchNormalization:
            return FusedBatchNorm(original)
        if fuse_batch_norm and isinstance(original, Functional):  # a nested model: deeplabv3plus's backbone
            return for_training(original)
        return original

    resized = size is not None and size != full
    twin = keras.models.clone_model(model, clone_function=layer,
                                    input_tensors=keras.tree.map_structure(spec, model.input) if resized else None)
    if {id(w) for w in twin.weights} != {id(w) for w in model.weights}:
        raise ValueError(f"{model.name} could not be rebuilt on {size} × {size} inputs with its own weights")
    return twin


class FusedBatchNorm(layers.Layer):
    """One of a model's BatchNormalization layers, its own weights, in a training step through TensorFlow's fused
    kernel: one op forward and one back where Keras 3 computes moments, square, normalisation and their gradients
    as a dozen separate ops over the whole tensor (a training step of the default model is 15-20% faster on CPU). The
    same batch statistics, output and moving-average updates as the layer's own training call, to float32
    rounding. Not for saving (trainer.model.for_training builds it for the training step only): whatever it cannot
    do as the layer would (inference, a frozen layer, statistics synchronised over several replicas, renorm, a
    channel axis other than the last of a 4-D input, a mask) it leaves to the layer itself."""

    def __init__(self, batch_norm: layers.BatchNormalization):
        super().__init__(name=f"{batch_norm.name}_fused", dtype=batch_norm.dtype_policy)
        self.batch_norm = batch_norm

    def call(self, inputs, training=None, mask=None):
        bn = self.batch_norm
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if (not (training and bn.trainable) or mask is not None or (bn.synchronized and replicas > 1) or bn.renorm
                or len(inputs.shape) != 4 or bn.axis not in (-1, 3)):
            return bn(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)
        channels = x.shape[-1]
        scale = bn.gamma.value if bn.scale else tf.ones([channels])
        offset = bn.beta.value if bn.center else tf.zeros([channels])
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(x, scale, offset, epsilon=bn.epsilon,
                                                             is_training=True)[:3]
        # The kernel's batch variance is the unbiased one (n / (n - 1)); Keras's moving average takes the biased.
        n = tf.cast(tf.size(x) // channels, tf.float32)
        variance = variance * ((n - 1.0) / n)
        bn.moving_mean.assign(bn.moving_mean * bn.momentum + mean * (1.0 - bn.momentum))
        bn.moving_variance.assign(bn.moving_variance * bn.momentum + variance * (1.0 - bn.momentum))
        return tf.cast(y, self.compute_dtype)


def _conv_bn(x, filters, kernel=1, dilation=1, separable=False, name=None):
    conv = layers.SeparableConv2D if separable else layers.Conv2D
    x = conv(filters, kernel, dilation_rate=dilation, padding="same", use_bias=False,
             name=None if name is None else f"{name}_conv")(x)
    x = layers.BatchNormalization(**_BN, name=None if name is None else f"{name}_bn")(x)
    return layers.ReLU(name=None if name is None else f"{name}_relu")(x)


def deeplabv3plus(num_classes: int, crop_size: int = 256, backbone: str = "mobilenetv2",
                  backbone_weights: str = "imagenet", filters: int = 256,
                  extras: tuple[ExtraSpec, ...] = ()) -> keras.Model:
    """DeepLabV3+ with the outputs of the other archs (see the module docstring). The backbone is one nested
    layer named "backbone" (`--freeze_backbone_epochs` freezes it); the model still takes raw uint8 RGB.

    `extras` go through a parallel stem beside the pretrained backbone (which stays RGB, as its weights were
    trained): the normalised extra inputs, concatenated, pass four strided 3×3 conv blocks, and their stride-4
    and stride-16 features are concatenated with the backbone's before the decoder and the ASPP."""
    from trainer import backbones

    if backbone not in backbones.SPECS:
        raise ValueError(f"backbone must be one of {tuple(backbones.SPECS)}. Received: {backbone!r}")
    if crop_size % 16:
        raise ValueError(f"crop_size must be a multiple of 16 for deeplabv3plus. Received: {crop_size}")
    _, encoder = backbones.build(backbone, crop_size, backbone_weights)
    image = keras.Input((crop_size, crop_size, 3), name="image")
    pre = backbones.preprocess(backbone)
    low, high = encoder(image if pre is None else pre(image))
    side = crop_size // 16
    inputs = {"image": image}
    if extras:
        normalised = []
        for spec in extras:
            inputs[spec.name], x = _extra_input(spec, crop_size)
            normalised.append(x)
        e = normalised[0] if len(normalised) == 1 else layers.Concatenate(name="extra_concat")(normalised)
        e = _conv(e, 32, stride=2, name="extra_stem_1")  # 1/2
        e4 = _conv(e, 48, stride=2, name="extra_stem_2")  # 1/4
        e = _conv(e4, 96, stride=2, name="extra_stem_3")  # 1/8
        e16 = _conv(e, 128, stride=2, name="extra_stem_4")  # 1/16
        low = layers.Concatenate(name="extra_fuse_low")([low, e4])
        high = layers.Concatenate(name="extra_fuse_high")([high, e16])

    pooled = layers.AveragePooling2D(side, name="aspp_pool")(high)
    pooled = _conv_bn(pooled, filters, name="aspp_pool")
    branches = [_conv_bn(high, filters, name="aspp_1x1"),
                *[_conv_bn(high, filters, 3, rate, separable=True, name=f"aspp_{rate}") for rate in (6, 12, 18)],
                layers.UpSampling2D(side, interpolation="nearest", name="aspp_pool_up")(pooled)]
    aspp = _conv_bn(layers.Concatenate(name="aspp_concat")(branches), filters, name="aspp_project")

    y = layers.UpSampling2D(4, interpolation="bilinear", name="decoder_up")(aspp)  # 1/16 → 1/4
    y = layers.Concatenate(name="decoder_concat")([y, _conv_bn(low, 48, name="decoder_low")])
    y = _conv_bn(y, filters, 3, separable=True, name="decoder_1")
    y = _conv_bn(y, filters, 3, separable=True, name="decoder_2")
    y = layers.Conv2D(num_classes, 1, name="decoder_logits")(y)
    outputs = {
        "main": layers.UpSampling2D(4, interpolation="bilinear", name="main", dtype="float32")(y),
        "upsample": layers.UpSampling2D(16, interpolation="bilinear", name="upsample", dtype="float32")(
            layers.Conv2D(num_classes, 1, name="aspp_logits")(aspp)),
        "aux": layers.Conv2D(num_classes, 1, name="aux", dtype="float32")(high),
    }
    return keras.Model(inputs, outputs, name=f"segprep_deeplabv3plus_{backbone}")
