"""`quorum graph PATTERN --png FILE`: a picture of each pattern, drawn with no network.

graphviz-pure's renderer, from its wheel (a dependency), draws it on this machine;
pytest-socket would stop any attempt to reach a drawing service.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from quorum.cli import app
from quorum.graphs import PATTERNS


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_graph_png_is_a_picture_of_the_pattern(pattern: str, tmp_path: Path) -> None:
    target = tmp_path / f"{pattern}.png"

    result = CliRunner().invoke(app, ["graph", pattern, "--png", str(target)])

    assert result.exit_code == 0, result.output
    assert f"wrote {target}" in result.stderr
    with Image.open(target) as image:
        image.verify()  # a whole, valid PNG
    with Image.open(target) as image:
        assert image.format == "PNG"
        assert image.width > 100 and image.height > 200
        # Something is drawn: not one flat colour.
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colours is not None and len(colours) > 10


def test_graph_png_of_an_unknown_pattern_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["graph", "nope", "--png", str(tmp_path / "x.png")])

    assert result.exit_code == 2
    assert "unknown pattern 'nope'" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_graph_png_into_a_missing_folder_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["graph", "react", "--png", str(tmp_path / "no" / "x.png")])

    assert result.exit_code == 2
    assert "cannot write" in result.stderr


def test_graph_without_png_still_prints_mermaid() -> None:
    result = CliRunner().invoke(app, ["graph", "debate"])

    assert result.exit_code == 0
    assert result.stdout.startswith(("---", "graph", "%%"))


def test_graph_png_needs_no_system_graphviz(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A machine with nothing on PATH (no Debian graphviz): the wheel's renderer still draws.
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    target = tmp_path / "react.png"

    result = CliRunner().invoke(app, ["graph", "react", "--png", str(target)])

    assert result.exit_code == 0, result.output
    with Image.open(target) as image:
        assert image.format == "PNG" and image.width > 100
