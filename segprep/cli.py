"""Command-line plumbing shared by the pipelines and trainer entry points."""

from __future__ import annotations

import argparse
import sys


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors ("NAME: error: ... (see --help)", exit status 2) and no prefix
    matching of flags, so `--over` is never taken for `--overwrite`."""

    def __init__(self, name: str, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)
        self.short_name = name

    def error(self, message):
        print(f"{self.short_name}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def examples(doc: str) -> str:
    """The "    python -m ..." lines of a module docstring, as an argparse epilog."""
    return "examples:\n" + "\n".join(line for line in doc.splitlines() if line.startswith("    python"))


class UsageError(Exception):
    """A user mistake: reported as one line, exit status 2, no stack trace."""


def main(name: str, run, argv: list[str] | None = None, errors: tuple = ()) -> int:
    """Runs a command's `run(argv)`; usage mistakes (and the command's own input `errors`) print one line and
    exit 2. An int that `run` returns is the exit status; anything else means 0."""
    try:
        status = run(argv)
    except (UsageError, *errors) as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2
    return status if isinstance(status, int) else 0
