"""Giant tiles, window by window: a tiled or stripped TIFF pair larger than one window is never decoded whole.

The tile's crops are planned from its header alone: crop k's first window comes from the generator seeded by
(seed, id, k), as for any image (`segprep.crops`), and the crop belongs to the window of the grid (`window_size`²
cells, row-major) that holds its top-left pixel. Each window is a separate work item: it reads only the region its
own cell and its crops cover (`segprep.regions`: the TIFF segments it touches), converts that part of the mask, and
cuts and encodes its crops. A crop re-drawn by `--cat_max_ratio` into another part of the tile is read on its own.
So every crop is the crop the whole-image path cuts, byte for byte, whatever the window size, runner or worker
count, and peak memory is one window's, whatever the tile's size.

Each pixel belongs to exactly one window's cell: that window counts it in the source statistics and alone reports
its faults (an off-palette colour under --unknown_colors=error, a corrupt segment). The windows' summaries are
combined per image (`combine`): a fault in any window makes the whole image one error record, and its crops from
the other windows are dropped before any shard is written (the pipeline filters them by `image_key`).

--unknown_colors=nearest decides from the whole mask which colours are present, so under it tiles are decoded whole
(and limited by --max_pixels) like any other image.

With --oversample_fraction, where a crop centred on a rare class lies is known only once the whole mask has been
seen: each window also samples the named classes' pixels of its cell (`crops.ClassPositions`, the same sample the
whole mask gives), the samples are merged with the summaries, and the oversampled crops are then planned from them
(`plan_oversampled`) and cut as a second round of windows, each reading only the region its crops cover.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math

import numpy as np

from segprep import codec, crops, extras, storage
from segprep.headers import TIFF_MAGIC
from segprep.convert import (ConvertConfig, InputError, class_positions, convert_classes, empty_pixels, encode_crop,
                             nodata_share, redraw_rule, tile_is_empty)
from segprep.formats.metadata import Stats, grid_entry
from segprep.crops import CropBox, stable_hash
from segprep.palette import IGNORE_LABEL
from segprep.geo import Grid
from segprep.regions import TiffRegions


@dataclasses.dataclass(frozen=True)
class TiledPair:
    """An image and mask to be cut window by window: both region-readable TIFFs of the same size."""

    split: str
    image_id: str
    files: tuple[str, ...]  # image path, mask path, the extra inputs' read by pattern
    height: int
    width: int
    grid: Grid | None = None  # a georeferenced tile's
    nodata: float | None = None  # the image's nodata value (--nodata, or its GDAL_NODATA)


@dataclasses.dataclass(frozen=True)
class Window:
    """One work item of a tiled pair: a cell of its window grid and the crops whose top-left pixel lies in it."""

    split: str
    image_id: str
    files: tuple[str, ...]
    height: int  # the source's
    width: int
    number: int  # row-major in the grid
    y: int  # the cell, clipped to the source
    x: int
    h: int
    w: int
    crops: tuple[int, ...]  # crop numbers, ascending
    # Oversampled crops' windows (second round): each crop's draws, the first and its --cat_max_ratio re-draws.
    # Empty for the first round, which checks and counts its cell and draws its crops itself.
    draws: tuple[tuple[CropBox, ...], ...] = ()
    grid: Grid | None = None  # the tile's georeferencing
    nodata: float | None = None  # the image's nodata value

    @property
    def key(self) -> tuple[str, str]:
        return self.split, self.image_id


@dataclasses.dataclass
class Summary:
    """What one window (or, combined, a whole tile) adds to the run besides its crops."""

    stats: Stats = dataclasses.field(default_factory=Stats)
    zero: bool = False  # binary-mask evidence (index masks read without an index map): a 0 seen
    ignore: bool = False  # a 255 seen
    only: bool = True  # nothing but 0 and 255 seen
    error: tuple[int, str, str, str] | None = None  # (window number, reason, message, where) of the first fault
    faults: int = 0  # windows with a fault
    positions: crops.ClassPositions | None = None  # the named classes' pixels (--oversample_fraction)
    present: frozenset | None = None  # --split_by blocks with a nodata value: the blocks found holding data

    def add(self, other: Summary) -> Summary:
        self.stats.add(other.stats)
        self.zero |= other.zero
        self.ignore |= other.ignore
        self.only &= other.only
        if other.error is not None and (self.error is None or other.error[0] < self.error[0]):
            self.error = other.error
        self.faults += other.faults
        if other.present is not None:
            self.present = other.present if self.present is None else self.present | other.present
        if other.positions is not None:  # a copy: `other` may be a runner's input element, never to be changed
            self.positions = (copy.deepcopy(other.positions) if self.positions is None
                              else self.positions.merge(other.positions))
        return self


def image_key(split: str, image_id: str) -> int:
    """A 64-bit key of one source image, the same on every machine: how writers drop the crops of a tile that
    failed in another window."""
    return stable_hash("image", split, image_id)


def windowed(height: int, width: int, config: ConvertConfig) -> bool:
    """Whether a region-readable TIFF of this size is cut window by window."""
    return config.unknown_colors != "nearest" and (height > config.window_size or width > config.window_size)


def open_source(path: str, config: ConvertConfig) -> bytes | TiffRegions:
    """The file at `path`: a `TiffRegions` (open; the caller closes it) when it is a TIFF to read by window, else
    its bytes. Reads the header once, then either the whole file or nothing more. Raises `codec.DecodeError` for a
    TIFF whose header is broken or declares more data than the file holds; storage errors as `storage` does."""
    f = storage.open_read(path)
    try:
        head = f.read(4)
        if head not in TIFF_MAGIC or config.unknown_colors == "nearest":
            return head + f.read()
        regions = TiffRegions(f)
        if regions.region_readable and windowed(regions.height, regions.width, config):
            f = None  # the regions own it now
            return regions
        f.seek(0)
        return f.read()
    finally:
        if f is not None:
            f.close()


def crop_count(height: int, width: int, config: ConvertConfig, training: bool) -> int:
    size = config.crop_size
    if not training:
        return math.ceil(height / size) * math.ceil(width / size)
    return config.crops_per_image or crops.auto_crop_count(height, width, size)


def first_box(pair: TiledPair | Window, k: int, config: ConvertConfig, training: bool) -> CropBox:
    """Crop k's window before any --cat_max_ratio re-draw: a random draw, or tile k of the covering tiles."""
    size = config.crop_size
    if not training:
        columns = math.ceil(pair.width / size)
        return CropBox(k // columns * size, k % columns * size, size, size)
    return crops.random_crop(pair.height, pair.width, size, config.seed, pair.image_id, k)


def _oversampled(pair: TiledPair | Window, k: int, config: ConvertConfig, training: bool) -> bool:
    return training and crops.is_oversampled(config.seed, pair.image_id, k, config.oversample_fraction)


def _grid(pair: TiledPair | Window, owned: dict[int, list], config: ConvertConfig, **extra) -> list[Window]:
    size = config.window_size
    columns = math.ceil(pair.width / size)
    return [Window(pair.split, pair.image_id, pair.files, pair.height, pair.width, n,
                   n // columns * size, n % columns * size,
                   min(size, pair.height - n // columns * size), min(size, pair.width - n % columns * size),
                   tuple(owned[n]), grid=pair.grid, nodata=pair.nodata,
                   **{key: tuple(value[n]) for key, value in extra.items()})
            for n in sorted(owned)]


def _cell(box: CropBox, pair: TiledPair | Window, config: ConvertConfig) -> int:
    size = config.window_size
    return box.y // size * math.ceil(pair.width / size) + box.x // size


def plan_windows(pair: TiledPair, config: ConvertConfig, training: bool) -> list[Window]:
    """Every window of the grid (the empty ones too: they hold pixels to check and count), with their crops; the
    oversampled crops are left for `plan_oversampled`."""
    size = config.window_size
    owned: dict[int, list[int]] = {n: [] for n in range(math.ceil(pair.height / size) * math.ceil(pair.width / size))}
    if config.split_blocks and training:  # first round: checked and counted, and which blocks hold data
        return _grid(pair, owned, config)
    for k in range(crop_count(pair.height, pair.width, config, training)):
        if not _oversampled(pair, k, config, training):
            owned[_cell(first_box(pair, k, config, training), pair, config)].append(k)
    return _grid(pair, owned, config)


def plan_blocks(pair: TiledPair | Window, present: frozenset | None,
                config: ConvertConfig) -> tuple[list[Window], Stats, Stats]:
    """--split_by blocks, the second round of a training tile: its training crops (each's draws clear of the val
    blocks, as `convert.block_crops` draws them) and, as windows of the val split, its val blocks' tiles, grouped
    by the cell of their first window. `present`: the blocks holding data (None: all). → (windows, what the
    training split counts: crops given up for no draw clear of the val blocks; what the val split counts: the
    image, its val blocks and the blocks holding data)."""
    from segprep import blocks

    height, width, size = pair.height, pair.width, config.crop_size
    chosen = blocks.choose(pair.image_id, height, width, config.split_blocks, config.split_fraction, config.seed,
                           None if present is None else set(present))
    tries = 10 if config.cat_max_ratio < 1.0 or pair.nodata is not None else 1  # as convert.redraw_rule redraws
    owned: dict[int, list[int]] = {}
    boxes: dict[int, list[tuple[CropBox, ...]]] = {}
    dropped = 0
    for k in range(crop_count(height, width, config, True)):
        ks = blocks.training_draws(chosen, size, config.seed, pair.image_id, k, tries)
        if ks:
            n = _cell(ks[0], pair, config)
            owned.setdefault(n, []).append(k)
            boxes.setdefault(n, []).append(ks)
        else:
            dropped += 1
    val_owned: dict[int, list[int]] = {}
    val_boxes: dict[int, list[tuple[CropBox, ...]]] = {}
    for k, tile in enumerate(chosen.tiles(size)):
        n = _cell(tile, pair, config)
        val_owned.setdefault(n, []).append(k)
        val_boxes.setdefault(n, []).append((tile,))
    windows = (_grid(pair, owned, config, draws=boxes)
               + _grid(dataclasses.replace(pair, split=VAL), val_owned, config, draws=val_boxes))
    return windows, Stats(block_crops_dropped=dropped), Stats(
        images=1, val_blocks=len(chosen.val), data_blocks=chosen.count if present is None else len(present))


VAL = "val"  # the split --split_by blocks makes


def plan_oversampled(pair: TiledPair | Window, positions: crops.ClassPositions | None,
                     config: ConvertConfig) -> list[Window]:
    """The second round of a training tile's windows: its oversampled crops, drawn from the named classes' pixels
    of the whole tile (`positions`, merged from the first round's windows) and grouped by the cell of their first
    window; only cells with crops. A tile without a named class draws them as plain random crops."""
    count = crop_count(pair.height, pair.width, config, True)
    draws = crops.CropDraws(pair.height, pair.width, config.crop_size, config.seed, pair.image_id,
                            config.oversample_fraction, positions)
    tries = 10 if config.cat_max_ratio < 1.0 or pair.nodata is not None else 1  # as convert.redraw_rule redraws
    owned: dict[int, list[int]] = {}
    boxes: dict[int, list[tuple[CropBox, ...]]] = {}
    for k in range(count):
        if _oversampled(pair, k, config, True):
            ks = tuple(itertools.islice(draws.draws(k), tries))
            n = _cell(ks[0], pair, config)
            owned.setdefault(n, []).append(k)
            boxes.setdefault(n, []).append(ks)
    return _grid(pair, owned, config, draws=boxes)


class _Source:
    """Image, mask and extra input regions of one tiled pair, decoded and converted as the whole-image path
    would."""

    def __init__(self, window: Window, image: TiffRegions, mask: TiffRegions, config: ConvertConfig,
                 extra: tuple[TiffRegions, ...] = ()):
        self._window, self._image, self._mask, self._config = window, image, mask, config
        self._extra = dict(zip((e.name for e in config.extra_inputs if e.pattern is not None), extra))
        self.index_mask = False
        self._empty = None  # (region, its no-data pixels): the last region's (its parts are cut from it)
        self._raw = None  # (region, the image's samples there): the last region read
        # The nodata value each extra input's TIFF declares (bands of the image: the image's).
        self.nodata = {e.name: value for e in config.extra_inputs
                       if (value := (image if e.bands else self._extra[e.name]).nodata) is not None}

    def extras(self, y0: int, y1: int, x0: int, x1: int) -> dict[str, np.ndarray]:
        """{name: (h, w, C) raster} of each extra input's region, at its own depth; raises `InputError`."""
        out, samples = {}, None
        for extra in self._config.extra_inputs:
            try:
                if extra.bands:
                    if samples is None:
                        samples = extras.as_stored(self._image.read(y0, y1, x0, x1), "image")
                    raster = extras.bands_of(samples, extra)
                else:
                    raster = extras.as_stored(self._extra[extra.name].read(y0, y1, x0, x1),
                                              f"extra input {extra.name}")
                extras.check_finite(raster, extra.name, self.nodata.get(extra.name))
            except codec.DecodeError as e:
                message = str(e) if str(e).startswith("extra input") else f"extra input {extra.name}: {e}"
                raise InputError("bad_extra", message) from None
            out[extra.name] = raster
        return out

    def classes(self, y0: int, y1: int, x0: int, x1: int, mode: str | None = None):
        """→ the `lookup.Conversion` of the mask's region (clipped to the source), 255 where the image holds no
        data; raises `InputError`."""
        try:
            mask, kind = codec.tiff_mask(self._mask.tiff(self._mask.read(y0, y1, x0, x1)),
                                         self._config.palette.max_index)
        except codec.DecodeError as e:
            raise InputError(e.reason or "bad_mask", f"mask: {e}") from None
        self.index_mask = mask.ndim == 2  # for the binary-mask evidence
        conversion = convert_classes(mask, self._config, mode)
        empty = self.empty(y0, y1, x0, x1)
        if empty is not None and empty.any():
            conversion.classes[empty] = IGNORE_LABEL
        return conversion

    def _samples(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The image's stored samples of a region; the last region read is kept, so that a region whose no-data
        pixels were found is not decoded again for its image."""
        key = (y0, y1, x0, x1)
        if self._raw is None or self._raw[0] != key:
            self._raw = None  # (a failed read keeps nothing)
            self._raw = key, self._image.read(y0, y1, x0, x1)
        return self._raw[1]

    def empty(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray | None:
        """(h, w) bool: the region's pixels whose every image band equals the nodata value; None without one. A
        part of the last region asked for is cut from it (`_cut` asks for its whole region first)."""
        if self._window.nodata is None:
            return None
        if self._empty is not None:
            (ry0, ry1, rx0, rx1), region = self._empty
            if ry0 <= y0 and y1 <= ry1 and rx0 <= x0 and x1 <= rx1:
                return region[y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0]
        try:
            self._empty = (y0, y1, x0, x1), empty_pixels(self._samples(y0, y1, x0, x1), self._window.nodata)
        except codec.DecodeError as e:
            raise InputError(e.reason or "bad_image", f"image: {e}") from None
        return self._empty[1]

    def image(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        try:
            return codec.tiff_image(self._image.tiff(self._samples(y0, y1, x0, x1)), self._config.bands,
                                    self._config.image_range)
        except codec.DecodeError as e:
            raise InputError(e.reason or "bad_image", f"image: {e}") from None


def _clip(box: CropBox, height: int, width: int) -> tuple[int, int, int, int]:
    return box.y, min(height, box.y + box.height), box.x, min(width, box.x + box.width)


def cut_window(window: Window, image: TiffRegions, mask: TiffRegions, config: ConvertConfig,
               training: bool, extra: tuple[TiffRegions, ...] = ()) -> tuple[list[tuple[int, bytes]], Summary]:
    """→ ([(crop number, serialized record)], the window's summary); `extra` the regions of the extra inputs read
    by pattern, in the config's order. A fault leaves no crops and is in the summary's `error`, never raised."""
    summary = Summary()
    try:
        source = _Source(window, image, mask, config, extra)
        if window.draws:
            out = _cut_placed(window, source, config, summary, redraw=training)
        else:
            out = _cut(window, source, config, training, summary)
    except InputError as e:
        out = []
        summary = Summary(error=(window.number, e.reason, str(e), where(window)), faults=1)
    summary.stats.images = int(window.number == 0 and not window.draws)
    if summary.stats.images and window.grid is not None:
        summary.stats.grids = {window.image_id: grid_entry(window.grid, window.height, window.width)}
    return out, summary


def where(window: Window) -> str:
    return (f"rows {window.y:,}–{window.y + window.h - 1:,}, columns {window.x:,}–{window.x + window.w - 1:,} "
            f"of the {window.width:,}×{window.height:,} (w×h) tile")


def _cut(window: Window, source: _Source, config: ConvertConfig, training: bool,
         summary: Summary) -> list[tuple[int, bytes]]:
    height, width = window.height, window.width
    boxes = {k: first_box(window, k, config, training) for k in window.crops}
    # The region read: the cell and every crop's first window, clipped to the source. Cells start at the top-left
    # of their crops, so it only ever grows down and to the right.
    y0, x0 = window.y, window.x
    y1 = max([window.y + window.h] + [_clip(b, height, width)[1] for b in boxes.values()])
    x1 = max([window.x + window.w] + [_clip(b, height, width)[3] for b in boxes.values()])
    source.empty(y0, y1, x0, x1)  # (with a nodata value: the region's image read once, for all of the below)
    cell = source.classes(window.y, window.y + window.h, window.x, window.x + window.w)
    _count_source(cell, source.index_mask, summary)
    empty = source.empty(window.y, window.y + window.h, window.x, window.x + window.w)
    if empty is not None:
        summary.stats.nodata_pixels += int(np.count_nonzero(empty))
        if config.split_blocks and training:
            from segprep import blocks

            summary.present = frozenset(blocks.present_blocks(empty, (window.y, window.x), config.split_blocks,
                                                              width))
    if training:
        summary.positions = class_positions(config, window.image_id, width, crop_count(height, width, config, training))
        if summary.positions is not None:
            summary.positions.add(cell.classes, window.y, window.x)
    classes = np.empty((y1 - y0, x1 - x0), np.uint8)
    classes[:window.h, :window.w] = cell.classes
    # The rest of the region belongs to other windows' cells, which report its faults: read it as "ignore".
    if x1 > window.x + window.w:
        classes[:window.h, window.w:] = source.classes(y0, y0 + window.h, x0 + window.w, x1, "ignore").classes
    if y1 > window.y + window.h:
        classes[window.h:] = source.classes(y0 + window.h, y1, x0, x1, "ignore").classes
    image = source.image(y0, y1, x0, x1)  # also without crops: every image segment is decoded (and checked) once
    rasters = source.extras(y0, y1, x0, x1)
    if not boxes:
        return []
    draws = {k: (crops.random_draws(height, width, config.crop_size, config.seed, window.image_id, k) if training
                 else iter([boxes[k]]))
             for k in window.crops}
    return _cut_crops(window, source, (y0, y1, x0, x1), classes, image, draws, config, summary, redraw=training,
                      rasters=rasters)


def _cut_placed(window: Window, source: _Source, config: ConvertConfig, summary: Summary,
                redraw: bool = True) -> list[tuple[int, bytes]]:
    """A second-round window: its oversampled crops, cut from the region their first draws cover."""
    height, width = window.height, window.width
    spans = [_clip(draws[0], height, width) for draws in window.draws]
    region = (min(s[0] for s in spans), max(s[1] for s in spans), min(s[2] for s in spans), max(s[3] for s in spans))
    classes = source.classes(*region, "ignore").classes  # the first round checked and reported every pixel
    image = source.image(*region)
    return _cut_crops(window, source, region, classes, image, dict(zip(window.crops, map(iter, window.draws))),
                      config, summary, redraw=redraw, rasters=source.extras(*region))


def _cut_crops(window: Window, source: _Source, region: tuple[int, int, int, int], classes: np.ndarray,
               image: np.ndarray, draws: dict, config: ConvertConfig, summary: Summary,
               redraw: bool, rasters: dict[str, np.ndarray] | None = None) -> list[tuple[int, bytes]]:
    """Cuts each crop k of `draws` (k → its draws: the first, then, with `redraw`, re-draws for --cat_max_ratio)
    from the `region` (y0, y1, x0, x1) read into `classes` and `image`, or on its own when a re-draw lies outside
    it; adds their stats to `summary`."""
    height, width = window.height, window.width
    y0, y1, x0, x1 = region
    empty = source.empty(y0, y1, x0, x1)

    def inside(box: CropBox) -> bool:
        by0, by1, bx0, bx1 = _clip(box, height, width)
        return y0 <= by0 and by1 <= y1 and x0 <= bx0 and bx1 <= x1

    def mask_of(box: CropBox) -> np.ndarray:
        if inside(box):
            return crops.cut(classes, CropBox(box.y - y0, box.x - x0, box.height, box.width), IGNORE_LABEL)
        by0, by1, bx0, bx1 = _clip(box, height, width)
        return crops.cut(source.classes(by0, by1, bx0, bx1, "ignore").classes, CropBox(0, 0, box.height, box.width),
                         IGNORE_LABEL)

    def share_of(box: CropBox) -> float:
        if inside(box):
            return nodata_share(empty, box, (y0, x0))
        by0, by1, bx0, bx1 = _clip(box, height, width)
        return nodata_share(source.empty(by0, by1, bx0, bx1), box, (by0, bx0))

    rule = redraw_rule(config, mask_of, None if empty is None else share_of, summary.stats) if redraw else None
    out = []
    for k in window.crops:
        box = crops.pick(draws[k], rule)
        if not redraw and empty is not None and inside(box) and tile_is_empty(empty, box, (y0, x0)):
            summary.stats.nodata_tiles_skipped += 1  # a tile without data: not written
            continue
        if inside(box):
            record, stats = encode_crop(window.image_id, box, image, classes, (y0, x0), (height, width), config,
                                        rasters=rasters, nodata=source.nodata, grid=window.grid)
        else:  # re-drawn elsewhere in the tile: read just this window
            by0, by1, bx0, bx1 = _clip(box, height, width)
            record, stats = encode_crop(window.image_id, box, source.image(by0, by1, bx0, bx1),
                                        source.classes(by0, by1, bx0, bx1, "ignore").classes, (by0, bx0),
                                        (height, width), config, rasters=source.extras(by0, by1, bx0, bx1),
                                        nodata=source.nodata, grid=window.grid)
        summary.stats.add(stats)
        out.append((k, record.serialize()))
    return out


def _count_source(conversion, index_mask: bool, summary: Summary) -> None:
    stats = summary.stats
    stats.source_pixels += int(conversion.classes.size)
    stats.source_ignore_pixels += conversion.ignore_pixels
    stats.unknown_pixels_ignored += conversion.unknown_pixels  # "nearest" never reaches here
    if index_mask and not conversion.unknown_pixels:
        counts = np.bincount(conversion.classes.ravel(), minlength=256)
        summary.zero, summary.ignore = bool(counts[0]), bool(counts[IGNORE_LABEL])
        summary.only = int(counts[0] + counts[IGNORE_LABEL]) == conversion.classes.size
    else:
        summary.only = False


def combine(summary: Summary, config: ConvertConfig) -> tuple[Stats | None, tuple[str, str] | None]:
    """A tile's windows' summaries, added → (its stats, None), or (None, (reason, message)) when any window had a
    fault: the first by window number, where it was, and how many windows had one."""
    if summary.error is not None:
        _, reason, message, where = summary.error
        more = summary.faults - 1
        return None, (reason, f"{message} (in {where}" + (f"; and in {more} more window{'s' if more > 1 else ''}"
                                                           if more else "") + ")")
    stats = summary.stats
    stats.binary_masks = int(not config.palette.index_map and summary.only and summary.zero and summary.ignore)
    return stats, None
