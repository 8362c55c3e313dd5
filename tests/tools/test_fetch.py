"""http_fetch against loopback servers: SSRF in every encoding reaches nothing; allowed works."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest

from quorum.tools.fetch import is_public, parse_allowlist
from tests.tools.conftest import FakeResolver
from tests.tools.invoke import invoke
from tests.tools.loopback import LoopbackServer, Reply

# Loopback, private, link-local and other internal addresses, in the spellings that
# resolvers and URL parsers accept for them. {port} is the canary's.
ENCODED_URLS = [
    "http://127.0.0.1:{port}/",  # the plain address, on a port the allowlist does not name
    "http://2130706433:{port}/",  # decimal
    "http://0177.0.0.1:{port}/",  # octal
    "http://017700000001:{port}/",  # octal, one number
    "http://0x7f.0.0.1:{port}/",  # hex
    "http://0x7f000001:{port}/",  # hex, one number
    "http://127.1:{port}/",  # shortened
    "http://127.0.1:{port}/",
    "http://0:{port}/",  # 0.0.0.0 reaches the local host
    "http://0.0.0.0:{port}/",
    "http://127.0.0.1.:{port}/",  # trailing dot
    "http://%31%32%37.0.0.1:{port}/",  # percent-encoded
    "http://[::1]:{port}/",  # IPv6 loopback
    "http://[0:0:0:0:0:0:0:1]:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",  # IPv4-mapped
    "http://[::ffff:7f00:1]:{port}/",  # IPv4-mapped, hex
    "http://[0:0:0:0:0:ffff:127.0.0.1]:{port}/",
    "http://[::127.0.0.1]:{port}/",  # IPv4-compatible
    "http://[64:ff9b::7f00:1]:{port}/",  # NAT64
    "http://[2002:7f00:1::]:{port}/",  # 6to4
    "http://[fe80::1%25lo]:{port}/",  # link-local with a zone
    "http://allowed.test@127.0.0.1:{port}/",  # credentials hiding the real host
    "http://allowed.test:{port}@127.0.0.1:{port}/",
    "http://127.0.0.1:{port}\\@allowed.test/",
    "http://localhost:{port}/",  # a name for loopback, itself on the allowlist
    "http://LOCALHOST.:{port}/",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://[fd00::1]:{port}/",
    "http://10.0.0.1:{port}/",
    "http://192.168.1.1:{port}/",
    "http://172.16.0.1:{port}/",
    "file:///etc/passwd",
    "ftp://127.0.0.1:{port}/",
    "gopher://127.0.0.1:{port}/_GET",
    "javascript:alert(1)",
    "data:text/html,<h1>hi</h1>",
    "//127.0.0.1:{port}/",
]

# Answers of a name that is itself on the allowlist: the address decides.
INTERNAL_ANSWERS = [
    ["127.0.0.1"],
    ["::1"],
    ["::ffff:127.0.0.1"],
    ["0.0.0.0"],
    ["10.1.2.3"],
    ["172.20.0.5"],
    ["192.168.0.10"],
    ["169.254.169.254"],
    ["100.64.0.1"],  # carrier-grade NAT
    ["fe80::1"],
    ["fd12:3456::1"],
    ["64:ff9b::a00:1"],  # NAT64 of 10.0.0.1
    ["2002:a00:1::"],  # 6to4 of 10.0.0.1
    ["224.0.0.1"],  # multicast
    ["8.8.8.8", "127.0.0.1"],  # one public answer does not excuse a private one
]


@pytest.fixture
def allow_names(
    configure: Callable[..., None], resolver: FakeResolver, server: LoopbackServer
) -> None:
    # The allowlist names loopback exactly, but on another server's port, plus names that
    # lead to the canary: none of that may let a fetch reach the canary.
    resolver.names.update({"localhost": ["127.0.0.1", "::1"], "allowed.test": ["127.0.0.1"]})
    configure(http_allowlist=f"127.0.0.1:{server.port},localhost,allowed.test,*.evil.test")


@pytest.mark.parametrize("template", ENCODED_URLS)
async def test_encoded_internal_addresses_reach_nothing(
    template: str,
    allow_names: None,
    canary: LoopbackServer,
    connections: list[tuple[str, int]],
) -> None:
    status, result = await invoke("http_fetch", url=template.format(port=canary.port))

    assert status == "error"
    assert result["retryable"] is False
    assert canary.connections == 0 and connections == []


@pytest.mark.parametrize("template", [t for t in ENCODED_URLS if t != "http://127.0.0.1:{port}/"])
async def test_canary_named_exactly_admits_no_other_spelling(
    template: str,
    configure: Callable[..., None],
    resolver: FakeResolver,
    canary: LoopbackServer,
    connections: list[tuple[str, int]],
) -> None:
    resolver.names.update({"localhost": ["127.0.0.1"], "allowed.test": ["127.0.0.1"]})
    configure(http_allowlist=f"127.0.0.1:{canary.port}")

    status, _ = await invoke("http_fetch", url=template.format(port=canary.port))

    assert status == "error"
    assert canary.connections == 0 and connections == []


@pytest.mark.parametrize("answers", INTERNAL_ANSWERS, ids=lambda a: ",".join(a))
async def test_allowed_name_resolving_to_internal_address_reaches_nothing(
    answers: list[str],
    allow_names: None,
    resolver: FakeResolver,
    canary: LoopbackServer,
    connections: list[tuple[str, int]],
) -> None:
    resolver.names["api.evil.test"] = answers

    status, result = await invoke("http_fetch", url=f"http://api.evil.test:{canary.port}/")

    assert status == "error"
    assert "resolves to" in result["error"]
    assert canary.connections == 0 and connections == []


@pytest.mark.parametrize(
    "template",
    [t for t in ENCODED_URLS if t.startswith("http")]
    + ["http://api.evil.test:{port}/", "http://127.0.0.1:{port}/admin"],
)
async def test_redirects_to_internal_addresses_reach_nothing(
    template: str,
    allow_names: None,
    resolver: FakeResolver,
    server: LoopbackServer,
    canary: LoopbackServer,
    connections: list[tuple[str, int]],
) -> None:
    resolver.names["api.evil.test"] = ["127.0.0.1"]
    url = server.redirect("/go", template.format(port=canary.port))

    status, result = await invoke("http_fetch", url=url)

    assert status == "error"
    assert [r.path for r in server.requests] == ["/go"]  # the redirect itself was fetched
    assert canary.connections == 0
    assert {port for _, port in connections} == {server.port}


async def test_allowlisted_loopback_address_is_fetched(
    configure: Callable[..., None], canary: LoopbackServer, connections: list[tuple[str, int]]
) -> None:
    configure(http_allowlist=f"127.0.0.1:{canary.port}")
    url = canary.page(
        "/boiling",
        "<html><head><title>Boiling</title><script>x()</script></head>"
        "<body><h1>Water</h1><p>Water boils at 100 &deg;C.</p></body></html>",
    )

    status, result = await invoke("http_fetch", url=url)

    assert status == "success"
    assert result["title"] == "Boiling"
    assert result["text"] == "Water\n\nWater boils at 100 °C."
    assert canary.connections == 1 and connections == [("127.0.0.1", canary.port)]


async def test_allowed_name_connects_to_the_checked_address_with_its_host_header(
    configure: Callable[..., None], resolver: FakeResolver, canary: LoopbackServer
) -> None:
    resolver.names["docs.internal.test"] = ["127.0.0.1"]
    configure(http_allowlist=f"docs.internal.test,127.0.0.1:{canary.port}")
    canary.page("/a", "plain text", "text/plain")

    status, result = await invoke("http_fetch", url=f"http://docs.internal.test:{canary.port}/a")

    assert status == "success" and result["text"] == "plain text"
    assert canary.requests[0].headers["Host"] == f"docs.internal.test:{canary.port}"
    # One lookup, by the guard: the HTTP client connected to the address it was given.
    assert resolver.lookups.count("docs.internal.test") == 1


async def test_redirect_between_allowed_servers_is_followed(
    configure: Callable[..., None], server: LoopbackServer, canary: LoopbackServer
) -> None:
    configure(http_allowlist=f"127.0.0.1:{server.port},127.0.0.1:{canary.port}")
    target = canary.page("/final", "arrived", "text/plain")
    url = server.redirect("/start", target, status=301)

    status, result = await invoke("http_fetch", url=url)

    assert status == "success"
    assert (result["final_url"], result["text"]) == (target, "arrived")


async def test_redirect_loop_stops(configure: Callable[..., None], canary: LoopbackServer) -> None:
    configure(http_allowlist=f"127.0.0.1:{canary.port}")
    canary.redirect("/loop", f"{canary.origin}/loop")

    status, result = await invoke("http_fetch", url=f"{canary.origin}/loop")

    assert status == "error" and "redirected more than" in result["error"]
    assert len(canary.requests) == 6


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversized_body_is_refused(
    chunked: bool, configure: Callable[..., None], canary: LoopbackServer
) -> None:
    configure(http_allowlist=f"127.0.0.1:{canary.port}", http_max_bytes=10_000)
    canary.routes["/big"] = Reply(
        200, b"x" * 50_000, {"Content-Type": "text/plain"}, chunked=chunked
    )

    status, result = await invoke("http_fetch", url=f"{canary.origin}/big")

    assert status == "error"
    assert result["error"] == "the response is larger than 10000 bytes"
    assert result["retryable"] is False


async def test_binary_content_is_refused(
    configure: Callable[..., None], canary: LoopbackServer
) -> None:
    configure(http_allowlist=f"127.0.0.1:{canary.port}")
    canary.routes["/img"] = Reply(200, b"\x89PNG\r\n", {"Content-Type": "image/png"})

    status, result = await invoke("http_fetch", url=f"{canary.origin}/img")

    assert status == "error" and "image/png" in result["error"]


async def test_unknown_charset_still_reads(
    configure: Callable[..., None], canary: LoopbackServer
) -> None:
    configure(http_allowlist=f"127.0.0.1:{canary.port}")
    url = canary.page("/odd", "caf\u00e9", "text/plain; charset=no-such-codec")

    status, result = await invoke("http_fetch", url=url)

    assert (status, result["text"]) == ("success", "caf\u00e9")


async def test_empty_allowlist_fetches_nothing(
    canary: LoopbackServer, connections: list[tuple[str, int]]
) -> None:
    status, result = await invoke("http_fetch", url=f"{canary.origin}/")

    assert status == "error" and "not on the fetch allowlist" in result["error"]
    assert "search_documents" in result["suggestion"]
    assert canary.connections == 0 and connections == []


async def test_long_page_comes_in_parts(
    configure: Callable[..., None], canary: LoopbackServer
) -> None:
    configure(http_allowlist=f"127.0.0.1:{canary.port}")
    text = "".join(f"{i:05d} " for i in range(1000))
    url = canary.page("/long", text, "text/plain")

    _, first = await invoke("http_fetch", url=url, max_chars=1000)
    _, second = await invoke("http_fetch", url=url, offset=first["next_offset"])

    assert (first["total_chars"], first["next_offset"]) == (6000, 1000)
    assert first["text"] + second["text"] == text[:4000]


async def test_server_errors_are_retried_and_reported_retryable(
    configure: Callable[..., None], canary: LoopbackServer
) -> None:
    configure(http_allowlist=f"127.0.0.1:{canary.port}")
    canary.routes["/down"] = Reply(503, b"busy", {"Content-Type": "text/plain"})

    status, result = await invoke("http_fetch", url=f"{canary.origin}/down")

    assert status == "error" and result["retryable"] is True
    assert len(canary.requests) == 3  # the first try and two retries


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("2002:808:808::", True),  # 6to4 of a public address
        ("::ffff:8.8.8.8", True),
        ("64:ff9b::808:808", True),
        ("127.0.0.1", False),
        ("::1", False),
        ("::", False),
        ("::127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
        ("64:ff9b:1::a00:1", False),
        ("198.18.0.1", False),  # benchmarking
        ("192.0.2.1", False),  # documentation
        ("255.255.255.255", False),
        ("ff02::1", False),
    ],
)
def test_is_public(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


def test_allowlist_entries() -> None:
    entries = parse_allowlist(["Example.com", "*.example.org", "127.0.0.1:8080", "[::1]", "::2"])

    assert entries[0].admits("example.com", None, 443)
    assert not entries[0].admits("www.example.com", None, 443)
    assert entries[1].admits("a.b.example.org", None, 80)
    assert not entries[1].admits("example.org.evil.test", None, 80)
    assert entries[2].admits("127.0.0.1", ipaddress.ip_address("127.0.0.1"), 8080)
    assert not entries[2].admits("127.0.0.1", ipaddress.ip_address("127.0.0.1"), 8081)
    assert entries[3].admits("::1", ipaddress.ip_address("::1"), 1)
    assert entries[4].admits("::2", ipaddress.ip_address("::2"), 1)


async def test_invalid_allowlist_entry_is_a_clear_error(
    configure: Callable[..., None],
) -> None:
    configure(http_allowlist="2130706433")

    status, result = await invoke("http_fetch", url="http://example.com/")

    assert status == "error"
    assert "allowlist entry '2130706433' is not valid" in result["error"]
