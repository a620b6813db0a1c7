#!/usr/bin/python3
"""calc_client.py -- runs rrpc.examples.calc_client from this checkout, uninstalled.

The example lives in the package (src/rrpc/examples/calc_client.py; installed:
python3 -m rrpc.examples.calc_client); this script keeps the old path working
for the repository's tests, scripts and docs.  It puts src/ first on the
path, so it always runs this tree's rrpc, never an installed one.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'src'))
from rrpc.examples.calc_client import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
