"""Leakage between splits: the same picture in train and val, found by `segprep.scan`.

Three kinds of finding, each a pair of `split/id` from two different splits:

- same id: one id listed in two splits (two split lists, or two split folders);
- identical: byte-identical image files (a BLAKE2b digest of each file);
- near-duplicate: images whose perceptual hashes differ in at most `DEFAULT_DISTANCE` of their 256 bits (pHash:
  the 16 × 16 lowest frequencies of the DCT of a 64 × 64 grey thumbnail, each above or below their median). It
  survives re-encoding, resizing and small colour changes, not flips, rotations or crops. A JPEG's thumbnail is
  decoded at 1/8 scale in the DCT domain (OpenCV's IMREAD_REDUCED_GRAYSCALE_8): about a tenth of a full decode.

The threshold, measured (`./dev bench scan` prints it again): copies of 200 scenes re-encoded at JPEG quality 75 and
resized to 90% are at most 42 bits from their originals (median 20); 500 distinct scenes (124,750 pairs) are at
least 80 bits apart (median 128), and 70 at 200 × 150 px. 56 lies between. pHash's common 64-bit form separates them
worse: copies up to 6 bits, distinct scenes of 200 × 150 from 8.
"""

from __future__ import annotations

import dataclasses
import hashlib

import cv2
import numpy as np

HASH_BITS = 256
DEFAULT_DISTANCE = 56  # of HASH_BITS: see the module docstring
MAX_THUMBNAIL_BYTES = 256 << 20  # larger image files are digested (streamed) but not decoded for a thumbnail
_CHUNK = 8 << 20


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """What leakage checks need of one image: its file's digest and its perceptual hash (None when the file is
    too large to decode for a thumbnail, or cannot be decoded)."""

    digest: bytes
    phash: bytes | None  # HASH_BITS // 8 bytes


def phash(grey: np.ndarray) -> bytes:
    """The 256-bit perceptual hash of a grey image (any size, any dtype)."""
    small = cv2.resize(np.asarray(grey, np.float32), (64, 64), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:16, :16].ravel()
    return np.packbits(low > np.median(low)).tobytes()


def distance(a: bytes, b: bytes) -> int:
    """Bits in which two perceptual hashes differ."""
    return int(np.bitwise_count(np.frombuffer(a, np.uint64) ^ np.frombuffer(b, np.uint64)).sum())


def thumbnail(data: bytes, width: int = 0, height: int = 0) -> np.ndarray | None:
    """A grey thumbnail of an encoded image, at least 32 px a side where the image has them: a JPEG decoded at
    1/8, 1/4 or 1/2 scale in the DCT domain (by its `width` × `height`), anything else decoded whole in grey.
    None when OpenCV cannot decode it."""
    buffer = np.frombuffer(data, np.uint8)
    flag = cv2.IMREAD_GRAYSCALE
    if data[:3] == b"\xff\xd8\xff" and width and height:
        for scale, reduced in ((8, cv2.IMREAD_REDUCED_GRAYSCALE_8), (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
                               (2, cv2.IMREAD_REDUCED_GRAYSCALE_2)):
            if min(width, height) // scale >= 32:
                flag = reduced
                break
    try:
        grey = cv2.imdecode(buffer, flag)
    except cv2.error:
        return None
    return grey if grey is not None and grey.size else None


def fingerprint(f, width: int = 0, height: int = 0, max_pixels: int | None = None) -> Fingerprint:
    """The `Fingerprint` of the image file open in `f` (read from its start, in chunks: a giant file is digested
    without being held). No thumbnail (so no perceptual hash) for an image whose header declares more than
    `max_pixels`: it is never decoded whole."""
    f.seek(0)
    digest = hashlib.blake2b(digest_size=16)
    kept: list[bytes] | None = []
    size = 0
    while chunk := f.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if kept is not None:
            kept.append(chunk)
            if size > MAX_THUMBNAIL_BYTES:
                kept = None
    if max_pixels is not None and width * height > max_pixels:
        kept = None
    grey = thumbnail(b"".join(kept), width, height) if kept is not None else None
    return Fingerprint(digest.digest(), phash(grey) if grey is not None else None)


@dataclasses.dataclass(frozen=True)
class Finding:
    a: tuple[str, str]  # (split, id), the earlier split first
    b: tuple[str, str]
    kinds: tuple[str, ...]  # "same id", "identical", "near-duplicate"
    distance: int | None = None  # bits, for near-duplicates

    def line(self) -> str:
        kinds = [f"near-duplicate (perceptual hashes {self.distance} of {HASH_BITS} bits apart)"
                 if k == "near-duplicate"
                 else "identical image files" if k == "identical" else k for k in self.kinds]
        return f"{self.a[0]}/{self.a[1]} and {self.b[0]}/{self.b[1]}: {', '.join(kinds)}"


def find(images: list[tuple[str, str, Fingerprint | None]], splits: list[str], distance: int) -> list[Finding]:
    """Every pair of images from two different splits that share an id, a digest, or (with `distance` ≥ 0) a
    perceptual hash within `distance` bits. `images` are (split, id, fingerprint or None); `splits` give the
    order. Near-duplicates are compared split against split in blocks: memory stays small for 10⁵ images."""
    order = {s: i for i, s in enumerate(splits)}
    found: dict[tuple, dict] = {}

    def note(x, y, kind, bits=None):
        if order[x[0]] > order[y[0]]:
            x, y = y, x
        entry = found.setdefault((x, y), {"kinds": [], "distance": None})
        if kind not in entry["kinds"]:
            entry["kinds"].append(kind)
        if bits is not None:
            entry["distance"] = bits

    for kind, key in (("same id", lambda item: item[1]),
                      ("identical", lambda item: item[2].digest if item[2] is not None else None)):
        groups: dict = {}
        for item in images:
            k = key(item)
            if k is not None:
                groups.setdefault(k, []).append(item)
        for group in groups.values():
            for i, x in enumerate(group):
                for y in group[i + 1:]:
                    if x[0] != y[0]:
                        note(x[:2], y[:2], kind)
    if distance >= 0:
        by_split = {s: [item for item in images if item[0] == s and item[2] is not None
                        and item[2].phash is not None] for s in splits}
        for si, first in enumerate(splits):
            for second in splits[si + 1:]:
                left, right = by_split[first], by_split[second]
                if not left or not right:
                    continue
                words = HASH_BITS // 64
                b = np.frombuffer(b"".join(item[2].phash for item in right), np.uint64).reshape(-1, words)
                a = np.frombuffer(b"".join(item[2].phash for item in left), np.uint64).reshape(-1, words)
                step = max(1, (1 << 22) // (len(b) * words))
                for start in range(0, len(a), step):
                    bits = np.bitwise_count(a[start:start + step, None] ^ b[None, :]).sum(-1, dtype=np.int64)
                    for i, j in zip(*np.nonzero(bits <= distance)):
                        x, y = left[start + i], right[j]
                        if x[2].digest != y[2].digest:  # identical files are said as such
                            note(x[:2], y[:2], "near-duplicate", int(bits[i, j]))
    kinds_order = ("same id", "identical", "near-duplicate")
    return sorted((Finding(a, b, tuple(sorted(v["kinds"], key=kinds_order.index)), v["distance"])
                   for (a, b), v in found.items()), key=lambda f: (order[f.a[0]], f.a[1], order[f.b[0]], f.b[1]))


def report(findings: list[Finding], images: int, compared: int, splits: list[str], distance: int,
           shown: int | None = 50) -> list[str]:
    """The lines scan prints: one a finding (the first `shown`, all with None), or that there is none."""
    if len(splits) < 2:
        return [f"leakage: one split ({', '.join(splits) or 'none'}): nothing to compare"]
    near = (f"near-duplicates within {distance} of {HASH_BITS} bits" if distance >= 0
            else "near-duplicates not checked")
    checked = (f"{images:,} images across {len(splits)} splits checked for the same id, identical files and {near}"
               + (f" ({images - compared:,} not decoded for a perceptual hash: too large or unreadable)"
                  if distance >= 0 and compared < images else ""))
    if not findings:
        return [f"leakage: none found ({checked})"]
    lines = [f"leakage: {len(findings):,} pair{'s' if len(findings) != 1 else ''} of images in two splits "
             f"({checked}):"]
    lines += [f"  {f.line()}" for f in findings[:shown]]
    if shown is not None and len(findings) > shown:
        lines.append(f"  ... {len(findings) - shown:,} more (--all lists every one)")
    return lines
