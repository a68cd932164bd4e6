"""Beam's pipeline options for prepare: their names, known without importing Beam (about a second), so that
prepare answers a mistyped flag at once; then, with Beam imported, the options parsed and checked (`parse`).

`beam_options.txt` lists the option strings of the Beam version on its first line; it is used only when that is
the installed version. With another Beam this early check passes everything, and prepare's own check after Beam
is imported (PipelineOptions.get_all_options with retain_unknown_options, a public API) names the stranger.
`python tests/beam_options.py` rewrites the file for the installed Beam (it asks Beam's own parser, which only a
developer's tool may do: shipped code uses Beam's public API only); a test fails when the file is for another Beam
version or differs from Beam's list.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import os

from segprep.cli import UsageError

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


def parse(beam_args: list[str]):
    """Beam drops flags it does not know with only a log line; a mistyped flag is a usage error here."""
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(beam_args)
    beam_log = logging.getLogger("apache_beam.options.pipeline_options")
    level = beam_log.level
    beam_log.setLevel(logging.ERROR)  # its "Discarding unparseable args" warning: we say it better below
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):  # Beam's parser prints its whole usage (130 lines) for a bad value
            unknown = sorted(set(options.get_all_options(retain_unknown_options=True))
                             - set(options.get_all_options()))
    except SystemExit:
        lines = [line for line in said.getvalue().splitlines() if "error: " in line]
        why = lines[-1].split("error: ", 1)[1] if lines else "a Beam pipeline option has a bad value"
        raise UsageError(f"{why} (a Beam pipeline option).") from None
    finally:
        beam_log.setLevel(level)
    if unknown:
        raise UsageError(f"unknown flag --{unknown[0]}: neither a prepare flag (see --help) nor a Beam pipeline "
                         "option.")
    _check_runner(options)
    return options


def _check_runner(options) -> None:
    """A mistyped --runner, or Dataflow without the options it needs, is a usage mistake: one line, before
    anything is made or written (Beam would say it in a traceback, after the sample and the temp dir exist)."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions, StandardOptions
    from apache_beam.runners.runner import create_runner

    name = options.view_as(StandardOptions).runner
    if name is None:
        return
    try:
        create_runner(name)
    except (ValueError, ImportError) as e:
        known = str(e).split("Valid values are ", 1)[-1].split(" or the fully")[0] if "Valid values" in str(e) else ""
        raise UsageError(f"--runner {name}: not a Beam runner" + (f" (Beam knows {known})" if known else f": {e}")
                         + ".") from None
    if "Dataflow" in str(name):
        gcp = options.view_as(GoogleCloudOptions)
        missing = [flag for flag, value in (("--project", gcp.project), ("--region", gcp.region),
                                            ("--temp_location", gcp.temp_location or gcp.staging_location))
                   if not value]
        if missing:
            raise UsageError(f"--runner {name} needs {', '.join(missing)} (e.g. --project P --region us-central1 "
                             "--temp_location gs://B/tmp); see docs/scale.md (Dataflow).")


def direct_to_fnapi(options) -> None:
    """--runner=DirectRunner (or none) runs on Beam's FnApiRunner, the runner DirectRunner itself uses offline.
    Online, Beam's DirectRunner would first download the Prism runner binary and run there, ignoring
    --direct_num_workers and --direct_running_mode; a data tool should not fetch binaries at run time, and the same
    flags should do the same thing on every machine. --runner=PrismRunner still picks Prism."""
    from apache_beam.options.pipeline_options import StandardOptions

    standard = options.view_as(StandardOptions)
    if standard.runner in (None, "DirectRunner", "direct", "Direct"):
        standard.runner = "FnApiRunner"


def local_runner(options) -> bool:
    """True for the runners whose workers all run on this machine (and share its disk)."""
    from apache_beam.options.pipeline_options import StandardOptions

    runner = str(options.view_as(StandardOptions).runner or "DirectRunner")
    return any(name in runner for name in ("Direct", "FnApi", "Prism"))
