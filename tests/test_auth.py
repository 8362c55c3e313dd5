"""Who may do what on the LangGraph server (`quorum.auth`), checked over HTTP.

One `langgraph dev` with API keys for alice and bob, carol holding the approver role, and a
JWT secret for dave; QUORUM_APPROVERS names carol. Calls go through langgraph-sdk (and raw
HTTP for the refusals): what a user may see, run and decide, and who the ledger says
decided, read from the database past the server. The file an approval lets through is
looked for on disk.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import jwt
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.auth.exceptions import HTTPException

import quorum
from quorum import auth
from quorum.settings import Settings, get_settings
from quorum.testing.langgraph_dev import RUN_TIMEOUT, Served, langgraph_dev, stub_settings
from quorum.testing.stub import OpenAIStub
from tests.test_approvals import interrupts_of, saving

pytestmark = pytest.mark.server

KEYS = {name: auth.new_key() for name in ("alice", "bob", "carol")}
SECRET = "a-test-secret-of-at-least-32-bytes!!"


def token(subject: str, *, seconds: float = 300, secret: str = SECRET) -> str:
    claims = {"sub": subject, "exp": int(time.time() + seconds), "roles": []}
    return jwt.encode(claims, secret, algorithm="HS256")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, OpenAIStub, Path]]:
    folder = tmp_path_factory.mktemp("auth-server")
    workspace = folder / "workspace"
    workspace.mkdir()
    with OpenAIStub() as stub:
        settings = stub_settings(stub.base_url, folder / "data") | {
            "QUORUM_WORKSPACE_DIR": str(workspace),
            "QUORUM_SERVER_KEYS": ",".join(f"{n}={auth.hashed(k)}" for n, k in KEYS.items()),
            "QUORUM_SERVER_ROLES": "carol=approver",
            "QUORUM_SERVER_JWT_SECRET": SECRET,
            "QUORUM_APPROVERS": "carol",
        }
        with langgraph_dev(folder, settings) as served:
            yield served, stub, workspace


def client(served: Served, who: str) -> Any:
    return get_client(url=served.url, api_key=KEYS[who], timeout=RUN_TIMEOUT)


async def test_no_or_bad_credentials_get_401(server: tuple[Served, OpenAIStub, Path]) -> None:
    served, _, _ = server
    search = f"{served.url}/threads/search"
    assert httpx.post(search, json={}).status_code == 401
    assert httpx.post(search, json={}, headers={"x-api-key": "qk_wrong"}).status_code == 401
    expired = {"Authorization": f"Bearer {token('dave', seconds=-60)}"}
    assert httpx.post(search, json={}, headers=expired).status_code == 401
    forged = {
        "Authorization": f"Bearer {token('dave', secret='another-secret-at-least-32-bytes-long')}"
    }
    assert httpx.post(search, json={}, headers=forged).status_code == 401
    valid = {"Authorization": f"Bearer {token('dave')}"}
    assert httpx.post(search, json={}, headers=valid).status_code == 200


async def test_a_user_cannot_see_run_or_approve_another_users_thread(
    server: tuple[Served, OpenAIStub, Path],
) -> None:
    served, stub, workspace = server
    stub.reset()
    stub.responder = saving("alice.md")
    async with client(served, "alice") as alice, client(served, "bob") as bob:
        # Studio's first calls work for the owner: the graphs, then her thread and its state.
        graphs = {a["graph_id"] for a in await alice.assistants.search(limit=20)}
        thread = (await alice.threads.create())["thread_id"]
        run = await alice.runs.create(thread, "react", input={"input": "Save a note"})
        await alice.runs.join(thread, run["run_id"])
        [pending] = interrupts_of(await alice.threads.get_state(thread))
        mine = [t["thread_id"] for t in await alice.threads.search(limit=50)]

        refused = []
        for attempt in (
            bob.threads.get(thread),
            bob.threads.get_state(thread),
            bob.runs.create(thread, "react", input={"input": "mine now"}),
            bob.runs.create(thread, "react", command={"resume": {"action": "approve"}}),
        ):
            with pytest.raises(httpx.HTTPStatusError) as error:
                await attempt
            refused.append(error.value.response.status_code)
        theirs = [t["thread_id"] for t in await bob.threads.search(limit=50)]
        # Alice owns the thread, but only an approver may decide (QUORUM_APPROVERS=carol).
        with pytest.raises(httpx.HTTPStatusError) as owner_refused:
            await alice.runs.create(thread, "react", command={"resume": {"action": "approve"}})
        still: Any = await alice.threads.get_state(thread)

    assert graphs == {"orchestrator", "pipeline", "debate", "react"}
    assert pending["value"]["tool"] == "write_file" and thread in mine
    assert set(refused) <= {403, 404} and len(refused) == 4, refused
    assert thread not in theirs
    assert owner_refused.value.response.status_code == 403
    assert "may not decide approvals" in owner_refused.value.response.text
    assert len(interrupts_of(still)) == 1, "the question keeps waiting"
    assert not (workspace / "alice.md").exists()


async def test_an_approver_decides_and_the_ledger_names_them(
    server: tuple[Served, OpenAIStub, Path],
) -> None:
    served, stub, workspace = server
    stub.reset()
    stub.responder = saving("carol.md")
    async with client(served, "alice") as alice, client(served, "carol") as carol:
        thread = (await alice.threads.create())["thread_id"]
        run = await alice.runs.create(thread, "react", input={"input": "Save a note"})
        await alice.runs.join(thread, run["run_id"])
        seen = [t["thread_id"] for t in await carol.threads.search(limit=50)]
        run = await carol.runs.create(thread, "react", command={"resume": {"action": "approve"}})
        await carol.runs.join(thread, run["run_id"])
        finished = await carol.runs.get(thread, run["run_id"])

    assert thread in seen, "the approver role sees every thread"
    assert finished["status"] == "success", served.log_text()
    assert (workspace / "carol.md").read_text() == "saved by call_save"
    [decision] = (await quorum.get_thread(thread, database=str(served.database))).decisions
    assert (decision["action"], decision["by"], decision["via"]) == ("approve", "carol", "server")


async def test_auth_off_answers_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing configured, a loopback client is anonymous; any other is refused."""
    for name in ("QUORUM_SERVER_KEYS", "QUORUM_SERVER_JWT_SECRET", "QUORUM_SERVER_JWKS_URL"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    try:
        assert not auth.auth_is_on(get_settings())
        local = SimpleNamespace(client=SimpleNamespace(host="127.0.0.1"))
        remote = SimpleNamespace(client=SimpleNamespace(host="10.1.2.3"))
        user = await auth.authenticate(local, None, {})
        assert user["identity"] == auth.ANONYMOUS
        with pytest.raises(HTTPException) as refused:
            await auth.authenticate(remote, None, {})
        assert refused.value.status_code == 401
        assert "loopback clients only" in str(refused.value.detail)
    finally:
        get_settings.cache_clear()


def test_keys_are_stored_hashed() -> None:
    key = auth.new_key()
    assert auth.hashed(key).startswith("sha256:") and key not in auth.hashed(key)
    with pytest.raises(ValueError, match="stored hashed"):
        Settings(server_keys={"alice": key})


def test_a_jwt_signed_by_a_key_of_the_jwks_url_is_accepted() -> None:
    """RS256 tokens checked against keys fetched from a JWKS URL (served here on loopback)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cryptography.hazmat.primitives.asymmetric import rsa

    signing, stranger = (rsa.generate_private_key(65537, 2048) for _ in range(2))
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing.public_key()))
    body = json.dumps({"keys": [jwk | {"kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Keys(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Keys)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/jwks.json"
        settings = Settings(server_jwks_url=url, server_jwt_issuer="https://login.test")

        def signed(key: Any, issuer: str = "https://login.test") -> str:
            claims = {"sub": "erin", "exp": int(time.time() + 60), "iss": issuer}
            return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})

        user = auth._verified_jwt(signed(signing), settings)
        for refused in (signed(stranger), signed(signing, issuer="https://elsewhere.test")):
            with pytest.raises(HTTPException):
                auth._verified_jwt(refused, settings)
    finally:
        server.shutdown()
        server.server_close()

    assert user["identity"] == "erin"
