"""`quorum report`: one self-contained HTML file, looked at in headless Chromium.

The page is opened in Debian's `chromium` (installed by `make test`), a screenshot is taken, and
the bars of the timeline are read back from its pixels: each kind of span has one solid
colour, and each bar is a band of rows of that colour. The number of model-call bars must be
the number of calls the scripted server answered, and the orchestrator's parallel workers
must overlap on the time axis.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

import quorum
from quorum.cli import app
from quorum.report import COLOURS, ROW_HEIGHT
from quorum.settings import get_settings
from quorum.testing.stub import CHAT_PATH, STUB_MODEL, OpenAIStub
from tests import processes
from tests.test_approvals import saving

BAR_HEIGHT = ROW_HEIGHT - 6
"""Pixels: a timeline bar's height (the legend's squares are smaller)."""


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIStub]:
    with OpenAIStub() as running:
        monkeypatch.setenv("QUORUM_BASE_URL", running.base_url)
        monkeypatch.setenv("QUORUM_API_KEY", "test-key")
        monkeypatch.setenv("QUORUM_MODEL", STUB_MODEL)
        get_settings.cache_clear()
        yield running


@dataclass(frozen=True)
class Bar:
    top: int
    bottom: int
    left: int
    right: int


def screenshot(page: Path, png: Path) -> Image.Image:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make test` installs it"
    before = {p.pid for p in processes.descendants()}
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-crash-reporter",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--user-data-dir={png.parent / 'chromium-profile'}",
            f"--screenshot={png}",
            "--window-size=1400,1000",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    left = processes.wait_for_none(
        lambda: [p for p in processes.descendants() if p.pid not in before], 20
    )
    processes.kill(left)
    assert not left, left
    return Image.open(png).convert("RGB")


def bars(image: Image.Image, colour: str) -> list[Bar]:
    """Every bar of `colour`: a band of pixel rows holding it, BAR_HEIGHT tall."""
    rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
    pixels = image.load()
    assert pixels is not None
    width, height = image.size
    found: list[Bar] = []
    band: list[tuple[int, int, int]] = []
    for y in range(height + 1):
        xs = [x for x in range(width) if pixels[x, y] == rgb] if y < height else []
        if xs:
            band.append((y, min(xs), max(xs)))
            continue
        if len(band) == BAR_HEIGHT:
            found.append(
                Bar(band[0][0], band[-1][0], min(b[1] for b in band), max(b[2] for b in band))
            )
        band = []
    return found


@pytest.mark.browser
async def test_report_draws_a_bar_per_call_and_parallel_workers_overlap(
    stub: OpenAIStub, db: str, tmp_path: Path
) -> None:
    stub.delay = 0.4  # every reply takes this long: wide bars, and the two workers overlap
    info = await quorum.run("orchestrator", "Plan a product launch", thread_id="t", database=db)
    page = tmp_path / "report.html"
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["report", "t", "--db", db, "-o", str(page)]
    )
    answered = [r for r in stub.requests if r.path == CHAT_PATH and r.status == 200]
    image = await asyncio.to_thread(screenshot, page, tmp_path / "report.png")
    calls = bars(image, COLOURS["call"])
    tools = bars(image, COLOURS["tool"])

    assert info.status == "completed"
    assert result.exit_code == 0, result.output
    html = page.read_text()
    # Self-contained: nothing to fetch (no scripts, links, images or imported styles).
    assert not re.search(r"<script|<link|<img|\b(src|href)=|@import|url\(", html)
    for shown in ("Timeline", "Plan", "Ledger", "Approvals", "Failures", "Final answer"):
        assert f"<h2>{shown}" in html
    assert info.output.splitlines()[0] in html
    # One bar per call the server answered, one per tool call its replies asked for.
    assert len(calls) == len(answered) == info.ledger.total.calls
    assert len(tools) == sum(r.tool_calls for r in answered) >= 1
    # Rows run in time order, one bar each: the planner first, the synthesizer last, and
    # only the plan's two independent steps (researcher s1, analyst s2) run at once.
    rows = sorted(calls + tools, key=lambda b: b.top)
    assert all(a.bottom < b.top for a, b in zip(rows, rows[1:], strict=False))
    assert calls[0].right < min(b.left for b in calls[1:])
    assert calls[-1].left > max(b.right for b in calls[:-1])
    # Some instant of the axis has both workers' calls in flight.
    overlaps = max(sum(1 for b in calls if b.left <= x <= b.right) for x in range(image.width))
    assert overlaps == 2


@pytest.mark.parametrize(
    ("pattern", "text", "section"),
    [
        ("pipeline", "Quantum error correction", "Calls, in order"),
        ("debate", "Should a small team self-host its LLM?", "Verdict"),
        ("react", "What is 6*7?", "Calls, in order"),
    ],
)
async def test_report_of_each_pattern(
    stub: OpenAIStub, db: str, tmp_path: Path, pattern: str, text: str, section: str
) -> None:
    info = await quorum.run(pattern, text, thread_id="t", database=db)
    page = tmp_path / "t.html"
    result = await asyncio.to_thread(CliRunner().invoke, app, ["report", "t", "--db", db])
    html = page.read_text()  # the default file name is the thread's

    assert result.exit_code == 0, result.output
    assert f"<h2>{section}" in html
    assert html.count('class="span call"') == info.ledger.total.calls
    assert 'class="span failed"' not in html


async def test_report_shows_a_failed_call_and_why(
    stub: OpenAIStub, db: str, tmp_path: Path
) -> None:
    stub.fail(400, times=1)  # not retried: the run fails at its first call
    with pytest.raises(quorum.RunFailed):
        await quorum.run("react", "What is 6*7?", thread_id="t", database=db)
    result = await asyncio.to_thread(CliRunner().invoke, app, ["report", "t", "--db", db])
    html = (tmp_path / "t.html").read_text()

    assert result.exit_code == 0, result.output
    assert html.count('class="span failed"') == 1
    assert 'class="span call"' not in html
    assert (
        '<span class="status-failed">failed</span>' in html
        and "(HTTP 400): scripted failure" in html
    )


def test_report_of_an_unknown_thread_says_so(db: str) -> None:
    result = CliRunner().invoke(app, ["report", "nope", "--db", db])

    assert result.exit_code == 1  # as `quorum show` of an unknown thread
    assert "no thread 'nope'" in result.stderr


async def test_report_lists_approvals_and_what_waits(
    stub: OpenAIStub, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUORUM_WORKSPACE_DIR", str(tmp_path / "workspace"))
    (tmp_path / "workspace").mkdir()
    get_settings.cache_clear()
    stub.responder = saving("note.md")
    waiting = await quorum.run("react", "Save a note", thread_id="t", database=db)
    before = await asyncio.to_thread(render_report, db, tmp_path / "before.html")
    done = await quorum.resume("t", database=db, approve=True, decided_by="erin")
    after = await asyncio.to_thread(render_report, db, tmp_path / "after.html")

    assert waiting.status == "waiting_approval" and done.status == "completed"
    assert "<td>write_file</td><td>agent</td><td>waiting</td>" in before
    assert "waits for a person" in before
    assert (
        "<td>write_file</td><td>agent</td><td>completed</td><td>approved by erin via python</td>"
        in (after)
    )


def render_report(db: str, target: Path) -> str:
    result = CliRunner().invoke(app, ["report", "t", "--db", db, "-o", str(target)])
    assert result.exit_code == 0, result.output
    return target.read_text()
