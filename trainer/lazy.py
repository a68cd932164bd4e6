"""TensorFlow and Keras imported on first use, and quietly.

The trainer's commands parse their flags and check their inputs before anything touches TensorFlow, so --help
and usage mistakes answer at once (importing TensorFlow takes seconds). Their modules name `tf`, `keras` and the
heavy trainer modules through `Lazy` proxies (the pattern of TensorFlow's own LazyLoader): the import happens at
the first attribute access.

TensorFlow's import prints a banner on stderr from C++ ("All log messages before absl::InitializeLog() ...",
"oneDNN custom operations are on ...", "This TensorFlow binary is optimized to use ...") that
TF_CPP_MIN_LOG_LEVEL does not silence. `import_tensorflow` points stderr's file descriptor at a temp file while
TensorFlow and Keras import, then writes back every captured line that is not one of those known banner lines, so
real warnings and errors still reach the terminal. It also sets TF_CPP_MIN_LOG_LEVEL=1 (TensorFlow's C++ INFO
lines off, warnings on) unless the environment already sets it. -v/--verbose (segprep.cli.set_verbose)
turns all of that off. Costs nothing measurable: one dup2 each way.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import tempfile

from segprep import cli

BANNER = re.compile("|".join([
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"oneDNN custom operations are on",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
    r"TF-TRT Warning: Could not find TensorRT",
    r"Could not find cuda drivers on your machine, GPU will not be used",
    r"external/local_xla/xla/tsl/cuda/cudart_stub.cc",
]))

def import_tensorflow():
    """Imports TensorFlow and Keras (once), keeping their import banner off the terminal unless verbose."""
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        return sys.modules["tensorflow"]
    if cli.verbose():
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        importlib.import_module("keras")
        return importlib.import_module("tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            importlib.import_module("keras")
            tf = importlib.import_module("tensorflow")
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines(keepends=True) if not BANNER.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
    return tf


def load(name: str):
    """`importlib.import_module(name)` for a module that imports TensorFlow: TensorFlow first, quietly."""
    import_tensorflow()
    return importlib.import_module(name)


class Lazy:
    """A module imported at its first attribute access; TensorFlow first, quietly (see `import_tensorflow`)."""

    def __init__(self, name: str):
        self._name = name

    def _module(self):
        module = sys.modules.get(self._name)
        if module is None:
            import_tensorflow()
            module = importlib.import_module(self._name)
        return module

    def __getattr__(self, attr: str):
        return getattr(self._module(), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


tf = Lazy("tensorflow")
keras = Lazy("keras")
