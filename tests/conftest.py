"""Shared fixtures: a tiny VOC tree whose ground truth the tests know, and a reader with DeepLab's feature spec."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from segprep import codec, layout  # noqa: E402
from segprep.formats.shards import is_shard
from masks import jpeg_damaged, voc_like_mask  # noqa: E402,F401 - re-exported for the tests
from segprep.palette import IGNORE_LABEL, VOC, VOC_BORDER_COLOR  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class Tree:
    root: str
    images: dict  # id → RGB image as written (before JPEG)
    classes: dict  # id → class-index ground truth
    splits: dict  # split → [ids]


def _pair(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth image (so JPEG error stays small) and a mask with aeroplane, boat and person blocks and a
    VOC border."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.uniform(40, 200, 3)
    image = base + 30 * np.sin(yy[..., None] / rng.uniform(9, 15) + np.array([0, 1, 2])) \
        + 30 * np.cos(xx[..., None] / rng.uniform(9, 15))
    classes = np.zeros((h, w), np.uint8)
    for cls in (1, 4, 15):
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        classes[y0:y0 + max(4, h // 3), x0:x0 + max(4, w // 3)] = cls
    edge = np.zeros_like(classes, bool)
    edge[1:] |= classes[1:] != classes[:-1]
    edge[:, 1:] |= classes[:, 1:] != classes[:, :-1]
    classes[edge] = IGNORE_LABEL
    return np.clip(image, 0, 255).astype(np.uint8), classes


def mask_colors() -> np.ndarray:
    colors = VOC.color_array()
    colors[IGNORE_LABEL] = VOC_BORDER_COLOR
    return colors


def write_pair(root: str, image_id: str, image: np.ndarray, classes: np.ndarray, kind: str = "color") -> None:
    os.makedirs(os.path.join(root, layout.IMAGE_DIR), exist_ok=True)
    os.makedirs(os.path.join(root, layout.MASK_DIR), exist_ok=True)
    with open(layout.image_path(root, image_id), "wb") as f:
        f.write(codec.encode_image(image, "jpeg", quality=97))
    if kind == "palette":
        data = codec.encode_palette_png(classes, mask_colors())
    elif kind == "index":
        data = codec.encode_index_png(classes)
    else:
        data = codec.encode_image(mask_colors()[classes], "png")
    with open(layout.mask_path(root, image_id), "wb") as f:
        f.write(data)


def write_lists(root: str, splits: dict) -> None:
    os.makedirs(os.path.join(root, layout.SPLIT_DIR), exist_ok=True)
    for split, ids in splits.items():
        with open(layout.split_path(root, split), "w") as f:
            f.write("\n".join(ids) + "\n")


@pytest.fixture
def voc_tree(tmp_path) -> Tree:
    """Five pairs: train has a 150×220 photo, a 40×70 one smaller than a 64 crop both ways, and a 130×50 one
    (palette mask); val has a 100×90 (index mask) and a 64×64."""
    return make_voc_tree(str(tmp_path / "voc"))


def make_voc_tree(root: str) -> Tree:
    """The `voc_tree` fixture's five pairs, written under `root` (the same bytes every time)."""
    rng = np.random.default_rng(7)
    sizes = {"t1": (150, 220, "color"), "t2": (40, 70, "color"), "t3": (130, 50, "palette"),
             "v1": (100, 90, "index"), "v2": (64, 64, "color")}
    tree = Tree(root, {}, {}, {"train": ["t1", "t2", "t3"], "val": ["v1", "v2"]})
    for image_id, (h, w, kind) in sizes.items():
        image, classes = _pair(rng, h, w)
        write_pair(root, image_id, image, classes, kind)
        tree.images[image_id] = codec.decode_image(open(layout.image_path(root, image_id), "rb").read())
        tree.classes[image_id] = classes
    write_lists(root, tree.splits)
    return tree


def prepared_tree(base: str, crops_per_image: int) -> tuple[str, Tree]:
    """`make_voc_tree` under `base`/voc, prepared into `base`/records with 64² crops: → (records dir, tree)."""
    from pipelines import prepare

    tree = make_voc_tree(os.path.join(base, "voc"))
    out = os.path.join(base, "records")
    assert prepare.run(["--input_dir", tree.root, "--output_dir", out, "--crop_size", "64",
                        "--crops_per_image", str(crops_per_image), "--runner=DirectRunner"]) == 0
    return out, tree


def read_records(paths: list[str]) -> list[dict]:
    """Every record in `paths`, parsed with DeepLab's own feature spec (plus the crop keys) and decoded with TF's
    codecs, as DeepLab's data_generator does."""
    import tensorflow as tf

    spec = {
        "image/encoded": tf.io.FixedLenFeature((), tf.string, default_value=""),
        "image/filename": tf.io.FixedLenFeature((), tf.string, default_value=""),
        "image/format": tf.io.FixedLenFeature((), tf.string, default_value="jpeg"),
        "image/height": tf.io.FixedLenFeature((), tf.int64, default_value=0),
        "image/width": tf.io.FixedLenFeature((), tf.int64, default_value=0),
        "image/segmentation/class/encoded": tf.io.FixedLenFeature((), tf.string, default_value=""),
        "image/segmentation/class/format": tf.io.FixedLenFeature((), tf.string, default_value="png"),
        "image/crop/offset": tf.io.FixedLenFeature((2,), tf.int64),
        "image/source_id": tf.io.FixedLenFeature((), tf.string),
        "image/channels": tf.io.FixedLenFeature((), tf.int64),
        "image/source/height": tf.io.FixedLenFeature((), tf.int64),
        "image/source/width": tf.io.FixedLenFeature((), tf.int64),
    }
    out = []
    compression = "GZIP" if paths and paths[0].endswith(".gz") else None
    for raw in tf.data.TFRecordDataset(paths, compression_type=compression):
        f = tf.io.parse_single_example(raw, spec)
        rec = {k: v.numpy() for k, v in f.items()}
        rec["image"] = tf.io.decode_image(f["image/encoded"], channels=3).numpy()
        rec["mask"] = tf.io.decode_png(f["image/segmentation/class/encoded"], channels=1).numpy()[..., 0]
        rec["raw"] = raw.numpy()
        out.append(rec)
    return out


def shard_files(out: str, split: str) -> list[str]:
    return sorted(os.path.join(out, n) for n in os.listdir(out) if is_shard(n) and n.startswith(split + "-"))


def grey_png(values: np.ndarray, depth: int) -> bytes:
    """A grey PNG (colour type 0) of `values` at bit depth 1, 2, 4, 8 or 16, written by hand (Pillow cannot write
    2- and 4-bit grey). Rows are packed most significant bits first, as the PNG spec says."""
    import struct
    import zlib

    height, width = values.shape
    if depth == 16:
        raw = values.astype(">u2").tobytes()
        rows = [raw[i * width * 2:(i + 1) * width * 2] for i in range(height)]
    else:
        per_byte = 8 // depth
        padded = np.zeros((height, -(-width // per_byte) * per_byte), np.uint16)
        padded[:, :width] = values
        groups = padded.reshape(height, -1, per_byte)
        shifts = np.arange(per_byte)[::-1] * depth
        packed = (groups << shifts).sum(-1).astype(np.uint8)
        rows = [packed[i].tobytes() for i in range(height)]
    body = b"".join(b"\x00" + r for r in rows)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b""))


def pil_png(array: np.ndarray, mode: str, bits: int | None = None, palette: np.ndarray | None = None) -> bytes:
    """A PNG written by Pillow: mode "1" (1-bit grey), "P" (palette, `bits` 1/2/4/8), "I;16" (16-bit grey)."""
    import io

    from PIL import Image

    if mode == "1":
        image = Image.fromarray(array.astype(bool))
    elif mode == "I;16":
        image = Image.fromarray(array.astype(np.int32)).convert("I;16")
    else:
        image = Image.fromarray(array.astype(np.uint8), "P")
        image.putpalette(np.asarray(palette, np.uint8).ravel().tolist())
    buf = io.BytesIO()
    image.save(buf, "PNG", **({"bits": bits} if bits else {}))
    return buf.getvalue()


@pytest.fixture
def records(voc_tree, tmp_path):
    """`voc_tree` prepared into tmp_path/records: 64² crops, 6 a training image."""
    from pipelines import prepare

    out = str(tmp_path / "records")
    assert prepare.run(["--input_dir", voc_tree.root, "--output_dir", out, "--crop_size", "64",
                        "--crops_per_image", "6", "--runner=DirectRunner"]) == 0
    return out


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A run trained once for the session (one epoch on `make_voc_tree`'s pairs, 64² crops, 6 a training image,
    a width-8 model); tests get copies."""
    from trainer import training
    from trainer.model import build_model

    base = tmp_path_factory.mktemp("trained")
    out, _ = prepared_tree(str(base), crops_per_image=6)
    run = str(base / "run")
    training.fit(build_model(21, 64, width=8), out, run, training.TrainConfig(epochs=1, batch_size=4, lr=2e-3), verbose=0)
    return run


@pytest.fixture
def run_dir(trained_run, tmp_path):
    """A copy of the session's trained run, for this test to read and write."""
    import shutil

    shutil.copytree(trained_run, tmp_path / "run")
    return str(tmp_path / "run")


def with_exif(jpeg: bytes, orientation: int) -> bytes:
    """A JPEG with an APP1 EXIF segment holding only the Orientation tag, as a phone writes a photo it stored
    sideways."""
    import struct

    tiff = (b"MM\x00\x2a" + struct.pack(">IH", 8, 1) + struct.pack(">HHI", 0x0112, 3, 1)
            + struct.pack(">HH", orientation, 0) + b"\x00\x00\x00\x00")
    app1 = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


# The orientation that undoes each: a photo shown as D is stored as orient(D, UNDO[o]).
EXIF_UNDO = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}


def small_config(**kw):
    """A TrainConfig for the tests' tiny runs: 2 epochs of batches of 4 at lr 2e-3 unless `kw` says otherwise."""
    from trainer import training

    return training.TrainConfig(**{"epochs": 2, "batch_size": 4, "lr": 2e-3, **kw})
