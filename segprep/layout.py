"""Where things live: the Pascal VOC input layout and the output layout of shards, errors and metadata.

Paths are plain strings joined with '/', so the same code serves local folders and gs:// buckets.

    VOC_ROOT/JPEGImages/ID.jpg
    VOC_ROOT/SegmentationClass/ID.png
    VOC_ROOT/ImageSets/Segmentation/SPLIT.txt

    OUT/{split}-{shard:05d}-of-{num_shards:05d}.tfrecord[.gz]
    OUT/errors/{split}.jsonl
    OUT/metadata.json            (written last: its presence means the run finished)
"""

from __future__ import annotations

import re

IMAGE_DIR = "JPEGImages"
MASK_DIR = "SegmentationClass"
SPLIT_DIR = "ImageSets/Segmentation"
METADATA = "metadata.json"
ERRORS_DIR = "errors"
TEMP_PREFIX = ".segprep-tmp-"  # OUT/.segprep-tmp-RUN/: a run's shards until they are moved into place
TEMP_MARKER = ".segprep-run.json"  # in each run's temp dir, written first: this folder is segprep's
TEMP_JOURNAL = ".segprep-moves.json"  # in a temp dir, written before a run moves files into OUT: what they will be

SHARD_RE = re.compile(r"^(?P<split>.+)-(?P<shard>\d{5})-of-(?P<num>\d{5})\.tfrecord(\.gz)?$")


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/")] + [p.strip("/") for p in parts if p])


def image_path(root: str, image_id: str) -> str:
    return join(root, IMAGE_DIR, f"{image_id}.jpg")


def mask_path(root: str, image_id: str) -> str:
    return join(root, MASK_DIR, f"{image_id}.png")


def split_path(root: str, split: str) -> str:
    return join(root, SPLIT_DIR, f"{split}.txt")


def parse_split_list(text: str, repeated: list[str] | None = None) -> list[str]:
    """IDs from an ImageSets file: one a line, blank lines and surrounding space ignored, first column only
    (VOC's per-class lists add a ±1 column), duplicates dropped keeping the first (each named once in
    `repeated`, when given, so that the caller can say so)."""
    ids = []
    seen = set()
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] not in seen:
            seen.add(fields[0])
            ids.append(fields[0])
        elif fields and repeated is not None and fields[0] not in repeated:
            repeated.append(fields[0])
    return ids


def shard_name(split: str, shard: int, num_shards: int, compressed: bool = False) -> str:
    return f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord" + (".gz" if compressed else "")


def shard_pattern(split: str) -> str:
    """A glob for any shard count of `split`: readers must still take names from metadata.json, never from it."""
    return f"{split}-?????-of-?????.tfrecord*"


def is_shard(name: str) -> bool:
    return SHARD_RE.match(name.rsplit("/", 1)[-1]) is not None


def metadata_path(out: str) -> str:
    return join(out, METADATA)


def errors_path(out: str, split: str) -> str:
    return join(out, ERRORS_DIR, f"{split}.jsonl")
