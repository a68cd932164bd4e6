"""Parts of the dataset tools: the contact sheet of `python -m segprep.inspect` (sheet.py); the mask reading, colour
classification and leakage checks of `python -m segprep.scan` (mask_scan.py, colors.py, leakage.py)."""
