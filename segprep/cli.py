"""Command-line plumbing shared by the pipelines and trainer entry points."""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import sys


ENTRY_POINT = ""  # "segprep" when run as `segprep COMMAND`: help then names that form


_HEAP_BLOCKS = 32 << 20  # allocations up to this size come from the heap, not fresh mappings
_HEAP_SLACK = 128 << 20  # free heap kept before memory is given back to the kernel


def steady_malloc() -> None:
    """Keeps glibc from handing freed blocks back to the kernel only to fault them in again: by default each
    allocation above 128 KiB (a decoded mask) is a fresh mapping whose pages the kernel zeroes on first touch. A
    loop decoding one 500×375 mask after another spent 6 of its 10 s in the kernel (`segprep.scan` on 1,000 pairs,
    `/usr/bin/time`); with these settings 1 s of 5.6. Applies to this process (mallopt) and to worker processes
    started after it (glibc reads MALLOC_*_ from their environment); a no-op off glibc or when the user set them."""
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(_HEAP_BLOCKS))
    os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(_HEAP_SLACK))
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt(-3, int(os.environ["MALLOC_MMAP_THRESHOLD_"]))  # M_MMAP_THRESHOLD
    mallopt(-1, int(os.environ["MALLOC_TRIM_THRESHOLD_"]))  # M_TRIM_THRESHOLD


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors ("NAME: error: ... (see --help)", exit status 2) and no prefix
    matching of flags, so `--over` is never taken for `--overwrite`."""

    def __init__(self, name: str, **kwargs):
        if ENTRY_POINT:
            prog = kwargs.get("prog", "")
            kwargs["prog"] = f"{ENTRY_POINT} {name}"
            if prog and kwargs.get("epilog"):
                kwargs["epilog"] = kwargs["epilog"].replace(prog, kwargs["prog"])
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)
        self.short_name = name
        self.add_argument("-v", "--verbose", action="store_true",
                          help="show everything: TensorFlow's import banner and INFO logs, Beam's INFO logs")

    def parse_known_args(self, args=None, namespace=None):
        parsed, rest = super().parse_known_args(args, namespace)
        if getattr(parsed, "verbose", False):
            set_verbose()
        return parsed, rest

    def error(self, message):
        print(f"{self.short_name}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def integer(minimum: int, auto: bool = False, maximum: int | None = None):
    """An argparse type: an integer in [`minimum`, `maximum`] (or 'auto' → None when `auto`), with a one-line
    complaint."""
    if maximum is not None:
        what = f"an integer from {minimum} to {maximum}"
    else:
        what = "a positive integer" if minimum == 1 else f"an integer ≥ {minimum}"
    what += " or 'auto'" if auto else ""

    def parse(value: str) -> int | None:
        if auto and value == "auto":
            return None
        try:
            n = int(value)
        except ValueError:
            n = None
        if n is None or n < minimum or (maximum is not None and n > maximum):
            raise argparse.ArgumentTypeError(f"must be {what} (received {value!r})")
        return n

    return parse


def number(low: float, high: float, low_open: bool = False):
    """An argparse type: a finite number in [low, high] (or (low, high] when `low_open`)."""
    what = f"a number {'>' if low_open else '≥'} {low:g} and ≤ {high:g}"

    def parse(value: str) -> float:
        try:
            x = float(value)
        except ValueError:
            x = math.nan
        if not (low < x <= high if low_open else low <= x <= high):  # NaN fails both
            raise argparse.ArgumentTypeError(f"must be {what} (received {value!r})")
        return x

    return parse


def jobs(value: str) -> int:
    """An argparse type for --jobs: -1 (one per core) or a positive integer."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < -1 or n == 0:
        raise argparse.ArgumentTypeError(f"must be -1 (one per core) or a positive integer (received {value!r})")
    return n


def bands(value: str) -> tuple[int, ...]:
    """An argparse type for --bands: 1 or 3 band numbers from 1."""
    try:
        bands = tuple(int(v) for v in value.split(","))
    except ValueError:
        bands = ()
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise argparse.ArgumentTypeError(f"must be 3 band numbers from 1 (or 1 for grey), e.g. 4,1,2 (received "
                                         f"{value!r})")
    return bands


def value_range(value: str) -> tuple[float, float]:
    """An argparse type for --image_range: LO,HI with LO < HI."""
    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError:
        lo = hi = float("nan")
    if not lo < hi:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be LO,HI with LO < HI, e.g. 0,4095 (received {value!r})")
    return lo, hi


def nodata_value(value: str) -> float:
    """An argparse type for --nodata: a number, or nan."""
    try:
        x = float(value)
    except ValueError:
        x = None
    if x is None or math.isinf(x):
        raise argparse.ArgumentTypeError(f"must be a number or nan, e.g. 0 or -9999 (received {value!r})")
    return x


def max_pixels_flag(parser, default: int, above: str) -> None:
    """--max_pixels, the one pixel limit of every command that decodes images; `above` says what this command does
    with a file whose header declares more."""
    parser.add_argument("--max_pixels", type=integer(1), default=default,
                        help="an image or mask whose header declares more pixels is never decoded whole (a few-KB PNG "
                             f"can declare 50,000² px): {above}. The default, %(default)s px (about 13,400²), takes "
                             "about 2 GB to decode and convert (~11 bytes a pixel); raise it where there is the "
                             "memory")


def layout_flags(parser) -> None:
    """The layout flags of segprep.pairs, shared by prepare, scan and inspect."""
    from segprep import pairs

    parser.add_argument("--images", default=pairs.VOC_IMAGES, metavar="PATTERN",
                        help="where the images are, relative to --input_dir: {id} pairs an image with its mask, "
                             "{split} names the split, * is any part of one path segment (default: %(default)s)")
    parser.add_argument("--masks", default=pairs.VOC_MASKS, metavar="PATTERN",
                        help="where the masks are, the same way; each * takes the value of the same * in the "
                             "image's path (default: %(default)s)")
    parser.add_argument("--split_lists", default=pairs.VOC_SPLIT_LISTS, metavar="PATTERN",
                        help="split lists, one id a line, used when the image pattern has no {split} "
                             "(default: %(default)s)")
    parser.add_argument("--val_fraction", type=_fraction, default=None, metavar="F",
                        help="for a tree with neither {split} nor split lists: hold out this share of the "
                             "pairs (by a seeded hash of the id) as 'val', the rest is 'train'")
    parser.add_argument("--group_by", metavar="REGEX",
                        help="with --val_fraction: ids whose first (...) group of REGEX is equal stay in one split "
                             "(e.g. '^(.*)_\\d+$' keeps tiles of one area together)")


def _fraction(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        x = -1.0
    if not 0.0 < x < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, both excluded (received {value!r})")
    return x


def examples(doc: str) -> str:
    """The "    python -m ..." lines of a module docstring, as an argparse epilog."""
    return "examples:\n" + "\n".join(line for line in doc.splitlines() if line.startswith("    python"))


VERBOSE_ENV = "SEGPREP_VERBOSE"  # set by -v; worker processes inherit it


def set_verbose() -> None:
    """-v/--verbose: Python's INFO logs (Beam's among them) and TensorFlow's own lines (see trainer/lazy.py)."""
    import logging
    import os

    os.environ[VERBOSE_ENV] = "1"
    logging.basicConfig(level=logging.INFO)
    logging.getLogger().setLevel(logging.INFO)


def verbose() -> bool:
    import os

    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


class UsageError(Exception):
    """A user mistake: reported as one line, exit status 2, no stack trace."""


def main(name: str, run, argv: list[str] | None = None, errors: tuple = ()) -> int:
    """Runs a command's `run(argv)`; usage mistakes (and the command's own input `errors`) print one line and
    exit 2, a remote store that could not be asked (storage.StorageError) or a local file the system refused
    (OSError: permissions, a read-only or full disk) one line and exit 1. An int that `run` returns is the exit
    status; anything else means 0."""
    from segprep.storage import StorageError

    try:
        status = run(argv)
    except (UsageError, *errors) as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2
    except StorageError as e:  # a remote store that could not be asked: one line, never a traceback
        print(f"{name}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the machine's answer (no permission, a read-only or full disk): one line; -v: all of it
        if verbose():
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"{name}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except SystemExit as e:  # argparse: --help (0) or a bad flag (2, its line already printed)
        return e.code if isinstance(e.code, int) else 2
    return status if isinstance(status, int) else 0
