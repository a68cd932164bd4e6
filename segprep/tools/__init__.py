"""Parts of the dataset tools: the contact sheet of `python -m segprep.inspect` (sheet.py) and the leakage checks of
`python -m segprep.scan` (leakage.py)."""
