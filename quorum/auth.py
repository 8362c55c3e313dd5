"""Who may do what on the LangGraph server: langgraph.json's `auth.path`.

Through LangGraph's own custom auth (`langgraph_sdk.Auth`):

- **Authentication.** A request carries an API key (`x-api-key`, or `Authorization: Bearer`),
  checked against the hashed keys in `QUORUM_SERVER_KEYS`, or a JWT (`Authorization:
  Bearer`), verified with `QUORUM_SERVER_JWT_SECRET` (HS256) or the keys at
  `QUORUM_SERVER_JWKS_URL`; its `sub` is the identity and its `roles` claim the roles.
  Anything else gets 401. With no keys and no JWT configured, auth is off: the server
  answers loopback clients only (as `anonymous`), and says so when it starts.
- **Ownership.** Every thread, run, cron and assistant a user creates is stamped with their
  identity as `owner`, and everything they read, search, change or run on is filtered by it:
  another user's thread is not there for them (404). The graphs' own assistants (created by
  the server) are readable by everyone. Store items live under the user's identity.
- **Roles.** The approver role (`QUORUM_SERVER_APPROVER_ROLE`, from `QUORUM_SERVER_ROLES` or a
  JWT's `roles`) may read, resume and approve every thread. With `QUORUM_APPROVERS` set, a
  decision (a run resuming a thread with `Command(resume=...)`) is refused (403) to anyone
  neither named there nor holding the role; the question keeps waiting.

The identity reaches the graph as LangGraph's `langgraph_auth_user_id`: the effect ledger
records it as who decided an approval (`quorum.effects.decided`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import secrets
from typing import Any

from langgraph_sdk import Auth

from quorum.settings import Settings, get_settings

auth = Auth()
log = logging.getLogger(__name__)

OWNER = "owner"
ANONYMOUS = "anonymous"
"""Who a request is when auth is off (loopback only): no one in particular."""


def hashed(key: str) -> str:
    """How `QUORUM_SERVER_KEYS` stores `key`."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh API key: 32 random bytes, URL-safe."""
    return "qk_" + secrets.token_urlsafe(32)


def auth_is_on(settings: Settings) -> bool:
    """Whether the server checks credentials (otherwise: loopback clients only)."""
    return bool(settings.server_keys or settings.server_jwt_secret or settings.server_jwks_url)


def _refused(detail: str) -> Auth.exceptions.HTTPException:
    return Auth.exceptions.HTTPException(status_code=401, detail=detail)


def _loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@auth.authenticate
async def authenticate(
    request: Any, authorization: str | None, headers: dict[bytes, bytes]
) -> Auth.types.MinimalUserDict:
    """Who is asking: an API key's identity, a JWT's subject, or anonymous on loopback."""
    settings = get_settings()
    if not auth_is_on(settings):
        client = getattr(request, "client", None)
        if _loopback(getattr(client, "host", None)):
            return {"identity": ANONYMOUS, "permissions": [settings.server_approver_role]}
        raise _refused(
            "auth is off, so this server answers loopback clients only: set QUORUM_SERVER_KEYS "
            "(or QUORUM_SERVER_JWT_SECRET / QUORUM_SERVER_JWKS_URL) to let others in"
        )
    given = headers.get(b"x-api-key", b"").decode(errors="replace").strip()
    if not given and authorization:
        scheme, _, token = authorization.partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else ""
    if not given:
        raise _refused("no credentials: send an API key as x-api-key, or a bearer token")
    for identity, stored in settings.server_keys:
        if hmac.compare_digest(hashed(given), stored):
            roles = [
                role for name, held in settings.server_roles if name == identity for role in held
            ]
            return {"identity": identity, "permissions": roles}
    if given.count(".") == 2 and (settings.server_jwt_secret or settings.server_jwks_url):
        return await asyncio.to_thread(_verified_jwt, given, settings)
    raise _refused("unknown API key")


def _verified_jwt(token: str, settings: Settings) -> Auth.types.MinimalUserDict:
    import jwt  # PyJWT: the server extra brings it

    try:
        if settings.server_jwks_url:
            key: Any = jwt.PyJWKClient(settings.server_jwks_url).get_signing_key_from_jwt(token)
            algorithms = ["RS256", "ES256"]
        else:
            assert settings.server_jwt_secret is not None
            key, algorithms = settings.server_jwt_secret.get_secret_value(), ["HS256"]
        claims = jwt.decode(
            token,
            key.key if hasattr(key, "key") else key,
            algorithms=algorithms,
            audience=settings.server_jwt_audience,
            issuer=settings.server_jwt_issuer,
            options={"require": ["sub", "exp"], "verify_aud": bool(settings.server_jwt_audience)},
        )
    except jwt.PyJWTError as error:
        raise _refused(f"invalid token: {error}") from None
    roles = claims.get("roles") or []
    return {"identity": str(claims["sub"]), "permissions": [str(r) for r in roles]}


def _sees_everything(ctx: Auth.types.AuthContext) -> bool:
    return get_settings().server_approver_role in ctx.permissions


@auth.on
async def owned(ctx: Auth.types.AuthContext, value: Any) -> Auth.types.FilterType | None:
    """Stamp what a user creates with them as owner; show and change only what they own."""
    mine: Auth.types.FilterType = {OWNER: ctx.user.identity}
    if ctx.action == "create" and isinstance(value, dict):
        value.setdefault("metadata", {})
        if value["metadata"] is None:
            value["metadata"] = {}
        value["metadata"][OWNER] = ctx.user.identity
        return None
    if ctx.resource == "assistants" and ctx.action in ("read", "search"):
        return None  # the graphs' assistants belong to the server: everyone may see them
    if _sees_everything(ctx):
        return None
    return mine


@auth.on.threads.create_run
async def may_run(ctx: Auth.types.AuthContext, value: Any) -> Auth.types.FilterType | None:
    """Run on a thread one owns (or as an approver); a decision only as an allowed approver."""
    command = ((value.get("kwargs") or {}).get("command") or {}) if isinstance(value, dict) else {}
    if command.get("resume") is not None:
        approvers = get_settings().approvers
        if approvers and ctx.user.identity not in approvers and not _sees_everything(ctx):
            raise Auth.exceptions.HTTPException(
                status_code=403,
                detail=f"{ctx.user.identity} may not decide approvals here (approvers: "
                f"{', '.join(approvers)}, or the {get_settings().server_approver_role} role); "
                "the question keeps waiting",
            )
    metadata = value.setdefault("metadata", {}) if isinstance(value, dict) else {}
    if metadata is not None:
        metadata[OWNER] = ctx.user.identity
    return None if _sees_everything(ctx) else {OWNER: ctx.user.identity}


@auth.on.store
async def own_namespace(ctx: Auth.types.AuthContext, value: Any) -> None:
    """A user's store items live under their identity (an approver's under theirs too)."""
    namespace = tuple(value.get("namespace") or ())
    if not namespace or namespace[0] != ctx.user.identity:
        value["namespace"] = (ctx.user.identity, *namespace)


if not auth_is_on(get_settings()):
    log.warning(
        "Quorum server auth is off (no QUORUM_SERVER_KEYS, QUORUM_SERVER_JWT_SECRET or "
        "QUORUM_SERVER_JWKS_URL): only loopback clients are answered, as %r",
        ANONYMOUS,
    )
