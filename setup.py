"""For `--setup_file ./setup.py` on Dataflow: all metadata lives in pyproject.toml."""
from setuptools import setup

setup()
