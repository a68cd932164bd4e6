"""`python -m segprep.verify` (are a prepare output's shards whole and consistent): the command lives in
segprep/tools/verify.py."""

import sys

from segprep.tools.verify import main

if __name__ == "__main__":
    sys.exit(main())
