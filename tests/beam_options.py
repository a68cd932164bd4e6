"""Regenerates pipelines/beam_options.txt for the installed Beam:

    .venv/bin/python tests/beam_options.py

Beam has no public list of its pipeline options' flag strings (aliases such as --experiment included), so this
developer's tool asks Beam's own argument parser, as Beam's get_all_options does. Shipped code never does: see
pipelines/beam_flags.py. test_newcomer.py fails when the shipped file drifts from this list.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines import beam_flags  # noqa: E402


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


def write() -> None:
    with open(beam_flags.LIST, "w") as f:
        f.write("\n".join([beam_flags.installed_version(), *sorted(from_beam())]) + "\n")


if __name__ == "__main__":
    write()
    print(f"wrote {beam_flags.LIST} for apache-beam {beam_flags.installed_version()}", file=sys.stderr)
