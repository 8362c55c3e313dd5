"""`python -m bench [NAME] [options]`: one measurement, the suite by default (bench/harness.py).

`python -m bench --list` names every measurement; bench/README.md says what each measures.
"""

import sys

from bench.harness import main

# Guarded: a measurement's worker processes (multiprocessing's spawn and forkserver) import
# this module again under another name, and must not start a measurement of their own.
if __name__ == "__main__":
    sys.exit(main())
