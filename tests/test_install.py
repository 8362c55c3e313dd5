"""What a fresh machine and a library user get: the lock, and the wheel with its version ranges.

`make setup` installs requirements.lock exactly; a library user installs the wheel, whose
dependencies keep ranges. These tests hold the two together: the lock matches pyproject.toml,
pins every distribution with hashes and names no download address; and the built wheel,
installed into a new virtual environment with exactly the locked versions of what it needs
(from uv's cache: no network), passes `pip check` and completes a run against the scripted
server on loopback. The real ChatOpenAI is also built from the locked stack and called, sync
and async, the path that a new httpx2 release once broke.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from quorum.context import QuorumContext
from quorum.models import load_chat_model
from quorum.testing.langgraph_dev import REPO
from quorum.testing.stub import OpenAIStub

LOCK = REPO / "requirements.lock"
BIN = Path(sys.executable).parent
UV = BIN / "uv"


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as running:
        yield running


def locked() -> dict[str, str]:
    """The version the lock pins for this interpreter and platform, by canonical name.

    The lock is universal: a distribution may be pinned twice, under different markers.
    """
    pins = re.findall(r"^([A-Za-z0-9._-]+==[^\\\n]+)", LOCK.read_text(), re.MULTILINE)
    chosen = {}
    for requirement in map(Requirement, pins):
        if requirement.marker is None or requirement.marker.evaluate():
            [spec] = requirement.specifier
            chosen[canonicalize_name(requirement.name)] = spec.version
    return chosen


def test_lock_matches_pyproject_and_pins_every_installed_distribution() -> None:
    check = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "lock.py"), "check"], capture_output=True
    )
    assert check.returncode == 0, check.stderr.decode()
    pins = locked()
    installed = {
        canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()
    }
    installed.pop("quorum")  # the project itself, installed editable from the checkout
    # `make setup` installs the lock and nothing else, at exactly its versions.
    assert {name: pins.get(name) for name in installed} == installed
    text = LOCK.read_text()
    # Every pin carries its hashes, and no download address is recorded.
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 5)[-1])
    assert all("--hash=sha256:" in entry for entry in entries if "==" in entry)
    assert "://" not in text


def test_a_stale_lock_is_refused_with_what_to_do(tmp_path: Path) -> None:
    copy = tmp_path / "checkout"
    (copy / "scripts").mkdir(parents=True)
    (copy / "scripts" / "lock.py").write_text((REPO / "scripts" / "lock.py").read_text())
    (copy / "requirements.lock").write_text(LOCK.read_text())
    pyproject = (REPO / "pyproject.toml").read_text()
    (copy / "pyproject.toml").write_text(pyproject.replace('"rich>=13"', '"rich>=14"'))

    check = subprocess.run(
        [sys.executable, str(copy / "scripts" / "lock.py"), "check"], capture_output=True, text=True
    )

    assert check.returncode == 1
    assert "requirements.lock is stale" in check.stderr
    assert "make lock" in check.stderr and "make upgrade" in check.stderr


def runtime_closure(wheel: Path) -> set[str]:
    """The distributions a plain install of `wheel` needs (no extras), by canonical name.

    Walked through the metadata of what is installed here, which is the lock's versions.
    """
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(name).decode()
    top = [
        line.split(":", 1)[1] for line in metadata.splitlines() if line.startswith("Requires-Dist:")
    ]
    seen: set[str] = set()
    wanted: list[tuple[list[str], frozenset[str]]] = [(top, frozenset())]
    while wanted:
        requires, extras = wanted.pop()
        for requirement in map(Requirement, requires):
            marker = requirement.marker
            if marker is not None and not any(
                marker.evaluate({"extra": extra}) for extra in ("", *extras)
            ):
                continue
            name = canonicalize_name(requirement.name)
            key = f"{name}[{','.join(sorted(requirement.extras))}]"
            if key in seen:
                continue
            seen.add(key)
            requires_of = importlib.metadata.distribution(name).requires or []
            wanted.append((requires_of, frozenset(requirement.extras)))
    return {key.partition("[")[0] for key in seen}


@pytest.mark.slow
def test_the_wheel_installs_with_locked_versions_and_runs(tmp_path: Path, stub: OpenAIStub) -> None:
    dist = tmp_path / "dist"
    env = {**os.environ, "VIRTUAL_ENV": str(BIN.parent)}
    subprocess.run(
        [str(UV), "build", "--wheel", "--no-build-isolation", "--offline", "--quiet",
         "-o", str(dist), str(REPO)],
        check=True, env=env, timeout=300,
    )  # fmt: skip
    [wheel] = dist.glob("quorum-*.whl")
    pins = locked()
    needed = runtime_closure(wheel)
    assert needed <= pins.keys(), f"not in the lock: {sorted(needed - pins.keys())}"
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("".join(f"{name}=={pins[name]}\n" for name in sorted(needed)))
    venv = tmp_path / "venv"
    subprocess.run([str(UV), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    into = {**os.environ, "VIRTUAL_ENV": str(venv)}
    # Exactly the locked versions, from uv's cache (filled by `make setup`), with no network.
    subprocess.run(
        [str(UV), "pip", "install", "--offline", "--quiet", "--no-deps",
         "-r", str(requirements), str(wheel)],
        check=True, env=into, timeout=300,
    )  # fmt: skip
    # The wheel's own ranges admit every locked version, and nothing it needs is missing.
    check = subprocess.run(
        [str(UV), "pip", "check"], env=into, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr

    done = subprocess.run(
        [str(venv / "bin" / "quorum"), "run", "react", "What is 2+2?"],
        env={**into, "QUORUM_BASE_URL": stub.base_url, "QUORUM_API_KEY": "test",
             "QUORUM_MODEL": "stub-model"},
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert len(stub.chat_requests()) >= 2  # a tool call, then the answer


async def test_the_real_chat_model_calls_through_the_locked_http_stack(
    stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUORUM_BASE_URL", stub.base_url)
    monkeypatch.setenv("QUORUM_API_KEY", "test")
    monkeypatch.setenv("QUORUM_MODEL", "stub-model")
    stub.responder = lambda body: "pong"

    model = await load_chat_model("agent", QuorumContext())

    # Both clients are the installed openai's own types, built by Quorum, not by chance.
    assert isinstance(model.http_client, openai.DefaultHttpxClient)
    assert isinstance(model.http_async_client, openai.DefaultAsyncHttpxClient)
    assert (await model.ainvoke("ping")).content == "pong"
    assert model.invoke("ping").content == "pong"
    assert len(stub.chat_requests()) == 2
