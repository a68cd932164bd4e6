"""Small trees in the exact layouts and file kinds of the archives docs/datasets.md names, with the
ground truth a test checks crops against: the image as stored and the class map the dataset's own definition
gives. Every file is written by a real codec (OpenCV for PNG/JPEG, tifffile for TIFF, with compression)."""

from __future__ import annotations

import dataclasses
import json
import os

import cv2
import numpy as np
import tifffile

from segprep import codec
from segprep.palette import IGNORE_LABEL, shipped


@dataclasses.dataclass
class Archive:
    root: str
    images: dict = dataclasses.field(default_factory=dict)  # (split, id) → RGB image (H, W, 3) uint8 as decoded
    classes: dict = dataclasses.field(default_factory=dict)  # (split, id) → expected class map (H, W) uint8
    extra: dict = dataclasses.field(default_factory=dict)  # anything else a test wants to know
    surfaces: dict = dataclasses.field(default_factory=dict)  # Potsdam: id → (DSM, nDSM)


def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth RGB picture (so JPEG error stays small and a shifted or swapped crop shows)."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.uniform(50, 200, 3)
    image = (base + 35 * np.sin(yy[..., None] / rng.uniform(8, 14) + np.array([0.0, 1.0, 2.0]))
             + 30 * np.cos(xx[..., None] / rng.uniform(8, 14) + np.array([2.0, 0.0, 1.0])))
    return np.clip(image, 0, 255).astype(np.uint8)


def blocks(rng: np.random.Generator, h: int, w: int, values, size: int = 24) -> np.ndarray:
    """A label map of `size`² blocks, each one of `values`, so every crop holds several."""
    values = np.asarray(values)
    grid = rng.choice(values, size=(-(-h // size), -(-w // size)))
    return np.kron(grid, np.ones((size, size), grid.dtype))[:h, :w]


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def png(rgb_or_grey: np.ndarray) -> bytes:
    arr = rgb_or_grey[..., ::-1] if rgb_or_grey.ndim == 3 else rgb_or_grey
    ok, out = cv2.imencode(".png", np.ascontiguousarray(arr))
    assert ok
    return out.tobytes()


def tiff(path: str, array: np.ndarray, **kwargs) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tifffile.imwrite(path, array, **kwargs)


def cityscapes(root: str) -> Archive:
    """leftImg8bit/{split}/{city}/{id}_leftImg8bit.png and gtFine/{split}/{city}/{id}_gtFine_{labelIds,color,
    instanceIds}.png (+ polygons.json); test masks are placeholders; a macOS '._' shadow file sits beside one."""
    a = Archive(root)
    rng = np.random.default_rng(1)
    table = np.full(256, IGNORE_LABEL, np.uint8)
    for value, target in shipped("cityscapes").index_map:
        table[value] = target
    colors = np.zeros((256, 3), np.uint8)
    layout = {"train": ["aachen", "bochum"], "val": ["frankfurt"], "test": ["berlin"]}
    for split, cities in layout.items():
        for city in cities:
            for n in range(2):
                image_id = f"{city}_{n:06d}_{19 + n:06d}"
                image = smooth_image(rng, 200, 400)
                labels = blocks(rng, 200, 400, np.arange(34)).astype(np.uint8)
                if split == "test":
                    labels[:] = 0  # Cityscapes ships placeholder test labels
                base = f"{root}/gtFine/{split}/{city}/{image_id}_gtFine_"
                _write(f"{root}/leftImg8bit/{split}/{city}/{image_id}_leftImg8bit.png", png(image))
                _write(base + "labelIds.png", png(labels))
                _write(base + "color.png", png(colors[labels]))
                _write(base + "instanceIds.png", png(labels.astype(np.uint16) * 1000))
                _write(base + "polygons.json", json.dumps({"imgHeight": 200, "imgWidth": 400}).encode())
                if split != "test":
                    a.images[(split, image_id)] = image
                    a.classes[(split, image_id)] = table[labels]
    _write(f"{root}/leftImg8bit/train/aachen/._aachen_000000_000019_leftImg8bit.png", b"\x00\x05\x16\x07junk")
    return a


def ade20k(root: str) -> Archive:
    """ADEChallengeData2016: images/{training,validation}/ADE_*.jpg, annotations/.../ADE_*.png with 0 = other."""
    a = Archive(root)
    rng = np.random.default_rng(2)
    for split, prefix, count in (("training", "ADE_train", 3), ("validation", "ADE_val", 2)):
        for n in range(1, count + 1):
            image_id = f"{prefix}_{n:08d}"
            image = smooth_image(rng, 300, 280)
            labels = blocks(rng, 300, 280, [0, 1, 2, 3, 13, 150]).astype(np.uint8)
            data = codec.encode_image(image, "jpeg", 95)
            _write(f"{root}/images/{split}/{image_id}.jpg", data)
            _write(f"{root}/annotations/{split}/{image_id}.png", png(labels))
            a.images[(split, image_id)] = codec.decode_image(data)
            a.classes[(split, image_id)] = np.where(labels == 0, IGNORE_LABEL, labels - 1).astype(np.uint8)
    _write(f"{root}/objectInfo150.txt", b"Idx\tRatio\tTrain\tVal\tName\n1\t0.1576\t11664\t1172\twall\n")
    _write(f"{root}/sceneCategories.txt", b"ADE_train_00000001 airport_terminal\n")
    return a


def loveda(root: str) -> Archive:
    """{Train,Val}/{Rural,Urban}/images_png/{id}.png and masks_png/{id}.png (0 = no-data, 1-7 classes); Test has
    images only."""
    a = Archive(root)
    rng = np.random.default_rng(3)
    n = 0
    for split in ("Train", "Val", "Test"):
        for domain in ("Rural", "Urban"):
            for _ in range(2 if split == "Train" else 1):
                image_id = str(n)
                n += 1
                image = smooth_image(rng, 320, 320)
                labels = blocks(rng, 320, 320, np.arange(8)).astype(np.uint8)
                _write(f"{root}/{split}/{domain}/images_png/{image_id}.png", png(image))
                if split != "Test":
                    _write(f"{root}/{split}/{domain}/masks_png/{image_id}.png", png(labels))
                    a.images[(split, image_id)] = image
                    a.classes[(split, image_id)] = np.where(labels == 0, IGNORE_LABEL, labels - 1).astype(np.uint8)
    return a


POTSDAM_IDS = ("2_10", "2_11", "3_10", "4_12", "5_11")


def potsdam(root: str, bits16: bool = False) -> Archive:
    """2_Ortho_RGB/top_potsdam_{id}_RGB.tif (tiled, deflate), 4_Ortho_RGBIR/..._RGBIR.tif (4 bands, stripped,
    LZW, planar), 5_Labels_all/top_potsdam_{id}_label.tif (RGB-coded, LZW), and the surface models named with the
    tile numbers zero-padded: 1_DSM/dsm_potsdam_02_10.tif (float32 metres) and
    1_DSM_normalisation/dsm_potsdam_02_10_normalized_lastools.jpg (8-bit grey JPEG), in `a.surfaces[id]` as
    (dsm, ndsm as decoded). With `bits16` the RGBIR tiles hold 12-bit values in 16-bit samples, as many sensors'
    products do."""
    a = Archive(root)
    rng = np.random.default_rng(4)
    palette = shipped("potsdam")
    colors = np.asarray(palette.colors, np.uint8)
    for image_id in POTSDAM_IDS:
        rgb = smooth_image(rng, 384, 512)
        ir = smooth_image(rng, 384, 512)[..., 0]
        labels = blocks(rng, 384, 512, np.arange(6)).astype(np.uint8)
        tiff(f"{root}/2_Ortho_RGB/top_potsdam_{image_id}_RGB.tif", rgb, photometric="rgb", tile=(128, 128),
             compression="deflate")
        rgbir = np.dstack([rgb, ir])
        if bits16:
            rgbir = rgbir.astype(np.uint16) * 16 + 5  # 12-bit data: 5..4085
        tiff(f"{root}/4_Ortho_RGBIR/top_potsdam_{image_id}_RGBIR.tif", np.moveaxis(rgbir, -1, 0),
             photometric="minisblack", planarconfig="separate", compression="lzw", rowsperstrip=64)
        tiff(f"{root}/5_Labels_all/top_potsdam_{image_id}_label.tif", colors[labels], photometric="rgb",
             compression="lzw")
        a.images[image_id] = rgb
        a.extra[image_id] = rgbir
        a.classes[image_id] = labels
        padded = "_".join(f"{int(n):02d}" for n in image_id.split("_"))
        noise = np.random.default_rng(40 + len(a.surfaces)).normal(0, 0.3, labels.shape)  # (rng's draws unchanged)
        dsm = (30.0 + 8.0 * labels + noise).astype(np.float32)
        tiff(f"{root}/1_DSM/dsm_potsdam_{padded}.tif", dsm)
        ndsm_path = f"{root}/1_DSM_normalisation/dsm_potsdam_{padded}_normalized_lastools.jpg"
        os.makedirs(os.path.dirname(ndsm_path), exist_ok=True)
        cv2.imwrite(ndsm_path, np.clip(dsm - 30.0, 0, 255).astype(np.uint8) * 5)
        a.surfaces[image_id] = (dsm, cv2.imread(ndsm_path, cv2.IMREAD_UNCHANGED))
    return a


INRIA_IDS = tuple(f"{city}{n}" for city in ("austin", "chicago", "kitsap", "tyrol-w", "vienna") for n in (1, 2))


def inria(root: str) -> Archive:
    """train/images/{id}.tif (RGB, JPEG-compressed, tiled) and train/gt/{id}.tif (1 band, 0/255, deflate); test
    has images only (its labels are withheld)."""
    a = Archive(root)
    rng = np.random.default_rng(5)
    for image_id in INRIA_IDS:
        rgb = smooth_image(rng, 320, 320)
        building = blocks(rng, 320, 320, [0, 0, 255]).astype(np.uint8)
        path = f"{root}/train/images/{image_id}.tif"
        tiff(path, rgb, photometric="rgb", tile=(160, 160), compression="jpeg", compressionargs={"level": 95})
        tiff(f"{root}/train/gt/{image_id}.tif", building, photometric="minisblack", compression="deflate")
        with open(path, "rb") as f:
            a.images[image_id] = codec.decode_image(f.read())
        assert np.abs(a.images[image_id].astype(int) - rgb).mean() < 3  # JPEG-in-TIFF decodes to RGB, not BGR
        a.classes[image_id] = (building == 255).astype(np.uint8)
    tiff(f"{root}/test/images/bellingham1.tif", smooth_image(rng, 320, 320), photometric="rgb")
    return a


def deepglobe(root: str) -> Archive:
    """train/{id}_sat.jpg and train/{id}_mask.png in one folder (RGB-coded, values not exactly 0/255 at some
    pixels, as the dataset's own notes warn); valid/ has images only."""
    a = Archive(root)
    rng = np.random.default_rng(6)
    palette = shipped("deepglobe")
    colors = np.asarray(palette.colors, np.uint8)
    for n in range(10):
        image_id = str(100000 + 37 * n)
        image = smooth_image(rng, 300, 300)
        labels = blocks(rng, 300, 300, np.arange(7), size=32).astype(np.uint8)
        mask = colors[labels].astype(np.int16)
        specks = rng.random(labels.shape) < 0.01  # a level or two off, never a colour of its own
        mask[specks] += np.where(mask[specks] > 127, -2, 2)
        data = codec.encode_image(image, "jpeg", 95)
        _write(f"{root}/train/{image_id}_sat.jpg", data)
        _write(f"{root}/train/{image_id}_mask.png", png(mask.astype(np.uint8)))
        a.images[image_id] = codec.decode_image(data)
        a.classes[image_id] = labels
    _write(f"{root}/valid/999999_sat.jpg", codec.encode_image(smooth_image(rng, 300, 300), "jpeg", 90))
    _write(f"{root}/class_dict.csv", b"name,r,g,b\nurban_land,0,255,255\n")
    return a
