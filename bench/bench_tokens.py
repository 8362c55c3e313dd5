"""Tokens per second through Quorum's model seam against llama-cpp-python called directly.

Three ways of asking the embedded model (the default one, or `--model smollm2-135m`) for the
same completion (same messages,
output cap, temperature 0 and seed), timed wall-clock per call in interleaved rounds after a
warm-up:

- `quorum`: `quorum.models.ask` (ChatOpenAI over the OpenAI client) to the embedded server;
- `http`: one plain POST to the same server: the ratio quorum/http is Quorum's own overhead;
- `inprocess`: `llama_cpp.Llama` in this process, built and called the way the server builds
  and calls it: the ratio quorum/inprocess is the end-to-end cost of going through Quorum.

Run from the repository root: `.venv/bin/python -m bench bench_tokens [--repeats N]
[--max-tokens N] [--model NAME] [--json] [--out DIR]`. Quorum's data folder is a temporary
one, removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from langchain_core.messages import HumanMessage, SystemMessage
from llama_cpp import Llama
from llama_cpp.server.model import LlamaProxy
from llama_cpp.server.settings import ModelSettings
from llama_cpp.server.types import CreateChatCompletionRequest

from bench.harness import Measurement, add_model, add_repeats
from quorum import embedded, models
from quorum.context import QuorumContext
from quorum.settings import Settings, get_settings

AGENT = "bench"
SEED = 7
TARGET = 0.9
"""The least acceptable ratio of Quorum's tokens/s to the direct route's."""

SYSTEM = "You are a helpful assistant."
# Asks for more than any sensible cap, so every call runs to the cap and all three routes
# time the same number of generated tokens.
QUESTION = (
    "Write a long, detailed essay on the history of the bicycle, from the first designs to "
    "today's electric bikes, with a section for each period."
)

# Request fields the server drops before calling Llama.create_chat_completion
# (llama_cpp/server/app.py, create_chat_completion).
SERVER_EXCLUDES = {"n", "logit_bias_type", "user", "min_tokens"}

# Endpoint settings that would send Quorum somewhere other than the embedded model.
ENDPOINT_VARIABLES = (
    "QUORUM_BASE_URL",
    "OPENAI_BASE_URL",
    "QUORUM_API_KEY",
    "OPENAI_API_KEY",
    "QUORUM_MAX_OUTPUT_TOKENS",
)


@dataclass
class Call:
    """One timed completion."""

    seconds: float
    output_tokens: int
    input_tokens: int
    text: str

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens over the whole call's wall-clock time."""
        return self.output_tokens / self.seconds


@dataclass
class Route:
    """One way of getting the completion, and its timed calls."""

    name: str
    label: str
    run: Callable[[], Awaitable[Call]]
    calls: list[Call] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        """The median of `attribute` over the timed calls."""
        return statistics.median(getattr(call, attribute) for call in self.calls)


def configure(data_dir: str, max_tokens: int, model: str) -> Settings:
    """Point this process's Quorum settings at the embedded model with the bench's sampling."""
    for name in ENDPOINT_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(
        QUORUM_DATA_DIR=data_dir,
        QUORUM_TEMPERATURE="0",
        QUORUM_SEED=str(SEED),
        QUORUM_EMBEDDED_MAX_OUTPUT_TOKENS=str(max_tokens),
        QUORUM_EMBEDDED_MODEL=model,
    )
    get_settings.cache_clear()
    settings = get_settings()
    if not models.current_endpoint().embedded:
        sys.exit(
            "bench_tokens: the settings (a .env file?) name an endpoint, not the embedded model"
        )
    return settings


def request_body(max_tokens: int, model: str) -> dict[str, Any]:
    """The chat completion request both direct routes make."""
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": QUESTION},
        ],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "seed": SEED,
    }


def in_process_llama(settings: Settings) -> Llama:
    """A Llama built from the model settings the embedded server is started with."""
    return LlamaProxy.load_llama_from_model_settings(
        ModelSettings.model_validate(embedded.model_options(settings))
    )


def quorum_route(context: QuorumContext) -> Callable[[], Awaitable[Call]]:
    """A call through `models.ask`."""
    messages = [SystemMessage(SYSTEM), HumanMessage(QUESTION)]

    async def run() -> Call:
        start = time.perf_counter()
        reply = await models.ask(AGENT, context, messages)
        seconds = time.perf_counter() - start
        spent = reply.usage_metadata or {"input_tokens": 0, "output_tokens": 0}
        return Call(seconds, spent["output_tokens"], spent["input_tokens"], reply.text)

    return run


def http_route(
    client: httpx.AsyncClient, url: str, body: dict[str, Any]
) -> Callable[[], Awaitable[Call]]:
    """A plain POST to the server's chat completions route."""

    async def run() -> Call:
        start = time.perf_counter()
        response = await client.post(url, json=body)
        seconds = time.perf_counter() - start
        response.raise_for_status()
        return _from_completion(seconds, response.json())

    return run


def in_process_route(llama: Llama, body: dict[str, Any]) -> Callable[[], Awaitable[Call]]:
    """Llama.create_chat_completion with the arguments the server would pass it."""
    # The server fills unset sampling fields with its own defaults (repeat_penalty 1.1, not
    # Llama's 1.0): validating through its request model makes the two generate the same.
    arguments = CreateChatCompletionRequest.model_validate(body).model_dump(exclude=SERVER_EXCLUDES)

    async def run() -> Call:
        start = time.perf_counter()
        completion = llama.create_chat_completion(**arguments)
        seconds = time.perf_counter() - start
        return _from_completion(seconds, completion)

    return run


def _from_completion(seconds: float, completion: Any) -> Call:
    usage = completion["usage"]
    text = completion["choices"][0]["message"]["content"] or ""
    return Call(seconds, usage["completion_tokens"], usage["prompt_tokens"], text)


async def measure(routes: list[Route], repeats: int) -> dict[str, str]:
    """Warm every route up, then time `repeats` rounds, rotating which route goes first."""
    warm = {route.name: (await route.run()).text for route in routes}
    for round_ in range(repeats):
        shift = round_ % len(routes)
        for route in routes[shift:] + routes[:shift]:
            call = await route.run()
            if call.output_tokens == 0:
                raise RuntimeError(f"{route.name}: the reply reported no output tokens")
            route.calls.append(call)
    return warm


def report(routes: list[Route], warm: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """The results as plain data."""
    by_name = {route.name: route for route in routes}
    quorum = by_name["quorum"]

    def paired(other: Route) -> float:
        # Per-round ratios: a burst of load on the shared machine hits both calls of a round.
        return statistics.median(
            q.tokens_per_second / o.tokens_per_second
            for q, o in zip(quorum.calls, other.calls, strict=True)
        )

    ratios = {}
    for name in ("http", "inprocess"):
        other = by_name[name]
        ratios[f"quorum/{name}"] = {
            "of_medians": quorum.median("tokens_per_second") / other.median("tokens_per_second"),
            "median_paired": paired(other),
            "overhead_ms_per_call": 1000 * (quorum.median("seconds") - other.median("seconds")),
        }
    return {
        "model": args.model,
        "repeats": args.repeats,
        "max_tokens": args.max_tokens,
        "seed": SEED,
        "temperature": 0.0,
        "same_text": len(set(warm.values())) == 1,
        "routes": {
            route.name: {
                "label": route.label,
                "median_tokens_per_s": route.median("tokens_per_second"),
                "median_ms_per_call": 1000 * route.median("seconds"),
                "output_tokens": sorted({call.output_tokens for call in route.calls}),
                "input_tokens": sorted({call.input_tokens for call in route.calls}),
                "tokens_per_s": [round(call.tokens_per_second, 2) for call in route.calls],
            }
            for route in routes
        },
        "ratios": ratios,
        "target": TARGET,
        "meets_target": all(r["of_medians"] >= TARGET for r in ratios.values()),
    }


def table(result: dict[str, Any], _args: argparse.Namespace) -> Iterator[str]:
    """The results as a plain table."""
    yield (
        f"{result['model']}, {result['repeats']} interleaved rounds after a warm-up, "
        f"max_tokens={result['max_tokens']}, temperature 0, seed {result['seed']}"
    )
    yield f"{'route':<42} {'tok/s':>8} {'ms/call':>9} {'out tok':>8} {'in tok':>7}"
    for route in result["routes"].values():
        yield (
            f"{route['label']:<42} {route['median_tokens_per_s']:>8.1f} "
            f"{route['median_ms_per_call']:>9.0f} "
            f"{','.join(map(str, route['output_tokens'])):>8} "
            f"{','.join(map(str, route['input_tokens'])):>7}"
        )
    for name, ratio in result["ratios"].items():
        yield (
            f"{name:<20} ratio of medians {ratio['of_medians']:.3f}, "
            f"median paired {ratio['median_paired']:.3f}, "
            f"overhead {ratio['overhead_ms_per_call']:+.0f} ms/call"
        )
    yield f"same generated text on all routes: {'yes' if result['same_text'] else 'NO'}"
    verdict = "meets" if result["meets_target"] else "misses"
    yield f"target quorum/direct >= {result['target']}: {verdict}"


async def benchmark(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Start the server, build the three routes, measure them and stop the server."""
    # ensure_server is what models.ask calls too, so both HTTP routes reach this one server.
    server = embedded.ensure_server(settings)
    body = request_body(args.max_tokens, embedded.model_alias(settings))
    llama = in_process_llama(settings)
    try:
        async with httpx.AsyncClient(timeout=settings.timeout) as client:
            routes = [
                Route(
                    "quorum", "Quorum models.ask -> embedded server", quorum_route(QuorumContext())
                ),
                Route(
                    "http",
                    "direct HTTP POST -> same server",
                    http_route(client, f"{server.base_url}/chat/completions", body),
                ),
                Route("inprocess", "llama_cpp.Llama in-process", in_process_route(llama, body)),
            ]
            warm = await measure(routes, args.repeats)
        return report(routes, warm, args)
    finally:
        llama.close()
        embedded.stop_owned()


def arguments(parser: argparse.ArgumentParser) -> None:
    """Rounds, the output cap and the embedded model."""
    add_repeats(parser, 10)
    add_model(parser, max_tokens=128)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure with Quorum's data in a temporary folder, removed afterwards."""
    data_dir = tempfile.mkdtemp(prefix="quorum-bench-")
    try:
        settings = configure(data_dir, args.max_tokens, args.model)
        return asyncio.run(benchmark(args, settings))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


MEASUREMENT = Measurement(
    "bench_tokens",
    "embedded model tokens/s: Quorum's seam, plain HTTP, llama-cpp-python in-process",
    arguments,
    run,
    table=table,
)
