"""Path patterns: where a dataset's images and masks are, in any layout, and listing the files a pattern matches.

A pattern is a path relative to --input_dir, '/'-separated, in which
- `{id}` is the pairing key: an image and a mask with the same id (and split, and `*` values) are a pair;
- `{split}` names the split: that part of the path, kept as the archive writes it (`training`, `Train`, ...);
- `*` is any part of one path segment; the value the i-th `*` takes in an image's path is used for the i-th `*`
  of its mask's path (so a mask pattern has at most as many as the image pattern);
- everything else is literal (no `?` or `[...]`). Files and folders whose names start with a dot (macOS's `._x.jpg`
  shadows, `.DS_Store`) never match a wildcard.

Each pattern is listed once: locally one `scandir` per folder the pattern can reach, on gs:// one listing of the
prefix before the first wildcard (Beam's FileSystems.match).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re

from segprep import storage


_FIELD = re.compile(r"\{(id|split)(?::pad=(\d))?\}|\*")


class LayoutError(ValueError):
    """A pattern, flag or tree that cannot be read as a dataset: a usage mistake, told in one line."""


@dataclasses.dataclass(frozen=True)
class Match:
    image_id: str
    split: str | None
    stars: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Pattern:
    """A checked path pattern (see the module docstring)."""

    flag: str
    text: str

    @classmethod
    def parse(cls, flag: str, text: str, need_id: bool = True, need_split: bool = False,
              pad: bool = False) -> Pattern:
        """A checked pattern; with `pad` (patterns that are only formatted, never matched: extra inputs), `{id}` may
        be `{id:pad=N}`: every run of digits in the id zero-padded to N (Potsdam's DSM `dsm_potsdam_02_10.tif`
        beside `top_potsdam_2_10_RGB.tif`: `{id:pad=2}`)."""
        bad = None
        fields = r"\{id(?::pad=[1-9])?\}|\{split\}" if pad else r"\{id\}|\{split\}"
        if not text or text.startswith("/") or "\\" in text or "\x00" in text:
            bad = "must be a '/'-separated path relative to --input_dir"
        elif any(part in ("", ".", "..") for part in text.split("/")):
            bad = "must not hold empty, '.' or '..' path segments"
        elif re.search(r"[{}]", re.sub(fields, "", text)):
            bad = ("knows only the fields {id} and {split} (and * for one path segment)" +
                   (", and {id:pad=N} to zero-pad the id's numbers to N digits" if pad else ""))
        elif len(re.findall(r"\{id[:}]", text)) > 1 or text.count("{split}") > 1:
            bad = "may hold {id} and {split} once each"
        elif need_id and not re.search(r"\{id[:}]", text):
            bad = "needs {id}, the key that pairs an image with its mask"
        elif need_split and "{split}" not in text:
            bad = "needs {split}, the part of the path that names the split"
        elif re.search(r"(\{id(?::pad=\d)?\}|\{split\}|\*)(\{id|\{split\}|\*)", text):
            bad = "needs literal text between two fields (e.g. {id}_{split}), or the match is ambiguous"
        if bad:
            raise LayoutError(f"{flag} {text!r} {bad}.")
        return cls(flag, text)

    @functools.cached_property
    def stars(self) -> int:
        return self.text.count("*")

    @property
    def has_split(self) -> bool:
        return "{split}" in self.text

    @functools.cached_property
    def _regex(self) -> re.Pattern:
        parts, star = [], 0
        pos = 0
        for m in _FIELD.finditer(self.text):
            parts.append(re.escape(self.text[pos:m.start()]))
            if m.group(0) == "*":
                parts.append(f"(?P<s{star}>[^/]*)")
                star += 1
            else:
                parts.append(f"(?P<{m.group(1)}>[^/]+)")
            pos = m.end()
        parts.append(re.escape(self.text[pos:]))
        return re.compile("".join(parts) + r"\Z")

    def match(self, rel: str) -> Match | None:
        m = self._regex.match(rel)
        if m is None:
            return None
        groups = m.groupdict()
        return Match(groups.get("id") or "", groups.get("split"), tuple(groups[s] for s in self._star_groups))

    @functools.cached_property
    def _star_groups(self) -> tuple[str, ...]:
        return tuple(f"s{i}" for i in range(self.stars))

    def format(self, image_id: str = "{id}", split: str | None = None, stars: tuple[str, ...] = ()) -> str:
        """The path for these values; a value not given stays as its field (for messages)."""
        out, star, pos = [], 0, 0
        for m in _FIELD.finditer(self.text):
            out.append(self.text[pos:m.start()])
            if m.group(0) == "*":
                out.append(stars[star] if star < len(stars) else "*")
                star += 1
            elif m.group(1) == "id":
                width = int(m.group(2) or 0)
                out.append(re.sub(r"\d+", lambda d: d.group(0).zfill(width), image_id) if width else image_id)
            else:
                out.append(split if split is not None else "{split}")
            pos = m.end()
        out.append(self.text[pos:])
        return "".join(out)

    def glob(self) -> str:
        return _FIELD.sub("*", self.text)


def _segment_regex(segment: str) -> re.Pattern:
    return re.compile("".join("[^/]*" if tok == "*" else re.escape(tok) for tok in re.split(r"(\*)", segment))
                      + r"\Z")


def list_matches(root: str, pattern: Pattern) -> list[tuple[str, Match]]:
    """(path relative to `root`, what the fields matched) of every file `pattern` matches, sorted by path. Names
    starting with a dot never match a wildcard (they may match a literal '.x' of the pattern)."""
    if storage.is_remote(root):
        prefix = root.rstrip("/") + "/"
        literal_dots = {i for i, seg in enumerate(pattern.text.split("/")) if seg.startswith(".")}
        rels = [p[len(prefix):] for p in storage.match(prefix + pattern.glob()) if p.startswith(prefix)]
        rels = [rel for rel in rels if not any(seg.startswith(".") and i not in literal_dots
                                               for i, seg in enumerate(rel.split("/")))]
    else:
        rels = _walk_local(root, pattern.glob().split("/"))  # skips dot names itself
    out = []
    for rel in rels:
        m = pattern.match(rel)
        if m is not None:
            out.append((rel, m))
    out.sort(key=lambda item: item[0])
    return out


def _walk_local(root: str, segments: list[str]) -> list[str]:
    """Local listing, a folder at a time: literal segments are joined, wildcard ones read with one scandir."""
    frontier = [""]
    for depth, segment in enumerate(segments):
        last = depth == len(segments) - 1
        nxt = []
        if "*" not in segment:
            for rel in frontier:
                cand = f"{rel}/{segment}" if rel else segment
                full = os.path.join(root, cand)
                if (os.path.isfile(full) if last else os.path.isdir(full)):
                    nxt.append(cand)
        else:
            regex = _segment_regex(segment)
            for rel in frontier:
                try:
                    with os.scandir(os.path.join(root, rel) if rel else root) as it:
                        for entry in it:
                            if entry.name.startswith(".") or not regex.match(entry.name):
                                continue
                            try:
                                ok = entry.is_file() if last else entry.is_dir()
                            except OSError:
                                continue
                            if ok:
                                nxt.append(f"{rel}/{entry.name}" if rel else entry.name)
                except OSError:  # not a folder, unreadable or gone
                    continue
        frontier = nxt
        if not frontier:
            break
    return frontier
