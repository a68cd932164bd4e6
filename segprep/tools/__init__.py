"""The user-facing tools on top of the library: `scan`, `verify`, `inspect` (sheet.py), the `segprep` command, and
the command-line plumbing every command shares (cli.py, progress.py). The library itself (codecs, palettes, the
lookup, pairs, crops, schema, records, metadata, storage) is the rest of `segprep/`, and imports nothing from here.
"""
