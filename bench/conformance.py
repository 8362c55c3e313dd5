"""Structured-reply conformance on the embedded models: `python -m bench.conformance`.

The set itself is `quorum.evals.conformance` (the end-to-end tests run it on SmolLM2 with a
small `n`); this runs it at size, on one embedded model or both, and prints the table.
"""

from quorum.evals.conformance import main

if __name__ == "__main__":
    main()
