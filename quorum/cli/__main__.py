"""`python -m quorum.cli`: the `quorum` command."""

from quorum.cli import app

app()
