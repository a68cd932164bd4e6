"""trainer/data.py: the input pipeline on shards the real prepare pipeline wrote: shapes, values, steps, paired
augmentation, training windows."""

import math
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import read_records, shard_files
from segprep import codec
from pipelines import prepare
from segprep import layout
from trainer import data


def test_input_pipeline_shapes_dtypes_and_values(records):
    meta = data.load_metadata(records)
    # Flips only: the crops stay uint8 (scaling and rotation resample the image in float32).
    ds = data.make_dataset(records, "train", 4, training=True, targets={"main": 1, "aux": 8}, seed=0,
                           aug=data.Augment(scale=None, rotate_degrees=0))
    for x, y in ds.take(3):
        assert set(x) == {"image"} and set(y) == {"main", "aux"}
        assert x["image"].shape == (4, 64, 64, 3) and x["image"].dtype == tf.uint8  # the model normalises
        assert y["main"].shape == (4, 64, 64, 1) and y["main"].dtype == tf.uint8
        assert y["aux"].shape == (4, 8, 8, 1)
        values = set(np.unique(y["main"].numpy()))
        assert values <= set(range(meta.num_classes)) | {255} and values & {1, 4, 15}
        np.testing.assert_array_equal(y["aux"].numpy(), y["main"].numpy()[:, 4::8, 4::8])  # nearest, not blended
    # Normalised with the training crops' statistics from metadata.json, in record order for evaluation.
    x = np.concatenate([b[0]["image"].numpy() for b in data.make_dataset(records, "val", 2, training=False,
                                                                         normalize=(meta.rgb_mean, meta.rgb_std))
                        .take(data.steps(meta, "val", 2))])
    decoded = np.stack([codec.decode_image(r["image/encoded"]) for r in read_records(shard_files(records, "val"))])
    decoded = decoded.astype(np.float32)  # the trainer decodes JPEGs as OpenCV does (accurate DCT)
    np.testing.assert_allclose(x, (decoded - meta.rgb_mean) / np.array(meta.rgb_std), rtol=1e-5, atol=1e-5)
    assert 100 < meta.rgb_mean[0] < 200  # the fixture's images, not a default


def test_steps_come_from_metadata_and_validation_is_one_exact_pass(records):
    meta = data.load_metadata(records)
    n = meta.splits["val"].records
    assert data.steps(meta, "val", 2) == math.ceil(n / 2)
    ds = data.make_dataset(records, "val", 2, training=False)
    seen = sum(int(b[0]["image"].shape[0]) for b in ds.take(data.steps(meta, "val", 2)))
    assert seen == n
    again = [b[1]["main"].numpy() for b in ds.take(2 * data.steps(meta, "val", 2))]
    first, second = again[: len(again) // 2], again[len(again) // 2:]
    assert all((a == b).all() for a, b in zip(first, second))  # deterministic and aligned pass after pass


def test_paired_augmentation_keeps_image_and_mask_aligned():
    # Image channel 0 = 10 × class, in 16-px blocks, so every mask pixel says what its image pixel must be.
    classes = np.kron(np.arange(16).reshape(4, 4) % 5, np.ones((16, 16), np.uint8)).astype(np.uint8)
    image = np.repeat((classes * 10)[..., None], 3, -1).astype(np.uint8)
    aug = data.Augment(flip=True, scale=(0.7, 1.4), rotate_degrees=30)
    tf.random.set_seed(1)
    for _ in range(10):
        img, mask = data.augment(tf.constant(image), tf.constant(classes[..., None]), aug, 64)
        img, mask = np.asarray(img)[..., 0], np.asarray(mask)[..., 0]
        assert set(np.unique(mask)) <= set(np.unique(classes)) | {255}  # nearest only: no invented classes
        valid = mask != 255
        # Away from block edges (where bilinear blends), the image value is 10 × the mask's class.
        agree = np.abs(img[valid] - 10.0 * mask[valid]) < 1.0
        assert agree.mean() > 0.8


def test_training_windows_are_parts_of_the_augmented_crop_at_one_offset_for_image_and_mask(records):
    """--train_crop_size: a training crop is a random window of what the whole crop's augmentation gives (flips,
    scale, rotation), cut at one corner for image and mask, drawn from the crop's own key; evaluation stays whole."""
    size, window = 64, 40
    rows, cols = np.mgrid[:size, :size]
    image = np.stack([cols * 4, rows * 4, np.full_like(rows, 9)], -1).astype(np.uint8)  # each pixel names its place
    classes = ((rows // 16 + cols // 16) % 5).astype(np.uint8)[..., None]
    corners = set()
    for aug in (data.Augment(scale=None, rotate_degrees=0), data.Augment(scale=(0.7, 1.4), rotate_degrees=30)):
        for k in range(8):
            key = tf.constant([7, k], tf.int64)
            whole_image, whole_mask = (np.asarray(t) for t in data.augment(image, classes, aug, size, key))
            part_image, part_mask = (np.asarray(t) for t in data.augment(image, classes, aug, size, key, window))
            assert part_image.shape == (window, window, 3) and part_mask.shape == (window, window, 1)
            gap = {(r, c): np.abs(part_image.astype(np.float32) - whole_image[r:r + window, c:c + window]).max()
                   for r in range(size - window + 1) for c in range(size - window + 1)}
            (r, c), best = min(gap.items(), key=lambda item: item[1])
            assert best < 0.01, best  # the same pixels (the warp computes only the window's)
            agree = (part_mask == whole_mask[r:r + window, c:c + window]).mean()
            assert agree == 1.0 if aug.scale is None else agree > 0.999
            corners.add((r, c))
            again = data.augment(image, classes, aug, size, key, window)
            assert all(np.array_equal(a, b) for a, b in zip(again, (part_image, part_mask)))  # a pure function
    assert len(corners) >= 6 and max(max(rc) for rc in corners) > size - window - 8  # drawn, across the range
    # Through the pipeline: training batches are windows with their targets cut alike, validation whole crops.
    ds = data.make_dataset(records, "train", 4, training=True, targets={"main": 1, "aux": 8}, window=48)
    x, y = next(iter(ds))
    assert x["image"].shape == (4, 48, 48, 3) and y["main"].shape == (4, 48, 48, 1) and y["aux"].shape == (4, 6, 6, 1)
    np.testing.assert_array_equal(y["aux"].numpy(), y["main"].numpy()[:, 4::8, 4::8])
    x, _ = next(iter(data.make_dataset(records, "val", 4, training=False, window=48)))
    assert x["image"].shape == (4, 64, 64, 3)


def test_a_split_whose_inputs_all_failed_is_named_not_trained_on(voc_tree, tmp_path):
    for image_id in voc_tree.splits["val"]:
        os.remove(layout.mask_path(voc_tree.root, image_id))
    out = str(tmp_path / "out")
    assert prepare.run(["--input_dir", voc_tree.root, "--output_dir", out, "--crop_size", "64",
                        "--runner=DirectRunner"]) == 1
    meta = data.load_metadata(out)
    assert meta.splits["val"].shards == ("val-00000-of-00001.tfrecord",)  # one empty shard, as named
    with pytest.raises(data.DataError, match="Split 'val' .* has no records"):
        data.make_dataset(out, "val", 2, training=False)
