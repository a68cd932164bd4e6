"""`python -m segprep.scan` (what is in a dataset, before prepare): the command lives in segprep/tools/scan.py."""

import sys

from segprep.tools.scan import main

if __name__ == "__main__":
    sys.exit(main())
