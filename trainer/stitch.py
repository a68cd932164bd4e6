"""Whole scenes back from a tiled split: `python -m trainer.predict --records DATA --split val` predicts every tile
of the split and puts each source image's tiles back at their offsets (prepare's tiles cover every pixel once), so
a 40,000² val scene comes back whole, as a GeoTIFF on its own grid when it was one (the records' transforms), else
as a PNG. Pixels no tile covers (tiles skipped for holding no data) are 255: no prediction.

The canvases are memory-mapped files in a temp folder beside the output, so the split's scenes need disk, not
memory; each scene is written when the pass over the split's records ends.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile

import numpy as np

from segprep import codec, geo
from segprep.cli import UsageError
from segprep.formats import metadata as md
from segprep.formats import records, shards
from trainer import common

NO_PREDICTION = 255


@dataclasses.dataclass
class Scene:
    """One source image being stitched: its canvas of class indices and where it lies on the map."""

    canvas: np.ndarray  # (H, W) uint8, memory-mapped
    grid: geo.Grid | None
    tiles: int = 0


def split_of(data_dir: str, split: str) -> tuple[md.Metadata, list[str]]:
    """The metadata and shard paths of a tiled split; a UsageError for a split of random crops (they overlap and
    leave gaps: no scene comes back from them)."""
    try:
        meta = common.load_metadata(data_dir)
        entry = meta.split(split)
    except (common.DataError, md.MetadataError) as e:
        raise UsageError(f"--records: {e}") from None
    if entry.random_crops:
        raise UsageError(f"--records {data_dir} --split {split}: its crops are random windows, which overlap and "
                         "leave gaps; stitch a split of tiles (prepare cuts tiles for every split but the training "
                         "one).")
    return meta, meta.shard_paths(data_dir.rstrip("/"), split)


def tiles(paths: list[str]):
    """Every record of the shards: (source id, (y, x), (source height, width), image bytes, extra crops,
    geo (crs, transform) or None)."""
    for path in paths:
        for _, data in shards.read(path):
            f = {k: v for k, (_, v) in records.decode_example(data).items()}
            y, x = (int(v) for v in f[records.CROP_OFFSET])
            size = int(f[records.IMAGE_HEIGHT][0]), int(f[records.IMAGE_WIDTH][0])
            extras = {name: crop.array(*size) for name, crop in records.extras_of(f).items()}
            placed = None
            if records.GEO_TRANSFORM in f:
                placed = f[records.GEO_CRS][0].decode(), geo.unpack(f[records.GEO_TRANSFORM][0])
            yield (f[records.IMAGE_SOURCE_ID][0].decode(), (y, x),
                   (int(f[records.SOURCE_HEIGHT][0]), int(f[records.SOURCE_WIDTH][0])),
                   f[records.IMAGE_ENCODED][0], extras, placed)


def sources(paths: list[str]) -> dict[str, bool]:
    """{source id: whether it is georeferenced} of the shards' records, without decoding a pixel."""
    found: dict[str, bool] = {}
    for path in paths:
        for _, data in shards.read(path):
            f = records.decode_example(data)
            found[f[records.IMAGE_SOURCE_ID][1][0].decode()] = records.GEO_TRANSFORM in f
    return found


def source_grid(placed, offset: tuple[int, int]) -> geo.Grid | None:
    """A source's grid from one of its tiles' (CRS, transform) at `offset`: the transform shifted back."""
    if placed is None:
        return None
    crs, transform = placed
    return geo.Grid(crs, geo.Grid(crs, transform).shifted(-offset[0], -offset[1]))


def stitch(predictor, paths: list[str], work: str, batch: int = 8, progress=None) -> dict[str, Scene]:
    """Predicts every tile of the shards at `paths` and places it in its source's canvas (memory-mapped files in
    `work`): → {source id: Scene}."""
    scenes: dict[str, Scene] = {}
    pending: list[tuple] = []

    def flush():
        if all(p[2].shape[:2] == (predictor.crop, predictor.crop) for p in pending):  # the model's window: a batch
            windows = {"image": np.stack([p[2] for p in pending])}
            for name in predictor.extra_names:
                windows[name] = np.stack([p[3][name] for p in pending]).astype(np.float32)
            classes = np.argmax(predictor.probabilities(windows), -1).astype(np.uint8)
        else:  # tiles of another size than the model's crop: sliding windows over each
            classes = [predictor.predict(p[2], extras={n: p[3][n] for n in predictor.extra_names}) for p in pending]
        for (image_id, (y, x), _, _), out in zip(pending, classes):
            scene = scenes[image_id]
            h, w = scene.canvas.shape
            scene.canvas[y:y + out.shape[0], x:x + out.shape[1]] = out[:h - y, :w - x]
            scene.tiles += 1
        if progress is not None:
            progress.update(len(pending))
        pending.clear()

    for image_id, offset, size, image_bytes, extras, placed in tiles(paths):
        if image_id not in scenes:
            path = os.path.join(work, f"{len(scenes)}.npy")
            canvas = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=size)
            canvas[:] = NO_PREDICTION
            scenes[image_id] = Scene(canvas, source_grid(placed, offset))
        image = codec.decode_image(image_bytes)
        missing = [n for n in predictor.extra_names if n not in extras]
        if missing:
            raise UsageError(f"the model takes the input {missing[0]!r}, which the records do not hold.")
        pending.append((image_id, offset, image, extras))
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    return scenes


def work_dir(out_dir: str) -> tempfile.TemporaryDirectory:
    """Where the canvases live: beside a local output (the same disk), else the system's temp folder."""
    local = not out_dir.startswith("gs://")
    if local:
        os.makedirs(out_dir, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=".segprep-stitch-", dir=out_dir if local else None)
