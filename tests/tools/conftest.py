"""Fixtures for the tool tests: closed tool settings, a fake resolver, a connection log.

Every test here starts with the tools as a deployment ships them: no workspace or docs
override, an empty fetch allowlist, no search key, irreversible tools off. Name resolution is
a fake that knows only the names a test gives it, so no test can reach DNS, and every TCP
connection attempt is logged and refused unless it goes to loopback.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from quorum.settings import get_settings
from quorum.tools import contract
from tests.tools.loopback import LoopbackServer

TOOL_VARIABLES = (
    "QUORUM_WORKSPACE_DIR",
    "QUORUM_DOCS_DIR",
    "QUORUM_HTTP_ALLOWLIST",
    "QUORUM_HTTP_MAX_BYTES",
    "QUORUM_HTTP_TIMEOUT",
    "QUORUM_TAVILY_API_KEY",
    "TAVILY_API_KEY",
    "QUORUM_APPROVE_TOOLS",
    # A proxy would carry loopback test traffic elsewhere.
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)
LOOPBACK = {"127.0.0.1", "::1"}


@pytest.fixture(autouse=True)
def closed_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TOOL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # Retries keep their count; only the pauses between them go.
    monkeypatch.setattr(contract, "RETRY_BACKOFF", (0.0, 0.0))
    get_settings.cache_clear()


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set tool settings as a deployment would, through QUORUM_* variables."""

    def apply(**values: object) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"QUORUM_{name.upper()}", str(value))
        get_settings.cache_clear()

    return apply


@dataclass
class FakeResolver:
    names: dict[str, list[str]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)


@pytest.fixture(autouse=True)
def resolver(monkeypatch: pytest.MonkeyPatch) -> FakeResolver:
    fake = FakeResolver()
    real = socket.getaddrinfo

    def getaddrinfo(
        host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        fake.lookups.append(name)
        if name in fake.names:
            return [
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, int(port or 0), 0, 0))
                if ":" in a
                else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, int(port or 0)))
                for a in fake.names[name]
            ]
        try:
            ipaddress.ip_address(name)
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return real(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return fake


@pytest.fixture(autouse=True)
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every TCP connection attempted during the test, as (address, port)."""
    attempts: list[tuple[str, int]] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append((address[0], address[1]))
            if address[0] not in LOOPBACK:
                raise ConnectionRefusedError(f"tests connect to loopback only, not {address[0]}")

    def connect(sock: socket.socket, address: Any) -> None:
        check(sock, address)
        real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        check(sock, address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return attempts


@pytest.fixture
def canary() -> Iterator[LoopbackServer]:
    with LoopbackServer() as server:
        yield server


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    """A second loopback server, for pages and redirects a test does allow."""
    with LoopbackServer() as other:
        yield other
