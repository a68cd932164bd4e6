"""Beam's pipeline option names, known without importing Beam (about a second), so that prepare answers a
mistyped flag at once.

`beam_options.txt` lists the option strings of the Beam version on its first line; it is used only when that is
the installed version. With another Beam this early check passes everything, and prepare's own check after Beam
is imported (PipelineOptions.get_all_options with retain_unknown_options, a public API) names the stranger.
`python tests/beam_options.py` rewrites the file for the installed Beam (it asks Beam's own parser, which only a
developer's tool may do: shipped code uses Beam's public API only); a test fails when the file is for another Beam
version or differs from Beam's list.
"""

from __future__ import annotations

import importlib.metadata
import os

LIST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "beam_options.txt")


def installed_version() -> str | None:
    try:
        return importlib.metadata.version("apache-beam")
    except importlib.metadata.PackageNotFoundError:
        return None


def _listed() -> tuple[str | None, set[str]]:
    try:
        with open(LIST) as f:
            lines = f.read().split()
    except OSError:
        return None, set()
    return (lines[0], set(lines[1:])) if lines else (None, set())


def unknown(beam_args: list[str]) -> list[str]:
    """The flags among `beam_args` (what prepare's own parser left) that Beam does not know either."""
    flags = [arg.split("=", 1)[0] for arg in beam_args if arg.startswith("--") and len(arg) > 2]
    if not flags:
        return []
    version, listed = _listed()
    if not version or version != installed_version():
        return []  # prepare's check after importing Beam names an unknown flag
    return [flag for flag in flags if flag not in listed]
