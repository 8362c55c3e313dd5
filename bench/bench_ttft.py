"""Time to first token: the CLI's streamed answer against llama-cpp-python's server directly.

Measured from outside, on one embedded model server (the default model unless `--model`):

- `quorum`: the real CLI, `python -m quorum.cli run orchestrator QUESTION`, stdout on a
  pseudo-terminal (so the answer streams token by token). A loopback proxy between it and
  the server records when each chat request arrives and passes every reply through as it
  comes. Time to first token: the first byte on stdout less the arrival of the final
  agent's (the synthesizer's) request at the proxy.
- `direct`: the very same request body (captured at the proxy), `stream: true`, posted
  straight to the server: the time to its first chunk with non-empty content.

The orchestrator, because its final agent writes prose: on the embedded model a ReAct
agent's answer is a grammar-constrained JSON action, which is not streamed. The sides run
interleaved after a warm-up of each (A, B, then B, A, then A, B ...). Run from the
repository root: `.venv/bin/python -m bench bench_ttft [--repeats 5] [--max-tokens 96]
[--model NAME] [--question TEXT] [--json] [--out DIR]`. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import pty
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.harness import (
    Measurement,
    add_model,
    add_repeats,
    commit,
    embedded_data_dir,
    end_group,
    load_average,
    scratch,
)
from bench.rows import Row, Target
from quorum import embedded
from quorum.settings import Settings

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TARGET = 1.2
"""The most Quorum's time to first token may be, over the direct route's."""
PATTERN = "orchestrator"
FINAL_AGENT = "synthesizer"
QUESTION = "Name two everyday uses of a paperclip."
# As small a run as the orchestrator makes: one plan step, a worker without tools, little
# reasoning. The answer's length does not matter here, only when its first token comes.
CONTEXT = ("max_plan_steps=1", "max_tool_calls=0", "max_reasoning_tokens=16")
RUN_TIMEOUT = 1200.0
"""Seconds one CLI run may take (about a minute each on 2 busy cores with the default model)."""
CHAT = "/chat/completions"
_ESCAPES = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
_EVENT = re.compile(rb"data: (\{[^\r\n]*\})")


# --- The recording proxy -----------------------------------------------------------------------


@dataclass
class Request:
    """One HTTP request that passed the proxy, and when its reply did."""

    method: str
    path: str
    arrived: float
    """time.monotonic() when its head had arrived."""
    body: bytes
    first_byte: float | None = None
    first_content: float | None = None
    """When the first event with non-empty `delta.content` passed (streamed chat replies)."""
    last_byte: float | None = None
    scanned: bytearray = field(default_factory=bytearray)

    def saw(self, data: bytes, at: float) -> None:
        """Note a piece of the reply passing through at `at`."""
        if self.first_byte is None:
            self.first_byte = at
        self.last_byte = at
        if self.first_content is not None:
            return
        self.scanned += data
        for match in _EVENT.finditer(bytes(self.scanned)):
            if _content(match.group(1)):
                self.first_content = at
                self.scanned.clear()
                return
        # Keep only what may be the start of an event still arriving.
        cut = self.scanned.rfind(b"data: ")
        del self.scanned[: max(cut, 0)]


def _content(event: bytes) -> str:
    """The `delta.content` of one streamed chat completion event ('' if none)."""
    try:
        choices = json.loads(event).get("choices") or []
        return str((choices[0].get("delta") or {}).get("content") or "") if choices else ""
    except (ValueError, AttributeError, IndexError):
        return ""


class Proxy:
    """A loopback HTTP/1.1 proxy that records each request and streams every reply through.

    Bytes go through as they come, in both directions, never re-encoded: the reply's chunks
    reach the client when the server writes them. Requests are parsed only to be recorded
    (a head, then a `Content-Length` body); replies are scanned, never held. It runs on an
    event loop in a thread of its own.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.requests: list[Request] = []
        self.errors: list[str] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> None:
        """Listen on a free loopback port."""
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._connection, embedded.HOST, 0), self._loop
        )
        self._server = started.result(timeout=10)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        """Close the listener and every connection, and end the thread."""
        if not self._thread.is_alive():
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    async def _connection(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            embedded.HOST, self.upstream_port
        )
        self._writers |= {client_writer, upstream_writer}
        # No pipelining (httpx sends the next request only after the last reply): the reply
        # bytes belong to the request forwarded last.
        current: list[Request] = []
        pumps = [
            asyncio.create_task(self._requests(client_reader, upstream_writer, current)),
            asyncio.create_task(self._replies(upstream_reader, client_writer, current)),
        ]
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            # A pump that failed (not a peer that hung up) makes the whole measurement void.
            self.errors += [repr(e) for task in done if (e := task.exception()) is not None]
        finally:
            for task in pumps:
                task.cancel()
            for writer in (client_writer, upstream_writer):
                self._writers.discard(writer)
                writer.close()

    async def _requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, current: list[Request]
    ) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            arrived = time.monotonic()
            lines = head.decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ")[:2]
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines[1:] if line)
            }
            if "chunked" in headers.get("transfer-encoding", "").lower():
                raise RuntimeError("the proxy records Content-Length request bodies only")
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = Request(method, path, arrived, body)
            self.requests.append(request)
            current[:] = [request]
            writer.write(head + body)
            await writer.drain()

    async def _replies(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, current: list[Request]
    ) -> None:
        try:
            while data := await reader.read(65536):
                at = time.monotonic()
                writer.write(data)
                await writer.drain()
                if current:
                    current[0].saw(data, at)
        except ConnectionError:  # a peer hung up
            return


# --- The two sides -----------------------------------------------------------------------------


@dataclass
class QuorumRun:
    """One CLI run, as seen from outside."""

    ttft: float
    """First answer byte on stdout less the final request's arrival at the proxy."""
    server_ttft: float
    """The final reply's first content at the proxy less the request's arrival."""
    final: Request
    previous: Request | None
    """The chat request before the final one (what the server held when the final came)."""
    requests: int
    seconds: float
    answer_start: str
    """What reached stdout first: the answer's first line."""


@dataclass
class Side:
    """One side's timed samples (seconds)."""

    samples: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)
    """Quorum side: the server's own part of each sample, as the proxy saw it."""

    def median(self) -> float:
        """The median sample."""
        return statistics.median(self.samples)


def _environment(data_dir: Path, max_tokens: int, model: str) -> dict[str, str]:
    """The CLI's environment: the bench's data folder, the embedded model, nothing configured."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("QUORUM_", "OPENAI_", "OTEL_", "LANGSMITH_", "LANGCHAIN_"))
    }
    env.update(
        QUORUM_DATA_DIR=str(data_dir),
        QUORUM_EMBEDDED_MODEL=model,
        QUORUM_EMBEDDED_MAX_OUTPUT_TOKENS=str(max_tokens),
        QUORUM_EMBEDDED_CACHE_BYTES="0",
        LANGSMITH_TRACING="false",
        OTEL_SDK_DISABLED="true",
        PYTHONPATH=str(ROOT),
    )
    return env


@contextlib.contextmanager
def _session(command: list[str], env: dict[str, str], cwd: Path) -> Iterator[tuple[Any, int]]:
    """A child in a session of its own, stdout on a pseudo-terminal; its group ends with this."""
    reader, writer = pty.openpty()
    try:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=writer,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except BaseException:
        os.close(reader)
        raise
    finally:
        os.close(writer)
    try:
        yield process, reader
    finally:
        end_group(process, 10)
        # Anything it started in its session (it should start nothing) goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.stderr is not None:
            process.stderr.close()
        os.close(reader)


def quorum_side(proxy: Proxy, work: Path, env: dict[str, str], question: str) -> QuorumRun:
    """Run the CLI once; time its first answer byte against the final request's arrival."""
    mark = len(proxy.requests)
    command = [sys.executable, "-m", "quorum.cli", "run", PATTERN, question]
    for setting in CONTEXT:
        command += ["--set", setting]
    received: list[tuple[float, bytes]] = []
    started = time.monotonic()
    with _session(command, env, work) as (process, reader):

        def read() -> None:
            while True:
                try:
                    data = os.read(reader, 4096)
                except OSError:  # the pseudo-terminal's other side closed
                    return
                if not data:
                    return
                received.append((time.monotonic(), data))

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        try:
            _, stderr = process.communicate(timeout=RUN_TIMEOUT)
        finally:
            thread.join(10)
    seconds = time.monotonic() - started
    output = b"".join(data for _, data in received).decode(errors="replace")
    if proxy.errors:
        raise RuntimeError(f"the proxy failed: {proxy.errors}")
    if process.returncode != 0:
        raise RuntimeError(
            f"quorum run exited {process.returncode}:\n{stderr.decode()[-2000:]}\n{output[-500:]}"
        )
    # The first byte of text: a terminal escape (none is expected on stdout) is not the answer.
    first = next((at for at, data in received if _ESCAPES.sub(b"", data).strip(b"\r")), None)
    chats = [r for r in proxy.requests[mark:] if r.path.endswith(CHAT)]
    if first is None or not chats:
        raise RuntimeError(
            f"no answer on stdout or no chat request at the proxy (did the CLI start a server "
            f"of its own?):\n{stderr.decode()[-2000:]}"
        )
    before = [r for r in chats if r.arrived < first]
    final = before[-1]
    if final is not chats[-1]:
        raise RuntimeError("a chat request came after the first answer byte: not the final agent")
    if final.first_content is None or final.last_byte is None or first >= final.last_byte:
        raise RuntimeError(
            "the answer reached stdout only after the final reply had ended: it did not stream"
        )
    return QuorumRun(
        ttft=first - final.arrived,
        server_ttft=final.first_content - final.arrived,
        final=final,
        previous=before[-2] if len(before) > 1 else None,
        requests=len(chats),
        seconds=seconds,
        answer_start=output.lstrip().splitlines()[0][:120] if output.strip() else "",
    )


def direct_side(client: httpx.Client, url: str, body: bytes, previous: bytes | None) -> float:
    """Post `body` straight to the server, streamed; seconds to its first content."""
    if previous is not None:
        # Leave the server holding what it held when the final request came in the CLI's run
        # (llama.cpp reuses the longest prefix of the last prompt it evaluated): the request
        # before it, cut to one token. Without this the model would still hold the very
        # prompt about to be timed, from the other side's turn.
        flush = json.loads(previous) | {"stream": False, "max_tokens": 1}
        flush.pop("stream_options", None)
        client.post(url, json=flush).raise_for_status()
    headers = {"content-type": "application/json"}
    first: float | None = None
    started = time.monotonic()
    with client.stream("POST", url, content=body, headers=headers) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if first is None and line.startswith("data: {") and _content(line[6:].encode()):
                first = time.monotonic()
    if first is None:
        raise RuntimeError("the server's streamed reply had no content")
    return first - started


# --- The bench ---------------------------------------------------------------------------------


def measure(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Start the server and the proxy, run the sides interleaved, stop everything."""
    data = embedded_data_dir(folder)
    for name in [n for n in os.environ if n.startswith(("QUORUM_", "OPENAI_"))]:
        os.environ.pop(name)
    # The server as the CLI would start it, but with the prompt cache off: every round sends
    # the same final prompt, and with the cache on each side would be served the state the
    # other saved. In one real run the final agent's prompt is new to the server anyway.
    settings = Settings(data_dir=data, embedded_model=args.model, embedded_cache_bytes=0)
    env = _environment(data, args.max_tokens, args.model)
    loads = [load_average()]
    server = embedded.start(settings)
    proxy = Proxy(server.port)
    try:
        proxy.start()
        assert server.process is not None
        # What `quorum model serve` leaves for other processes to find, naming the proxy:
        # the CLI takes it for the embedded model's server, so it runs exactly as on the
        # embedded model (a QUORUM_BASE_URL would make it a configured endpoint, with other
        # tool-calling, grammar, output cap and timeout defaults).
        (data / "embedded-model.json").write_text(
            json.dumps({"port": proxy.port, "pid": server.process.pid})
        )
        url = f"{server.base_url}{CHAT}"
        with httpx.Client(timeout=settings.embedded_timeout) as client:
            client.get(f"{server.base_url}/models").raise_for_status()
            quorum, direct, runs, bodies = _interleave(args, proxy, client, url, folder, env, loads)
    finally:
        proxy.stop()
        server.stop()
    final = json.loads(runs[-1].final.body)
    return report(args, quorum, direct, runs, len(bodies), final, loads)


def _interleave(
    args: argparse.Namespace,
    proxy: Proxy,
    client: httpx.Client,
    url: str,
    work: Path,
    env: dict[str, str],
    loads: list[list[float]],
) -> tuple[Side, Side, list[QuorumRun], set[bytes]]:
    """A warm-up of each side, then `args.repeats` rounds, the side that goes first alternating.

    Each side's kept samples, every CLI run and the distinct final request bodies; the load
    average after each round is appended to `loads`.
    """
    quorum, direct = Side(), Side()
    bodies: set[bytes] = set()
    runs: list[QuorumRun] = []
    latest: QuorumRun | None = None

    def side_a(keep: bool) -> None:
        nonlocal latest
        latest = quorum_side(proxy, work, env, args.question)
        bodies.add(latest.final.body)
        runs.append(latest)
        if keep:
            quorum.samples.append(latest.ttft)
            quorum.server.append(latest.server_ttft)
        _progress(args, "quorum", latest.ttft, latest)

    def side_b(keep: bool) -> None:
        assert latest is not None
        previous = latest.previous.body if latest.previous else None
        ttft = direct_side(client, url, latest.final.body, previous)
        if keep:
            direct.samples.append(ttft)
        _progress(args, "direct", ttft, None)

    # Warm-up, dropped: A first, since B sends what A's run sent.
    side_a(False)
    side_b(False)
    for round_ in range(1, args.repeats + 1):
        for side in (side_b, side_a) if round_ % 2 else (side_a, side_b):
            side(True)
        loads.append(load_average())
    return quorum, direct, runs, bodies


def _progress(args: argparse.Namespace, side: str, ttft: float, run: QuorumRun | None) -> None:
    extra = ""
    if run is not None:
        extra = (
            f" (server part {run.server_ttft * 1000:.0f} ms; {run.requests} requests, "
            f"run {run.seconds:.0f} s)"
        )
    print(
        f"[{time.strftime('%H:%M:%S')}] {side}: {ttft * 1000:.0f} ms{extra}",
        file=sys.stderr,
        flush=True,
    )


def report(
    args: argparse.Namespace,
    quorum: Side,
    direct: Side,
    runs: list[QuorumRun],
    distinct_bodies: int,
    final: dict[str, Any],
    loads: list[list[float]],
) -> dict[str, Any]:
    """The results as plain data, with the row the suite would show."""
    paired = statistics.median(q / d for q, d in zip(quorum.samples, direct.samples, strict=True))
    server_median = statistics.median(quorum.server)
    after = statistics.median(q - s for q, s in zip(quorum.samples, quorum.server, strict=True))
    return {
        "model": args.model,
        "pattern": PATTERN,
        "final_agent": FINAL_AGENT,
        "question": args.question,
        "context": list(CONTEXT),
        "max_tokens": args.max_tokens,
        "repeats": args.repeats,
        "median_ms": {"quorum": 1000 * quorum.median(), "direct": 1000 * direct.median()},
        "quorum_server_part_median_ms": 1000 * server_median,
        "quorum_after_server_median_ms": 1000 * after,
        "ratio": quorum.median() / direct.median(),
        "median_paired_ratio": paired,
        "target": TARGET,
        "meets_target": quorum.median() / direct.median() <= TARGET,
        "samples_ms": {
            "quorum": [round(1000 * s, 1) for s in quorum.samples],
            "quorum_server_part": [round(1000 * s, 1) for s in quorum.server],
            "direct": [round(1000 * s, 1) for s in direct.samples],
        },
        "final_request": _final_request(final, distinct_bodies),
        "run_seconds": [round(r.seconds, 1) for r in runs],
        "answer_starts": sorted({r.answer_start for r in runs}),
        "chat_requests_per_run": sorted({r.requests for r in runs}),
        "machine": {
            "python": platform.python_version(),
            "cores": os.cpu_count(),
            "load_average": loads,
            "commit": commit(),
        },
        "row": _row(args, quorum, direct, paired, after).to_json(),
    }


def _row(args: argparse.Namespace, quorum: Side, direct: Side, paired: float, after: float) -> Row:
    """The row the suite would show: the medians of both sides, against TARGET."""
    return Row(
        f"time to first token, CLI answer vs llama-cpp-python server ({args.model})",
        quorum.median(),
        direct.median(),
        "s",
        Target("<=", TARGET),
        "same request straight to the server",
        note=f"{PATTERN} run, final agent {FINAL_AGENT}; {args.repeats} interleaved rounds; "
        f"median paired ratio {paired:.2f}; Quorum's part after the server's first token "
        f"reached the proxy: {after * 1000:.1f} ms (median)",
    )


def _final_request(final: dict[str, Any], distinct_bodies: int) -> dict[str, Any]:
    """The size and settings of the final agent's request, as sent in the last CLI run."""
    return {
        "input_messages": len(final.get("messages", [])),
        "characters": sum(len(str(m.get("content", ""))) for m in final.get("messages", [])),
        "max_tokens": final.get("max_tokens"),
        "stream": final.get("stream"),
        "distinct_bodies": distinct_bodies,
    }


def table(result: dict[str, Any], _args: argparse.Namespace) -> Iterator[str]:
    """The results as plain lines."""
    ms = result["median_ms"]
    yield (
        f"{result['model']}, {result['pattern']} (final agent {result['final_agent']}), "
        f"{result['repeats']} interleaved rounds after a warm-up, max_tokens "
        f"{result['max_tokens']}"
    )
    server, ratio, paired = (
        result["quorum_server_part_median_ms"],
        result["ratio"],
        result["median_paired_ratio"],
    )
    yield f"  quorum (CLI stdout, from the request's arrival) {ms['quorum']:>8.0f} ms"
    yield f"    of which the server, through the proxy        {server:>8.0f} ms"
    yield f"  direct (same body straight to the server)       {ms['direct']:>8.0f} ms"
    yield f"  ratio of medians {ratio:.3f}, median paired {paired:.3f}"
    yield f"  same final request every run: {result['final_request']['distinct_bodies'] == 1}"
    verdict = "meets" if result["meets_target"] else "misses"
    yield f"  target quorum/direct <= {result['target']}: {verdict}"
    yield f"  load average per round: {result['machine']['load_average']}"


def arguments(parser: argparse.ArgumentParser) -> None:
    """Rounds, the output cap, the embedded model and the run's input."""
    add_repeats(parser, 5)
    add_model(parser, max_tokens=96)
    parser.add_argument("--question", default=QUESTION, help="the run's input")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure in a fresh folder under bench/.tmp, removed afterwards."""
    with scratch("ttft-") as folder:
        return measure(args, folder)


MEASUREMENT = Measurement(
    "bench_ttft",
    "time to first token: the CLI's streamed answer against the server's own",
    arguments,
    run,
    table=table,
)
