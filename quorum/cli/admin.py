"""The embedded model (`quorum model serve|status|stop`) and server keys (`server-key`)."""

from __future__ import annotations

import signal
from typing import Annotated

import typer

from quorum import embedded
from quorum.cli.shell import _fail, app, err, out
from quorum.errors import QuorumError, UsageError
from quorum.settings import get_settings


@app.command("server-key")
def server_key(
    identity: Annotated[str, typer.Argument(help="Who the key is for (the owner of threads).")],
) -> None:
    """Make an API key for the LangGraph server: the key for IDENTITY, and its hashed entry.

    Give the key to IDENTITY (once: it is not kept); add the entry to QUORUM_SERVER_KEYS.
    """
    from quorum.auth import hashed, new_key

    if not identity.strip() or any(c in identity for c in "=,+ "):
        _fail(UsageError(f"{identity!r} is not an identity", hint="use a name like alice"))
    key = new_key()
    out.print(key, markup=False)
    err.print(f"add to QUORUM_SERVER_KEYS (comma-separated): {identity}={hashed(key)}")


model_app = typer.Typer(help="The embedded local model.", no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("serve")
def model_serve() -> None:
    """Serve the embedded model until stopped: Ctrl-C, kill or `quorum model stop`.

    Runs reuse it instead of starting one. Killed outright (SIGKILL, a closed terminal), this
    command leaves the server running for them; `quorum model stop` stops it.
    """
    settings = get_settings()
    running = embedded.find_running(settings, any_model=True)
    if running is not None:
        _fail(
            UsageError(
                f"{running.model} is already served at {running.base_url}",
                hint="runs use it; `quorum model stop` stops it",
            )
        )
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill stops it as Ctrl-C does
    server = None
    try:
        server = embedded.start(settings, detached=True)  # interrupted, it stops what it started
        err.print(f"serving {server.model} at [bold]{server.base_url}[/bold] (Ctrl-C stops)")
        assert server.process is not None
        server.process.wait()
    except QuorumError as error:
        _fail(error)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.stop()
            embedded.forget(settings)


@model_app.command("status")
def model_status() -> None:
    """Say whether a served embedded model is running, and where."""
    running = embedded.find_running(get_settings(), any_model=True)
    out.print(f"running {running.model} at {running.base_url}" if running else "not running")


@model_app.command("stop")
def model_stop() -> None:
    """Stop the embedded model that `quorum model serve` started."""
    stopped = embedded.stop_served(get_settings())
    out.print(f"stopped the model at {stopped.base_url}" if stopped else "no served model to stop")
