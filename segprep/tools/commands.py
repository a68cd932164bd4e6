"""The `segprep` command: `segprep prepare ...`, `segprep train ...` and so on, the same flags as the
`python -m` commands (which keep working).

    segprep prepare --runner=DirectRunner
    segprep train
    segprep predict --model_dir runs/latest --input photo.jpg --output_dir preds/
"""

from __future__ import annotations

import importlib
import sys

# command → (module, one line); the modules are imported only for the command that runs.
COMMANDS = {
    "scan": ("segprep.tools.scan", "what a dataset holds: image formats, mask kinds, sizes, colours and what the "
                                   "palette makes of them (before prepare)"),
    "prepare": ("pipelines.prepare", "images and masks (any layout) → shuffled, sharded TFRecords of crops, on "
                                     "Apache Beam"),
    "verify": ("segprep.tools.verify", "are the shards of a prepare output whole and consistent with metadata.json?"),
    "inspect": ("segprep.tools.sheet", "a contact sheet of crops and masks, from shards or a dataset root"),
    "train": ("trainer.train", "train a Keras segmentation model on prepare's shards"),
    "predict": ("trainer.predict", "colour (or index) masks for images of any size with a trained run"),
    "evaluate": ("trainer.evaluate", "per-class IoU, mIoU and pixel accuracy of a trained run on a split"),
}

USAGE = "usage: segprep COMMAND [FLAGS]   (segprep COMMAND --help for a command's flags and examples)"


def _help() -> str:
    lines = [USAGE, "", "commands, in the order of a project:"]
    lines += [f"  {name:9s} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "examples:", *["  " + line.strip() for line in __doc__.splitlines() if line.startswith("    segprep")]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_help(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"segprep: error: unknown command {name!r}; choose from {', '.join(COMMANDS)} (see segprep --help)",
              file=sys.stderr)
        return 2
    from segprep.tools import cli

    cli.ENTRY_POINT = "segprep"
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
