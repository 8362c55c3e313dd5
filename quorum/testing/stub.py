"""A scripted OpenAI-compatible chat-completions server on loopback, for tests and benches.

A test double that ships with Quorum, as the scripted model does: use it in your own tests.

Quorum talks to its models only through langchain-openai's ChatOpenAI, so a test that runs the
real graphs in another process (the `langgraph dev` server, the CLI) points QUORUM_BASE_URL at
this stub. By default it answers from the request alone, so it keeps working when prompts
change: a JSON instance of the `response_format` schema when one is asked for (with per-schema
overrides, e.g. a valid three-step `Plan`), a tool call when tools are offered and none has
answered yet, and plain text otherwise. It serves plain JSON and `stream: true` SSE (with the
final usage chunk ChatOpenAI asks for), records every request, and lets a test script replies,
slow them down, hold one until released, or fail: with an HTTP status (and headers such as
Retry-After), a dropped connection, a reply slower than the client waits, or a malformed body.

    with OpenAIStub() as stub:
        env["QUORUM_BASE_URL"] = stub.base_url      # http://127.0.0.1:<port>/v1
        stub.responder = lambda body: "hello" if schema_name(body) is None else None
        stub.schema_replies["Claim"] = {"answer": "x"}
        stub.delay = 0.5                            # every reply waits half a second
        held = stub.hold(lambda body: schema_name(body) == "Verdict")
        ...; held.arrived.wait(10); ...; held.release()
        stub.fail(500, times=2)
        stub.fail(401, message="Incorrect API key provided: {key}")  # echoes the request's key
        stub.fail(429, headers={"Retry-After": "1"}, when=lambda body: ...)  # matching ones only
        stub.drop(); stub.stall(5.0); stub.malformed()
        stub.max_concurrent = 4   # a 5th chat request while 4 are answered gets a 429
        stub.most_concurrent, stub.rejected()   # what the cap saw
        [r.body for r in stub.requests]; [r.status for r in stub.chat_requests()]

Run it by hand with `python -m quorum.testing.stub --port 8000`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
STUB_MODEL = "stub-model"
MAX_PIECES = 256
"""The most chunks one streamed text or tool call is cut into."""

Json = dict[str, Any]


@dataclass
class Reply:
    """A scripted reply: text, tool calls, or an HTTP error, optionally after a delay."""

    content: str = ""
    tool_calls: list[Json] = field(default_factory=list)
    """Each {"name": ..., "args": {...}}; an "id" is made up when missing."""
    status: int = 200
    """Anything but 200 answers with an OpenAI-style error body instead."""
    error: str = "scripted error"
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    """Extra response headers (e.g. Retry-After on a 429)."""
    drop: bool = False
    """Close the connection without answering."""
    malformed: bool = False
    """Answer 200 with a body that is not valid JSON."""


Responder = Callable[[Json], "Reply | str | Json | None"]
"""Maps a request body to a reply: text, a JSON object to send as the content, a `Reply`,
or None to fall back to the default behaviour."""


@dataclass
class Recorded:
    """One request the stub received."""

    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: Json | None
    started: float
    """`time.monotonic()` on arrival; `finished` when the reply was written (0 until then)."""
    finished: float = 0.0
    status: int = 0
    """The HTTP status answered; 0 until answered, and for a dropped connection."""
    over_limit: bool = False
    """Refused with a 429 because `max_concurrent` requests were being answered."""
    usage: Json | None = None
    """The token usage the reply reported (a 200 reply only)."""
    tool_calls: int = 0
    """Tool calls the reply asked for."""


@dataclass
class Hold:
    """One chat request kept waiting until the test releases it."""

    match: Callable[[Json], bool]
    arrived: threading.Event = field(default_factory=threading.Event)
    """Set once a matching request is being held."""
    released: threading.Event = field(default_factory=threading.Event)
    body: Json | None = None

    def release(self) -> None:
        """Let the held request (or the next matching one) be answered."""
        self.released.set()


def schema_of(body: Json) -> Json | None:
    """The JSON schema the request's `response_format` asks for, if any."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return (fmt.get("json_schema") or {}).get("schema")
    if fmt.get("type") == "json_object":
        return fmt.get("schema")
    return None


def schema_name(body: Json) -> str | None:
    """The name of the structured output asked for: json_schema's name or the schema's title."""
    fmt = body.get("response_format") or {}
    name = (fmt.get("json_schema") or {}).get("name")
    schema = schema_of(body)
    return name or (schema or {}).get("title")


def text_of(message: Json) -> str:
    """A chat message's text, whether its content is a string or a list of parts."""
    content = message.get("content") or ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def instance_of(schema: Json, *, name: str = "value", defs: Json | None = None) -> Any:
    """A deterministic JSON value that is valid for `schema` (formats and patterns aside)."""
    if defs is None:
        defs = schema.get("$defs", schema.get("definitions", {}))
    assert defs is not None
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        return instance_of(target, name=name, defs=defs)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return instance_of(options[0], name=name, defs=defs)
    if "allOf" in schema:
        merged: Json = {}
        for part in schema["allOf"]:
            merged |= defs[part["$ref"].rsplit("/", 1)[-1]] if "$ref" in part else part
        return instance_of(merged, name=name, defs=defs)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return {
            key: instance_of(sub, name=key, defs=defs)
            for key, sub in schema.get("properties", {}).items()
        }
    if kind == "array":
        count = min(max(schema.get("minItems", 1), 1), schema.get("maxItems", 1))
        if "prefixItems" in schema:
            return [instance_of(s, name=name, defs=defs) for s in schema["prefixItems"]]
        return [instance_of(schema.get("items", {}), name=name, defs=defs) for _ in range(count)]
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return _string(schema, name)


def _number(schema: Json, *, integer: bool) -> int | float:
    step = 1 if integer else 0.5
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if "exclusiveMinimum" in schema and low is not None:
        low += step
    if "exclusiveMaximum" in schema and high is not None:
        high -= step
    if low is not None and high is not None:
        value = (low + high) / 2
    elif low is not None:
        value = low + step
    elif high is not None:
        value = high - step
    else:
        value = 1
    return int(value) if integer else float(value)


_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "email": "stub@example.com",
    "uri": "http://127.0.0.1/stub",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def _string(schema: Json, name: str) -> str:
    if schema.get("format") in _FORMATS:
        return _FORMATS[schema["format"]]
    text = f"stub {name}"
    text = text.ljust(schema.get("minLength", 0), "x")
    return text[: schema["maxLength"]] if "maxLength" in schema else text


def valid_plan(body: Json) -> Json:
    """A plan the orchestrator accepts: two independent steps, then a writer using both."""
    return {
        "steps": [
            {"id": "s1", "worker": "researcher", "task": "Find the facts.", "dependencies": []},
            {"id": "s2", "worker": "analyst", "task": "Weigh the options.", "dependencies": []},
            {
                "id": "s3",
                "worker": "writer",
                "task": "Write the answer from both results.",
                "dependencies": ["s1", "s2"],
            },
        ]
    }


def own_claim(body: Json) -> Json:
    """A debater's opening answer that names who gives it (the system prompt's persona).

    Two debaters that open with the same answer go straight to the judge: a schema-made
    answer, the same for both, would skip every debate's critique and revision.
    """
    system = next((text_of(m) for m in body.get("messages", []) if m.get("role") == "system"), "")
    return {"answer": f"stub answer of {system[:60]}"}


def default_schema_replies() -> dict[str, Json | Callable[[Json], Json]]:
    """Structured replies that a schema alone cannot make meaningful, by schema name."""
    return {
        "Plan": valid_plan,
        "Claim": own_claim,
        # A generated fact-check lists one rejected claim (arrays get one item), which would
        # send every pipeline run round its revision loop.
        "FactCheck": {"verdict": "supported", "unsupported_claims": []},
    }


class OpenAIStub:
    """The stub server; a context manager that serves on 127.0.0.1 in a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.responder: Responder | None = None
        """Consulted first for every chat request; None (or a None reply) means the default."""
        self.schema_replies = default_schema_replies()
        """Replies (or functions of the request) for structured outputs, by schema name."""
        self.delay = 0.0
        """Seconds every chat reply waits before it is sent."""
        self.chunk_delay = 0.0
        """Seconds between the chunks of a streamed reply (a model writing slowly)."""
        self.stream_usage = True
        """Send the usage chunk a client asks for in a stream (some servers never do)."""
        self.models = [STUB_MODEL]
        """What GET /v1/models lists; chat requests are answered whatever model they name."""
        self.api_key: str | None = None
        """When set, every request without `Authorization: Bearer <api_key>` gets a 401."""
        self.max_concurrent: int | None = None
        """When set, a chat request arriving while this many are answered gets a 429, as a
        provider's concurrency limit answers."""
        self.most_concurrent = 0
        """The most chat requests answered at once so far."""
        self._in_flight = 0
        self._lock = threading.Lock()
        self._requests: list[Recorded] = []
        self._holds: list[Hold] = []
        self._failures: list[tuple[Callable[[Json], bool] | None, Reply]] = []
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._host = host
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The server's root, e.g. http://127.0.0.1:54321."""
        return f"http://{self._host}:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        """What to give an OpenAI client as its base URL (QUORUM_BASE_URL)."""
        return f"{self.url}/v1"

    def start(self) -> OpenAIStub:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="openai-stub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release every held request, cut delays short, stop serving and close the socket."""
        self._stopping.set()
        self._release_holds()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OpenAIStub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def requests(self) -> list[Recorded]:
        """Every request so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def rejected(self) -> list[Recorded]:
        """The chat requests refused for being over `max_concurrent`."""
        return [r for r in self.chat_requests() if r.status == 429 and r.over_limit]

    def chat_bodies(self) -> list[Json]:
        """The bodies of every chat-completions request so far."""
        return [r.body for r in self.requests if r.path == CHAT_PATH and r.body is not None]

    def reset(self) -> None:
        """Forget recorded requests and scripting; release anything held."""
        self._release_holds()
        with self._lock:
            self._requests.clear()
            self._failures.clear()
            self.most_concurrent = 0
        self.max_concurrent = None
        self.responder = None
        self.schema_replies = default_schema_replies()
        self.delay = 0.0
        self.chunk_delay = 0.0
        self.stream_usage = True
        self.models = [STUB_MODEL]
        self.api_key = None

    def hold(self, match: Callable[[Json], bool] = lambda body: True) -> Hold:
        """Keep the next chat request `match` accepts waiting until `Hold.release()`."""
        held = Hold(match)
        with self._lock:
            self._holds.append(held)
        return held

    def unhold(self, held: Hold) -> None:
        """Drop `held` if no request has taken it yet; release it if one has."""
        with self._lock:
            if held in self._holds and held.body is None:
                self._holds.remove(held)
        held.release()

    def chat_requests(self) -> list[Recorded]:
        """Every chat-completions request so far, oldest first."""
        return [r for r in self.requests if r.path == CHAT_PATH and r.body is not None]

    def fail(
        self,
        status: int,
        *,
        times: int = 1,
        message: str = "scripted failure",
        headers: dict[str, str] | None = None,
        when: Callable[[Json], bool] | None = None,
    ) -> None:
        """Answer the next `times` chat requests with HTTP `status` (401, 404, 429, 500...).

        `headers` go with each error reply; `when` limits the failures to requests whose body
        it accepts (others are answered as usual).
        """
        failure = Reply(status=status, error=message, headers=dict(headers or {}))
        self._fault(failure, times, when)

    def drop(self, *, times: int = 1, when: Callable[[Json], bool] | None = None) -> None:
        """Close the connection of the next `times` chat requests without a reply."""
        self._fault(Reply(drop=True), times, when)

    def stall(
        self, seconds: float, *, times: int = 1, when: Callable[[Json], bool] | None = None
    ) -> None:
        """Answer the next `times` chat requests as usual, but only after `seconds`."""
        self._fault(Reply(delay=seconds), times, when)

    def malformed(self, *, times: int = 1, when: Callable[[Json], bool] | None = None) -> None:
        """Answer the next `times` chat requests 200 with a body cut off mid-JSON."""
        self._fault(Reply(malformed=True), times, when)

    def _fault(self, reply: Reply, times: int, when: Callable[[Json], bool] | None) -> None:
        with self._lock:
            self._failures += [(when, reply) for _ in range(times)]

    # --- serving -------------------------------------------------------------------------

    def _release_holds(self) -> None:
        # A held handler thread would otherwise wait forever on a stub nobody scripts.
        with self._lock:
            holds, self._holds = self._holds, []
        for held in holds:
            held.release()

    def _admit(self) -> bool:
        """Count a chat request in, unless `max_concurrent` are already being answered."""
        with self._lock:
            if self.max_concurrent is not None and self._in_flight >= self.max_concurrent:
                return False
            self._in_flight += 1
            self.most_concurrent = max(self.most_concurrent, self._in_flight)
            return True

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _record(self, recorded: Recorded) -> None:
        with self._lock:
            self._requests.append(recorded)

    def _hold_for(self, body: Json) -> Hold | None:
        with self._lock:
            for held in self._holds:
                if held.body is None and held.match(body):
                    held.body = body
                    return held
        return None

    def _next_failure(self, body: Json) -> Reply | None:
        with self._lock:
            for index, (when, _) in enumerate(self._failures):
                if when is None or when(body):
                    return self._failures.pop(index)[1]
        return None

    def reply_to(self, body: Json) -> Reply:
        """The reply to a chat request: a failure, the responder's, or the default."""
        failure = self._next_failure(body)
        if failure is not None and (failure.status != 200 or failure.drop or failure.malformed):
            return failure
        reply = self._scripted(body)
        if failure is not None:  # a stall: the usual reply, late
            reply = replace(reply, delay=reply.delay + failure.delay)
        return reply

    def _scripted(self, body: Json) -> Reply:
        scripted = self.responder(body) if self.responder else None
        if scripted is None:
            scripted = self.default_reply(body)
        if isinstance(scripted, str):
            return Reply(content=scripted)
        if isinstance(scripted, dict):
            return Reply(content=json.dumps(scripted))
        return scripted

    def default_reply(self, body: Json) -> Reply | Json | str:
        """Schema instance, tool call or text, chosen from the request alone."""
        schema = schema_of(body)
        if schema is not None:
            override = self.schema_replies.get(schema_name(body) or "")
            if override is None:
                return instance_of(schema)
            return override(body) if callable(override) else override
        messages = body.get("messages", [])
        tools = [t["function"] for t in body.get("tools", []) if t.get("type") == "function"]
        tool_results = [m for m in messages if m.get("role") == "tool"]
        if tools and not tool_results:
            named = {tool["name"]: tool for tool in tools}
            if "calculator" in named:
                return Reply(tool_calls=[{"name": "calculator", "args": {"expression": "6*7"}}])
            first = tools[0]
            args = instance_of(first.get("parameters") or {"type": "object"})
            return Reply(tool_calls=[{"name": first["name"], "args": args}])
        if tool_results:
            return f"The tool says: {text_of(tool_results[-1])}"
        asked = next((text_of(m) for m in reversed(messages) if m.get("role") == "user"), "")
        return f"Stub answer to: {asked[:200]}"

    def completion(self, body: Json, reply: Reply) -> tuple[Json, list[Json]]:
        """The chat.completion object for `reply`, and its calls in OpenAI's wire form."""
        calls: list[Json] = [
            {
                "id": call.get("id") or f"call_{next(self._ids)}",
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
            }
            for call in reply.tool_calls
        ]
        message: Json = {"role": "assistant", "content": reply.content or None, "refusal": None}
        if calls:
            message["tool_calls"] = calls
        prompt = sum(len(text_of(m)) for m in body.get("messages", []))
        answer = len(reply.content) + sum(len(c["function"]["arguments"]) for c in calls)
        return {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", STUB_MODEL),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if calls else "stop",
                    "logprobs": None,
                }
            ],
            # Roughly four characters a token, never zero, so usage ledgers fill up.
            "usage": {
                "prompt_tokens": max(1, prompt // 4),
                "completion_tokens": max(1, answer // 4),
                "total_tokens": max(1, prompt // 4) + max(1, answer // 4),
            },
        }, calls


def piece_size(text: str, size: int) -> int:
    """`size` characters a chunk, or more for a text that would take over MAX_PIECES.

    A 600 kB tool call would otherwise be 37,500 chunks, and the client's fixed cost for
    each (about 0.6 ms of CPU) turns a test's file write into half a minute of streaming.
    """
    return max(size, -(-len(text) // MAX_PIECES))


def chunks_of(completion: Json, calls: list[Json], *, include_usage: bool) -> Iterator[Json]:
    """The chat.completion.chunk objects that stream `completion`, as OpenAI sends them."""
    head = {k: completion[k] for k in ("id", "created", "model")} | {
        "object": "chat.completion.chunk"
    }
    message = completion["choices"][0]["message"]

    def chunk(delta: Json, finish: str | None = None) -> Json:
        return head | {
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
        }

    yield chunk({"role": "assistant", "content": ""})
    text = message["content"] or ""
    # Several pieces, so a client that only handled one chunk would be caught out.
    step = piece_size(text, 24)
    for start in range(0, len(text), step):
        yield chunk({"content": text[start : start + step]})
    for index, call in enumerate(calls):
        function = call["function"]
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": function["name"], "arguments": ""},
                    }
                ]
            }
        )
        arguments = function["arguments"]
        step = piece_size(arguments, 16)
        for start in range(0, len(arguments), step):
            piece = arguments[start : start + step]
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, completion["choices"][0]["finish_reason"])
    if include_usage:
        yield head | {"choices": [], "usage": completion["usage"]}


class _Handler(BaseHTTPRequestHandler):
    """The stub's HTTP side: every request recorded, then answered as the stub says."""

    stub: OpenAIStub
    # HTTP/1.0: every response ends by closing the connection, which is also how an
    # SSE stream ends, so no chunked encoding is needed.
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output clean; the recorded requests say what happened."""

    def _authorized(self) -> bool:
        if self.stub.api_key is None or self.headers.get("Authorization") == (
            f"Bearer {self.stub.api_key}"
        ):
            return True
        self._send_error(Reply(status=401, error="Incorrect API key provided"))
        return False

    def do_GET(self) -> None:
        self.stub._record(self._recorded(None))
        if not self._authorized():
            return
        if self.path.rstrip("/") != MODELS_PATH:
            self._send_error(Reply(status=404, error=f"no route {self.path}"))
            return
        models = [
            {"id": name, "object": "model", "created": 0, "owned_by": "stub"}
            for name in self.stub.models
        ]
        self._send_json(200, {"object": "list", "data": models})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError as error:
            self.stub._record(self._recorded(None))
            self._send_error(Reply(status=400, error=f"invalid JSON: {error}"))
            return
        recorded = self._recorded(body)
        self.stub._record(recorded)
        if not self._authorized():
            return
        try:
            self._answer(body, recorded)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout, or a server the test killed)
        finally:
            recorded.finished = time.monotonic()

    def _answer(self, body: Json, recorded: Recorded) -> None:
        if self.path.rstrip("/") != CHAT_PATH:
            self._send_error(Reply(status=404, error=f"no route {self.path}"))
            return
        if not self.stub._admit():
            recorded.status, recorded.over_limit = 429, True
            self._send_error(Reply(status=429, error="too many concurrent requests"))
            return
        self._admitted = True
        try:
            self._reply(body, recorded)
        finally:
            self._answered()

    def _answered(self) -> None:
        """Count this request out of `max_concurrent`, once, before its reply's last bytes go.

        After them the client may send its next request at once, before this thread runs on:
        counted out only then, a client that keeps to the limit would still be refused.
        """
        if getattr(self, "_admitted", False):
            self._admitted = False
            self.stub._leave()

    def _reply(self, body: Json, recorded: Recorded) -> None:
        held = self.stub._hold_for(body)
        if held is not None:
            held.arrived.set()
            held.released.wait()
        reply = self.stub.reply_to(body)
        if self.stub.delay or reply.delay:
            # Not time.sleep: a stalled reply must not keep its thread alive past the test.
            self.stub._stopping.wait(self.stub.delay + reply.delay)
        if reply.drop:
            # No status line, no body: the server just closes the connection.
            self.close_connection = True
            return
        recorded.status = reply.status
        if reply.malformed:
            self._send_raw(200, b'{"id": "chatcmpl-cut", "object": "chat.completion", "cho')
            return
        if reply.status != 200:
            self._send_error(reply)
            return
        completion, calls = self.stub.completion(body, reply)
        recorded.usage = completion["usage"]
        recorded.tool_calls = len(calls)
        if not body.get("stream"):
            self._send_json(200, completion)
            return
        asked = bool((body.get("stream_options") or {}).get("include_usage"))
        include_usage = asked and self.stub.stream_usage
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for piece in chunks_of(completion, calls, include_usage=include_usage):
            self.wfile.write(f"data: {json.dumps(piece)}\n\n".encode())
            if self.stub.chunk_delay:
                self.wfile.flush()
                time.sleep(self.stub.chunk_delay)
        self._answered()
        self.wfile.write(b"data: [DONE]\n\n")

    def _recorded(self, body: Json | None) -> Recorded:
        headers = {name.lower(): value for name, value in self.headers.items()}
        return Recorded(self.command, self.path, headers, body, time.monotonic())

    def _send_json(self, status: int, payload: Json, headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(payload).encode(), headers)

    def _send_raw(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self._answered()
        self.wfile.write(data)

    def _send_error(self, reply: Reply) -> None:
        kind = HTTPStatus(reply.status).phrase.lower().replace(" ", "_")
        # Some servers echo the caller's key in their errors: "{key}" plays one.
        key = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        message = reply.error.replace("{key}", key)
        error = {"message": message, "type": kind, "param": None, "code": kind}
        self._send_json(reply.status, {"error": error}, reply.headers)


def _handler_for(stub: OpenAIStub) -> type[BaseHTTPRequestHandler]:
    """A handler class bound to `stub` (the server makes one instance per request)."""
    return type("Handler", (_Handler,), {"stub": stub})


MACHINE_SETTINGS = ("QUORUM_EMBEDDED_THREADS",)
"""Quorum settings that describe the machine, not a run: a started process keeps them."""


def isolated_environ() -> dict[str, str]:
    """The environment for a `quorum` process this one starts, without its settings.

    Its Quorum and OpenAI variables (endpoint, key, data folder...) are left out, except
    the MACHINE_SETTINGS.
    """
    return {
        name: value
        for name, value in os.environ.items()
        if name in MACHINE_SETTINGS or not name.startswith(("QUORUM_", "OPENAI_"))
    }


def quorum_env(stub: OpenAIStub, folder: Path) -> dict[str, str]:
    """The environment of a `quorum` process that talks to `stub`, with its data in `folder`.

    Nothing of this process's Quorum or OpenAI settings leaks into it, and tracing is off.
    """
    return isolated_environ() | {
        "QUORUM_BASE_URL": stub.base_url,
        "QUORUM_API_KEY": "test-key",
        "QUORUM_MODEL": STUB_MODEL,
        "QUORUM_DATA_DIR": str(folder / "data"),
        "LANGSMITH_TRACING": "false",
    }


def main() -> None:
    """Serve the stub in the foreground until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    with OpenAIStub(args.host, args.port) as stub:
        print(f"OpenAI stub serving at {stub.base_url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
