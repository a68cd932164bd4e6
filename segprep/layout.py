"""Where the input lives: the Pascal VOC layout, and paths joined with '/' so that the same code serves local
folders and gs:// buckets. What segprep writes is in segprep/formats/.

    VOC_ROOT/JPEGImages/ID.jpg
    VOC_ROOT/SegmentationClass/ID.png
    VOC_ROOT/ImageSets/Segmentation/SPLIT.txt
"""

from __future__ import annotations

IMAGE_DIR = "JPEGImages"
MASK_DIR = "SegmentationClass"
SPLIT_DIR = "ImageSets/Segmentation"


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
