"""tf.data input pipeline: the shards `python -m pipelines.prepare` wrote → batches of ({inputs}, {targets}).

Shard names and counts come from metadata.json (never from a glob, which would also match stale shards), so
steps per epoch are exact. Records are parsed with the same schema module the writer used.
"""

from __future__ import annotations

import math

import tensorflow as tf

from segprep.formats import metadata as md
from segprep.formats.shards import shard_pattern
from segprep import layout
from segprep.formats import records
from segprep.palette import IGNORE_LABEL
from trainer import common, normalization
from trainer.common import CROP_WEIGHT, Augment, DataError, load_metadata  # noqa: F401 - re-exported

AUTOTUNE = tf.data.AUTOTUNE
IMAGE = "image"  # the RGB input's name; every other input a model takes is an extra input of metadata.json


def split_files(meta: dict, data_dir: str, split: str) -> list[str]:
    try:
        files = meta.shard_paths(data_dir.rstrip("/"), split)
    except md.MetadataError as e:
        raise DataError(str(e)) from None
    if files and not meta.split(split).records:
        raise DataError(f"Split {split!r} in {data_dir} has no records: every input of it failed or none was listed "
                        f"(see {data_dir.rstrip('/')}/errors/{split}.jsonl).")
    missing = [f for f in files if not common.exists(f)]
    if missing or not files:
        pattern = f"{data_dir.rstrip('/')}/{shard_pattern(split)}"
        raise DataError(f"No records for split {split!r} at {missing[0] if missing else pattern}: metadata.json "
                        "names shards that are not there. Was `python -m pipelines.prepare` run with this "
                        "--output_dir?" if missing else
                        f"No records match {pattern}: the prepare run wrote none for {split!r}.")
    return files


def find_damage(meta: dict, data_dir: str, splits: list[str]) -> str | None:
    """"SHARD: record N: what is wrong" for the first damaged record (broken framing, a cut-short file, an image
    or mask that does not decode, a mask value that is no class) in the splits' shards, as `segprep.verify`
    finds it; None if every record reads. Used only after a read failed: TensorFlow's own error names an offset
    or an op, not the file."""
    from segprep import verify

    for split in splits:
        entry = meta.split(split)
        for name, expected in zip(entry.shards, entry.shard_records):
            _, problems = verify.check_shard(layout.join(data_dir.rstrip("/"), name), expected,
                                             meta.num_classes, quick=False, nan_inputs=meta.nan_inputs)
            if problems:
                return problems[0]
    return None


def damaged(error: Exception, meta: dict, data_dir: str, splits: list[str]) -> DataError | None:
    """A one-line DataError naming the damaged record behind a TensorFlow read `error`, or None when the shards
    are whole (then the error is not the data's)."""
    broken = find_damage(meta, data_dir, splits)
    if broken is None:
        return None
    return DataError(f"damaged shard {broken}. Re-run `python -m pipelines.prepare --overwrite` (`python -m "
                     f"segprep.verify {data_dir}` lists every damaged record).")


def steps(meta: dict, split: str, batch_size: int) -> int:
    return max(1, math.ceil(meta.split(split).records / batch_size))


def feature_spec() -> dict:
    """The parser spec of a crop record, from the schema's table: a list of any length (class presence) parses
    to a 1-D tensor, empty in records written before segprep recorded it."""
    def one(key, kind, n):
        dtype = tf.string if kind == "bytes" else tf.int64
        if n is None:
            return tf.io.RaggedFeature(dtype)
        if key in records.OPTIONAL and n == 1:  # e.g. the geo keys, only in crops of georeferenced sources
            return tf.io.FixedLenFeature((), dtype, default_value=b"" if kind == "bytes" else 0)
        return tf.io.FixedLenFeature((n,) if n > 1 else (), dtype)

    return {key: one(key, kind, n) for key, (kind, n) in records.FEATURES.items()}


def crop_weight(present: tf.Tensor, factors: tf.Tensor) -> tf.Tensor:
    """A crop's loss weight: the largest of its classes' `factors` (the classes in its class/present list), 1 for a
    crop with none (all ignore, or a record written before presence was recorded)."""
    return tf.reduce_max(tf.concat([tf.ones([1], tf.float32), tf.gather(factors, present)], 0))


def extra_spec(extras: dict) -> dict:
    """The parser spec of the extra inputs `extras` ({name: ExtraInfo}) a model reads."""
    return {records.extra_key(name, field): tf.io.FixedLenFeature((), tf.int64 if field == "channels" else tf.string)
            for name in extras for field in records.EXTRA_FIELDS}


def decode_extra(f: dict, name: str, info, crop_size: int) -> tf.Tensor:
    """An extra input's crop of a parsed record → float32 [S, S, C], every value as stored: a PNG of its own depth
    (8 or 16 bits), or zlib-compressed raw little-endian float32. Pixels that hold no data (a nodata value its
    rasters declared, `info.nodata`) become the band's mean, which the model's normalisation makes 0. A record
    whose crop is not what metadata.json says (format, type, bands) fails the read, as a broken image does."""
    key = lambda field: f[records.extra_key(name, field)]  # noqa: E731
    channels, dtype = int(info.channels), info.dtype
    if dtype == "float32":
        check = tf.debugging.assert_equal(key("format"), tf.constant("raw"), message=f"extra input {name}: format")
        with tf.control_dependencies([check]):
            flat = tf.io.decode_raw(tf.io.decode_compressed(key("encoded"), "ZLIB"), tf.float32, little_endian=True)
        x = tf.reshape(flat, (crop_size, crop_size, channels))
    else:
        x = tf.io.decode_png(key("encoded"), channels=channels, dtype=tf.uint16 if dtype == "uint16" else tf.uint8)
    x = tf.ensure_shape(tf.cast(x, tf.float32), (crop_size, crop_size, channels))
    return fill_no_data(x, info.nodata, info.mean)


def fill_no_data(x, nodata, mean):
    """`x` (float32, bands last) with its no-data pixels — equal to a value of `nodata`, or NaN where NaN is one —
    set to the band's `mean`."""
    if not nodata:
        return x
    empty = tf.zeros_like(x, tf.bool)
    for value in nodata:
        empty |= tf.math.is_nan(x) if value != value else tf.equal(x, value)
    return tf.where(empty, tf.constant(mean, tf.float32), x)


def decode_rgb(encoded: tf.Tensor) -> tf.Tensor:
    """A record's JPEG or PNG image → uint8 [H, W, 3]. JPEGs with the accurate integer DCT (libjpeg's ISLOW), the one
    OpenCV decodes with: TensorFlow's default (IFAST) differs by up to ~10 levels on textured crops, so with it the
    trainer would see other pixels than predict (which decodes new images with OpenCV) and segprep.torch do."""
    return tf.cond(tf.io.is_jpeg(encoded),
                   lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
                   lambda: tf.io.decode_png(encoded, channels=3))


def decode(serialized: tf.Tensor, crop_size: int, factors: tf.Tensor | None = None, extras: dict | None = None):
    """One record → (image uint8 [S, S, 3], mask uint8 [S, S, 1]), and its `crop_weight` with `factors`. With
    `extras` ({name: ExtraInfo} of metadata.json), the first is a dict {"image": image, name: float32 [S, S, C]}."""
    f = tf.io.parse_single_example(serialized, {**feature_spec(), **extra_spec(extras or {})})
    image = decode_rgb(f[records.IMAGE_ENCODED])
    mask = tf.io.decode_png(f[records.MASK_ENCODED], channels=1)
    image = tf.ensure_shape(image, (crop_size, crop_size, 3))
    mask = tf.ensure_shape(mask, (crop_size, crop_size, 1))
    if extras:
        image = {IMAGE: image, **{name: decode_extra(f, name, info, crop_size) for name, info in extras.items()}}
    if factors is not None:
        return image, mask, crop_weight(f[records.CLASS_PRESENT], factors)
    return image, mask


def _uniform(seed, lo=0.0, hi=1.0):
    """One uniform draw: stateless from `seed` (a [2] int64 key), else from TensorFlow's global generator."""
    if seed is None:
        return tf.random.uniform((), lo, hi)
    return tf.random.stateless_uniform((), seed, lo, hi)


def _window_offset(seed, size: int, window: int) -> tf.Tensor:
    """The [2] (row, column) corner of a random window × window part of a size × size crop."""
    if seed is None:
        return tf.random.uniform([2], 0, size - window + 1, tf.int32)
    return tf.random.stateless_uniform([2], seed, 0, size - window + 1, tf.int32)


def _affine(image: tf.Tensor, mask: tf.Tensor, aug: Augment, size: int, seeds=(None, None), window: int | None = None,
            offset: tf.Tensor | None = None):
    """One random scale/rotation about the centre, applied to both: bilinear for the image, nearest for the mask,
    padding 0 / 255. With `window` and `offset`, only that window × window part of the result is computed."""
    scale = _uniform(seeds[0], *aug.scale) if aug.scale else tf.constant(1.0)
    angle = _uniform(seeds[1], -1.0, 1.0) * aug.rotate_degrees * math.pi / 180.0
    c = (size - 1) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    # Output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2); a window's pixel (x, y) is the whole
    # output's (x + column, y + row).
    a2, b2 = c - cos * c + sin * c, c - sin * c - cos * c
    out = size
    if window is not None:
        row, col = tf.unstack(tf.cast(offset, tf.float32))
        a2, b2, out = a2 + cos * col - sin * row, b2 + sin * col + cos * row, window
    transform = tf.stack([cos, -sin, a2, sin, cos, b2, 0.0, 0.0])[None]

    def warp(x, interpolation, fill):
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=x[None], transforms=transform, output_shape=[out, out], fill_value=fill,
            interpolation=interpolation, fill_mode="CONSTANT")[0]

    image = warp(tf.cast(image, tf.float32), "BILINEAR", 0.0)
    mask = tf.cast(warp(tf.cast(mask, tf.float32), "NEAREST", float(IGNORE_LABEL)), tf.uint8)
    return image, mask


def augment(image, mask: tf.Tensor, aug: Augment, size: int, seed: tf.Tensor | None = None,
            window: int | None = None):
    """One example's paired augmentation: one random draw, applied to image and mask alike. `image` is the RGB
    crop, or a dict of every input's crop ({"image": RGB, "dsm": ...}, as `decode` gives them): all of them are
    flipped, scaled, rotated and windowed by the same draw, resampled bilinearly (padding 0), the mask nearest.
    With `seed` (a [2] int64 key) the draws are stateless, a function of the key alone; without, they come from
    TensorFlow's global generator. With `window` < `size`, the result is a random window × window part of the
    augmented crop (its corner drawn from the same key): the smaller crops of `--train_crop_size`."""
    if isinstance(image, dict):  # every input in one float32 tensor, so one op moves them all alike
        names = list(image)
        joined = tf.concat([tf.cast(image[n], tf.float32) for n in names], -1)
        joined, mask = augment(joined, mask, aug, size, seed, window)
        parts = dict(zip(names, tf.split(joined, [image[n].shape[-1] for n in names], -1)))
        resampled = bool(aug.scale or aug.rotate_degrees)  # else flips and windows only: values unchanged
        return {n: p if resampled else tf.cast(p, image[n].dtype) for n, p in parts.items()}, mask
    seeds = [None] * 3 if seed is None else tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    offset = None
    if window is not None and window < size:
        offset = _window_offset(None if seed is None else tf.random.experimental.stateless_fold_in(seed, 3), size,
                                window)
    if aug.flip:
        flip = _uniform(seeds[0]) < 0.5  # one draw for both
        image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
        mask = tf.cond(flip, lambda: tf.reverse(mask, [1]), lambda: mask)
    if aug.scale or aug.rotate_degrees:
        return _affine(image, mask, aug, size, seeds[1:], None if offset is None else window, offset)
    if offset is not None:
        image = tf.slice(image, [offset[0], offset[1], 0], [window, window, image.shape[-1]])
        mask = tf.slice(mask, [offset[0], offset[1], 0], [window, window, 1])
    return image, mask


def epoch_key(seed: int, epoch) -> tf.Tensor:
    """The [2] int64 key every random draw of a training epoch derives from: its file order, its record order and
    each crop's augmentation are pure functions of (seed, epoch), as prepare keys its crops by (seed, id, k)."""
    return tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])


def _fold(key, *data):
    for d in data:
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(d, tf.int64))
    return key


def make_dataset(data_dir: str, split: str, batch_size: int, *, training: bool,
                 inputs: dict[str, int] | None = None, targets: dict[str, int] | None = None,
                 aug: Augment = Augment(), normalize: tuple | None = None, seed: int | None = 0,
                 shuffle_buffer: int = 2048, meta=None, pad_batches: bool = False,
                 crop_weights: list[float] | None = None, start_epoch: int = 0,
                 window: int | None = None) -> tf.data.Dataset:
    """Batches of ({input name: image}, {output name: mask}) for `split`.

    Images stay uint8 as decoded (for models that normalise themselves, as trainer.model's do), or with
    `normalize` = (mean, std) become float32 (x - mean) / std (see trainer/normalization.py). `inputs` and
    `targets` map each model input / output name to its stride: an input of stride 2 gets the image
    at half resolution, an output of stride 8 gets the mask nearest-downsampled 8×. With `crop_weights` (a factor
    per class), each batch's targets also hold `CROP_WEIGHT`: every crop's `crop_weight`, read from its
    class/present list.

    Training data is a sequence of epochs from `start_epoch` on, each exactly `steps(meta, split, batch_size)`
    batches, and each a pure function of (`seed`, epoch): the shards in an order drawn from that key, read
    several at once in a fixed rotation, the records shuffled in blocks of `shuffle_buffer` by a key per block,
    the last batch filled up from the epoch's own start, and every crop's augmentation drawn statelessly from a key
    per position; with `window` smaller than the crop size, each training crop is a random window × window part of
    the augmented crop (evaluation data stays whole). So the same seed gives the same batches on every run, at any
    parallelism, and a run resumed at epoch e (`start_epoch=e`) sees what an uninterrupted one saw from e on.
    `seed=None` draws a seed at random. Evaluation data is one pass in record order per epoch, repeated, so
    `steps(...)` validation steps read it exactly once; with `pad_batches`, its last batch is padded to full size
    with ignored examples (`_pad_batch`)."""
    meta = meta or load_metadata(data_dir)
    files = split_files(meta, data_dir, split)
    size = meta.crop_size
    if window is not None and not 0 < window <= size:
        raise ValueError(f"Argument `window` must be in [1, crop size {size}]. Received: window={window}")
    inputs = inputs or {IMAGE: 1}
    extras = extra_inputs(meta, inputs, data_dir)
    if training and seed is None:
        seed = int(tf.random.uniform((), 0, 2 ** 31 - 1, tf.int64))
    factors = None if crop_weights is None else tf.constant(list(crop_weights) + [1.0] * (256 - len(crop_weights)),
                                                            tf.float32)
    ds = _records(files, shard_reader(meta), steps(meta, split, batch_size) * batch_size if training else None,
                  seed, start_epoch, shuffle_buffer)

    def decode_one(serialized, key):
        image, mask, *weight = decode(serialized, size, factors, extras)
        if training:
            image, mask = augment(image, mask, aug, size, key, window)
        return (image, mask, *weight)

    # Parallel, in order: `deterministic=True` costs a little head-of-line waiting, and buys repeatable runs.
    ds = ds.map(decode_one, num_parallel_calls=AUTOTUNE, deterministic=True)
    if normalize is not None and extras:  # the pipeline normalises: each extra input by its own statistics
        normalize = {IMAGE: normalize, **{name: (list(info.mean), normalization.floored(info.std))
                                          for name, info in extras.items()}}
    return _batches(ds, batch_size, training, pad_batches, inputs, targets or {"main": 1}, normalize)


def is_image_input(name: str) -> bool:
    """Whether a model input named `name` takes the RGB image ("image", or "image_half" at another stride)."""
    return name == IMAGE or name.startswith(IMAGE + "_")


def extra_inputs(meta, inputs, where: str) -> dict:
    """{name: ExtraInfo} of the extra inputs among a model's `inputs` (names), from metadata.json; a DataError
    naming an input that the data does not hold."""
    out = {}
    for name in inputs:
        if is_image_input(name):
            continue
        info = meta.extra_inputs.get(name)
        if info is None or not info.channels:
            held = ", ".join(sorted(n for n, i in meta.extra_inputs.items() if i.channels)) or "none"
            raise DataError(f"The model takes an input {name!r} that {where.rstrip('/')} does not hold (its extra "
                            f"inputs: {held}); prepare the data with --extra_inputs '{name}=...', or train a model "
                            "without it (--inputs).")
        out[name] = info
    return out


def shard_reader(meta):
    """shard path (a string tensor) → a dataset of its serialized records in order, for the run's file format:
    TFRecordDataset, or ArrayRecord's reader behind `from_generator` (records in file order, one shard at a time)."""
    if meta.file_format == "array_record":
        spec = tf.TensorSpec((), tf.string)
        return lambda path: tf.data.Dataset.from_generator(_array_records, args=(path,), output_signature=spec)
    return lambda path: tf.data.TFRecordDataset(path, compression_type=meta.compression_type)


def _array_records(path: bytes):
    from segprep import storage
    from segprep.formats import array_record

    for _, data in array_record.read(path.decode(), files=storage.TENSORFLOW):
        yield data


def _records(files: list[str], reader, per_epoch: int | None, seed: int | None, start_epoch: int,
             shuffle_buffer: int) -> tf.data.Dataset:
    """(serialized record, augmentation key) pairs: training data (`per_epoch` records an epoch) as the epochs
    `make_dataset` describes, from `start_epoch` on; evaluation data (`per_epoch` None) one pass in record order,
    with a dummy key. `reader`: `shard_reader`'s function."""
    def read(names):
        return names.interleave(reader, cycle_length=min(len(files), 8), num_parallel_calls=AUTOTUNE,
                                deterministic=True)

    if per_epoch is None:
        return read(tf.data.Dataset.from_tensor_slices(files)).map(lambda record: (record, tf.zeros([2], tf.int64)))
    names = tf.constant(files)

    def epoch(e):
        key = epoch_key(seed, e)
        order = tf.data.Dataset.from_tensor_slices(tf.random.experimental.stateless_shuffle(names, _fold(key, 0)))
        blocks = read(order).batch(shuffle_buffer).enumerate()
        records = blocks.map(lambda j, block: tf.random.experimental.stateless_shuffle(block, _fold(key, 1, j)))
        records = records.unbatch().repeat().take(per_epoch)  # the last batch: filled from the epoch's start
        return records.enumerate().map(lambda i, record: (record, _fold(key, 2, i)))

    # One epoch after another, never crossing: an epoch's batches hold its own records only.
    return tf.data.Dataset.range(start_epoch, 2 ** 62).flat_map(epoch)


def _batches(ds: tf.data.Dataset, batch_size: int, training: bool, pad_batches: bool, inputs: dict[str, int],
             targets: dict[str, int], normalize) -> tf.data.Dataset:
    """Decoded (image, mask[, weight]) examples → batches of ({input: image}, {output: mask}) at each one's stride,
    normalised when `normalize` = (mean, std) (a dict of them by input with extra inputs); evaluation data
    repeated (each pass is `steps` batches). An input named for an extra input gets that input, any other the
    image."""
    def to_batch(images, masks, *weights):
        # Normalisation and targets run on whole batches: far fewer ops than per example. (Flips stay per
        # example: a tf.cond reverses only when drawn, where a batched tf.where costs more than decoding.)
        rasters = images if isinstance(images, dict) else {IMAGE: images}
        norms = normalize if isinstance(normalize, dict) or normalize is None else {IMAGE: normalize}
        rasters = {name: x if norms is None else normalization.normalize(x, *norms[name])
                   for name, x in rasters.items()}
        side = masks.shape[1]  # the crop size, or the training window
        feats = {}
        for name, s in inputs.items():
            x = rasters[IMAGE if is_image_input(name) else name]
            feats[name] = x if s == 1 else tf.image.resize(tf.cast(x, tf.float32), (side // s, side // s),
                                                           antialias=True)
        labels = {name: (masks if s == 1 else masks[:, s // 2::s, s // 2::s]) for name, s in targets.items()}
        if weights:
            labels[CROP_WEIGHT] = weights[0]
        return feats, labels

    ds = ds.batch(batch_size, drop_remainder=training)
    if pad_batches and not training:
        ds = ds.map(lambda images, masks: _pad_batch(images, masks, batch_size))
    ds = ds.map(to_batch, num_parallel_calls=AUTOTUNE, deterministic=True)
    if not training:
        ds = ds.repeat()
    return ds.prefetch(AUTOTUNE)


def _pad_batch(images, masks, batch_size: int):
    """A short last batch filled up with black images (zero extra inputs) whose masks are all 255 (ignored):
    every batch then has the same static size (TPUs need it, and no replica of a distributed step gets an empty
    share), while losses and confusion matrices, which skip 255, are exactly those of the real examples."""
    def fill(x, value):
        missing = batch_size - tf.shape(x)[0]
        pad = tf.fill(tf.concat([[missing], tf.shape(x)[1:]], 0), tf.constant(value, x.dtype))
        return tf.ensure_shape(tf.concat([x, pad], 0), [batch_size] + x.shape[1:])

    return tf.nest.map_structure(lambda x: fill(x, 0), images), fill(masks, IGNORE_LABEL)


def strides_of(model) -> tuple[dict[str, int], dict[str, int]]:
    """Each model input's and output's stride relative to the first input, from their static shapes."""
    full = max(t.shape[1] for t in model.inputs)
    ins = {t.name: full // t.shape[1] for t in model.inputs}
    outs = {name: full // t.shape[1] for name, t in zip(model.output_names, model.outputs)}
    return ins, outs
