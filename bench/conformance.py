"""Structured-reply conformance on the embedded models: `python -m bench conformance`.

The set itself is `quorum.evals.conformance` (the end-to-end tests run it on SmolLM2 with a
small `n`); this runs it at size, on one embedded model or both, and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Iterator

from bench.harness import EMBEDDED_MODELS, Measurement
from quorum import embedded
from quorum.evals import conformance
from quorum.settings import get_settings


def arguments(parser: argparse.ArgumentParser) -> None:
    """The model (or both), prompts per schema, and worked solutions to extract."""
    parser.add_argument("--model", default="both", choices=[*EMBEDDED_MODELS, "both"])
    parser.add_argument("-n", type=int, default=10, help="prompts per schema (default 10)")
    parser.add_argument(
        "--numbers", type=int, default=200, help="worked solutions to extract (default 200)"
    )


def run(args: argparse.Namespace) -> list[conformance.Row]:
    """Each chosen model's server started in a data folder of its own, asked, stopped."""
    chosen = list(EMBEDDED_MODELS) if args.model == "both" else [args.model]
    rows: list[conformance.Row] = []
    for model in chosen:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(
            prefix="quorum-conformance-", ignore_cleanup_errors=True
        ) as data_dir:
            try:
                conformance.configure(data_dir, model)
                embedded.ensure_server(get_settings())
                # A loop per model: the seam's clients (one per loop) never outlive the
                # server of the model they were made for.
                rows += asyncio.run(conformance.conformance(model, args.n, numbers=args.numbers))
            finally:
                embedded.stop_owned()
        seconds = time.monotonic() - started
        print(f"{model}: asked in {seconds:.0f} s", file=sys.stderr, flush=True)
    return rows


def table(rows: list[conformance.Row], _args: argparse.Namespace) -> Iterator[str]:
    """Per model and schema: first try, valid, filled, right, and seconds a prompt."""
    yield conformance.table(rows)


MEASUREMENT = Measurement(
    "conformance",
    "how often the embedded models fill Quorum's structured replies, per schema",
    arguments,
    run,
    table=table,
)
