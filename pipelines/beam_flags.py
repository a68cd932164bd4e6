"""Beam's pipeline option names, known without importing Beam (about a second), so that prepare answers a
mistyped flag at once.

`beam_options.txt` lists the option strings of the Beam version on its first line; it is used only when that is
the installed version. With another Beam the check imports Beam and asks it. `python -m pipelines.beam_flags`
rewrites the file for the installed Beam; a test keeps it equal to Beam's own list.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys

LIST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "beam_options.txt")


def installed_version() -> str | None:
    try:
        return importlib.metadata.version("apache-beam")
    except importlib.metadata.PackageNotFoundError:
        return None


def from_beam() -> set[str]:
    """Every option string Beam's PipelineOptions accept (imports Beam)."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    seen = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(str(cls), cls)
    for cls in seen.values():
        cls._add_argparse_args(parser)  # noqa: SLF001 - how Beam itself collects them (get_all_options)
    return {s for action in parser._actions for s in action.option_strings if s.startswith("--")}  # noqa: SLF001


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
    known = listed if version and version == installed_version() else from_beam()
    return [flag for flag in flags if flag not in known]


def write() -> None:
    with open(LIST, "w") as f:
        f.write("\n".join([installed_version(), *sorted(from_beam())]) + "\n")


if __name__ == "__main__":
    write()
    print(f"wrote {LIST} for apache-beam {installed_version()}", file=sys.stderr)
