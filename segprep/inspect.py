"""`python -m segprep.inspect` (a contact sheet of crops and masks): the command lives in segprep/tools/sheet.py."""

import sys

from segprep.tools.sheet import main

if __name__ == "__main__":
    sys.exit(main())
