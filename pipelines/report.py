"""What prepare says when a run ends: the summary of what it wrote, its warnings and the exit status; and the one
line that says a disk filled up."""

from __future__ import annotations

import errno
import re
import sys

from segprep import layout
from segprep.formats.metadata import Metadata


def report(meta: Metadata, out: str, seconds: float, max_failed: int) -> int:
    """Prints the end summary; → exit status."""
    splits = meta.splits.values()
    crops = sum(s.records for s in splits)
    images = sum(s.images_used for s in splits)
    failed = sum(s.inputs_failed for s in splits)
    if meta.flags.get("split_by", "id") != "id":  # every image is in both splits (by blocks): count it once
        images = max((s.images_used for s in splits), default=0)
        failed = max((s.inputs_failed for s in splits), default=0)
    mpx = sum(s.source_pixels for s in splits) / 1e6
    shards = sum(len(s.shards) for s in splits)
    lines = [f"prepare: {images} images → {crops} crops in {_plural(shards, 'shard')}, {failed} failed, "
             f"{seconds:.1f} s ({crops / max(seconds, 1e-9):.1f} crops/s, {mpx / max(seconds, 1e-9):.2f} source "
             f"Mpx/s) → {out}"]
    for s in splits:
        notes = [f"{s.images_used}/{s.images_listed} images", f"{s.records} crops ({s.crop_mode})",
                 _plural(len(s.shards), "shard")]
        for count, what in ((s.unknown_pixels_snapped, "off-palette mask pixels snapped to a present palette colour"),
                            (s.unknown_pixels_ignored, "off-palette mask pixels ignored (255)"),
                            (s.exif_applied, "images turned as their EXIF orientation says"),
                            (s.exif_as_stored, "images read as stored despite an EXIF orientation")):
            if count:
                notes.append(f"{count:,} {what}")
        if s.inputs_failed:
            notes.append(f"{s.inputs_failed} failed → {layout.join(out, s.errors_file)}")
        lines.append(f"  {s.name}: " + ", ".join(notes))
    print("\n".join(lines))
    for s in splits:
        if s.binary_masks:
            print(f"prepare: warning: {s.name}: {s.binary_masks} of {s.images_used} masks hold only the values 0 "
                  f"and 255, and 255 is the ignore label: {100 * s.source_ignore_share:.1f}% of the split's mask "
                  "pixels are ignored, so a model never learns the class they mark. If 255 marks a class (a "
                  "building, a road), re-run with --palette inria or a palette whose index_map says so, e.g. "
                  '{"index_map": {"0": 0, "255": 1}}.', file=sys.stderr)
    if failed > max_failed:
        print(f"prepare: {failed} inputs failed (allowed: {max_failed}); every other input was written. "
              "See the errors files above.", file=sys.stderr)
        return 1
    return 0


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


_OUT_OF_SPACE = re.compile(r"\[Errno (?:%d|%d)\] (.*?)(?: \[while running .*)?$" % (errno.ENOSPC, errno.EDQUOT), re.S)


def out_of_space(error: BaseException) -> str | None:
    """The one line to say when `error` (as raised by the runner, which wraps a worker's OSError in its own
    exception and text) means a disk filled up; None otherwise."""
    for e in (error, error.__cause__, error.__context__):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            line = e.strerror + (f": {e.filename}" if e.filename else "")
            break
    else:
        found = _OUT_OF_SPACE.search(str(error))
        if not found:
            return None
        line = found.group(1).strip().splitlines()[0]
    if "--spill_dir" in line:  # the spill's own message says what to do
        return line
    return f"out of disk space: {line}; free some, or choose an --output_dir (or --temp_location) with room"
