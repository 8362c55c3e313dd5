"""The chat model for an agent: langchain-openai's ChatOpenAI, built and cached here.

`load_chat_model(agent, context)` is the seam tests replace (`quorum.testing`). Each model
gets HTTP clients of its own whose transports redact every configured secret from error
bodies.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import sys
from typing import TYPE_CHECKING, Any, TypeGuard
from weakref import WeakKeyDictionary

import httpx2
from langchain_core.language_models import BaseChatModel
from pydantic import SecretStr

from quorum import embedded, framework
from quorum.context import QuorumContext
from quorum.errors import ConfigError, ModelError, UsageError
from quorum.models.endpoint import endpoint
from quorum.settings import Settings, get_settings, redact

if TYPE_CHECKING:
    # openai and langchain-openai take most of a second to import: they are loaded when the
    # first model is built, so commands that only read threads (show, threads) never pay it.
    from langchain_openai import ChatOpenAI


async def load_chat_model(agent: str, context: QuorumContext) -> BaseChatModel:
    """Build (or reuse) the chat model `agent` uses in a run with `context`."""
    settings = get_settings()
    temperature = settings.temperature if context.temperature is None else context.temperature
    name = context.model_for(agent)
    # One client per model and event loop: agents share its connection pool, and a client
    # never outlives the loop its connections belong to (each asyncio.run has its own).
    per_loop = _MODELS.setdefault(asyncio.get_running_loop(), {})
    key = (settings, name, temperature)
    if key not in per_loop:
        base_url = settings.base_url
        if endpoint(settings).embedded:
            # Finding or starting the server blocks (files, sockets, a process): keep it off
            # the event loop, which `langgraph dev` rightly refuses to let block.
            base_url = (await asyncio.to_thread(embedded.ensure_server, settings)).base_url
        per_loop[key] = _chat_openai(settings, name, temperature, base_url)
    return per_loop[key]


_MODELS: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, ChatOpenAI]] = WeakKeyDictionary()


@functools.cache
def _chat_openai_class() -> type[ChatOpenAI]:
    """ChatOpenAI, handing a request's messages to the openai client as they are.

    The openai client walks every request's body against its parameter types before sending
    it, to rename aliased keys and format dates and files (`async_maybe_transform`). Chat
    messages have none of those, yet the walk costs about 0.2 ms a message on every request,
    and a request carries the whole conversation: at 190 messages it took 40 ms a step, more
    than the rest of the step. The messages go in `extra_body` instead, which the client
    merges into the body unwalked and in the same place: the request sent is the same.
    (ChatOpenAI's payload hook is private: see `quorum.framework`.)
    """
    from langchain_openai import ChatOpenAI

    class QuorumChatOpenAI(ChatOpenAI):
        def _get_request_payload(
            self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any
        ) -> dict[str, Any]:
            payload: dict[str, Any] = super()._get_request_payload(input_, stop=stop, **kwargs)
            messages = payload.get("messages")
            # A `response_format` in the payload takes the client's parse path: left alone.
            if isinstance(messages, list) and "response_format" not in payload:
                payload["extra_body"] = {**(payload.get("extra_body") or {}), "messages": messages}
                payload["messages"] = []  # what the client walks (it requires the key)
            return payload

    assert hasattr(ChatOpenAI, framework.CHAT_PAYLOAD_HOOK)
    QuorumChatOpenAI.__module__ = __name__
    return QuorumChatOpenAI


def _chat_openai(
    settings: Settings, model: str, temperature: float, base_url: str | None
) -> ChatOpenAI:
    import openai

    target = endpoint(settings)
    is_openai = target.structured == "json_schema"
    return _chat_openai_class()(
        model=embedded.model_alias(settings) if target.embedded else model or settings.model,
        base_url=base_url,
        # Local servers accept any key, but the client insists on one.
        api_key=settings.api_key or SecretStr("not-needed"),
        temperature=temperature,
        seed=settings.seed,
        timeout=target.timeout,
        # Retries happen in `_invoke`, once per call, each attempt journaled: never here too.
        max_retries=0,
        # Quorum builds both clients itself, with the installed openai's own client types:
        # each model gets connections of its own (never a process-wide client bound to the
        # first event loop that used it), and every error body passes the redacting transport.
        http_client=openai.DefaultHttpxClient(
            timeout=target.timeout, transport=RedactingTransport(httpx2.HTTPTransport())
        ),
        http_async_client=openai.DefaultAsyncHttpxClient(
            timeout=target.timeout, transport=AsyncRedactingTransport(httpx2.AsyncHTTPTransport())
        ),
        stream_usage=True,
        # A streamed reply's first chunk comes after the whole prompt is read: on a small CPU
        # that can take minutes, and langchain-openai gives up on a stream silent for 120 s.
        # The request's own timeout bounds the wait instead.
        stream_chunk_timeout=target.timeout,
        # llama.cpp and other servers ignore `max_completion_tokens`, which ChatOpenAI sends
        # for `max_tokens`; the classic field is the one they honour.
        max_tokens=target.max_tokens if is_openai else None,  # type: ignore[call-arg]
        extra_body=None if is_openai else {"max_tokens": target.max_tokens},
        metadata={"quorum_endpoint": "embedded" if target.embedded else "configured"},
    )


def _redacted(request: httpx2.Request, response: httpx2.Response, body: bytes) -> httpx2.Response:
    """`response` to `request` again with `body`, its configured secrets hidden."""
    cleaned = redact(body.decode("utf-8", "replace")).encode()
    headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-length"]
    return httpx2.Response(response.status_code, headers=headers, content=cleaned, request=request)


class RedactingTransport(httpx2.BaseTransport):
    """Hides configured secrets in error bodies before anything reads them.

    Some endpoints echo the request's key in an error. Rewritten here, at the transport,
    the secret never reaches an exception, a checkpoint, a log line or a trace.
    """

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request`; an error reply comes back with its body redacted."""
        response = self.inner.handle_request(request)
        if response.status_code < 400:
            return response
        body = response.read()
        response.close()
        return _redacted(request, response, body)

    def close(self) -> None:
        """Close the wrapped transport."""
        self.inner.close()


class AsyncRedactingTransport(httpx2.AsyncBaseTransport):
    """`RedactingTransport` for the async client, which every agent's call goes through."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request`; an error reply comes back with its body redacted."""
        response = await self.inner.handle_async_request(request)
        if response.status_code < 400:
            return response
        body = await response.aread()
        await response.aclose()
        return _redacted(request, response, body)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.inner.aclose()


def _is_chat_openai(model: Any) -> TypeGuard[ChatOpenAI]:
    """Whether `model` is langchain-openai's ChatOpenAI.

    Asked without importing it: no ChatOpenAI can exist before it is imported.
    """
    loaded = sys.modules.get("langchain_openai")
    return loaded is not None and isinstance(model, loaded.ChatOpenAI)


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index` drawn with the run's `seed`: its own, and the same every run.

    Samples sent with one seed are one sample, k times over: a seeded server returns the
    same text to the same prompt.
    """
    digest = hashlib.sha256(f"{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _for_sample(model: Any, sample: int | None) -> Any:
    """`model` with the seed of sample `sample` bound, when the run is seeded and sampling."""
    seed = get_settings().seed
    if sample is None or seed is None:
        return model
    # Bound, so the journal's request digest tells the samples apart too.
    return model.bind(seed=sample_seed(seed, sample))


_SERVED: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], frozenset[str]]] = (
    WeakKeyDictionary()
)
"""The models each endpoint listed, by event loop, endpoint URL and a digest of the key. An
endpoint is asked once by a command, or once by a server or an application over all the runs
of its loop, not on every run (a round trip of 100 ms and more to a remote API); a run's
first call reports an endpoint that went away since. By loop, as the clients are."""


async def preflight(context: QuorumContext) -> None:
    """Fail within seconds, naming the setting to change, if the endpoint cannot serve a run.

    Checks that the endpoint answers, accepts the key and knows every model the run's
    context names; an endpoint's list of models is asked for once (see `_SERVED`). The embedded
    model is started here when it is the endpoint.
    """
    settings = get_settings()
    if endpoint(settings).embedded:
        # This process's server, if it ended since the last run (killed for its memory, say),
        # is started again first, on its port: the clients built for it reach it as before.
        await asyncio.to_thread(embedded.restart_if_ended, settings)
    agents = {"": context.model, **context.models}
    models = {agent: await load_chat_model(agent, context) for agent in agents}
    clients = {m.root_async_client for m in models.values() if _is_chat_openai(m)}
    if not clients:
        return  # not an OpenAI-compatible client (a test double, or a custom seam)
    where = settings.base_url or (
        "the embedded model server" if endpoint(settings).embedded else "the OpenAI API"
    )
    client = next(iter(clients))
    known = _SERVED.setdefault(asyncio.get_running_loop(), {})
    asked = (str(client.base_url), hashlib.sha256(client.api_key.encode()).hexdigest())
    if asked not in known:
        served = await _served_models(client, where)
        if served is None:
            return  # busy, or no list of models: the run's first call will tell
        known[asked] = served
    served = known[asked]
    for agent, model in models.items():
        name = getattr(model, "model_name", "")
        if served and name not in served:
            who = f"agent '{agent}'" if agent else "the default model"
            # A model name is the run's input (--model, --set models=...): bad input, exit 2.
            raise UsageError(
                f"the model endpoint {where} has no model {name!r} (for {who}); "
                f"it serves: {', '.join(sorted(served)[:10])}",
                hint="check QUORUM_MODEL or the context's 'model' and 'models'",
            )


async def _served_models(client: Any, where: str) -> frozenset[str] | None:
    """The models the endpoint lists; None when it is busy or lists none."""
    import openai  # loaded with the clients

    try:
        listed = client.with_options(timeout=5.0, max_retries=0).models.list()
        return frozenset([model.id async for model in listed])
    except openai.AuthenticationError as error:
        raise ModelError(
            f"the model endpoint {where} refused the API key", hint="check QUORUM_API_KEY"
        ) from error
    except openai.APITimeoutError:
        # Connected but slow: a busy server (a single-slot llama.cpp still finishing a dead
        # run's request) is not an unreachable one. The run's calls wait and retry.
        return None
    except openai.APIConnectionError as error:
        raise ConfigError(
            f"cannot reach the model endpoint {where}",
            hint="check QUORUM_BASE_URL and that the server is running",
        ) from error
    except openai.APIStatusError:
        return None  # some servers do not list models
