"""The `segprep` command: `segprep prepare ...`, `segprep train ...` and so on, the same flags as the
`python -m` commands (which keep working).

    segprep prepare --runner=DirectRunner
    segprep train
    segprep predict --model_dir runs/latest --input photo.jpg --output_dir preds/

The commands are whatever the installed packages declare as entry points in the group `segprep.commands`
(pyproject.toml: `prepare = "pipelines.prepare:main"`, ...): this module names none of them, and imports only the
one that runs. A command's line in `segprep --help` is the first line of its module's docstring, read from the
source without importing it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import sys

GROUP = "segprep.commands"
# How `segprep --help` lists them: in the order of a project; commands it does not know come after, by name.
ORDER = ("scan", "prepare", "verify", "inspect", "train", "predict", "evaluate")

USAGE = "usage: segprep COMMAND [FLAGS]   (segprep COMMAND --help for a command's flags and examples)"


def commands() -> dict[str, importlib.metadata.EntryPoint]:
    found = {ep.name: ep for ep in importlib.metadata.entry_points(group=GROUP)}
    rank = {name: i for i, name in enumerate(ORDER)}
    return dict(sorted(found.items(), key=lambda item: (rank.get(item[0], len(ORDER)), item[0])))


def summary(entry: importlib.metadata.EntryPoint) -> str:
    """The first line of the command module's docstring, without importing the module."""
    try:
        spec = importlib.util.find_spec(entry.module)
        with open(spec.origin, encoding="utf-8") as f:
            doc = ast.get_docstring(ast.parse(f.read())) or ""
    except (ImportError, AttributeError, OSError, SyntaxError, TypeError):
        return ""
    return doc.strip().splitlines()[0].rstrip(".") if doc.strip() else ""


def _help(found: dict) -> str:
    lines = [USAGE, "", "commands, in the order of a project:"]
    lines += [f"  {name:9s} {summary(entry)}" for name, entry in found.items()]
    examples = ["  " + line.strip() for line in __doc__.splitlines() if line.startswith("    segprep")]
    lines += ["", "examples:", *examples]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    found = commands()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_help(found), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in found:
        print(f"segprep: error: unknown command {name!r}; choose from {', '.join(found)} (see segprep --help)",
              file=sys.stderr)
        return 2
    from segprep import cli

    cli.ENTRY_POINT = "segprep"
    return found[name].load()(rest)


if __name__ == "__main__":
    sys.exit(main())
