"""Dataflow staging, offline: Beam builds an sdist from --setup_file that installs and imports on a worker."""

import glob
import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.parametrize("setup_file", ["pyproject.toml", "setup.py"])
def test_setup_file_stages_an_installable_sdist(tmp_path, setup_file):
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.stager import Stager

    staging = tmp_path / "staging"
    staging.mkdir()
    options = PipelineOptions([f"--setup_file={os.path.join(REPO, setup_file)}", f"--temp_location={tmp_path}"])
    resources = Stager.create_job_resources(options, str(staging))
    sdists = [r for r in glob.glob(str(staging / "**"), recursive=True) if r.endswith(".tar.gz")]
    assert sdists, resources
    # A fresh venv, as a worker has: install the sdist alone, dependencies from this environment's site-packages.
    venv = tmp_path / "worker"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = [p for p in sys.path if p.endswith("site-packages")][0]
    target = tmp_path / "worker_site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), sdists[0]], check=True, cwd=tmp_path)
    check = ("import segprep, pipelines, trainer, pipelines.prepare, segprep.lookup; "
             "print(segprep.__file__)")
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", check], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": f"{target}:{site}", "PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(str(target))  # imported from the installed sdist, not the checkout


def test_worker_dockerfile_matches_the_pinned_beam_and_copies_every_package():
    """Docker cannot run here; what can drift without it is checked: the SDK image's Beam is the Beam that submits
    the job, and the image gets every package the project installs, and the files `pip install .` needs."""
    import re

    text = open(os.path.join(REPO, "Dockerfile")).read()
    pinned = re.search(r"^apache-beam==(\S+)$", open(os.path.join(REPO, "constraints.txt")).read(), re.M).group(1)
    assert re.search(r"^ARG BEAM_VERSION=(\S+)$", text, re.M).group(1) == pinned
    assert "FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}" in text
    assert re.search(r"^ARG PYTHON_VERSION=(\S+)$", text, re.M).group(1) == "3.11"
    copied = {p for line in re.findall(r"^COPY (.+) \S+$", text, re.M) for p in line.split()}
    assert all(os.path.exists(os.path.join(REPO, p)) for p in copied), copied
    include = re.search(r'include = \[(.*)\]', open(os.path.join(REPO, "pyproject.toml")).read()).group(1)
    packages = {p.strip(' "*') for p in include.split(",")}
    assert packages <= copied
    assert {"pyproject.toml", "setup.py", "README.md", "constraints.txt"} <= copied  # readme: pyproject names it
    ignored = open(os.path.join(REPO, ".dockerignore")).read().split()
    assert ".venv" in ignored and "data" in ignored
