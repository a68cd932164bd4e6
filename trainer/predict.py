"""Predict colour masks for images of any size with a trained run.

    python -m trainer.predict --model_dir runs/latest --input photo.jpg --output_dir preds/
    python -m trainer.predict --model_dir runs/latest --input folder/ --output_dir preds/
    python -m trainer.predict --model_dir runs/latest --input VOC_ROOT --split val --output_dir preds/
    python -m trainer.predict --model_dir runs/latest --records data/records --split val --output_dir scenes/

For each image, writes ID.png (colour mask in the dataset's palette, or with --format index 8-bit class indices)
and ID_overlay.jpg (mask over the photo). Images larger than the training crop are predicted with overlapping
sliding windows whose class probabilities are summed; windows run one row of windows at a time into a buffer one
window high, so a 10,000 × 10,000 tile stays within 2 GB with TensorFlow loaded. Images smaller than the crop are
padded as in training and cut back. A photo with an EXIF orientation is predicted as viewers show it. A tiled TIFF
above --max_pixels is read window by window and gives ID.tif. A georeferenced input (a GeoTIFF) gives ID.tif, a
GeoTIFF on the input's CRS and transform that a GIS places (--georeferenced_as png: ID.png).

predict never replaces a file it did not write (trainer/prediction_output.py): names that would, or that two
inputs share, are found before anything is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time

import cv2
import numpy as np

from segprep import codec, extras, geo, headers, layout, pairs, runlock, storage
from segprep.convert import DEFAULT_MAX_PIXELS, too_large
from segprep import cli
from segprep.cli import Parser, UsageError, examples
from segprep.formats import run_dir
from segprep.patterns import LayoutError
from segprep.progress import Progress
from trainer import common, prediction_output
from trainer import lazy
from trainer.lazy import keras, tf
from trainer.normalization import Normalization, normalize

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


class Predictor:
    """A trained run: its model, palette and input normalisation."""

    def __init__(self, model_dir: str, output: str = "main"):
        model_dir = model_dir.rstrip("/")
        self.info = read_run_info(model_dir)
        lazy.load("trainer.schedules")  # registers WarmupCosine, so best.keras checkpoints load too
        local = _local_copy(f"{model_dir}/{run_dir.MODEL}")
        try:
            self.model = keras.models.load_model(local)
        finally:
            if local != f"{model_dir}/{run_dir.MODEL}":  # the temp copy of a gs:// model goes on every exit path
                os.remove(local)
        outputs = dict(zip(self.model.output_names, self.model.outputs))
        if output not in outputs:
            raise UsageError(f"--output {output}: the model's outputs are {', '.join(sorted(outputs))}.")
        self.output = output
        self.num_classes = int(outputs[output].shape[-1])
        self.crop = self.info.crop_size
        self.palette = self.info.palette
        # What the input pipeline did before the model saw the image (the default model normalises itself).
        in_model, mean, std = Normalization.of_run(self.info)
        self.mean, self.std = (None, None) if in_model else (mean, std)
        self.pipeline_normalization = None if in_model else (mean.tolist(), std.tolist())
        self.input_names = [t.name for t in self.model.inputs]
        self.extra_names = [n for n in self.input_names if n != "image"]
        self._probabilities = tf.function(self._probabilities_fn, reduce_retracing=True)

    def _normalised(self, name: str, x: np.ndarray) -> np.ndarray:
        if self.mean is None:
            return x
        if name == "image":
            return normalize(x, self.mean, self.std)
        extra = self.info.extra(name)
        return normalize(x, extra["mean"], extra["std"])

    def probabilities(self, windows) -> np.ndarray:
        """(N, S, S, 3) uint8 windows of the image, or {input name: (N, S, S, C)} windows of every input the
        model takes → (N, S, S, C) float32 softmax of the chosen output; an output at lower resolution (aux, 1/8)
        has its logits resized bilinearly to the window first, as DeepLab upsamples its logits. Only the chosen
        output is computed (one traced graph), which saves the other heads' time and memory."""
        if not isinstance(windows, dict):
            windows = {"image": windows}
        feeds = {name: tf.convert_to_tensor(self._normalised(name, windows[name]), tf.float32)
                 for name in self.input_names}
        return self._probabilities(feeds).numpy()

    def _probabilities_fn(self, feeds):
        logits = tf.cast(self.model(feeds, training=False)[self.output], tf.float32)
        size = tf.shape(next(iter(feeds.values())))[1:3]
        if logits.shape[1] != next(iter(feeds.values())).shape[1]:
            logits = tf.image.resize(logits, size, method="bilinear")
        return tf.nn.softmax(logits, axis=-1)

    def predict(self, image: np.ndarray, overlap: float = 0.25, batch: int = 8,
                extras: dict[str, np.ndarray] | None = None, probabilities=None) -> np.ndarray:
        """(H, W, 3) uint8 RGB, and {name: (H, W, C)} of the extra inputs the model takes → (H, W) uint8 class
        indices (see `predict_rows`)."""
        h, w = image.shape[:2]
        out = np.empty((h, w), np.uint8)
        rasters = {"image": image, **(extras or {})}
        for start, rows in self.predict_rows(lambda y0, y1: {n: r[y0:y1] for n, r in rasters.items()}, h, w,
                                             overlap, batch, probabilities):
            out[start:start + len(rows)] = rows
        return out

    def predict_rows(self, read, h: int, w: int, overlap: float = 0.25, batch: int = 8, probabilities=None):
        """Class indices of an H × W image whose rows [y0, y1) `read(y0, y1)` gives as (rows, W, 3) uint8 RGB, or
        as {input name: (rows, W, C)} of every input the model takes: yields (first row, (n, W) uint8 rows), top
        to bottom, each row once. Every input is cut at the same windows. With `probabilities`, each band of rows
        is also given to `probabilities(first row, (n, W, C) uint8)`: the class probabilities (the windows' mean)
        × 255, rounded.

        Windows of the crop size every `(1 - overlap)` crop, the last one flush with the edge; their
        probabilities are summed in a ring buffer of one window's height (row r lives in buffer row r mod S), so
        memory is S × W × C floats and one band of S image rows, whatever the image's height: rows no later window
        reaches are final and leave at once."""
        s = self.crop
        stride = max(1, int(round(s * (1 - overlap))))
        pad_w = max(w, s)
        ring = np.zeros((s, pad_w, self.num_classes), np.float32)

        def pieces(start: int, stop: int):
            """Image rows [start, stop) (at most S of them) as (image rows, ring rows) slices."""
            a, b = start % s, (stop - 1) % s + 1
            if stop - start <= s - a:
                yield slice(start, stop), slice(a, a + stop - start)
            else:
                yield slice(start, start + s - a), slice(a, s)
                yield slice(start + s - a, stop), slice(0, b)

        def flush(start: int, stop: int):  # rows no later window reaches: final
            for rows, ring_rows in pieces(start, stop):
                keep = slice(rows.start, min(rows.stop, h))
                if keep.stop > keep.start:
                    summed = ring[ring_rows][: keep.stop - keep.start, :w]
                    if probabilities is not None:
                        share = summed / np.maximum(summed.sum(-1, keepdims=True), 1e-12)
                        probabilities(keep.start, np.rint(share * 255).astype(np.uint8))
                    yield keep.start, np.argmax(summed, -1).astype(np.uint8)
                ring[ring_rows] = 0

        done = 0
        xs = _starts(w, s, stride)
        for y in _starts(h, s, stride):
            yield from flush(done, y)
            done = y
            bands = read(y, min(y + s, h))
            if not isinstance(bands, dict):
                bands = {"image": bands}
            for name, band in bands.items():
                if band.shape[:2] != (s, pad_w):  # an image smaller than a window: padded (with 0) as in training
                    bands[name] = np.pad(band, ((0, s - band.shape[0]), (0, pad_w - band.shape[1]), (0, 0)))
            for j in range(0, len(xs), batch):
                group = xs[j:j + batch]
                probs = self.probabilities({name: np.stack([band[:, x:x + s] for x in group])
                                            for name, band in bands.items() if name in self.input_names})
                for x, p in zip(group, probs):
                    offset = 0
                    for rows, ring_rows in pieces(y, y + s):
                        n = rows.stop - rows.start
                        ring[ring_rows, x:x + s] += p[offset:offset + n]
                        offset += n
        yield from flush(done, done + s)

    def encode(self, image: np.ndarray, classes: np.ndarray, fmt: str = "color",
               overlay: bool = True) -> list[tuple[str, bytes]]:
        """[(".png", the mask), ("_overlay.jpg", the overlay)]: the mask as the dataset's palette colours (`fmt`
        "color") or 8-bit class indices ("index", what evaluation tools read), and the colours over the photo, half
        and half. Works in uint8 and in place — `image` is used up — so a 10,000² tile needs one more image-sized
        buffer, not float64 ones."""
        colors = self.palette.colorize(classes)
        out = []
        if overlay:
            cv2.addWeighted(image, 0.5, colors, 0.5, 0.0, dst=image)
            out.append((prediction_output.SUFFIXES[1], codec.encode_image(image, "jpeg", 90, consume=True)))
        mask = codec.encode_index_png(classes) if fmt == "index" else codec.encode_image(colors, "png", consume=True)
        return [(prediction_output.SUFFIXES[0], mask)] + out

    def write_tiled(self, regions, path: str, fmt: str, overlap: float, bands, value_range,
                    extra_regions: dict | None = None, grid=None, probs_path: str | None = None) -> None:
        """A tiled TIFF read window by window (`segprep.regions.TiffRegions`) → its prediction as a tiled,
        deflate-compressed 8-bit TIFF of class indices (with the palette as its colour map for `fmt` "color"),
        written at `path` (local), one band of window rows at a time.
        `extra_regions`: {name: (TiffRegions, or None for bands of the image, ExtraInput)} of the extra inputs the
        model takes, read band by band alike."""
        h, w = regions.height, regions.width

        def read(y0: int, y1: int):
            raw = regions.read(y0, y1, 0, w)
            out = {"image": codec.tiff_image(regions.tiff(raw), bands, value_range)}
            for name, (source, extra) in (extra_regions or {}).items():
                out[name] = extra_raster(self, extra, None if source is None else source.read(y0, y1, 0, w), raw,
                                         regions.nodata if source is None else source.nodata)
            return out

        probs = None
        if probs_path is not None:  # on disk beside the output, H × W × C bytes: written after the classes
            probs = np.lib.format.open_memmap(probs_path + ".npy", mode="w+", dtype=np.uint8,
                                              shape=(h, w, self.num_classes))
        try:
            sink = None if probs is None else (lambda y, rows: probs.__setitem__(slice(y, y + len(rows)), rows))
            rows = self.predict_rows(read, h, w, overlap, probabilities=sink)
            self._write_tiff(path, _tiles(rows, w, TIFF_TILE), h, w, fmt, grid)
            if probs is not None:
                self._write_probabilities(probs_path, probs, grid)
        finally:
            if probs is not None:
                del probs
                os.remove(probs_path + ".npy")

    def _write_tiff(self, path: str, tiles, h: int, w: int, fmt: str, grid=None) -> None:
        """A tiled, deflate-compressed 8-bit TIFF of class indices at `path` from its `tiles` in file order, the
        palette as its colour map for `fmt` "color"; with `grid`, a GeoTIFF on it (the input's CRS and
        transform)."""
        import tifffile

        colormap = None
        if fmt == "color":
            colormap = self.palette.color_array().T.astype(np.uint16) * 257
        tifffile.imwrite(path, tiles, shape=(h, w), dtype=np.uint8, tile=(TIFF_TILE, TIFF_TILE), compression="zlib",
                         photometric="palette" if colormap is not None else "minisblack", colormap=colormap)
        if grid is not None:
            geo.stamp(path, grid)

    def probability_tiff(self, probs: np.ndarray, grid=None) -> bytes:
        """(H, W, C) uint8 class probabilities × 255 → the bytes of a tiled, deflate TIFF with a band a class
        (named by the palette's class names), on `grid` when given."""
        return _tiff_bytes(lambda path: self._write_probabilities(path, probs, grid))

    def _write_probabilities(self, path: str, probs: np.ndarray, grid=None) -> None:
        """A band a class, probability × 255, tiled and deflate-compressed (see `probability_tiff`)."""
        import tifffile

        h, w, c = probs.shape
        tifffile.imwrite(path, _tiles(_bands_of(probs), w, TIFF_TILE, c), shape=(h, w, c), dtype=np.uint8,
                         tile=(TIFF_TILE, TIFF_TILE), compression="zlib", photometric="minisblack",
                         planarconfig="contig", extrasamples=["unspecified"] * (c - 1),
                         description=json.dumps({"bands": list(self.palette.names), "scale": "probability x 255"}))
        if grid is not None:
            geo.stamp(path, grid)

    def geotiff(self, classes: np.ndarray, fmt: str, grid) -> bytes:
        """(H, W) class indices → the bytes of their GeoTIFF on `grid` (see `_write_tiff`)."""
        h, w = classes.shape
        return _tiff_bytes(lambda path: self._write_tiff(path, _tiles([(0, classes)], w, TIFF_TILE), h, w, fmt, grid))


TIFF_TILE = 256


def _tiff_bytes(write) -> bytes:
    """The bytes of the TIFF `write(path)` writes (tifffile and GDAL write files): through a temp file."""
    fd, path = tempfile.mkstemp(prefix="segprep-", suffix=".tif")
    os.close(fd)
    try:
        write(path)
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.remove(path)


def _bands_of(array: np.ndarray, step: int = TIFF_TILE):
    """An array as (first row, rows) pieces, for `_tiles`."""
    for y in range(0, array.shape[0], step):
        yield y, array[y:y + step]


def _tiles(rows, width: int, tile: int, channels: int = 0):
    """Rows of class indices, top to bottom ((first row, (n, W)) pieces; (n, W, C) with `channels`) → the TIFF's
    tiles in file order, each (tile, tile[, C]), the last row and column of tiles padded with 0: one band of `tile`
    rows in memory."""
    cols = -(-width // tile)
    band = np.zeros((tile, cols * tile) + ((channels,) if channels else ()), np.uint8)
    filled = 0
    for _, piece in rows:
        while len(piece):
            n = min(tile - filled, len(piece))
            band[filled:filled + n, :width] = piece[:n]
            filled, piece = filled + n, piece[n:]
            if filled == tile:
                yield from (band[:, c * tile:(c + 1) * tile].copy() for c in range(cols))
                band[:] = 0
                filled = 0
    if filled:
        yield from (band[:, c * tile:(c + 1) * tile].copy() for c in range(cols))


def extra_sources(info: run_dir.RunInfo, flags: list[str] | None) -> dict:
    """{name: ExtraInput} for every extra input the run's model takes: --extra_inputs NAME=PATH or NAME=@B, or
    the bands of the input image where prepare took them so (`@B`); a UsageError naming an input not given, or a
    flag for an input the model does not take."""
    try:
        given = {e.name: e for e in map(extras.parse_path_flag, flags or ())}
    except LayoutError as e:
        raise UsageError(str(e)) from None
    wanted = [n for n in info.inputs if n != "image"]
    unused = sorted(set(given) - set(wanted))
    if unused:
        raise UsageError(f"--extra_inputs {unused[0]}=...: the model takes no input {unused[0]!r} (its inputs: "
                         f"{', '.join(info.inputs)}).")
    out = {}
    for name in wanted:
        source = info.extra(name).get("source", "")
        if name not in given and source.startswith("@"):  # bands of the image file: the same here
            given[name] = extras.parse_flag(f"{name}={source}")
        if name not in given:
            raise UsageError(f"The model takes the input {name!r} (prepare's --extra_inputs '{name}={source}') "
                             f"beside the image: give it, e.g. --extra_inputs '{name}=DIR/{{id}}.tif' ({{id}}: "
                             "the input image's id).")
        out[name] = given[name]
    return out


def extra_raster(predictor: Predictor, extra, data, image_samples, nodata: float | None = None) -> np.ndarray:
    """An extra input's raster as prepare stored it: decoded from `data` (a file's bytes, or a region's samples,
    whose declared nodata value is `nodata`), or the bands `extra` names of the image's samples; checked against
    what the model was trained on (bands, finite values), its no-data pixels set to the training crops' band mean
    (as the trainer's input pipeline does). A ValueError naming the input."""
    name = extra.name
    if nodata is None and not isinstance(data if not extra.bands else image_samples, np.ndarray):
        nodata = codec.raster_nodata(image_samples if extra.bands else data)
    try:
        if extra.bands:
            samples = image_samples if isinstance(image_samples, np.ndarray) else extras.decode(image_samples, "image")
            raster = extras.bands_of(extras.as_stored(samples, "image"), extra)
        elif isinstance(data, np.ndarray):
            raster = extras.as_stored(data, f"extra input {name}")
        else:
            raster = extras.decode(data, f"extra input {name}")
        extras.check_finite(raster, name, nodata)
    except codec.DecodeError as e:
        raise ValueError(str(e) if str(e).startswith("extra input") else f"extra input {name}: {e}") from None
    channels = predictor.info.extra(name)["channels"]
    if raster.shape[2] != channels:
        raise ValueError(f"extra input {name} has {raster.shape[2]} bands; the model was trained on {channels}")
    empty = extras.no_data(raster, nodata)
    if empty is not None and empty.any():
        mean = np.asarray(predictor.info.extra(name)["mean"], np.float32)
        raster = np.where(empty, mean, raster.astype(np.float32))
    return raster


def read_run_info(model_dir: str) -> run_dir.RunInfo:
    """segprep.json of a finished run, checked; a UsageError when `model_dir` is not one (checked without
    TensorFlow for local dirs)."""
    for name in (run_dir.MODEL, run_dir.INFO):
        if not common.exists(f"{model_dir}/{name}"):
            raise UsageError(f"No {model_dir}/{name}: --model_dir must be a finished `python -m trainer.train` run.")
    path = f"{model_dir}/{run_dir.INFO}"
    try:
        return run_dir.parse(common.read_bytes(path), path)
    except run_dir.RunInfoError as e:
        raise UsageError(str(e)) from None


def _starts(size: int, crop: int, stride: int) -> list[int]:
    """Window starts covering [0, size): every `stride`, the last one flush with the end."""
    if size <= crop:
        return [0]
    starts = list(range(0, size - crop, stride))
    return starts + [size - crop]


def _local_copy(path: str) -> str:
    """keras.models.load_model reads local files; copy a gs:// model down first."""
    if not storage.is_remote(path):
        return path
    fd, local = tempfile.mkstemp(prefix="segprep-", suffix="-model.keras")
    os.close(fd)
    try:
        common.files.copy(path, local)
    except BaseException:
        os.remove(local)
        raise
    return local


def list_inputs(spec: str, split: str | None) -> list[tuple[str, str]]:
    """→ [(name, path)] for an image file, a folder of images, or a VOC root with --split."""
    if common.isdir(spec):
        split_file = layout.split_path(spec, split or "val")
        if split or common.exists(split_file):
            if not common.exists(split_file):
                raise UsageError(f"--split {split}: no {split_file}.")
            ids = layout.parse_split_list(common.read_bytes(split_file).decode("utf-8", "replace"))
            return [(i, layout.image_path(spec, i)) for i in ids]
        names = sorted(n for n in common.listdir(spec) if n.lower().endswith(IMAGE_EXTS))
        if not names:
            raise UsageError(f"--input {spec} holds no .jpg/.jpeg/.png/.tif images.")
        return [(os.path.splitext(n)[0], f"{spec.rstrip('/')}/{n}") for n in names]
    if common.exists(spec):
        return [(os.path.splitext(os.path.basename(spec))[0], spec)]
    raise UsageError(f"--input {spec} does not exist.")


def build_parser() -> Parser:
    p = Parser("predict", prog="python -m trainer.predict", description=__doc__.split("\n")[0],
               epilog=examples(__doc__))
    p.add_argument("--model_dir", default="runs/latest",
                   help="a finished training run, local or gs:// (default: %(default)s)")
    p.add_argument("--input",
                   help="an image (.jpg/.jpeg/.png), a folder of images, or a VOC root (with --split); local or "
                        "gs://")
    p.add_argument("--records", metavar="DATA_DIR",
                   help="instead of --input: prepare's output; every tile of --split (default: val) is predicted "
                        "and each source image comes back whole, stitched from its tiles at their offsets: ID.tif "
                        "on its own grid for a georeferenced source, else ID.png")
    p.add_argument("--split", help="with a VOC root or --records: which split (default: val)")
    p.add_argument("--output_dir", default="preds", help="where ID.png and ID_overlay.jpg go, local or gs:// "
                                                         "(default: %(default)s)")
    p.add_argument("--overlap", type=cli.number(0.0, 0.9), default=0.25,
                   help="share of a window that the next window overlaps, 0 to 0.9: more overlap is smoother at "
                        "window edges and slower (default: %(default)s)")
    p.add_argument("--output", default="main",
                   help="which model output to use: main, upsample or aux for the default model; a low-resolution "
                        "output's logits are upsampled bilinearly (default: %(default)s)")
    p.add_argument("--format", choices=("color", "index"), default="color",
                   help="ID.png as the dataset's palette colours, or as 8-bit class indices (what evaluation tools "
                        "read); ID_overlay.jpg is written either way (default: %(default)s)")
    p.add_argument("--extra_inputs", action="append", metavar="NAME=PATH",
                   help="an extra input the model takes (prepare's --extra_inputs), for each input image: a local or "
                        "gs:// path where {id} (or {id:pad=N}) is the image's id, e.g. 'dsm=tiles/dsm_{id}.tif', or "
                        "@B for bands of the image file itself; repeat for several. Inputs prepare took as @B "
                        "bands are taken so by default")
    p.add_argument("--probabilities", action="store_true",
                   help="also write ID_probs.tif: a tiled TIFF with a band per class, its probability × 255 (the "
                        "mean over the overlapping windows), on the input's grid for a georeferenced input")
    p.add_argument("--georeferenced_as", choices=("tif", "png"), default="tif",
                   help="a georeferenced input's (a GeoTIFF's) prediction: tif = ID.tif, a tiled, compressed "
                        "GeoTIFF of class indices on the input's CRS and transform, with the palette as its colour "
                        "map (--format index: grey), which a GIS places; png = ID.png as for other images "
                        "(default: %(default)s)")
    cli.max_pixels_flag(p, DEFAULT_MAX_PIXELS, "a tiled or stripped TIFF is predicted window by window into ID.tif "
                        "(a tiled TIFF of class indices, no overlay), anything else is refused")
    return p


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.input is None) == (args.records is None):
        raise UsageError("give --input (images to predict) or --records (prepare's output, to stitch a split's "
                         "tiles back into whole images), one of them.")
    model_dir = args.model_dir.rstrip("/")
    out_dir = args.output_dir.rstrip("/")
    if not storage.is_remote(out_dir) and os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"--output_dir {out_dir} is a file, not a folder: choose another --output_dir.")
    if args.records is not None:
        read_run_info(model_dir)
        return _stitch_split(args, model_dir, out_dir)
    args.extras = extra_sources(read_run_info(model_dir), args.extra_inputs)  # answered before TensorFlow loads
    inputs = list_inputs(args.input, args.split)
    bad = [(name, path) for name, path in inputs if pairs.bad_id(name)]  # ids that would name a path outside
    inputs = [item for item in inputs if item not in bad]
    try:
        with runlock.hold(out_dir, "python -m trainer.predict"):
            manifest = prediction_output.Manifest(out_dir)
            inputs = prediction_output.exclude_predictions(inputs, manifest)  # never predictions of predictions
            if not inputs and not bad:
                raise UsageError(f"--input {args.input} holds no images but predict's own earlier outputs.")
            targets = prediction_output.plan(inputs, (prediction_output.PROBABILITIES,) if args.probabilities
                                             else ())
            prediction_output.check(targets, manifest)  # before anything is written
            return _predict_all(args, model_dir, targets, manifest, bad)
    except runlock.FolderError as e:
        raise UsageError(f"--output_dir: {e}") from None


def _stitch_split(args, model_dir: str, out_dir: str) -> int:
    """--records: every tile of the split predicted, each source image stitched whole (trainer/stitch.py)."""
    from trainer import stitch

    split = args.split or "val"
    meta, paths = stitch.split_of(args.records, split)
    started = time.time()
    try:
        with runlock.hold(out_dir, "python -m trainer.predict"):
            manifest = prediction_output.Manifest(out_dir)
            source = f"{args.records.rstrip('/')}#{split}"
            placed = stitch.sources(paths)  # the names, checked before any tile is predicted
            targets = prediction_output.plan([(image_id, f"{source}/{image_id}{'.tif' if grid else '.png'}")
                                              for image_id, grid in sorted(placed.items())])
            prediction_output.check(targets, manifest)
            predictor = Predictor(model_dir, args.output)
            bar = Progress("predict", meta.split(split).records, "tiles")
            with stitch.work_dir(out_dir) as work:
                scenes = stitch.stitch(predictor, paths, work, progress=bar)
                bar.close()
                pixels = 0
                for image_id, target in zip(sorted(scenes), targets):
                    scene = scenes[image_id]
                    classes = np.asarray(scene.canvas)
                    if scene.grid is not None:
                        name, data = target.name + ".tif", predictor.geotiff(classes, args.format, scene.grid)
                    else:
                        colors = predictor.palette.colorize(classes)
                        data = (codec.encode_index_png(classes) if args.format == "index"
                                else codec.encode_image(colors, "png", consume=True))
                        name = target.name + ".png"
                    common.files.write_bytes(f"{out_dir}/{name}", data)
                    manifest.add(name, target.source, data)
                    manifest.save()
                    pixels += classes.size
    except runlock.FolderError as e:
        raise UsageError(f"--output_dir: {e}") from None
    seconds = time.time() - started
    print(f"predict: {len(scenes)} images stitched from {meta.split(split).records} {split} tiles "
          f"({pixels / 1e6:,.1f} Mpx) in {seconds:.1f} s → {out_dir}/")
    return 0


def _predict_all(args, model_dir: str, targets: list, manifest, bad: list) -> int:
    out_dir = manifest.out_dir
    predictor = Predictor(model_dir, args.output)
    started = time.time()
    total = len(targets) + len(bad)
    bar = Progress("predict", total, "images")
    failed = pixels = 0
    last = None
    for name, path in bad:
        print(f"predict: {path}: id {name!r} holds {pairs.bad_id(name)}: its output would leave --output_dir; "
              "skipped", file=sys.stderr)
        failed += 1
    info = predictor.info  # the run's prepare made 8-bit RGB this way: new images are read the same way
    bands, value_range = info.bands, info.image_range
    for target in targets:
        try:
            written, size = _predict_one(predictor, target, args, bands, value_range)
            for suffix, data, *in_place in written:  # an id "a/b" writes OUT/a/b.png
                name = target.name + suffix
                if in_place:  # a window-by-window output, written already: hashed from the file, in pieces
                    with common.files.open_read(f"{out_dir}/{name}") as f:
                        manifest.add(name, target.source, f)
                    continue
                common.files.write_bytes(f"{out_dir}/{name}", data)
                manifest.add(name, target.source, data)
            manifest.save()
            pixels += size
            last = f"{out_dir}/{target.name}{written[0][0]}"
        except (codec.DecodeError, OSError, ValueError, tf.errors.OpError) as e:
            bar.close()
            print(f"predict: {target.path}: {e}", file=sys.stderr)
            failed += 1
            bar.update(1, f"{failed} failed")
            continue
        bar.update(1, f"{pixels / 1e6:,.1f} Mpx" + (f", {failed} failed" if failed else ""))
    bar.close()
    seconds = time.time() - started
    done = total - failed
    where = last if done == 1 and last else f"{out_dir}/"
    print(f"predict: {done} of {total} images ({pixels / 1e6:,.1f} Mpx) in {seconds:.1f} s "
          f"({pixels / 1e6 / max(seconds, 1e-9):.2f} Mpx/s), {failed} failed → {where}")
    return 1 if failed else 0


def _predict_one(predictor: Predictor, target, args, bands, value_range) -> tuple[list, int]:
    """One input → ([(suffix, bytes[, "in place" for a file already written])], its pixels). The size comes
    from the header first: an image above --max_pixels is predicted window by window when it is a tiled or
    stripped TIFF, and refused (ValueError) otherwise, never decoded whole."""
    f = common.files.open_read(target.path)
    try:
        info = headers.probe(f)
        if not too_large(info.width, info.height, args.max_pixels, ""):
            f.seek(0)
            data = f.read()
            orientation = headers.exif_orientation(data)
            image = codec.orient(codec.decode_image(data, bands, value_range), orientation)
            rasters = {}
            for name, extra in args.extras.items():
                raster = extra_raster(predictor, extra, None if extra.bands else _read_extra(extra, target), data)
                if raster.shape[:2] != (info.height, info.width):
                    raise ValueError(f"extra input {name} is {raster.shape[1]}×{raster.shape[0]} (w×h) but its image "
                                     f"is {info.width}×{info.height}; they must be the same size")
                rasters[name] = codec.orient(raster, orientation) if orientation > 1 else raster
            probs = np.empty((info.height, info.width, predictor.num_classes), np.uint8) \
                if args.probabilities else None
            sink = None if probs is None else (lambda y, rows: probs.__setitem__(slice(y, y + len(rows)), rows))
            classes = predictor.predict(image, args.overlap, extras=rasters, probabilities=sink)  # as viewers show it
            grid = geo.read(data) if args.georeferenced_as == "tif" else None
            written = predictor.encode(image, classes, args.format)
            if grid is not None:  # back on the map: ID.tif on the input's grid instead of ID.png
                written[0] = (prediction_output.WINDOWED, predictor.geotiff(classes, args.format, grid))
            if probs is not None:
                written.append((prediction_output.PROBABILITIES, predictor.probability_tiff(probs, grid)))
            return written, info.width * info.height
        regions = None
        if info.format == "tiff":
            from segprep.regions import TiffRegions

            f.seek(0)
            regions = TiffRegions(f)
        if regions is None or not regions.region_readable:
            raise ValueError(too_large(info.width, info.height, args.max_pixels,
                                       "convert it to a tiled TIFF, which predict reads window by window"))
        with contextlib.ExitStack() as opened:
            extra_regions = {}
            for name, extra in args.extras.items():
                source = None if extra.bands else _extra_regions(extra, target, info, opened)
                extra_regions[name] = (source, extra)
            grid = geo.read_file(f) if args.georeferenced_as == "tif" else None
            return _predict_windowed(predictor, target, args, regions, bands, value_range, extra_regions, grid), \
                info.width * info.height
    finally:
        f.close()


def _read_extra(extra, target) -> bytes:
    path = extras.path_for(extra, target.name)
    if not common.exists(path):
        raise ValueError(f"extra input {extra.name}: no {path}")
    return common.read_bytes(path)


def _extra_regions(extra, target, info, opened):
    """A windowed TIFF's extra input, itself a region-readable TIFF of the same size (a ValueError if not)."""
    from segprep.regions import TiffRegions

    path = extras.path_for(extra, target.name)
    if not common.exists(path):
        raise ValueError(f"extra input {extra.name}: no {path}")
    f = opened.enter_context(common.files.open_read(path))
    try:
        regions = TiffRegions(f)
    except (codec.DecodeError, ValueError) as e:
        raise ValueError(f"extra input {extra.name}: {path}: {e}") from None
    if not regions.region_readable or (regions.height, regions.width) != (info.height, info.width):
        raise ValueError(f"extra input {extra.name}: {path} must be a tiled or stripped TIFF of the image's size "
                         f"({info.width}×{info.height}) to be read window by window beside it")
    return regions


def _predict_windowed(predictor, target, args, regions, bands, value_range, extra_regions, grid=None) -> list:
    out = args.output_dir.rstrip("/")
    final = f"{out}/{target.name}{prediction_output.WINDOWED}"
    probs_final = f"{out}/{target.name}{prediction_output.PROBABILITIES}" if args.probabilities else None
    local = not storage.is_remote(final)
    folder = os.path.dirname(os.path.abspath(final)) if local else None
    temps = []
    for _ in range(2 if probs_final else 1):
        fd, temp = tempfile.mkstemp(prefix=".segprep-", suffix=".tif", dir=folder)
        os.close(fd)
        temps.append(temp)
    try:
        predictor.write_tiled(regions, temps[0], args.format, args.overlap, bands, value_range, extra_regions, grid,
                              temps[1] if probs_final else None)
        written = [(prediction_output.WINDOWED, None, "in place")]
        if probs_final:
            written.append((prediction_output.PROBABILITIES, None, "in place"))
        for temp, target_path in zip(temps, (final, probs_final)):
            if local:
                os.replace(temp, target_path)
            else:
                common.files.copy(temp, target_path)
    finally:
        for temp in temps:
            if os.path.exists(temp):
                os.remove(temp)
    return written


def main(argv: list[str] | None = None) -> int:
    return cli.main("predict", run, argv)


if __name__ == "__main__":
    sys.exit(main())
