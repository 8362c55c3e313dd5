"""A small Model Context Protocol server for tests, written with the `mcp` package's FastMCP.

    python -m tests.mcp_server                 # over stdio (a client starts it)
    python -m tests.mcp_server --port 8765     # over streamable HTTP on 127.0.0.1:8765/mcp

Its tools: `add` (reads nothing, changes nothing), `save_note` (appends a line to the file
named by MCP_NOTES, so a test counts its effects on disk) and `fail` (always an error).
Every call is appended to MCP_CALLS as a JSON line, so a test sees what the server did.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from mcp.server.fastmcp import FastMCP


def _log(tool: str, args: dict[str, object]) -> None:
    calls = os.environ.get("MCP_CALLS")
    if calls:
        with Path(calls).open("a", encoding="utf-8") as log:
            log.write(json.dumps({"tool": tool, "args": args}) + "\n")


def build(port: int = 0) -> FastMCP:
    """The server, with its tools."""
    server = FastMCP("quorum-test", host="127.0.0.1", port=port, log_level="WARNING")

    @server.tool()
    def add(a: int, b: int) -> str:
        """Add two whole numbers. Example: add(a=2, b=40)."""
        _log("add", {"a": a, "b": b})
        return f"{a} + {b} = {a + b}"

    @server.tool()
    def save_note(text: str) -> str:
        """Save a note for later; it cannot be taken back."""
        _log("save_note", {"text": text})
        with Path(os.environ["MCP_NOTES"]).open("a", encoding="utf-8") as notes:
            notes.write(text + "\n")
        return "saved"

    @server.tool()
    def fail(reason: str) -> str:
        """Always fails, with `reason`."""
        _log("fail", {"reason": reason})
        raise ValueError(f"failed on purpose: {reason}")

    return server


def main() -> None:
    """Serve over stdio, or over streamable HTTP when given a port."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args()
    if args.port is None:
        build().run("stdio")
    else:
        build(args.port).run("streamable-http")


if __name__ == "__main__":
    main()
