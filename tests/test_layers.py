"""Imports run one way: settings, context, errors -> state -> models, tools -> nodes -> graphs
-> runner -> cli. A module may import its own layer and the layers before it, never a later one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "quorum"

LAYERS: list[set[str]] = [
    {"settings", "context", "errors", "framework"},
    {"state", "answers"},
    {"telemetry"},
    {"embedded", "llama_server", "model_files"},
    {"journal", "metering", "effects", "outcome", "models", "tools", "run_settings"},
    {"nodes"},
    {"graphs"},
    {"checkpoints", "testing", "lifecycle", "threads", "runner", "report", "dry_run"},
    {"evals"},
    {"cli", "__init__", "auth"},
]
"""Each top-level module or package of `quorum`, by layer."""


def layer_of(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    return next(i for i, names in enumerate(LAYERS) if top in names)


def quorum_imports(path: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("quorum"):
            # `from quorum import threads` imports a module; `from quorum import run`, the API.
            names = [f"quorum.{a.name}" if node.module == "quorum" and _is_module(a.name)
                     else node.module for a in node.names]  # fmt: skip
            found += [(name, node.lineno) for name in names]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("quorum.")]
    return found


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name / "__init__.py").exists()


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if ".venv" not in p.parts)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 2 else parts)


def test_every_module_has_a_layer() -> None:
    for path in modules():
        layer_of(module_name(path))  # StopIteration names a module missing from LAYERS


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path: Path) -> None:
    own = layer_of(module_name(path))
    later = [
        f"line {line}: {name}"
        for name, line in quorum_imports(path)
        if name != "quorum" and layer_of(name) > own
    ]
    assert not later, f"{module_name(path)} (layer {own}) imports a later layer: {later}"


def test_nodes_never_import_graphs() -> None:
    for path in (PACKAGE / "nodes").glob("*.py"):
        assert not [n for n, _ in quorum_imports(path) if n.startswith("quorum.graphs")], path


def test_checkpoints_never_import_graphs() -> None:
    """Storage knows no pattern: the serializer's allowlist comes from the state schema."""
    for path in (PACKAGE / "checkpoints").glob("*.py"):
        assert not [n for n, _ in quorum_imports(path) if n.startswith("quorum.graphs")], path


PUBLIC = {
    "quorum",
    "quorum.context",
    "quorum.errors",
    "quorum.settings",
    "quorum.state",
    "quorum.models",
    "quorum.tools",
    "quorum.graphs",
    "quorum.threads",
    "quorum.report",
    "quorum.embedded",
    "quorum.auth",
    "quorum.testing",
}
"""Quorum's Python API: the top-level names (`quorum.__all__`) and these modules, which the
README documents for people who build on Quorum, with `quorum.evals` and its modules. The
rest (runner, lifecycle, dry_run, metering, effects, journal, answers, telemetry,
checkpoints, nodes, framework, model_files) is how the API is kept, re-exported at the top
where a user needs it."""


def test_the_cli_talks_only_to_the_public_api() -> None:
    """`quorum` the command is a client of `quorum` the library: what it can do, a user's
    program can do with the same names."""
    for path in (PACKAGE / "cli").glob("*.py"):
        private = [
            f"line {line}: {name}"
            for name, line in quorum_imports(path)
            if not name.startswith(("quorum.cli", "quorum.evals")) and name not in PUBLIC
        ]
        assert not private, f"{path.name} imports past the public API: {private}"


def test_every_top_level_name_is_what_it_says() -> None:
    """The lazy table and `__all__` agree, and each name is the object of that name."""
    import quorum

    aliases = {"serializer": "strict_serializer"}
    for name in quorum.__all__:
        value = getattr(quorum, name)
        assert value.__name__ == aliases.get(name, name), name


LONG_MODULES = {
    "state.py": "the checkpoint schema, on purpose in one module: the serializer's allowlist "
    "is walked from it, and every stored type is found in one place",
    "dry_run.py": "about half is the preview's documented contract: typed records with a "
    "docstring per field, and the versioned JSON",
    "telemetry.py": "the one tracing seam: OpenTelemetry set-up, run and step spans, and the "
    "LangSmith tracer's naming",
    "metering.py": "the one metering seam: usage, cost, the run meter's budgets and the ledger",
    "checkpoints/sqlite.py": "the SQLite saver, store and leases, each write with its own "
    "transaction and fencing",
    "cli/running.py": "the commands that move a thread (run, resume, approve, resolve), with "
    "the prompts a person answers",
    "effects.py": "the effect ledger: its records, and `run_once` split into its states",
    "tools/files.py": "the file tools, each with its path confinement and its own errors",
    "testing/stub.py": "one test double: an OpenAI-compatible server with every way an "
    "endpoint fails (statuses, drops, stalls, holds, malformed bodies, SSE streams)",
    "testing/crash.py": "the crash-trial harness: plan, kill, resume and judge read as one "
    "procedure, with the judge's rules beside the records they read",
}
"""Modules over 400 lines, each with why it stays one module."""


def test_modules_are_short_or_say_why() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in modules()
        if (n := len(path.read_text().splitlines())) > 400
    }
    unexplained = {name: n for name, n in long.items() if name not in LONG_MODULES}
    assert not unexplained, f"over 400 lines with no reason in LONG_MODULES: {unexplained}"
    assert not set(LONG_MODULES) - set(long), "a module in LONG_MODULES is short now: drop it"


def test_no_function_is_over_60_lines() -> None:
    """In the package and in the benchmarks alike: a long function is split into its steps."""
    root = PACKAGE.parent
    # Not bench/.tmp: the runs' scratch folders, whatever a run left there is not our code.
    bench = sorted(p for p in (root / "bench").rglob("*.py") if ".tmp" not in p.parts)
    long = [
        f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)"
        for path in [*modules(), *bench]
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (length := (node.end_lineno or node.lineno) - node.lineno + 1) > 60
    ]
    assert not long, f"functions over 60 lines: {long}"


def _imports_of(folder: Path) -> list[tuple[Path, str]]:
    found = []
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.append((path, node.module))
            elif isinstance(node, ast.Import):
                found += [(path, alias.name) for alias in node.names]
    return found


def test_bench_and_tests_never_import_each_other() -> None:
    """What both need (the OpenAI stub, the crash harness, `langgraph dev`, the conformance
    set) is in the package, where a user's tests can use it too."""
    root = PACKAGE.parent
    crossing = [
        f"{path.relative_to(root)}: {module}"
        for folder, other in (("bench", "tests"), ("tests", "bench"))
        for path, module in _imports_of(root / folder)
        if module == other or module.startswith(other + ".")
    ]
    assert not crossing, crossing


def test_tests_mirror_the_package() -> None:
    """A package's tests are in the folder of its name (tests/models for quorum/models), never
    loose at the top as tests/test_models.py; a folder of tests names a package."""
    tests = PACKAGE.parent / "tests"
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    folders = {p.parent.name for p in tests.rglob("test_*.py") if p.parent != tests}
    loose = {p.stem.removeprefix("test_") for p in tests.glob("test_*.py")}

    assert folders <= packages, folders - packages
    assert not loose & packages, sorted(loose & packages)
    assert all((tests / folder / "__init__.py").exists() for folder in folders)
