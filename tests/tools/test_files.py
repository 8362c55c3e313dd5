"""File tools: they work inside the workspace and touch nothing outside it, whatever the path."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tools.inotify import Watch
from tests.tools.invoke import invoke

SECRET = "OUTSIDE-SECRET-7f3a"
WRITTEN = "written-by-the-traversal-test"


@pytest.fixture
def layout(tmp_path: Path, configure: Callable[..., None]) -> Path:
    """base/workspace with files and symlinks that point out; secrets beside it."""
    base = tmp_path / "base"
    workspace, outside, evil = base / "workspace", base / "outside", base / "workspace-evil"
    for folder in (workspace / "notes", outside / "sub", evil):
        folder.mkdir(parents=True)
    (workspace / "notes" / "todo.md").write_text("buy milk\n")
    (workspace / "readme.txt").write_text("the workspace\n")
    (outside / "secret.txt").write_text(SECRET)
    (outside / "sub" / "deep.txt").write_text(SECRET)
    (evil / "x.txt").write_text(SECRET)
    (base / "sibling.txt").write_text(SECRET)
    (workspace / "link_dir").symlink_to("../outside")
    (workspace / "link_file").symlink_to("../outside/secret.txt")
    (workspace / "link_abs").symlink_to(outside)
    (workspace / "link_up").symlink_to("..")
    (workspace / "link_evil").symlink_to("../workspace-evil")
    (workspace / "notes" / "link_deep").symlink_to("../../outside/sub")
    (workspace / "link_in").symlink_to("notes/todo.md")
    configure(workspace_dir=workspace, approve_tools="write_file")
    return base


def _outside_state(base: Path) -> dict[str, str]:
    state = {}
    for path in sorted(base.rglob("*")):
        if path.is_relative_to(base / "workspace"):
            continue
        if path.is_symlink() or not path.is_file():
            state[str(path)] = "folder"
        else:
            state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


PIECES = [
    "..", ".", "", "notes", "todo.md", "readme.txt", "new.txt", "link_dir", "link_file",
    "link_abs", "link_up", "link_deep", "link_evil", "link_in", "outside", "secret.txt", "sub",
    "deep.txt", "workspace", "workspace-evil", "x.txt", "sibling.txt", "%2e%2e", "%2f", "..%2f",
    "%2e%2e%2f", "..%252f", "%252e%252e", "..\\", "\\..", "．．", "\u2025", "..;", "...",
    "....", "~", "$HOME", "..\x00", "%00", "\u2215..", "..\u2215secret.txt", ".git", " ..",
    ".. ", "..%c0%af", "%u002e%u002e",
]  # fmt: skip
SEPARATORS = ["/", "//", "/./", "\\", "%2f", "%5c", "/../"]


def _paths(base: Path) -> st.SearchStrategy[str]:
    prefixes = [
        "", "/", "//", "./", "~/", "file://", "\\\\", "C:\\", "%2f", f"{base}/",
        f"{base}/outside/", f"{base}/workspace/../", f"{base}/workspace-evil/",
    ]  # fmt: skip
    built = st.builds(
        lambda prefix, pieces, seps: (
            prefix + "".join(p + s for p, s in zip(pieces, seps, strict=False))
        ),
        st.sampled_from(prefixes),
        st.lists(st.sampled_from(PIECES), min_size=1, max_size=6),
        st.lists(st.sampled_from(SEPARATORS), min_size=6, max_size=6).map(
            lambda seps: [*seps[:-1], ""]
        ),
    )
    return st.one_of(built, built.map(lambda p: p.rstrip("/\\")), st.text(max_size=30))


@pytest.mark.slow
def test_generated_paths_reach_nothing_outside_the_workspace(layout: Path) -> None:
    base = layout
    before = _outside_state(base)
    watch = Watch([base, base / "outside", base / "outside" / "sub", base / "workspace-evil"])
    tried: list[str] = []
    leaks: list[str] = []

    async def attempt(path: str, overwrite: bool) -> None:
        for name, args in (
            ("list_files", {"folder": path}),
            ("read_file", {"path": path}),
            ("write_file", {"path": path, "content": WRITTEN, "overwrite": overwrite}),
        ):
            status, result = await invoke(name, **args)
            if status == "success" and SECRET in str(result):
                leaks.append(f"{name}({path!r}) returned the secret")

    @settings(
        max_examples=1000,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(path=_paths(base), overwrite=st.booleans())
    def check(path: str, overwrite: bool) -> None:
        tried.append(path)
        asyncio.run(attempt(path, overwrite))
        # The only thing outside the workspace that may be opened is the workspace folder
        # itself, as the root every path is opened from.
        touched = [(p, mask) for p, mask in watch.events() if p != base / "workspace"]
        assert touched == [], f"{path!r} touched {touched}"

    try:
        check()
    finally:
        watch.close()

    assert len(tried) >= 1000
    assert leaks == []
    assert _outside_state(base) == before
    # The run did exercise the tools inside the workspace, not only refuse everything.
    assert (base / "workspace" / "new.txt").read_text() == WRITTEN


async def test_read_list_and_write_inside_the_workspace(layout: Path) -> None:
    status, listing = await invoke("list_files")
    assert status == "success"
    assert [(e["path"], e["kind"]) for e in listing["entries"]] == [
        ("notes", "folder"),
        ("readme.txt", "file"),
    ]  # symlinks are not listed

    status, text = await invoke("read_file", path="notes/todo.md")
    assert (status, text["text"], text["next_offset"]) == ("success", "buy milk\n", None)

    status, linked = await invoke("read_file", path="link_in")  # a link that stays inside
    assert (status, linked["text"]) == ("success", "buy milk\n")

    status, written = await invoke("write_file", path="out/report.md", content="# Report")
    assert (status, written["created"]) == ("success", True)
    assert (layout / "workspace" / "out" / "report.md").read_text() == "# Report"

    status, again = await invoke("write_file", path="out/report.md", content="# New")
    assert status == "error" and "already exists" in again["error"]
    status, replaced = await invoke(
        "write_file", path="out/report.md", content="# New", overwrite=True
    )
    assert (status, replaced["created"]) == ("success", False)
    assert (layout / "workspace" / "out" / "report.md").read_text() == "# New"


async def test_write_needs_approval(layout: Path, configure: Callable[..., None]) -> None:
    configure(approve_tools="")

    status, result = await invoke("write_file", path="new.md", content="x")

    assert status == "error" and "needs a person's approval" in result["error"]
    assert not (layout / "workspace" / "new.md").exists()


async def test_long_file_is_read_in_parts(layout: Path) -> None:
    text = "".join(f"line {i}\n" for i in range(1000))
    (layout / "workspace" / "long.txt").write_text(text)

    _, first = await invoke("read_file", path="long.txt", max_chars=2000)
    _, second = await invoke("read_file", path="long.txt", offset=first["next_offset"])

    assert first["total_chars"] == len(text) and first["next_offset"] == 2000
    assert first["text"] + second["text"] == text[:5000]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda w: os.mkfifo(w / "special"), "not a file"),
        (lambda w: os.link(w.parent / "outside" / "secret.txt", w / "special"), "hard link"),
        (lambda w: (w / "special").mkdir(), "not a file"),
    ],
    ids=["fifo", "hard-link-out", "folder"],
)
async def test_special_files_are_refused_without_hanging(
    layout: Path, make: Callable[[Path], None], expected: str
) -> None:
    make(layout / "workspace")

    status, result = await asyncio.wait_for(invoke("read_file", path="special"), 5)

    assert status == "error" and expected in result["error"]
    status, result = await asyncio.wait_for(
        invoke("write_file", path="special", content=WRITTEN, overwrite=True), 5
    )
    assert status == "error"
    assert (layout / "outside" / "secret.txt").read_text() == SECRET


async def test_binary_file_is_not_read(layout: Path) -> None:
    (layout / "workspace" / "data.bin").write_bytes(b"\x00\x01\x02binary")

    status, result = await invoke("read_file", path="data.bin")

    assert status == "error" and "binary" in result["error"]
